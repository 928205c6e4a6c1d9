"""Transfer of the lattice's lowest-order reflections: where the detector can be trusted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_tem_atoms.analysis import detect_atoms, iter_detect_atoms
from napari_tem_atoms.analysis.transfer import (
    GOLD_REFLECTIONS,
    MINIMUM_TRANSFER,
    TransferWarning,
    model_optics,
    reflection_transfer,
    transfer_warning,
    transfer_windows,
)
from napari_tem_atoms.cli import main
from napari_tem_atoms.errors import TEMAtomsError
from napari_tem_atoms.events import Notice
from napari_tem_atoms.models import model_metadata
from napari_tem_atoms.samples import synthetic_gold_stack
from napari_tem_atoms.simulation.microscope import wavelength

LAMBDA = wavelength(300e3)


def test_sin_chi_follows_the_phase_error_and_astigmatism_spans_directions():
    spacing = 2.0
    k = 1 / spacing
    # Cs = 0: χ = π λ k² C10 with C10 = −defocus, so sin χ = 1 at defocus −1 / (2 λ k²).
    peak = -1 / (2 * LAMBDA * k**2)
    low, high = reflection_transfer(0.0, peak, {"r": spacing})["r"]
    assert low == pytest.approx(1.0, abs=1e-9) and high == pytest.approx(1.0, abs=1e-9)
    # Astigmatism A: the effective C10 runs over C10 ± A with direction, so sin χ does too.
    defocus, astigmatism = -40.0, 30.0
    low, high = reflection_transfer(0.0, defocus, {"r": spacing}, astigmatism=astigmatism)["r"]
    ends = np.sin(np.pi * LAMBDA * k**2 * (-defocus + np.array([-astigmatism, astigmatism])))
    assert low == pytest.approx(ends.min(), abs=1e-6)
    assert high == pytest.approx(ends.max(), abs=1e-6)


def test_windows_hold_the_defoci_that_transfer_every_reflection():
    cs = -15e4
    windows = transfer_windows(cs, GOLD_REFLECTIONS)
    assert len(windows) == 2
    (first_low, first_high), (second_low, second_high) = windows
    assert first_low < -100 < first_high < 0 < second_low < 100 < second_high

    def transferred(defocus: float) -> bool:
        spans = reflection_transfer(cs, defocus, GOLD_REFLECTIONS).values()
        return all(min(abs(lo), abs(hi)) >= MINIMUM_TRANSFER and lo * hi > 0
                   for lo, hi in spans)

    for low, high in windows:  # the edges are where the transfer crosses the minimum
        assert transferred(low) and transferred(high)
        assert not transferred(high + 1.0)
        assert low == -200.0 or not transferred(low - 1.0)
    # Astigmatism in its worst direction narrows every window.
    narrower = transfer_windows(cs, GOLD_REFLECTIONS, astigmatism=20.0)
    assert len(narrower) == 2
    for (low, high), (tight_low, tight_high) in zip(windows, narrower, strict=True):
        assert low < tight_low and tight_high < high


def test_the_warning_names_the_weak_reflections_and_the_defoci_to_prefer():
    assert transfer_warning(-15e4, -80.0, GOLD_REFLECTIONS) is None
    said = transfer_warning(-15e4, 0.0, GOLD_REFLECTIONS)
    assert "{111}" in said and "{200}" in said and "Cs -15 µm" in said
    assert "-182 … -53 Å and 42 … 168 Å" in said
    optics = model_optics(model_metadata("au-hrtem"))
    assert optics.crystal == "gold" and optics.energy == 300e3
    assert optics.warning(None, 0.0) is None and optics.warning(-15e4, None) is None
    ok, line = optics.status(-15e4, -80.0)
    assert ok and line.startswith("✓")
    ok, line = optics.status(-15e4, 0.0)
    assert not ok and line.startswith("⚠") and "-182 … -53 Å or 42 … 168 Å" in line
    assert model_optics(model_metadata("mos2-focal")) is None  # no crystal registered
    shipped = model_metadata("au-hrtem")
    assert shipped.get("crystal") == "gold"  # the shipped weights name their crystal
    # Weights trained under a new name without naming a crystal get no check ...
    own = {key: value for key, value in shipped.items() if key != "crystal"} | {"name": "my-gold"}
    assert model_optics(own) is None
    assert model_optics({**own, "crystal": "gold"}).crystal == "gold"


def test_a_training_configuration_names_a_known_crystal(tmp_path):
    from napari_tem_atoms.training import load_config

    config = tmp_path / "run.toml"
    config.write_text('[model]\nname = "my-gold"\ncrystal = "gold"\n')
    assert load_config(config).model.crystal == "gold"
    config.write_text('[model]\ncrystal = "platinum"\n')
    with pytest.raises(ValueError, match="crystal = 'platinum' is not one of 'gold'"):
        load_config(config)


def test_detection_warns_once_outside_the_windows_and_records_it(tmp_path, capsys):
    stack = synthetic_gold_stack(n_frames=3, shape=(128, 128), particle_radius=6.0, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms = detect_atoms(stack.images, sampling=0.12, cs=-15e4, defocus=0.0)
    said = [w for w in caught if issubclass(w.category, TransferWarning)]
    assert len(said) == 1 and "barely transferred" in str(said[0].message)  # not per frame
    assert "{200}" in atoms.attrs["transfer_warning"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferWarning)
        atoms = detect_atoms(stack.images[0], sampling=0.12, cs=-15e4, defocus=-80.0)
        assert atoms.attrs["transfer_warning"] is None
        assert detect_atoms(stack.images[0], sampling=0.12).attrs["transfer_warning"] is None
        # The event stream says it as a notice, not a warning: its driver says it once.
        said = [event for event in iter_detect_atoms(stack.images[0], sampling=0.12,
                                                     cs=-15e4, defocus=0.0)
                if isinstance(event, Notice)]
        assert [notice.kind for notice in said] == ["transfer"]
        assert said[0].warning_class is TransferWarning

    path = tmp_path / "stack.npy"
    np.save(path, stack.images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["detect", str(path), "--sampling", "0.12", "--cs-um", "-15", "--defocus",
                     "0", "-o", str(tmp_path / "atoms.csv")])
    assert code == 0
    assert capsys.readouterr().err.count("warning: at Cs -15 µm and defocus 0 Å") == 1
    assert not [w for w in caught if issubclass(w.category, TransferWarning)]  # the line only


def test_transfer_command_prints_the_windows_and_checks_defoci(capsys):
    assert main(["transfer", "--cs-um", "-15", "--defocus", "-60", "-52", "0", "300"]) == 0
    out = capsys.readouterr().out
    assert "-182 … -53 Å and 42 … 168 Å" in out
    lines = out.splitlines()
    assert lines[-4] == "at -60 Å: sin χ {111} +0.57, {200} +0.70 (transferred)"
    # 0.498 is shown as 0.49 (towards zero), not as the 0.50 it fails to reach.
    assert lines[-3].startswith("at -52 Å: sin χ {111} +0.49,") and "barely" in lines[-3]
    assert "barely transferred" in lines[-2] and lines[-2].startswith("at 0 Å")
    assert lines[-1].endswith("(outside the model's training range)")
    assert main(["transfer", "--cs-um", "-15", "--astigmatism", "30", "--defocus", "-60"]) == 0
    out = capsys.readouterr().out
    assert "-152 … -83 Å and 72 … 138 Å" in out and "|A1| 30 Å" in out
    assert "{200} +0.33 … +0.94" in out  # astigmatism: a range over directions
    for arguments, message in ((["--astigmatism", "-3"], "magnitude"),
                               (["--cs-um", "1000"], "Cs 1000 µm is outside"),
                               (["--model", "mos2-focal"], "names no crystal")):
        command = ["transfer", "--cs-um", "-15", *arguments]
        assert main(command) == 1, command
        assert message in capsys.readouterr().err


def test_optics_is_the_one_chi_of_simulation_and_analysis():
    import numpy as np

    from napari_tem_atoms import optics
    from napari_tem_atoms.analysis import transfer
    from napari_tem_atoms.simulation.microscope import MicroscopeSettings, phase_error

    settings = MicroscopeSettings(defocus=-60.0, cs=-15e4, astigmatism=5.0,
                                  astigmatism_angle=0.3)
    k = np.linspace(-1.0, 1.0, 11)
    np.testing.assert_array_equal(
        phase_error(k[:, None], k[None], settings),
        optics.phase_error(k[:, None], k[None], 300e3, -60.0, -15e4, 5.0, 0.3))
    assert transfer.reflection_transfer is optics.reflection_transfer


def test_transfer_report_gives_the_verdict_per_defocus():
    from napari_tem_atoms.analysis.transfer import transfer_report

    lines = transfer_report(model_metadata("au-hrtem"), "au-hrtem", -15e4, [-60.0, 0.0, 500.0])
    assert lines[0].startswith("au-hrtem: gold ({111} 2.35 Å, {200} 2.04 Å) at 300 kV")
    assert lines[2].endswith("(transferred)") and "barely transferred" in lines[3]
    assert lines[4].endswith("(outside the model's training range)")
    with pytest.raises(TEMAtomsError, match="Cs 90 µm is outside"):
        transfer_report(model_metadata("au-hrtem"), "au-hrtem", 90e4)
