"""The plugin inside a real napari viewer (runs on the Xvfb display pytest-xvfb starts)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_tem_atoms.napari import _reader

PLUGIN = "napari-tem-atoms"
pytestmark = pytest.mark.gui


@pytest.fixture
def messages(monkeypatch):
    """Record the notifications the reader shows instead of tracebacks."""
    shown: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr(_reader, "show_error", shown["error"].append)
    monkeypatch.setattr(_reader, "show_warning", shown["warning"].append)
    return shown


def _angstrom(layer) -> list[bool]:
    return [str(unit) == "angstrom" for unit in layer.units]


@pytest.mark.parametrize(("name", "shape", "pixel_size"), [
    ("dm4_2D_data/test-MonarcCL_mono-image.dm4", (2, 2), 183253.49807739258),
    ("dm3_2D_data/multi_signal.dm3", (512, 512), 0.17751578241586685),
    ("emd_files/fei_example_tem_stack.emd", (2, 3, 3), 0.08172883192297851),
    ("tiff_files/test_loading_image_saved_with_imageJ_stack.tif", (2, 68, 68),
     1686.7471098853332),
    ("FEI_new/128x128-TEM_search.emi", (128, 128), 52.61214205047081),
])
def test_open_sets_the_scale_in_angstrom(make_napari_viewer, hyperspy_files, messages, name,
                                         shape, pixel_size):
    viewer = make_napari_viewer()
    layers = viewer.open(hyperspy_files / name, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.data.shape == shape
    np.testing.assert_allclose(layer.scale[-2:], [pixel_size, pixel_size], rtol=1e-9)
    assert all(layer.scale[:-2] == 1)
    assert _angstrom(layer)[-2:] == [True, True]
    assert layer.metadata["pixel_size_angstrom"] == pytest.approx((pixel_size, pixel_size))
    assert messages == {"error": [], "warning": []}


def test_open_folder_of_frames_as_one_stack(make_napari_viewer, made_files, messages):
    viewer = make_napari_viewer()
    [layer] = viewer.open(made_files["frames"], plugin=PLUGIN)
    assert layer.data.shape == (4, 40, 50)
    np.testing.assert_allclose(layer.scale, [1.0, 0.2, 0.2])
    assert viewer.dims.axis_labels == ("frame", "y", "x")  # the slider says "frame"


def test_reciprocal_calibration_is_reported_and_not_used(make_napari_viewer, hyperspy_files,
                                                          messages):
    viewer = make_napari_viewer()
    [layer] = viewer.open(hyperspy_files / "hdf5_files/example2_v3.1.hspy", plugin=PLUGIN)
    np.testing.assert_array_equal(layer.scale, [1.0, 1.0])
    assert _angstrom(layer) == [False, False]
    assert layer.metadata["calibration"] == "reciprocal"
    [warning] = messages["warning"]
    assert warning.startswith("example2_v3.1.hspy: the pixel size is in reciprocal space")


def test_bad_file_gives_a_message_not_a_traceback(make_napari_viewer, bad_files, messages):
    viewer = make_napari_viewer()
    layers = viewer.open(bad_files["truncated_dm3"], plugin=PLUGIN)
    assert layers == []
    assert len(viewer.layers) == 0
    [error] = messages["error"]
    assert error.startswith(f"Could not open {bad_files['truncated_dm3']}: not a readable DM3")


def test_good_files_still_open_beside_a_bad_one(make_napari_viewer, bad_files, made_files,
                                                messages):
    viewer = make_napari_viewer()
    viewer.open([made_files["npy_stack"], bad_files["nan"]], plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert "NaN" in messages["error"][0]


def test_reader_declines_what_it_does_not_handle(tmp_path):
    other_csv = tmp_path / "table.csv"
    other_csv.write_text("a,b\n1,2\n")
    (tmp_path / "empty_folder").mkdir()
    assert _reader.get_reader(str(other_csv)) is None
    assert _reader.get_reader(str(tmp_path / "image.png")) is None
    assert _reader.get_reader(str(tmp_path / "empty_folder")) is None


def test_points_export_to_csv_and_open_back(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    features = pd.DataFrame({"confidence": [0.9, 0.7, 0.8], "species": ["Au", "Au", "Au"]})
    points = viewer.add_points(
        np.array([[0, 10.5, 20.25], [1, 30.0, 40.0], [1, 5.0, 6.0]]), features=features,
        scale=(1.0, 0.125, 0.125), units=("pixel", "angstrom", "angstrom"), name="atoms")
    path = tmp_path / "atoms.csv"
    written = points.save(str(path), plugin=PLUGIN)
    assert written == [str(path)]
    table = pd.read_csv(path)
    assert list(table.columns) == ["frame", "y", "x", "y_angstrom", "x_angstrom", "confidence",
                                   "species"]
    np.testing.assert_allclose(table[["y_angstrom", "x_angstrom"]].iloc[0], [1.3125, 2.53125])
    assert table["frame"].tolist() == [0, 1, 1]

    [reopened] = viewer.open(path, plugin=PLUGIN)
    assert reopened._type_string == "points"
    np.testing.assert_allclose(reopened.data, points.data, atol=1e-6)
    np.testing.assert_allclose(reopened.scale, [1.0, 0.125, 0.125], rtol=1e-6)
    assert reopened.features["confidence"].tolist() == [0.9, 0.7, 0.8]
    assert reopened.features["species"].tolist() == ["Au", "Au", "Au"]


def test_counted_atoms_open_coloured_by_their_count_and_save_back_as_counts(
        make_napari_viewer, tmp_path):
    from napari_tem_atoms.napari._layers import show_atoms

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 32)), name="image", scale=(0.1, 0.1),
                             units=("angstrom", "angstrom"))
    atoms = pd.DataFrame({"frame": 0, "y": [5.0, 12.0, 20.0], "x": [5.0, 12.0, 20.0],
                          "confidence": 0.9, "n_atoms": [1, 2, 8]})
    path = tmp_path / "counted.csv"
    show_atoms(viewer, image, atoms, (0.1, 0.1)).save(str(path), plugin=PLUGIN)
    assert pd.read_csv(path)["n_atoms"].dtype.kind == "i"
    [reopened] = viewer.open(path, plugin=PLUGIN)
    assert reopened.border_color_mode == "colormap"
    colours = reopened.border_color[:, :3]
    assert np.linalg.norm(colours[0] - colours[1]) < np.linalg.norm(colours[0] - colours[2])
    again = tmp_path / "again.csv"
    reopened.save(str(again), plugin=PLUGIN)
    assert pd.read_csv(again)["n_atoms"].tolist() == [1, 2, 8]
    assert again.read_text().splitlines()[-1].endswith(",8")  # 8, not 8.000000


def test_points_in_nanometres_export_angstrom(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    points = viewer.add_points(np.array([[2.0, 4.0]]), scale=(0.05, 0.05), units=("nm", "nm"))
    path = tmp_path / "nm.csv"
    points.save(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(pd.read_csv(path)[["y_angstrom", "x_angstrom"]].iloc[0],
                               [1.0, 2.0])


def test_uncalibrated_points_export_pixels_only(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    points = viewer.add_points(np.array([[2.0, 4.0]]))
    path = tmp_path / "px.csv"
    points.save(str(path), plugin=PLUGIN)
    assert path.read_text().splitlines()[0] == "y,x"


def test_sample_data_opens_calibrated(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_gold_stack")
    image, truth = viewer.layers
    assert image.data.shape == (12, 384, 384)
    np.testing.assert_allclose(image.scale, [1.0, 0.12, 0.12])
    assert truth.visible is False
    assert len(truth.data) > 100
    assert image.axis_labels == truth.axis_labels == ("frame", "y", "x")
    assert image.metadata["imaging_mode"] == "HRTEM"  # the Detect widget picks au-hrtem


def test_calibration_widget_sets_a_pixel_size(make_napari_viewer, made_files, messages):
    viewer = make_napari_viewer()
    [layer] = viewer.open(made_files["npy_stack"], plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Calibration")
    assert widget.image_layer.value is layer
    assert "Pixel size: unknown" in widget.summary.value
    assert not widget.apply_button.enabled
    widget.pixel_size.value = 0.2
    assert widget.apply_button.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        widget.apply_button.clicked.emit()
    assert viewer.canvas.overlays.scale_bar.visible
    np.testing.assert_allclose(layer.scale, [1.0, 0.2, 0.2])
    assert _angstrom(layer) == [False, True, True]
    assert "Pixel size: 0.2 Å/px (set by hand)" in widget.summary.value


def test_calibration_widget_shows_the_file_calibration(make_napari_viewer, hyperspy_files,
                                                       messages):
    viewer = make_napari_viewer()
    viewer.open(hyperspy_files / "emd_files/fei_example_tem_stack.emd", plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Calibration")
    assert "Pixel size: 0.081729 Å/px (calibrated)" in widget.summary.value
    assert "Frame interval: 0.8 s" in widget.summary.value
    assert widget.pixel_size.value == pytest.approx(0.0817, abs=1e-4)


def test_plugin_widgets_are_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    titles = [action.text() for action in _all_actions(viewer.window.plugins_menu)]
    assert any("Calibration" in title for title in titles), titles


def _all_actions(menu):
    for action in menu.actions():
        if action.menu() is not None:
            yield from _all_actions(action.menu())
        else:
            yield action


@pytest.mark.slow
def test_view_command_opens_napari_and_takes_a_screenshot(tmp_path):
    screenshot = tmp_path / "window.png"
    tem_atoms = Path(sys.executable).with_name("tem-atoms")
    result = subprocess.run([str(tem_atoms), "view", "--screenshot", str(screenshot)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    from skimage.io import imread

    image = imread(screenshot)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image[..., :3].std() > 10  # a drawn window, not a blank one



def _drop(viewer, path):
    """Drop a file on the canvas the way a file manager does (a Qt drop event with its URL)."""
    from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
    from qtpy.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    viewer.window._qt_viewer.dropEvent(event)


@pytest.mark.parametrize(("name", "pixel_size"), [
    ("dm4_2D_data/test-MonarcCL_mono-image.dm4", 183253.49807739258),
    ("emd_files/fei_example_tem_stack.emd", 0.08172883192297851),
    ("FEI_new/128x128-TEM_search_1.ser", 52.61214205047081),
])
def test_drag_and_drop_opens_calibrated(make_napari_viewer, hyperspy_files, messages, name,
                                        pixel_size):
    viewer = make_napari_viewer()
    _drop(viewer, hyperspy_files / name)
    [layer] = viewer.layers
    assert layer.source.reader_plugin == PLUGIN
    np.testing.assert_allclose(layer.scale[-2:], [pixel_size, pixel_size], rtol=1e-9)
    assert _angstrom(layer)[-2:] == [True, True]


def test_drag_and_drop_of_a_bad_file_shows_a_message(make_napari_viewer, bad_files, messages):
    viewer = make_napari_viewer()
    _drop(viewer, bad_files["text_dm4"])
    assert len(viewer.layers) == 0
    [error] = messages["error"]
    assert "notes.dm4: not a readable DM4 file" in error


def test_docked_widgets_leave_room_for_the_image(make_napari_viewer):
    # `tem-atoms view` docks every widget as tabs: the widest sets the dock area's width, and an
    # unwrapped message (the Species widget's "pick a three-frame stack" note) once made it
    # wider than the window, squeezing the image to nothing.
    from napari_tem_atoms.cli import PLUGIN_NAME, _dock_plugin_widgets

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    # The dock wrappers (QDockWidget), as a user resizes them: dock_widgets gives the inner ones.
    docks = {name: getattr(widget, "native", widget).parent()  # magicgui or Qt widget
             for name, widget in viewer.window.dock_widgets.items()}
    widths = {name: dock.minimumSizeHint().width() for name, dock in docks.items()}
    assert len(widths) == 6
    assert max(widths.values()) < 600, widths


def _occupancy_of_the_sample_truth():
    from napari_tem_atoms.analysis.occupancy import site_occupancy
    from napari_tem_atoms.samples import synthetic_gold_stack

    stack = synthetic_gold_stack()
    return site_occupancy(stack.columns[["frame", "y", "x"]], len(stack.images),
                          sampling=stack.sampling)


def test_the_window_keeps_to_the_screen_with_the_occupancy_plots(make_napari_viewer):
    # Five tall widgets tabbed together and the Occupancy plots under them asked for 1,073 px:
    # on a 1000-px screen the window grew past the bottom edge (status bar and plots cut off).
    from napari_tem_atoms.cli import PLUGIN_NAME, _dock_plugin_widgets

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    occupancy = viewer.window.dock_widgets["Occupancy (napari-tem-atoms)"]
    occupancy.result = _occupancy_of_the_sample_truth()
    occupancy._show_plot()
    assert "Occupancy plots" in viewer.window.dock_widgets
    assert viewer.window._qt_window.minimumSizeHint().height() <= 900


def test_tabs_have_short_titles_and_the_image_fits_the_canvas(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QTabBar

    from napari_tem_atoms.cli import PLUGIN_NAME, _dock_plugin_widgets

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    # Six tabs of full names were cut to "Calib...", "Occu...".
    titles = {bar.tabText(i) for bar in viewer.window._qt_window.findChildren(QTabBar)
              for i in range(bar.count())}
    assert {"Detect", "Live", "Species", "Align", "Occupancy", "Calibration"} <= titles
    # Fitted to the canvas the docks left (fitted before they came, it was cut at both sides).
    qtbot.wait(50)
    image = viewer.layers["Synthetic Au stack"]
    shown = np.ptp(image.extent.world[:, -2:], axis=0) * viewer.scene.camera.zoom
    canvas = np.array(viewer.window._qt_viewer.canvas.size)  # (height, width)
    assert np.all(shown <= canvas + 1), (shown, canvas)


def test_calibration_summary_wraps_a_long_path(make_napari_viewer, qtbot):
    # On one line, a file's path widened the Calibration dock to 630 px, over the image.
    viewer = make_napari_viewer(show=True)
    source = "/data/microscope/2024-05-17 session/gold particle 3/" * 4 + "stack_0001.dm4"
    viewer.add_image(np.zeros((8, 8)), name="image", metadata={"source": source})
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Calibration")
    assert "stack_0001.dm4" in widget.summary.value
    assert widget.native.minimumSizeHint().width() < 400
    from qtpy.QtCore import Qt

    viewer.window._qt_window.resizeDocks([widget.native.parent()], [380],
                                         Qt.Orientation.Horizontal)
    qtbot.wait(50)
    label = widget.summary.native  # narrower than its text: every wrapped line shown
    assert label.height() >= label.heightForWidth(label.width()), label.size()


def test_atoms_are_drawn_as_thin_circles(make_napari_viewer):
    # napari's "ring" symbol is a quarter of its diameter thick: it hid the columns it marked.
    from napari_tem_atoms.napari._layers import show_atoms

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 32)), name="image", scale=(0.1, 0.1),
                             units=("angstrom", "angstrom"))
    # Integer counts, as detection gives them: napari takes few integers for categories.
    atoms = pd.DataFrame({"frame": 0, "y": [5.0, 12.0, 20.0], "x": [5.0, 12.0, 20.0],
                          "confidence": 0.9, "n_atoms": [1, 2, 8]})
    points = show_atoms(viewer, image, atoms, (0.1, 0.1))
    assert np.all(points.face_color[:, 3] == 0)  # the column inside shows
    assert np.all(points.border_width <= 0.15)
    # Coloured by the atoms along the beam on one scale, not by a cycle of category colours
    # (which gave 1 and 8 atoms the same colour): 1 and 2 atoms nearer than 1 and 8.
    assert points.border_color_mode == "colormap"
    colours = points.border_color[:, :3]
    assert np.linalg.norm(colours[0] - colours[1]) < np.linalg.norm(colours[0] - colours[2])
    points = show_atoms(viewer, image, atoms.iloc[::-1], (0.1, 0.1))  # a re-run, in place
    assert points.border_color_mode == "colormap"
    assert np.allclose(points.border_color[0, :3], colours[2])
