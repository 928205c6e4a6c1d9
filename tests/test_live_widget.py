"""The "Live mode" dock widget: a watched folder and a followed layer, in a real viewer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tifffile

from napari_tem_atoms.samples import synthetic_gold_stack

PLUGIN = "napari-tem-atoms"
pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def frames():
    return synthetic_gold_stack(n_frames=4, shape=(256, 256), particle_radius=11.0,
                                seed=5).images


def _save(path, frame):
    # ImageJ calibration in nm, as many acquisition programs write it: 0.12 Å/px.
    tifffile.imwrite(path, frame, imagej=True, resolution=(1 / 0.012, 1 / 0.012),
                     metadata={"unit": "nm"})


def _stop(qtbot, widget):
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)


def test_watched_folder_frames_are_stacked_and_analysed(qtbot, make_napari_viewer, tmp_path,
                                                         frames):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.folder.value = tmp_path
    widget.keep_up.value = False  # analyse every frame, to count them
    widget.start()
    try:
        _save(tmp_path / "frame_1.tif", frames[0])
        # A frame written slowly, in pieces, by another thread: never read half-way.
        whole = tmp_path.parent / "whole.tif"
        _save(whole, frames[1])
        content = whole.read_bytes()

        def write_slowly():
            with open(tmp_path / "frame_2.tif", "wb") as stream:
                for start in range(0, len(content), len(content) // 5):
                    stream.write(content[start: start + len(content) // 5])
                    stream.flush()
                    time.sleep(0.1)

        writer = threading.Thread(target=write_slowly)
        writer.start()
        writer.join()
        qtbot.waitUntil(lambda: widget.statistics.analysed >= 2, timeout=60_000)
    finally:
        _stop(qtbot, widget)
    stack = viewer.layers[f"{tmp_path.name} live"]
    assert stack.data.shape == (2, 256, 256)
    np.testing.assert_array_equal(stack.data[1], frames[1])  # read whole, not half-way
    np.testing.assert_allclose(stack.scale, [1, 0.12, 0.12])
    points = viewer.layers[f"{tmp_path.name} live atoms"]
    assert set(points.data[:, 0]) == {0.0, 1.0}
    assert "2 frames analysed" in widget.status.value


def test_followed_layer_is_analysed_as_it_grows(qtbot, make_napari_viewer, frames):
    viewer = make_napari_viewer()
    layer = viewer.add_image(frames[:1], name="camera", scale=(1, 0.12, 0.12),
                             units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.source.value = "follow a layer"
    widget.followed_layer.value = layer
    assert widget.sampling.value == pytest.approx(0.12)
    widget.keep_up.value = False
    widget.start()
    try:
        qtbot.waitUntil(lambda: "0 frames analysed" in widget.status.value, timeout=60_000)
        layer.data = frames[:3]  # another plugin streams two more frames in
        qtbot.waitUntil(lambda: widget.statistics.analysed >= 2, timeout=60_000)
    finally:
        _stop(qtbot, widget)
    points = viewer.layers["camera atoms"]
    assert set(points.data[:, 0]) == {1.0, 2.0}
    assert widget.start_button.enabled and not widget.stop_button.enabled


def test_keeping_up_skips_to_the_newest_frame(qtbot, make_napari_viewer, frames):
    viewer = make_napari_viewer()
    layer = viewer.add_image(frames[:1], name="fast", scale=(1, 0.12, 0.12),
                             units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.source.value = "follow a layer"
    widget.followed_layer.value = layer
    widget.keep_up.value = True
    # Queue many frames at once, before the worker has a chance to analyse them.
    widget.start()
    try:
        layer.data = np.concatenate([frames] * 5)
        qtbot.waitUntil(lambda: widget.statistics.analysed >= 1 and len(widget.queue) == 0,
                        timeout=60_000)
    finally:
        _stop(qtbot, widget)
    assert widget.statistics.skipped >= 1
    assert "skipped" in widget.status.value


def test_every_frame_is_shown_at_once_and_skipped_ones_keep_their_place(
        qtbot, make_napari_viewer, tmp_path, frames):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.folder.value = tmp_path
    widget.keep_up.value = True
    widget.start()
    try:
        qtbot.waitUntil(lambda: "frames analysed" in widget.status.value, timeout=60_000)
        # A burst: more frames than the network can take, all complete at once.
        for index in range(6):
            _save(tmp_path / f"frame_{index}.tif", frames[index % len(frames)])
        qtbot.waitUntil(lambda: widget.statistics.received == 6 and len(widget.queue) == 0
                        and widget.statistics.analysed + widget.statistics.skipped == 6,
                        timeout=60_000)
        qtbot.wait(300)  # the last result reaches the GUI thread
    finally:
        _stop(qtbot, widget)
    stack = viewer.layers[f"{tmp_path.name} live"]
    assert stack.data.shape[0] == 6  # skipped frames are shown too
    for index in range(6):
        np.testing.assert_array_equal(stack.data[index], frames[index % len(frames)])
    points = viewer.layers[f"{tmp_path.name} live atoms"]
    analysed = set(points.data[:, 0].astype(int))
    # The newest frame is analysed, and its atoms sit on its own image, not an older one.
    assert 5 in analysed
    assert len(analysed) == widget.statistics.analysed
    assert "6 received" in widget.status.value


def test_frames_without_a_pixel_size_stop_the_session_once(qtbot, make_napari_viewer,
                                                           tmp_path, frames, monkeypatch):
    errors = []
    monkeypatch.setattr("napari_tem_atoms.napari._worker.show_error", errors.append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.folder.value = tmp_path
    widget.start()
    try:
        qtbot.waitUntil(lambda: "frames analysed" in widget.status.value, timeout=60_000)
        for index in range(3):
            np.save(tmp_path / f"frame_{index}.npy", frames[index])
        qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    finally:
        if widget.worker is not None:
            _stop(qtbot, widget)
    assert len(errors) == 1 and "no pixel size" in errors[0]
    assert widget.status.value.startswith("Stopped:") and "Pixel size" in widget.status.value
    assert widget.statistics.analysed == 0


def test_missing_folder_is_reported(make_napari_viewer, tmp_path, monkeypatch):
    import napari_tem_atoms.napari._live_widget as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.folder.value = tmp_path / "absent"
    widget.start()
    assert widget.worker is None
    assert "no such folder to watch" in shown[0]
    widget.folder.line_edit.value = ""  # empty: it watched napari's start folder unasked
    widget.start()
    assert widget.worker is None
    assert "choose the folder" in shown[1]


def test_imaging_conditions_outside_the_model_s_range_stop_the_start(make_napari_viewer,
                                                                     tmp_path, monkeypatch):
    import napari_tem_atoms.napari._live_widget as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    widget.model.value = "au-hrtem"  # a model that takes the imaging conditions
    assert not widget.conditions.native.isHidden()
    widget.folder.value = tmp_path
    widget.conditions.cs_known.value = True
    widget.conditions.cs.value = 1200.0  # an uncorrected microscope: Cs 1.2 mm
    widget.start()
    assert widget.worker is None
    assert shown == ["Live mode: Cs 1200 µm is outside what the model was trained on "
                     "(-32 … 32 µm): leave it out (the model then works without it), or check "
                     "the value and its unit"]
