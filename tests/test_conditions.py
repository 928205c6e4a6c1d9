"""Imaging conditions (Cs, defocus) as an optional input of the detector."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_tem_atoms import TEMAtomsError
from napari_tem_atoms.analysis import detect_atoms, iter_detect_atoms
from napari_tem_atoms.analysis.conditions import (
    CS_SCALE,
    DEFOCUS_SCALE,
    condition_vector,
    model_condition_vector,
)
from napari_tem_atoms.analysis.detect import predict_heatmap
from napari_tem_atoms.batch import detect_frame
from napari_tem_atoms.events import Progress
from napari_tem_atoms.models import load_model, save_model
from napari_tem_atoms.models.unet import UNet
from napari_tem_atoms.simulation.microscope import MicroscopeSettings
from napari_tem_atoms.training import load_config
from napari_tem_atoms.training.card import model_card
from napari_tem_atoms.training.data import ConditionDraw, SampleMaker
from napari_tem_atoms.training.evaluate import IN_WINDOW, TOLD, told_conditions


def _lattice_particle(size: int = 96, sampling: float = 0.1) -> dict:
    """A weak-phase 'particle': Gaussian phase bumps on a 2.5 Å square lattice."""
    spacing = 2.5 / sampling
    centres = np.array([(r, c) for r in np.arange(15, size - 15, spacing)
                        for c in np.arange(15, size - 15, spacing)])
    yy, xx = np.mgrid[:size, :size]
    phase = sum(0.3 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 8.0) for r, c in centres)
    columns = np.column_stack([centres * sampling, np.full(len(centres), 5.0)])
    return {"waves": np.exp(1j * phase)[None].astype(np.complex64), "sampling": sampling,
            "columns": columns}


def _conditioned_network(seed: int = 0) -> UNet:
    """A small network with condition inputs, moved away from its zero (identity) start."""
    torch.manual_seed(seed)
    network = UNet(base_channels=4, depth=2, conditions=4)
    for film in network.film:
        torch.nn.init.normal_(film.linear.weight, std=0.5)
    return network.eval()


def test_the_vector_scales_values_and_flags_what_is_known():
    np.testing.assert_allclose(condition_vector(-15e4, -50.0),
                               [-15e4 / CS_SCALE, 1, -50 / DEFOCUS_SCALE, 1])
    np.testing.assert_array_equal(condition_vector(), [0, 0, 0, 0])
    np.testing.assert_allclose(condition_vector(defocus=100.0), [0, 0, 0.5, 1])
    with pytest.raises(TEMAtomsError, match="defocus must be a finite number"):
        condition_vector(0.0, float("nan"))
    with pytest.raises(TEMAtomsError, match="Cs must be a number"):
        condition_vector("minus fifteen")


def test_new_condition_layers_leave_a_trained_network_unchanged():
    torch.manual_seed(0)
    plain = UNet(base_channels=4, depth=2).eval()
    told = UNet(base_channels=4, depth=2, conditions=4).eval()
    missing, unexpected = told.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(name.startswith("film.") for name in missing)
    images = torch.randn(2, 1, 32, 32)
    conditions = torch.tensor([[-0.5, 1.0, 0.3, 1.0], [0.2, 1.0, 0.0, 0.0]])
    with torch.no_grad():
        assert torch.equal(plain(images), told(images, conditions))
        assert torch.equal(plain(images), told(images))


def test_conditions_change_the_map_and_none_means_unknown():
    network = _conditioned_network()
    images = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        unknown = network(images)
        assert torch.equal(unknown, network(images, torch.zeros(1, 4)))
        told = network(images, torch.tensor([[-0.5, 1.0, -0.25, 1.0]]))
    assert (told - unknown).abs().max() > 1e-3


def test_training_draws_tell_each_value_with_its_chance_and_error():
    draw = ConditionDraw(cs_known=0.7, defocus_known=0.4, cs_error=2e4, defocus_error=30.0)
    settings = MicroscopeSettings(cs=-15e4, defocus=-50.0)
    rng = np.random.default_rng(1)
    vectors = np.array([draw.draw(rng, settings) for _ in range(4000)])
    assert abs(vectors[:, 1].mean() - 0.7) < 0.03 and abs(vectors[:, 3].mean() - 0.4) < 0.03
    cs = vectors[vectors[:, 1] == 1, 0] * CS_SCALE
    defocus = vectors[vectors[:, 3] == 1, 2] * DEFOCUS_SCALE
    assert np.abs(cs + 15e4).max() <= 2e4 + 1 and np.abs(cs + 15e4).max() > 1.5e4
    assert np.abs(defocus + 50).max() <= 30 + 1e-3 and np.abs(defocus + 50).std() > 5
    assert np.all(vectors[vectors[:, 1] == 0, 0] == 0)  # unknown: a zero, not the value
    with pytest.raises(ValueError, match=r"\[conditions\] cs_known must be in 0 … 1"):
        ConditionDraw(cs_known=1.5)


def test_a_sample_with_conditions_has_the_image_drawn_without():
    particle = _lattice_particle()
    plain = SampleMaker([particle], [], model_sampling=0.2)
    told = SampleMaker([particle], [], model_sampling=0.2, conditions=ConditionDraw())
    a, b = plain.patch(np.random.default_rng(5), 64), told.patch(np.random.default_rng(5), 64)
    assert len(a) == 3 and len(b) == 4 and b[3].shape == (4,)
    sample_a = plain.make(np.random.default_rng(6))
    sample_b = told.make(np.random.default_rng(6))
    np.testing.assert_array_equal(sample_a.recorded, sample_b.recorded)
    assert sample_a.conditions is None and sample_b.conditions is not None


TOLD_METADATA = {
    "architecture": {"in_channels": 1, "out_channels": 1, "base_channels": 4, "depth": 2,
                     "conditions": 4},
    "sampling": 0.2, "classes": ["column"], "threshold": 0.5,
    "conditions": {"cs_scale_angstrom": CS_SCALE, "defocus_scale_angstrom": DEFOCUS_SCALE,
                   "training": {"cs_known": 0.7, "defocus_known": 0.6, "cs_error": 2e4,
                                "defocus_error": 30.0}},
    "training": {"envelope": {"cs": [-30e4, 30e4], "defocus": [-200.0, 200.0]}},
}


@pytest.fixture
def told_model(tmp_path):
    path = tmp_path / "told.safetensors"
    save_model(path, _conditioned_network(), TOLD_METADATA)
    return path


def _steps(events):
    """The per-frame results of an event stream (its progress items)."""
    return [event.item for event in events if isinstance(event, Progress)]


def _maps(loaded, image, **conditions):
    steps = _steps(iter_detect_atoms(image, loaded, sampling=0.1, threshold=0.0,
                                     keep_heatmaps=True, **conditions))
    return np.stack([step.heatmap for step in steps])


def test_detection_uses_the_conditions_on_every_path_and_records_them(told_model):
    loaded = load_model(told_model, device="cpu")
    assert loaded.takes_conditions
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 96, 96)).astype(np.float32)  # a stack: every frame told
    unknown = _maps(loaded, image)
    told = _maps(loaded, image, cs=-15e4, defocus=-50.0)
    assert np.abs(told - unknown).max(axis=(1, 2)).min() > 1e-3
    np.testing.assert_array_equal(_maps(loaded, image, cs=None, defocus=None), unknown)
    mirrored = _steps(iter_detect_atoms(image[0], loaded, sampling=0.1, keep_heatmaps=True,
                                        average_mirrors=True, cs=-15e4, defocus=-50.0))
    mirrored_unknown = _steps(iter_detect_atoms(image[0], loaded, sampling=0.1,
                                                keep_heatmaps=True, average_mirrors=True))
    assert np.abs(mirrored[0].heatmap - mirrored_unknown[0].heatmap).max() > 1e-3
    atoms = detect_atoms(image, loaded, sampling=0.1, threshold=0.0, cs=-15e4, defocus=-50)
    assert atoms.attrs["cs"] == -15e4 and atoms.attrs["defocus"] == -50.0
    assert isinstance(atoms.attrs["defocus"], float)
    assert detect_atoms(image, loaded, sampling=0.1, threshold=0.0).attrs["cs"] is None
    # The batch path (local and on a cluster: the same function) passes them through.
    told_frame = detect_frame(image[0], str(told_model), 0.1, 0.0, "cpu", cs=-15e4,
                              defocus=-50.0)
    expected = detect_atoms(image[0], loaded, sampling=0.1, threshold=0.0, cs=-15e4,
                            defocus=-50.0)
    np.testing.assert_allclose(told_frame[["y", "x"]].to_numpy(),
                               expected[["y", "x"]].to_numpy())


def test_values_outside_the_trained_range_are_refused(told_model):
    loaded = load_model(told_model, device="cpu")
    image = np.random.default_rng(0).normal(size=(96, 96))
    with pytest.raises(TEMAtomsError, match=r"Cs 1200 µm is outside what the model was "
                                            r"trained on \(-32 … 32 µm\)"):
        detect_atoms(image, loaded, sampling=0.1, cs=1200e4)  # an uncorrected microscope
    with pytest.raises(TEMAtomsError, match=r"defocus 500 Å is outside .* \(-230 … 230 Å\)"):
        detect_atoms(image, loaded, sampling=0.1, defocus=500.0)
    detect_atoms(image, loaded, sampling=0.1, cs=31e4, defocus=-225.0)  # within the errors


def test_the_vector_uses_the_model_s_own_scales():
    metadata = {**TOLD_METADATA, "conditions": {**TOLD_METADATA["conditions"],
                                                "defocus_scale_angstrom": 100.0}}
    np.testing.assert_allclose(model_condition_vector(metadata, None, 50.0), [0, 0, 0.5, 1])


def test_a_model_without_conditions_refuses_them_plainly(tmp_path):
    network = UNet(base_channels=4, depth=2).eval()
    path = tmp_path / "plain.safetensors"
    save_model(path, network, {"architecture": {"in_channels": 1, "out_channels": 1,
                                                "base_channels": 4, "depth": 2},
                               "sampling": 0.2, "classes": ["column"]})
    image = np.random.default_rng(0).normal(size=(96, 96))
    with pytest.raises(TEMAtomsError, match="does not take imaging conditions"):
        detect_atoms(image, str(path), sampling=0.1, defocus=-50.0)
    with pytest.raises(TEMAtomsError, match="does not take imaging conditions"):
        predict_heatmap(load_model(path, device="cpu"), image.astype(np.float32),
                        conditions=condition_vector(defocus=-50.0))


@pytest.mark.parametrize("section, words", [
    ("[model]\nconditions = false\n[conditions]\ncs_known = 0.5\n",
     "applies only to a network with condition inputs"),
    ("[model]\nconditions = true\n[conditions]\ncs_known = \"0.7\"\n",
     "cs_known must be a number"),
    ("[model]\nconditions = true\n[conditions]\ndefocus_error = -1.0\n",
     "defocus_error must be ≥ 0"),
])
def test_the_conditions_section_is_checked_when_read(tmp_path, section, words):
    config = tmp_path / "told.toml"
    config.write_text(section)
    with pytest.raises(ValueError, match=words) as caught:
        load_config(config)
    assert "told.toml" in str(caught.value)


def test_evaluation_tells_conditions_within_the_stated_errors():
    settings = MicroscopeSettings(cs=10e4, defocus=80.0)
    told = np.array([told_conditions(settings, 3, index) for index in range(200)])
    assert np.abs(told[:, 0] - 10e4).max() <= 2e4 and np.abs(told[:, 1] - 80).max() <= 30
    assert np.abs(told[:, 1] - 80).max() > 25  # the errors span their range
    assert told_conditions(settings, 3, 7) == told_conditions(settings, 3, 7)  # paired


def test_the_card_describes_the_input_and_scores_told_and_untold():
    envelope = {"energy": 3e5, "defocus": [-200, 200], "cs": [-3e5, 3e5],
                "focal_spread": [20, 50], "astigmatism": [0, 50], "sampling": [0.05, 0.25],
                "dose": [10, 1e4], "blur": [0, 0.3], "mtf_floor": [0, 0.3],
                "mtf_half": [0.3, 1], "mtf_power": [2, 3], "perfect_mtf_probability": 0.2,
                "gamma": [0.8, 1.2]}
    waves = {"energy": 3e5, "simulation_sampling": 0.0625, "slice_thickness": 2.0,
             "frozen_phonons": 3, "rms_displacement": 0.08, "aperture": 4.0,
             "carbon_thickness": [20, 50]}
    data = {"particles": 2, "atoms_total": 400, "diameter_range_angstrom": [10, 20],
            "shapes": {"octahedron": 2}, "zone_axes": {"[100]": 2}, "carbon_slabs": 2,
            "support_probability": 0.5, "data_seed": 1}
    metadata = {"name": "t", "description": "d", "sampling": 0.2, "classes": ["column"],
                "architecture": {"in_channels": 1, "out_channels": 1, "base_channels": 4,
                                 "depth": 2, "conditions": 4},
                "normalisation": "n", "threshold": 0.4,
                "conditions": {"training": {"cs_known": 0.7, "defocus_known": 0.6,
                                            "cs_error": 2e4, "defocus_error": 30.0}},
                "training": {"steps": 2, "batch_size": 2, "patch_size": 64,
                             "learning_rate": 1e-3, "seed": 0, "samples_seen": 4,
                             "parameters": 10, "data": data, "exit_waves": waves,
                             "envelope": envelope}}
    rows = [{"method": method, "dose": dose, "precision": 0.9, "recall": 0.8, "f1": f1,
             "rmse_pm": 14.0, "columns": 100, "images": images}
            for method, f1, images in (("network", 0.85, 96), ("classical peer", 0.4, 96),
                                       (TOLD, 0.93, 96), (IN_WINDOW, 0.99, 39))
            for dose in (100, 1000)]
    card = model_card(metadata, "0" * 64, scores=pd.DataFrame(rows))
    # The transfer-window table needs a model of a registered crystal ("t" is none).
    assert "Where the microscope transfers the lattice" not in card
    gold = model_card({**metadata, "name": "au-hrtem"}, "0" * 64, scores=pd.DataFrame(rows))
    assert "### Where the microscope transfers the lattice" in gold
    assert "{111} (2.35 Å) and {200} (2.04 Å)" in gold
    assert "| 1000 | 39 | 0.990 | 0.900 | 0.800 | 14.0 |" in gold
    assert "Cs was given for 70% of the images (off by up to 2 µm)" in card
    assert "zero when added, so adding them leaves a network's maps as they were" in card
    assert "### With the imaging conditions given" in card
    assert "| 1000 | 0.930 | 0.900 | 0.800 | 14.0 |" in card
    assert "Told the imaging conditions: F1 0.930 at 100 e/Å²; F1 0.930 at 1000" in card
