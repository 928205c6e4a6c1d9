"""STEM: the incoherent simulator, the model chosen by imaging mode, dark columns, detection."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_tem_atoms import detect_atoms
from napari_tem_atoms.analysis.detect import DomainWarning
from napari_tem_atoms.analysis.modes import choose_model, column_polarity, contrast_for_model
from napari_tem_atoms.io import Calibration, TEMImage
from napari_tem_atoms.simulation.stem import (
    IGNORED_FRACTION,
    TRAINING_STRUCTURES,
    VISIBLE_FRACTION,
    ProjectedStructure,
    StemEnvelope,
    StemSettings,
    StemStructureSpec,
    atom_weight,
    project_structure,
    render_stem_image,
)
from napari_tem_atoms.training.metrics import match_columns
from napari_tem_atoms.training.stem import StemSampleMaker, evaluate_stem, image_maxima

STEM_MODEL = {"dark_columns": ["STEM-ABF", "STEM-BF"]}


def _one_column(y: float, x: float, z: int = 79) -> ProjectedStructure:
    spec = StemStructureSpec("Au", "bulk", (0, 0, 1))
    return ProjectedStructure(spec, np.array([[y, x]]), np.array([[10]]), np.array([z]), 5.0)


def _quiet(settings: StemSettings) -> StemSettings:
    """No noise, no scan distortion: the image as the optics make it."""
    return replace(settings, dose=1e12, readout_noise=0.0, line_jitter=0.0, flyback=0.0,
                   drift=(0.0, 0.0), line_gain=0.0, amorphous=0.0, rotation=0.0,
                   background=0.0)


def test_a_haadf_column_is_a_bright_peak_where_its_label_says():
    rng = np.random.default_rng(0)
    settings = _quiet(StemSettings(mode="HAADF", sampling=0.1, defocus=0.0, cs=0.0))
    image, columns, visibility = render_stem_image(_one_column(0.37, -0.52), settings,
                                                   (64, 64), rng)
    peak = np.unravel_index(np.argmax(image), image.shape)
    assert len(columns) == 1 and visibility[0] == pytest.approx(1.0)
    # The field's centre is pixel 31.5; the column 0.37 Å below and 0.52 Å left of it.
    assert columns[0] == pytest.approx([31.5 + 3.7, 31.5 - 5.2], abs=1e-6)
    assert np.hypot(*(np.array(peak) - columns[0])) < 1.0
    assert image[peak] > 20 * np.median(image)


def test_an_abf_column_is_a_dark_dip():
    rng = np.random.default_rng(0)
    settings = _quiet(StemSettings(mode="ABF", sampling=0.1))
    image, columns, _ = render_stem_image(_one_column(0.0, 0.0), settings, (64, 64), rng)
    dip = np.unravel_index(np.argmin(image), image.shape)
    assert np.hypot(*(np.array(dip) - columns[0])) < 1.0
    assert image[dip] < 0.8 * np.median(image)


def _nine_gold_columns() -> ProjectedStructure:
    """A 3 × 3 grid of gold columns 6 Å apart, centred on 0."""
    spec = StemStructureSpec("Au", "bulk", (0, 0, 1))
    positions = np.array([[y, x] for y in (-6.0, 0.0, 6.0) for x in (-6.0, 0.0, 6.0)])
    return ProjectedStructure(spec, positions, np.full((9, 1), 10), np.array([79]), 8.0)


def test_labels_follow_the_scan_distortions():
    """With drift and a fly-back shift, each column's label is where its peak appears."""
    rng = np.random.default_rng(3)
    structure = _nine_gold_columns()
    settings = replace(_quiet(StemSettings(mode="HAADF", sampling=0.1)), drift=(0.004, 0.006),
                       flyback=0.6, flyback_decay=15.0)
    image, columns, _ = render_stem_image(structure, settings, (200, 200), rng)
    for row, col in columns:
        r, c = int(np.rint(row)), int(np.rint(col))
        window = image[r - 4:r + 5, c - 4:c + 5]
        peak = np.unravel_index(np.argmax(window), window.shape)
        assert np.hypot(peak[0] - 4 + r - row, peak[1] - 4 + c - col) <= 1.0


def test_labels_are_where_the_column_is_not_where_one_jittered_line_put_it():
    """Line jitter shifts each line at random: the image of a column averages the lines the
    probe spans, so the label stays on the column (no smooth distortion here: its position)."""
    rng = np.random.default_rng(4)
    structure = _nine_gold_columns()
    settings = replace(_quiet(StemSettings(mode="HAADF", sampling=0.1)), line_jitter=0.2)
    image, columns, _ = render_stem_image(structure, settings, (200, 200), rng)
    expected = (structure.positions + 99.5 * 0.1) / 0.1  # the field's centre: pixel 99.5
    order = np.lexsort(columns.T[::-1])
    assert columns[order] == pytest.approx(expected[np.lexsort(expected.T[::-1])], abs=1e-9)
    quiet, _, _ = render_stem_image(structure, replace(settings, line_jitter=0.0), (200, 200),
                                    np.random.default_rng(4))
    assert np.abs(image - quiet).max() > 0.1 * quiet.max()  # the lines did move


