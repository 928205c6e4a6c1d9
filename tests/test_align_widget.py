"""The "Align" dock widget: a focal series with contrast reversal, a drifting video, undo."""

from __future__ import annotations

import numpy as np
import pytest

from test_align import focal_series

PLUGIN = "napari-tem-atoms"
WIDGET = "Align (focal series, drift)"
pytestmark = pytest.mark.gui


def _wait(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.worker is None and widget.cancel_button.enabled is False,
                    timeout=timeout)


def test_focal_series_is_aligned_cropped_and_undone(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    true = np.array([[1.7, -2.2], [0.0, 0.0], [-2.4, 1.3]])
    series = focal_series(true)
    layer = viewer.add_image(series, name="series", scale=(1, 0.1, 0.1),
                             units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.reference.value == 1  # the middle defocus by default
    widget.max_shift.value = 6
    widget.run()
    _wait(qtbot, widget)
    # Full at the end: 3 pairs of images, under each of the 2 windows "auto" tries.
    assert widget.progress_bar.value == widget.progress_bar.max == 6
    np.testing.assert_allclose(widget.shifts, true, atol=0.2)
    aligned = viewer.layers["series aligned"]
    assert not layer.visible and aligned.visible
    assert np.all(np.isfinite(aligned.data))  # cropped to the common area
    assert aligned.data.shape[1] < series.shape[1]
    # The crop keeps the frames in place: same world position for the same pixel content.
    # Shifts down to -2.4 and -2.2 px: the first 3 rows and columns are cut off.
    np.testing.assert_allclose(aligned.translate[1:], [3 * 0.1, 3 * 0.1], atol=1e-9)
    table = widget.table.data.to_list()
    assert len(table) == 3 and table[0][0] == pytest.approx(true[0, 0], abs=0.2)
    assert table[0][2] == pytest.approx(true[0, 0] * 0.1, abs=0.02)  # Å column
    assert aligned.metadata["shifts_px"][2][1] == pytest.approx(true[2, 1], abs=0.2)
    widget.undo()
    assert "series aligned" not in viewer.layers and layer.visible


def test_drifting_video_is_registered_frame_by_frame(qtbot, make_napari_viewer):
    from napari_tem_atoms.samples import synthetic_gold_stack

    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=6, shape=(192, 192), particle_radius=8.0, seed=1,
                                 drift_per_frame=1.5)
    viewer.add_image(stack.images, name="video")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.kind.value = "drift (video)"
    widget.reference.value = 0
    widget.crop.value = False
    widget.run()
    _wait(qtbot, widget)
    # The sample's carbon support moves in half-pixel steps only: 0.25 px of its truth is lost.
    np.testing.assert_allclose(widget.shifts, stack.drift, atol=0.45)
    assert viewer.layers["video aligned"].data.shape == stack.images.shape


def test_the_chosen_window_reaches_the_registration(qtbot, make_napari_viewer, monkeypatch):
    import napari_tem_atoms.napari._align_widget as align_widget

    chosen = []
    original = align_widget.iter_align_focal_series

    def recording(*args, **kwargs):
        chosen.append(kwargs["window"])
        return original(*args, **kwargs)

    monkeypatch.setattr(align_widget, "iter_align_focal_series", recording)
    viewer = make_napari_viewer()
    viewer.add_image(focal_series(np.zeros((3, 2))), name="series")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.window.value == "auto"
    widget.window.value = "tukey"
    widget.max_shift.value = 6
    widget.run()
    _wait(qtbot, widget)
    assert chosen == ["tukey"]
    np.testing.assert_allclose(widget.shifts, 0.0, atol=0.2)


def test_single_images_are_refused_with_a_reason(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.add_image(np.zeros((32, 32)), name="image")
    assert not widget.run_button.enabled and "stack" in widget.note.value


def test_cancelling_a_drift_registration_changes_nothing_and_says_so(qtbot,
                                                                     make_napari_viewer):
    from napari_tem_atoms.samples import synthetic_gold_stack

    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=4, shape=(192, 192), particle_radius=8.0, seed=1)
    viewer.add_image(np.repeat(stack.images, 100, axis=0), name="video")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.kind.value = "drift (video)"
    widget.run()
    qtbot.waitUntil(lambda: widget.progress_bar.value >= 2, timeout=60_000)
    widget.cancel()
    _wait(qtbot, widget)
    assert widget.status.value == "Cancelled: nothing was changed."
    assert "video aligned" not in viewer.layers and viewer.layers["video"].visible
    assert widget.run_button.enabled


def test_the_mode_and_reference_follow_the_stack(make_napari_viewer):
    # A 12-frame video was taken for a focal series and aligned to its frame 6.
    from napari_tem_atoms.samples import synthetic_gold_stack

    viewer = make_napari_viewer()
    video = viewer.add_image(synthetic_gold_stack(n_frames=12, shape=(64, 64)).images,
                             name="video")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget.kind.value == "drift (video)" and widget.reference.value == 0
    widget.kind.value = "focal series"  # a mode chosen by hand takes its own reference
    assert widget.reference.value == 6
    series = viewer.add_image(focal_series(np.zeros((3, 2))), name="series")
    widget.stack_layer.value = series
    assert widget.kind.value == "focal series" and widget.reference.value == 1
    widget.stack_layer.value = video
    assert widget.kind.value == "drift (video)" and widget.reference.value == 0


def test_zero_max_shift_reads_auto(make_napari_viewer):
    # "Max shift (px) 0.00" meant automatic (0.9 Å), and read as "no shift".
    viewer = make_napari_viewer()
    _, align = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    _, occupancy = viewer.window.add_plugin_dock_widget(PLUGIN, "Occupancy")
    for spin_box in (align.max_shift, occupancy.max_shift):
        assert spin_box.value == 0 and spin_box.native.text() == "auto"
        spin_box.value = 3.0
        assert spin_box.native.text() == "3.00"


def test_species_takes_the_aligned_stack(qtbot, make_napari_viewer):
    # Align hides the misaligned stack; the Species widget kept it as its input.
    viewer = make_napari_viewer()
    series = viewer.add_image(focal_series(np.array([[1.7, -2.2], [0.0, 0.0], [-2.4, 1.3]])),
                              name="series", scale=(1, 0.1, 0.1),
                              units=("pixel", "angstrom", "angstrom"))
    _, species = viewer.window.add_plugin_dock_widget(PLUGIN, "Species (focal series)")
    _, align = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert species.stack_layer.value is series
    align.max_shift.value = 6
    align.run()
    _wait(qtbot, align)
    aligned = viewer.layers["series aligned"]
    assert not series.visible
    assert species.stack_layer.value is aligned
    assert species.sampling.value == pytest.approx(0.1) and species.run_button.enabled
