"""Evaluation and training draws: paired doses, the peer's tuning, the hard regime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_tem_atoms.simulation.microscope import MicroscopeEnvelope, expected_image, form_image
from napari_tem_atoms.training import load_config
from napari_tem_atoms.training.data import HardRegime, SampleMaker
from napari_tem_atoms.training.evaluate import PEER_THRESHOLDS, ClassicalPeer, _images


def _lattice_particle(size: int = 128, sampling: float = 0.1) -> dict:
    """A weak-phase 'particle': Gaussian phase bumps on a 2.5 Å square lattice."""
    spacing = 2.5 / sampling
    centres = np.array([(r, c) for r in np.arange(20, size - 20, spacing)
                        for c in np.arange(20, size - 20, spacing)])
    yy, xx = np.mgrid[:size, :size]
    phase = np.zeros((size, size))
    for r, c in centres:
        phase += 0.3 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.0**2))
    columns = np.column_stack([centres * sampling, np.full(len(centres), 5.0)])
    return {"waves": np.exp(1j * phase)[None].astype(np.complex64), "sampling": sampling,
            "columns": columns}


def test_every_dose_images_the_same_particle_under_the_same_microscope():
    maker = SampleMaker([_lattice_particle()], [], model_sampling=0.2)
    envelope = MicroscopeEnvelope()
    low = _images(maker, envelope, 1e7, 3, seed=7)
    high = _images(maker, envelope, 1e8, 3, seed=7)
    for (image_low, sampling_low, *_), (image_high, sampling_high, *_) in zip(low, high,
                                                                          strict=True):
        assert sampling_low == sampling_high  # the same draw of the microscope
        assert image_low.shape == image_high.shape
        # Same image up to shot noise (doses high enough to see it through the noise).
        assert np.corrcoef(image_low.ravel(), image_high.ravel())[0, 1] > 0.9
    assert low[0][1] != low[1][1]  # but every image draws its own microscope
    assert not np.array_equal(low[0][0], high[0][0])  # and the noise differs


def test_the_peer_tuning_shortcut_finds_what_the_peer_detects():
    rng = np.random.default_rng(3)
    image = np.zeros((96, 96))
    yy, xx = np.mgrid[:96, :96]
    for r, c in rng.uniform(8, 88, size=(25, 2)):
        image += rng.uniform(0.5, 2.0) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 8.0)
    image += rng.normal(0, 0.2, image.shape)
    lowest = ClassicalPeer(0.4, PEER_THRESHOLDS[0])
    peaks, values = lowest.maxima(image, 0.1, 1.0)
    for threshold in (0.5, 1.0, 2.0, 3.0):
        direct = ClassicalPeer(0.4, threshold).detect(image, 0.1, 1.0)
        shortcut = peaks[values > threshold]
        assert len(direct) > 0
        assert sorted(map(tuple, direct)) == sorted(map(tuple, shortcut))


def _zone_particles() -> list[dict]:
    particles = []
    for zone in ("[100]", "[110]", "[110]", "five-fold"):
        particle = _lattice_particle(64 if zone == "[100]" else 80)  # told apart by size
        particle["info"] = np.array(json.dumps({"zone_axis": zone}))
        particles.append(particle)
    return particles


def test_the_hard_regime_draws_its_zone_axis_and_defocus_as_often_as_asked():
    particles = _zone_particles()
    regime = HardRegime("[100]", (-90.0, 40.0), fraction=0.5)
    maker = SampleMaker(particles, [], 0.2, hard_regimes=[regime])
    rng = np.random.default_rng(0)
    draws = [maker.make(rng) for _ in range(400)]
    along_100 = np.array([len(s.columns) == len(particles[0]["columns"]) for s in draws])
    in_range = np.array([-90 <= s.settings.defocus <= 40 for s in draws])
    # Half the draws come from the regime, half from the envelope, where a quarter of the
    # particles are [100] and 130 Å of the 400 Å defocus range falls in the regime's.
    assert along_100.mean() == pytest.approx(0.5 + 0.5 / 4, abs=0.06)
    assert in_range.mean() == pytest.approx(0.5 + 0.5 * 130 / 400, abs=0.06)
    assert in_range[along_100].mean() > 0.75
    # Given a particle and a microscope (evaluation), the regime is never used.
    settings = MicroscopeEnvelope().draw(np.random.default_rng(1))
    given = maker.make(np.random.default_rng(2), settings, particle_index=1)
    assert given.settings == settings


def test_without_a_hard_regime_the_training_stream_is_unchanged():
    particles = _zone_particles()
    plain = SampleMaker(particles, [], 0.2)
    off = SampleMaker(particles, [], 0.2, hard_regimes=[HardRegime(fraction=0.0)])
    first = plain.make(np.random.default_rng(5))
    second = off.make(np.random.default_rng(5))
    assert first.settings == second.settings
    assert np.array_equal(first.recorded, second.recorded)


def test_several_hard_regimes_share_the_draws_by_their_fractions():
    # One [100] particle in seven: "any" drawn as balanced gives [100] a third of the time,
    # drawn without balancing a seventh.
    particles = _zone_particles()
    particles = particles[:2] + [particles[1]] * 2 + particles[1:]
    regimes = [HardRegime("[100]", (-90.0, -80.0), 0.3), HardRegime("any", (150.0, 160.0), 0.3)]
    maker = SampleMaker(particles, [], 0.2, balance_zones=True, hard_regimes=regimes)
    rng = np.random.default_rng(3)
    draws = [maker.make(rng) for _ in range(400)]
    defocus = np.array([s.settings.defocus for s in draws])
    along_100 = np.array([len(s.columns) == len(particles[0]["columns"]) for s in draws])
    first = (defocus >= -90) & (defocus <= -80)
    second = (defocus >= 150) & (defocus <= 160)
    # Each regime: its 30 % plus the envelope's 40 % × 10/400 of the defocus range.
    assert first.mean() == pytest.approx(0.3 + 0.4 * 10 / 400, abs=0.06)
    assert second.mean() == pytest.approx(0.3 + 0.4 * 10 / 400, abs=0.06)
    assert along_100[first].mean() > 0.9
    assert along_100[second].mean() == pytest.approx(1 / 3, abs=0.08)
    # Shares that add up to exactly 1 are allowed (0.2 + 0.4 + 0.3 + 0.1 > 1 in floats).
    exact = [HardRegime("any", fraction=f) for f in (0.2, 0.4, 0.3, 0.1)]
    assert len(SampleMaker(particles, [], 0.2, hard_regimes=exact).hard_regimes) == 4
    with pytest.raises(ValueError, match=r"add up to 1\.2, more than 1"):
        SampleMaker(particles, [], 0.2, hard_regimes=[HardRegime("any", fraction=0.6)] * 2)


def test_the_hard_regimes_are_read_from_the_training_configuration(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[data]\n[[data.hard_regimes]]\nzone_axis = "[100]"\nfraction = 0.25\n'
                      'defocus = [-80, 30]\n[[data.hard_regimes]]\nzone_axis = "any"\n'
                      'defocus = [120.0, 200.0]\nfraction = 0.1\n')
    regimes = load_config(config).data.hard_regimes
    assert regimes == (HardRegime("[100]", (-80.0, 30.0), 0.25),
                       HardRegime("any", (120.0, 200.0), 0.1))
    table = '[data]\n[[data.hard_regimes]]\nzone_axis = "[100]"\n'
    for body, message in (
            ('zone = "[110]"\ndefocus = [-80, 30]\nfraction = 0.2\n', "unknown keys zone"),
            ('defocus = [-80, 30]\n', "missing keys fraction"),
            ('defocus = [-80]\nfraction = 0.2\n', r"defocus must be \[low, high\]"),
            ('defocus = [30, -80]\nfraction = 0.2\n', r"defocus must be \[low, high\]"),
            ('defocus = [-80, 30]\nfraction = "0.2"\n', "fraction must be a number"),
            ('defocus = [-80, 30]\nfraction = 0.7\n' + table[7:]
             + 'defocus = [-80, 30]\nfraction = 0.7\n', "add up to 1.4")):
        config.write_text(table + body)
        with pytest.raises(ValueError, match=r"run.toml: \[\[data.hard_regimes\]\]: .*" + message):
            load_config(config)
    # Last stop's flat keys: the message says what replaced them.
    config.write_text('[data]\nhard_fraction = 0.25\n')
    with pytest.raises(ValueError, match=r"run.toml: .*hard_fraction.*\[\[data.hard_regimes\]\]"):
        load_config(config)
    with pytest.raises(ValueError, match="no particle along"):
        SampleMaker(_zone_particles(), [], 0.2, hard_regimes=[HardRegime("[111]", fraction=0.1)])


def test_a_noisy_image_is_shot_noise_around_the_expected_image():
    particle = _lattice_particle()
    settings = MicroscopeEnvelope().draw(np.random.default_rng(4))
    expected, sampling = expected_image(particle["waves"], particle["sampling"], settings)
    assert expected.mean() == pytest.approx(1.0, rel=1e-5)
    counts, same_sampling = form_image(particle["waves"], particle["sampling"], settings,
                                       np.random.default_rng(9))
    assert same_sampling == sampling
    electrons = settings.dose * sampling**2
    redrawn = np.random.default_rng(9).poisson(expected * electrons)
    assert np.array_equal(counts, redrawn.astype(np.float32))


def test_scores_by_height_pair_the_models_and_count_every_height():
    from napari_tem_atoms.training.evaluate import HEIGHT_BINS, evaluate_by_height

    particle = _lattice_particle()
    particle["columns"][::3, 2] = 1  # a third of the columns are single atoms
    particle["info"] = np.array(json.dumps({"zone_axis": "[100]"}))
    table = evaluate_by_height(["au-hrtem", "au-hrtem"], [particle], [], doses=(1000,),
                               images_per_dose=2, log=lambda line: None)
    assert len(table) == 2 * (1 + len(HEIGHT_BINS))
    first, second = (table[table.index < len(table) // 2], table[table.index >= len(table) // 2])
    np.testing.assert_array_equal(first["recall"].fillna(-1), second["recall"].fillna(-1))
    singles = table[table["heights"] == "1"]
    assert (singles["columns"] == 2 * int((particle["columns"][:, 2] == 1).sum())).all()
    assert table[table["heights"] == "3-5"]["columns"].iloc[0] > 0