def test_light_atoms_scatter_less_to_high_angles_than_z_to_the_gamma():
    haadf, abf = StemSettings(mode="HAADF", z_exponent=1.7), StemSettings(mode="ABF",
                                                                         z_exponent=0.5)
    oxygen, strontium = atom_weight(np.array([8, 38]), haadf)
    assert oxygen / strontium == pytest.approx(0.5 * (8 / 38) ** 1.7, rel=0.05)
    assert atom_weight(np.array([8]), abf)[0] == pytest.approx(8**0.5)  # ABF: Z^γ


def test_held_out_scoring_also_counts_only_the_columns_the_probe_resolves():
    def smoothed_maxima(image, sampling, mode):
        bright = image if mode == "HAADF" else -image
        return image_maxima(gaussian_filter(bright, 0.3 / sampling), np.percentile(bright, 60))

    [row] = evaluate_stem(smoothed_maxima, [1e6], 3, seed=5)
    # Maxima of the image cannot find a column without a maximum of its own: not asked of them.
    assert row["recall_resolved"] > row["recall"] + 0.02
    assert 0.0 < row["f1_resolved"] <= 1.0 and np.isfinite(row["rmse_resolved_pm"])


def test_structures_project_into_columns_of_the_right_spacing():
    rng = np.random.default_rng(1)
    gold = project_structure(StemStructureSpec("Au", "bulk", (0, 0, 1)), rng, half_width=10)
    spacing = np.sort(np.linalg.norm(gold.positions - gold.positions[0], axis=1))[1]
    assert spacing == pytest.approx(4.078 / 2, abs=0.05)  # fcc [001]: a/2
    mos2 = project_structure(StemStructureSpec("MoS2", "monolayer", (0, 0, 1)), rng,
                             half_width=10)
    assert set(mos2.elements) == {16, 42}
    assert mos2.n_atoms.max() <= 2  # Mo alone, S2 pairs (S1 where one is missing)


def test_samples_mark_faint_columns_as_neither_target_nor_error():
    rng = np.random.default_rng(2)
    strontium_titanate = next(s for s in TRAINING_STRUCTURES
                              if s.name == "SrTiO3" and s.zone_axis == (1, 1, 0))
    maker = StemSampleMaker([project_structure(strontium_titanate, rng)], 0.15)
    sample = maker.make(rng, replace(StemEnvelope().draw(rng, mode="HAADF"),
                                     z_exponent=1.8, rotation=0.0))
    visible, faint = sample.columns[:, 2] == 1, sample.columns[:, 2] == 0
    assert visible.sum() > 0 and faint.sum() > 0  # Sr and Ti-O columns; oxygen columns
    r, c = np.round(sample.columns[faint][0, :2]).astype(int)
    assert sample.mask[r, c] == 0  # oxygen: out of the loss in HAADF


@pytest.mark.parametrize(("mode", "expected"), [
    ("HRTEM", "au-hrtem"), ("STEM-HAADF", "stem-columns"), ("STEM-ABF", "stem-columns"),
    ("STEM", "stem-columns"), ("unknown", "au-hrtem")])
def test_the_model_follows_the_imaging_mode(mode, expected):
    name, reason = choose_model(mode, "Velox metadata")
    assert name == expected
    assert ("not recorded" in reason) if mode == "unknown" else reason.startswith(mode)
    # The HRTEM default names the model that counts atoms and sees single adatoms.
    assert ("au-hrtem-adatoms" in reason) == (expected == "au-hrtem")


def _simulated(mode: str, seed: int = 0, dose: float = 1e6):
    rng = np.random.default_rng(seed)
    structure = project_structure(StemStructureSpec("SrTiO3", "bulk", (0, 0, 1)), rng)
    settings = replace(StemEnvelope().draw(rng, mode=mode), sampling=0.1, dose=dose,
                       amorphous=0.02, convergence=25.0, source_size=0.2, coma=0.0,
                       astigmatism=0.0, defocus=0.0, z_exponent=1.7, background=0.1)
    image, columns, visibility = render_stem_image(structure, settings, (320, 320), rng)
    return image, _labelled(columns, visibility), settings


