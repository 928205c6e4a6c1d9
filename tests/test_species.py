"""Species from a focal series: ordering, peaks per class, the CLI and the Species widget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_tem_atoms.analysis.detect import detect_atoms
from napari_tem_atoms.analysis.species import (
    detect_species,
    order_focal_series,
    species_from_heatmaps,
)
from napari_tem_atoms.cli import main
from napari_tem_atoms.errors import TEMAtomsError


@pytest.fixture(scope="module")
def untrained_species_model(tmp_path_factory):
    """A species network with random weights: for the plumbing, not for accuracy."""
    import torch

    from napari_tem_atoms.models.registry import save_model
    from napari_tem_atoms.models.unet import UNet

    torch.manual_seed(0)
    network = UNet(in_channels=3, out_channels=3, base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("models") / "species.safetensors"
    save_model(path, network, {
        "name": "test-species", "task": "species", "sampling": 0.2, "threshold": 0.3,
        "classes": ["Mo", "S2", "S1"],
        "architecture": {"in_channels": 3, "out_channels": 3, "base_channels": 4, "depth": 2}})
    return str(path)


def _gaussians(shape, positions, sigma=1.5):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    out = np.zeros(shape)
    for y, x in positions:
        out += np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * sigma**2))
    return out


def test_each_peak_takes_the_class_of_its_highest_map():
    maps = np.zeros((3, 60, 60))
    maps[0] = 0.9 * _gaussians((60, 60), [(10.3, 12.0)])
    maps[1] = 0.8 * _gaussians((60, 60), [(30.0, 30.6)])
    maps[2] = 0.7 * _gaussians((60, 60), [(45.0, 20.0)])
    maps[0] += 0.4 * _gaussians((60, 60), [(45.0, 20.0)])  # a weaker second opinion there
    positions, classes, confidence = species_from_heatmaps(maps, 0.3, sampling=0.2)
    order = np.argsort(positions[:, 0])
    np.testing.assert_allclose(positions[order], [[10.3, 12.0], [30.0, 30.6], [45.0, 20.0]],
                               atol=0.05)
    np.testing.assert_array_equal(classes[order], [0, 1, 2])
    assert confidence[order][2] == pytest.approx(0.7, abs=0.01)


def test_series_are_put_in_increasing_defocus_and_odd_ones_are_flagged():
    series = np.stack([np.full((4, 4), value) for value in (1.0, 2.0, 3.0)])
    ordered, notes = order_focal_series(series, [60.0, -60.0, 0.0])
    np.testing.assert_array_equal(ordered[:, 0, 0], [2.0, 3.0, 1.0])
    assert notes == []
    _, notes = order_focal_series(series, [400.0, 420.0, 440.0])
    assert any("middle defocus 420" in note for note in notes)
    assert any("focal steps 20, 20" in note for note in notes)
    with pytest.raises(TEMAtomsError, match="repeat"):
        order_focal_series(series, [0.0, 0.0, 50.0])
    with pytest.raises(TEMAtomsError, match="one per image"):
        order_focal_series(series, [0.0, 50.0])


@pytest.mark.parametrize(("series", "words"), [
    (np.zeros((2, 64, 64)), "needs 3 images"),
    (np.zeros((64, 64)), r"\(3, rows, columns\)"),
    ([np.zeros((64, 64)), np.zeros((64, 60)), np.zeros((64, 64))], "same shape|inhomogeneous"),
])
def test_bad_series_give_clear_errors(series, words, untrained_species_model):
    with pytest.raises((TEMAtomsError, ValueError), match=words):
        detect_species(series, untrained_species_model, sampling=0.1)


def test_a_column_detector_is_not_a_species_model():
    series = np.random.default_rng(0).normal(size=(3, 64, 64))
    with pytest.raises(TEMAtomsError, match="does not tell species apart"):
        detect_species(series, "au-hrtem", sampling=0.1)


def test_detection_runs_on_series_and_time_series(untrained_species_model):
    from napari_tem_atoms.samples import synthetic_focal_series

    series = synthetic_focal_series(np.array([[1.0, 0.5], [0, 0], [-1.0, 0.5]]),
                                    shape=(128, 128))
    atoms = detect_species(series, untrained_species_model, sampling=0.1,
                           defoci=[-80, 0, 80], max_shift=4)
    assert list(atoms.columns) == ["frame", "y", "x", "species", "confidence"]
    assert set(atoms["species"]) <= {"Mo", "S2", "S1"}
    assert atoms["y"].between(-1, 128).all()  # (sub-pixel peaks may sit on the border)
    both = detect_species(np.stack([series, series]), untrained_species_model, sampling=0.1,
                          max_shift=4)
    assert set(both["frame"]) <= {0, 1} and len(both) == 2 * len(
        detect_species(series, untrained_species_model, sampling=0.1, max_shift=4))


def test_cli_species_writes_a_species_column(tmp_path, untrained_species_model, capsys):
    import tifffile

    from napari_tem_atoms.samples import synthetic_focal_series

    path = tmp_path / "series.tif"
    tifffile.imwrite(path, synthetic_focal_series(shape=(96, 96)), photometric="minisblack")
    output = tmp_path / "atoms.csv"
    code = main(["species", str(path), "--model", untrained_species_model, "--sampling", "0.1",
                 "--defoci", "80,-80,0", "--max-shift", "4", "-o", str(output)])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(output)
    assert {"y", "x", "y_angstrom", "species", "confidence"} <= set(table.columns)
    assert "columns (" in capsys.readouterr().err
    # A time series of focal series: the positions lie on each series' middle-defocus image,
    # the file's image 2 for these defoci (as the Species widget writes it).
    video = tmp_path / "series.npy"
    np.save(video, np.stack([synthetic_focal_series(shape=(96, 96))] * 2))
    assert main(["species", str(video), "--model", untrained_species_model, "--sampling", "0.1",
                 "--defoci", "80,-80,0", "--max-shift", "4", "-o", str(output)]) == 0
    table = pd.read_csv(output)
    assert list(table.columns[:4]) == ["frame", "image", "y", "x"]
    assert set(table.image) == {2} and set(table.frame) <= {0, 1}
    capsys.readouterr()
    assert main(["species", str(path), "--model", untrained_species_model, "--sampling", "0.1",
                 "--defoci", "a,b,c", "-o", str(output)]) == 1
    assert "--defoci" in capsys.readouterr().err
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, np.ones((2, 64, 64), np.float32), photometric="minisblack")
    assert main(["species", str(two), "--model", untrained_species_model, "--sampling", "0.1",
                 "-o", str(output)]) == 1
    assert "needs 3 images" in capsys.readouterr().err


@pytest.mark.gui
def test_species_widget_colours_each_species(qtbot, make_napari_viewer, untrained_species_model,
                                             monkeypatch):
    from napari_tem_atoms.napari import _species_widget as module
    from napari_tem_atoms.samples import synthetic_focal_series

    viewer = make_napari_viewer()
    series = synthetic_focal_series(shape=(128, 128))
    viewer.add_image(series, name="series", scale=(1, 0.1, 0.1),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Species (focal series)")
    widget.model.choices = [untrained_species_model]
    widget.model.value = untrained_species_model
    assert widget.sampling.value == pytest.approx(0.1)
    widget.defoci.value = "-80, 0"
    assert not widget.run_button.enabled and "three different" in widget.note.value
    widget.defoci.value = "-80, 0, 80"
    assert widget.run_button.enabled, widget.note.value
    # A fixed answer, so that each species is there to be coloured.
    fake = pd.DataFrame({"frame": 0, "y": [10.0, 20.0, 30.0], "x": [10.0, 20.0, 30.0],
                         "species": ["Mo", "S2", "S1"], "confidence": 0.9})

    def fake_steps(*args, **kwargs):
        return fake
        yield  # a generator that returns at once

    monkeypatch.setattr(module, "iter_detect_species", fake_steps)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    layer = viewer.layers["series species"]
    assert list(layer.features["species"]) == ["Mo", "S2", "S1"]
    colours = {tuple(np.round(c, 3)) for c in layer.face_color}
    assert len(colours) == 3  # one colour per species
    np.testing.assert_allclose(layer.scale, [0.1, 0.1])
    assert "1 Mo, 1 S2, 1 S1" in widget.status.value
    assert "Mo" in widget.legend.value and "S1" in widget.legend.value

    widget.source.value = "three layers"
    for index in range(3):
        viewer.add_image(series[index], name=f"image {index}", scale=(0.1, 0.1),
                         units=("angstrom", "angstrom"))
    widget.layer_1.value, widget.layer_2.value, widget.layer_3.value = (
        viewer.layers["image 0"], viewer.layers["image 1"], viewer.layers["image 1"])
    assert "three different" in widget.note.value
    widget.layer_3.value = viewer.layers["image 2"]
    assert widget.run_button.enabled, widget.note.value


@pytest.mark.gui
def test_species_widget_runs_a_time_series_and_cancels(qtbot, make_napari_viewer,
                                                       untrained_species_model, tmp_path,
                                                       monkeypatch):
    from napari_tem_atoms.samples import synthetic_focal_series

    viewer = make_napari_viewer()
    series = synthetic_focal_series(shape=(96, 96))
    video = np.stack([series + 0.01 * t for t in range(4)])  # (time, 3, rows, cols)
    viewer.add_image(video, name="video", scale=(1, 1, 0.1, 0.1),
                     units=("pixel", "pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Species (focal series)")
    widget.model.choices = [untrained_species_model]
    widget.model.value = untrained_species_model
    assert widget.run_button.enabled, widget.note.value
    widget.run()
    assert not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    layer = viewer.layers["video species"]
    assert layer.ndim == 4  # (time, image, y, x), on the middle image of each series
    assert set(layer.data[:, 0]) == set(layer.features["frame"]) == {0, 1, 2, 3}
    assert set(layer.data[:, 1]) == {1}
    np.testing.assert_allclose(layer.scale, [1, 1, 0.1, 0.1])
    assert "in 4 series" in widget.status.value
    # The points follow the time slider, on the middle image.
    first = layer.data[layer.data[:, 0] == 2][0]
    viewer.dims.current_step = (2, 1, 0, 0)
    shown = np.asarray(layer._view_data)
    assert len(shown) == int((layer.data[:, 0] == 2).sum())
    assert np.any(np.all(np.isclose(shown, first[2:]), axis=1))
    path = tmp_path / "species.csv"
    viewer.layers.selection = {layer}
    viewer.layers.save(str(path), selected=True, plugin="napari-tem-atoms")
    table = pd.read_csv(path)
    assert list(table.columns[:4]) == ["frame", "image", "y", "x"] and set(table.image) == {1}
    assert "species" in table.columns

    long = np.repeat(video, 30, axis=0)  # 120 series: cancelled long before the end
    viewer.layers["video"].data = long
    widget.run()
    qtbot.waitUntil(lambda: widget.progress_bar.value >= 1,
                    timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.value.startswith("Cancelled after ")
    done = int(widget.status.value.split()[2])
    assert 1 <= done < 120  # the series done before Cancel are shown, not lost
    assert set(viewer.layers["video species"].features["frame"]) == set(range(done))

    # Defoci out of order: the positions are in the frame of the middle defocus, image 0 here.
    from napari_tem_atoms.napari import _species_widget as module

    fake = pd.DataFrame({"frame": [0, 3], "y": [10.0, 20.0], "x": [10.0, 20.0],
                         "species": ["Mo", "S1"], "confidence": 0.9})

    def fake_steps(*args, **kwargs):
        return fake
        yield  # a generator that returns at once

    monkeypatch.setattr(module, "iter_detect_species", fake_steps)
    viewer.layers["video"].data = video
    widget.defoci.value = "0, -60, 60"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert set(viewer.layers["video species"].data[:, 1]) == {0}, widget.status.value
    assert viewer.dims.current_step[1] == 0

    viewer.add_image(np.zeros((4, 2, 96, 96)), name="two")
    widget.stack_layer.value = viewer.layers["two"]
    assert "(time, 3, rows, cols)" in widget.note.value and not widget.run_button.enabled


def test_cli_takes_defoci_that_start_with_a_minus_sign():
    # argparse takes "-60,0,60" for an option; the documented "--defoci -60,0,60" must work.
    from napari_tem_atoms.cli import _attach_list_values, build_parser

    argv = ["species", "series.tif", "--defoci", "-60,0,60", "-o", "atoms.csv"]
    args = build_parser().parse_args(_attach_list_values(argv))
    assert args.defoci == "-60,0,60" and str(args.output) == "atoms.csv"
    args = build_parser().parse_args(_attach_list_values(
        ["species", "series.tif", "--defoci", "60,0,-60", "-o", "atoms.csv"]))
    assert args.defoci == "60,0,-60"


def test_detect_refuses_a_species_model(untrained_species_model):
    with pytest.raises(TEMAtomsError, match=r"focal series.*tem-atoms species"):
        detect_atoms(np.random.default_rng(0).normal(size=(64, 64)), untrained_species_model,
                     sampling=0.1)


def test_one_image_three_times_is_not_a_focal_series():
    from napari_tem_atoms.analysis.species import identical_images_note

    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64))
    note = identical_images_note(np.stack([image, image * 2 + 5, image + 0.01 * rng.normal(
        size=image.shape)]))
    assert note and "images 1 and 2, 1 and 3, 2 and 3" in note
    assert identical_images_note(rng.normal(size=(3, 64, 64))) is None


def _honeycomb(a=3.16, cells=6):
    """MoS2 along [001]: Mo and S2 columns on a honeycomb, (y, x) in Å."""
    rows = []
    for i in range(cells):
        for j in range(cells):
            origin = np.array([0.0, 0.0]) + i * np.array([0.0, a]) + j * np.array(
                [a * np.sqrt(3) / 2, a / 2])
            rows.append((*origin, "Mo"))
            rows.append((*(origin + np.array([a / np.sqrt(3), 0.0])), "S2"))
    return pd.DataFrame(rows, columns=["y", "x", "species"])


def test_specimen_check_accepts_mos2_and_flags_another_crystal():
    from napari_tem_atoms.analysis.species import specimen_note

    sampling = 0.1
    mos2 = _honeycomb()
    mos2[["y", "x"]] /= sampling  # pixels
    assert specimen_note(mos2, sampling) is None
    # A gold [100] lattice (2.04 Å square) labelled as the model would label anything.
    y, x = np.mgrid[0:8, 0:8] * 2.04 / sampling
    gold = pd.DataFrame({"y": y.ravel(), "x": x.ravel(),
                         "species": np.resize(["Mo", "S2", "S1"], 64)})
    note = specimen_note(gold, sampling)
    assert note and "do not form MoS2's honeycomb" in note and "2.04 Å" in note


def test_a_gold_focal_series_is_said_not_to_be_mos2():
    from napari_tem_atoms.samples import synthetic_focal_series

    with pytest.warns(UserWarning, match="do not form MoS2's honeycomb"):
        atoms = detect_species(synthetic_focal_series(), sampling=0.1)
    assert any("not species" in note for note in atoms.attrs["notes"])
