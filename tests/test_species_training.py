"""MoS2 structures and their truth, and a few species training steps on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_tem_atoms.simulation.mos2 import SPECIES, MoS2Config, random_mos2_flake

#: Species-aware F1 the shipped mos2-focal must beat on a clean, high-dose simulated series
#: (measured 0.972: Mo 0.986, S2 0.952, S1 1.0; its model card gives the scores per dose).
SPECIES_F1_FLOOR = 0.85


def test_flake_truth_counts_every_column_left_by_class():
    config = MoS2Config(field=30.0, flake_radius=(8.0, 10.0),
                        sulfur_vacancy_fraction=(0.2, 0.2), double_sulfur_vacancy_fraction=0.0,
                        molybdenum_vacancy_fraction=(0.0, 0.0), graphene_probability=0.0)
    atoms, columns, info = random_mos2_flake(np.random.default_rng(1), config)
    symbols = np.array(atoms.get_chemical_symbols())
    counts = {name: int((columns[:, 2] == k).sum()) for k, name in enumerate(SPECIES)}
    assert counts == info["counts"]
    assert counts["Mo"] == (symbols == "Mo").sum()
    # Every S atom is in an S2 column (2 atoms) or an S1 column (1 atom).
    assert (symbols == "S").sum() == 2 * counts["S2"] + counts["S1"]
    assert 0.1 < counts["S1"] / (counts["S1"] + counts["S2"]) < 0.3
    # Mo and S columns alternate on a honeycomb: the nearest S column to Mo is 1.84 Å away.
    mo, sulfur = columns[columns[:, 2] == 0, :2], columns[columns[:, 2] > 0, :2]
    nearest = np.linalg.norm(mo[:, None] - sulfur[None], axis=-1).min(axis=1)
    np.testing.assert_allclose(np.median(nearest), 3.18 / np.sqrt(3), atol=0.02)
    assert np.all((atoms.positions[:, :2] > 0) & (atoms.positions[:, :2] < 30.0))


def test_graphene_support_lies_under_the_flake():
    config = MoS2Config(field=24.0, flake_radius=(6.0, 7.0), graphene_probability=1.0)
    atoms, _, info = random_mos2_flake(np.random.default_rng(2), config)
    symbols = np.array(atoms.get_chemical_symbols())
    assert info["graphene"] and (symbols == "C").sum() > 100
    assert atoms.positions[symbols == "C", 2].max() < atoms.positions[symbols == "S", 2].min()


@pytest.mark.slow
def test_a_few_species_training_steps_write_a_species_model(tmp_path, capsys):
    from napari_tem_atoms.analysis.species import detect_species
    from napari_tem_atoms.cli import main
    from napari_tem_atoms.models import model_metadata

    config = tmp_path / "tiny.toml"
    config.write_text("""
task = "species"
output = "run"
[data]
folder = "waves"
train_flakes = 2
validation_flakes = 1
[model]
name = "tiny-species"
base_channels = 4
depth = 2
[train]
steps = 3
batch_size = 2
patch_size = 64
validate_every = 3
checkpoint_every = 3
validation_images = 1
workers = 0
[mos2]
field = 20.0
flake_radius = [5.0, 6.0]
frozen_phonons = 1
""")
    assert main(["train", str(config)]) == 0
    weights = tmp_path / "run" / "tiny-species.safetensors"
    metadata = model_metadata(weights)
    assert metadata["task"] == "species" and metadata["classes"] == list(SPECIES)
    assert metadata["architecture"]["in_channels"] == 3
    assert json.loads((tmp_path / "run" / "tiny-species.json").read_text())["sha256"]
    series = np.random.default_rng(0).normal(100, 10, (3, 96, 96))
    atoms = detect_species(series, str(weights), sampling=0.1, align=False)
    assert set(atoms["species"]) <= set(SPECIES)

    # Training longer resumes from the checkpoint and follows a schedule over the new length.
    config.write_text(config.read_text().replace("steps = 3", "steps = 5"))
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 3" in out and "re-laid over 5 steps" in out
    assert model_metadata(weights)["training"]["steps"] == 5


@pytest.mark.slow
def test_shipped_species_model_labels_a_simulated_focal_series():
    """The bundled mos2-focal on a fresh abTEM flake (not a training one) at high dose."""
    from dataclasses import replace

    from napari_tem_atoms.analysis.species import detect_species
    from napari_tem_atoms.simulation.exit_waves import (
        ExitWaveConfig,
        _configure_abtem,
        _multislice,
    )
    from napari_tem_atoms.simulation.microscope import MicroscopeSettings, form_image
    from napari_tem_atoms.training.species import score_species

    _configure_abtem()
    config = MoS2Config(field=32.0, flake_radius=(11.0, 12.0), graphene_probability=0.0,
                        sulfur_vacancy_fraction=(0.15, 0.15), frozen_phonons=1)
    rng = np.random.default_rng(12345)
    atoms, columns, _ = random_mos2_flake(rng, config)
    waves_config = ExitWaveConfig(energy=80e3, min_field=32.0)
    waves = _multislice(atoms, 32.0, waves_config, 1, seed=1)
    settings = MicroscopeSettings(energy=80e3, cs=-20e4, focal_spread=25.0, sampling=0.1,
                                  dose=1e4)
    series, exact = [], 0.1
    for defocus in (-60.0, 0.0, 60.0):
        image, exact = form_image(waves, waves_config.stored_sampling,
                                  replace(settings, defocus=defocus), rng)
        series.append(image)
    atoms_found = detect_species(np.stack(series), "mos2-focal", sampling=exact, align=False)
    found = atoms_found[["y", "x"]].to_numpy()
    classes = atoms_found["species"].map({name: k for k, name in enumerate(SPECIES)}).to_numpy()
    truth = columns.copy()
    truth[:, :2] /= exact
    scores = score_species(found, classes, truth, exact)
    assert scores["all"].f1 > SPECIES_F1_FLOOR, {k: round(v.f1, 3) for k, v in scores.items()}