def _labelled(columns: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """Truth as training scores it: visible columns 1, faint ones 0 (neither right nor wrong)."""
    keep = visibility >= IGNORED_FRACTION
    return np.column_stack([columns[keep], (visibility[keep] >= VISIBLE_FRACTION).astype(float)])


def test_polarity_of_sparse_columns_is_read_from_the_image():
    haadf, _, settings = _simulated("HAADF")
    abf, _, _ = _simulated("ABF")
    assert column_polarity(haadf, settings.sampling)[0] == "bright"
    assert column_polarity(abf, settings.sampling)[0] == "dark"


def test_contrast_decisions_for_a_bright_column_model():
    haadf, _, settings = _simulated("HAADF")
    abf, _, _ = _simulated("ABF")
    s = settings.sampling
    assert contrast_for_model(haadf, s, "STEM-HAADF", STEM_MODEL, "m") == (False, None)
    assert contrast_for_model(abf, s, "STEM-ABF", STEM_MODEL, "m") == (True, None)
    negate, note = contrast_for_model(abf, s, "STEM", STEM_MODEL, "m")
    assert negate and "taken as ABF/BF and negated" in note
    negate, note = contrast_for_model(abf, s, "STEM-HAADF", STEM_MODEL, "m")
    assert not negate and "look dark" in note and "--mode stem-abf" in note
    assert contrast_for_model(abf, s, "STEM-ABF", {}, "hrtem-model") == (False, None)


def _stem_image(mode: str, seed: int = 0) -> tuple[TEMImage, np.ndarray, StemSettings]:
    image, columns, settings = _simulated(mode, seed)
    layer_mode = {"HAADF": "STEM-HAADF", "ABF": "STEM-ABF"}[mode]
    return (TEMImage(data=image, path=Path("sim.npy"), name="sim",
                     calibration=Calibration.uncalibrated(), file_format="NPY",
                     imaging_mode=layer_mode, imaging_mode_source="made for the test"),
            columns, settings)


@pytest.mark.parametrize("mode", ["HAADF", "ABF"])
def test_stem_columns_finds_the_columns_of_a_simulated_stem_image(mode):
    image, columns, settings = _stem_image(mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)  # the right model: nothing to warn
        atoms = detect_atoms(image, sampling=settings.sampling)
    assert atoms.attrs["model"] == "stem-columns"
    assert atoms.attrs["model_reason"].startswith(f"STEM-{mode} image")
    assert atoms.attrs["negated"] is (mode == "ABF")
    scores = match_columns(atoms[["y", "x"]].to_numpy(), columns, settings.sampling,
                           min_atoms=1)
    assert scores.f1 >= 0.95, scores
    assert scores.rmse_pm <= 15.0, scores


def test_occupancy_of_a_stem_video_takes_the_stem_model():
    from napari_tem_atoms.analysis.video import video_occupancy

    image, _, settings = _stem_image("HAADF")
    frames = np.stack([image.data[:200, :200]] * 3)
    video = replace(image, data=frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)  # stem-columns: in its domain
        result = video_occupancy(video, sampling=settings.sampling)
    assert len(result.sites) > 20
    with pytest.warns(DomainWarning, match="au-hrtem-adatoms was trained on HRTEM"):
        video_occupancy(video, "au-hrtem-adatoms", sampling=settings.sampling)


@pytest.mark.slow
def test_a_small_stem_training_runs_through_the_one_pipeline(tmp_path):
    import json

    from napari_tem_atoms.models import load_model
    from napari_tem_atoms.training.train import load_task, train

    config = tmp_path / "tiny.toml"
    config.write_text('''task = "stem-columns"
output = "run"
[model]
name = "tiny-stem"
base_channels = 4
depth = 2
[train]
steps = 3
batch_size = 2
patch_size = 64
validate_every = 3
checkpoint_every = 3
validation_images = 2
workers = 0
[stem]
structures_per_kind = 1
materials = ["Au"]
''')
    weights = train(load_task(config), log=lambda line: None)
    metadata = json.loads((tmp_path / "run" / "tiny-stem.json").read_text())
    assert metadata["dark_columns"] == ["STEM-ABF", "STEM-BF"]
    assert "Au [001] (bulk)" in metadata["training"]["data"]["structures"]
    assert "Cu [001] (bulk)" not in metadata["training"]["data"]["structures"]
    assert (tmp_path / "run" / "tiny-stem.md").read_text().startswith("# Model card")
    assert load_model(weights).description.dark_columns == ("STEM-ABF", "STEM-BF")


@pytest.mark.gui
def test_detect_widget_finds_the_dark_columns_of_an_abf_layer(make_napari_viewer, qtbot):
    image, columns, settings = _stem_image("ABF")
    viewer = make_napari_viewer()
    viewer.add_image(image.data, name="abf", scale=(settings.sampling, settings.sampling),
                     units=("angstrom", "angstrom"),
                     metadata={"imaging_mode": "STEM-ABF",
                               "imaging_mode_source": "made for the test"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Detect atoms")
    assert widget.chosen_model()[0] == "stem-columns"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None and not widget.cancel_button.enabled,
                    timeout=120_000)
    found = viewer.layers["abf atoms"].data
    assert match_columns(found, columns, settings.sampling, min_atoms=1).f1 >= 0.95


def test_the_network_decides_the_polarity_when_the_mode_does_not(tmp_path, capsys):
    """MoS2 in ABF, saved as NPY (no mode): its histogram looks bright-column (skewness), the
    network sees dark columns; negated, and said."""
    from napari_tem_atoms.cli import main
    from napari_tem_atoms.io import read_atoms_csv

    rng = np.random.default_rng(4)
    mos2 = project_structure(StemStructureSpec("MoS2", "monolayer", (0, 0, 1)), rng)
    settings = replace(StemEnvelope().draw(rng, mode="ABF"), sampling=0.1, dose=1e6,
                       amorphous=0.02, rotation=0.2)
    image, columns, visibility = render_stem_image(mos2, settings, (300, 300), rng)
    assert column_polarity(image, settings.sampling)[0] == "bright"  # the skewness is fooled
    path = tmp_path / "abf.npy"
    np.save(path, image)
    output = tmp_path / "atoms.csv"
    assert main(["detect", str(path), "--sampling", "0.1", "--model", "stem-columns",
                 "-o", str(output)]) == 0
    assert "taken as ABF/BF and negated" in capsys.readouterr().err
    found = read_atoms_csv(output).coordinates
    assert match_columns(found, _labelled(columns, visibility), settings.sampling,
                         min_atoms=1).f1 >= 0.9


def test_live_mode_negates_abf_frames_for_the_stem_model():
    from napari_tem_atoms.events import Progress
    from napari_tem_atoms.live import FrameQueue, LiveStatistics, iter_live_analysis

    image, columns, settings = _stem_image("ABF")
    queue = FrameQueue(keep_up=False, statistics=LiveStatistics())
    queue.put((0, image.data, settings.sampling))
    stream = iter_live_analysis(queue, "stem-columns", 0.5, imaging_mode="STEM-ABF")
    atoms = next(event.item[1] for event in stream
                 if isinstance(event, Progress) and event.stage == "detect")
    stream.close()
    assert match_columns(atoms[["y", "x"]].to_numpy(), columns, settings.sampling,
                         min_atoms=1).f1 >= 0.95


@pytest.mark.gui
def test_live_widget_takes_the_followed_layers_mode_and_its_model(make_napari_viewer):
    image, _, settings = _stem_image("HAADF")
    viewer = make_napari_viewer()
    layer = viewer.add_image(image.data[None], name="haadf",
                             scale=(1, settings.sampling, settings.sampling),
                             metadata={"imaging_mode": "STEM-HAADF"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Live mode")
    widget.source.value = "follow a layer"
    widget.followed_layer.value = layer
    assert widget.imaging_mode.value == "STEM-HAADF"
    assert widget.chosen_model() == "stem-columns"
    widget.imaging_mode.value = "HRTEM"
    assert widget.chosen_model() == "au-hrtem"


def test_several_files_each_get_the_polarity_decided_for_them(tmp_path, capsys):
    """Two NPY files (no mode) for the STEM model: each decided and said (this crashed when
    the second file's decision was looked up by comparing TEMImages)."""
    from napari_tem_atoms.cli import main

    rng = np.random.default_rng(4)
    mos2 = project_structure(StemStructureSpec("MoS2", "monolayer", (0, 0, 1)), rng)
    settings = replace(StemEnvelope().draw(rng, mode="ABF"), sampling=0.1, dose=1e6,
                       amorphous=0.02, rotation=0.2)
    image, _, _ = render_stem_image(mos2, settings, (300, 300), rng)
    paths = [tmp_path / "first.npy", tmp_path / "second.npy"]
    for path in paths:
        np.save(path, image)
    assert main(["detect", *map(str, paths), "--sampling", "0.1", "--model", "stem-columns",
                 "-o", str(tmp_path / "atoms.csv")]) == 0
    err = capsys.readouterr().err
    assert all(f"{path}: stem-columns: the columns look dark" in err for path in paths), err


@pytest.mark.parametrize("name", ["MoS2", "WSe2"])
def test_monolayer_vacancies_are_on_the_chalcogen(name):
    """0-8 % of the chalcogen atoms are missing (0-2 % of the metal): over six flakes about
    one chalcogen column in twelve holds a single atom (the selenides had one in fifty)."""
    rng = np.random.default_rng(6)
    single = []
    for _ in range(6):
        flake = project_structure(StemStructureSpec(name, "monolayer", (0, 0, 1)), rng,
                                  half_width=12)
        chalcogen = flake.counts[:, list(flake.elements).index(flake.elements.min())]
        single.append(np.mean(chalcogen[chalcogen > 0] == 1))
    assert np.mean(single) > 0.045, single
