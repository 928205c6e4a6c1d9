"""The "Detect atoms" dock widget, end to end in a viewer, with the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils import progress

from napari_tem_atoms.samples import synthetic_gold_stack

PLUGIN = "napari-tem-atoms"
pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_stack(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=4, shape=(256, 256), particle_radius=11.0, seed=3)
    viewer.add_image(stack.images, name="stack", scale=(1, 0.12, 0.12),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    return viewer, widget, stack


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None and widget.cancel_button.enabled is False,
                    timeout=timeout)


def test_widget_detects_the_sample_columns(qtbot, viewer_with_stack):
    viewer, widget, stack = viewer_with_stack
    assert widget.sampling.value == pytest.approx(0.12)
    assert widget.sampling_note.value == ""
    widget.run()
    assert not widget.run_button.enabled  # disabled while busy
    # Progress shows in the widget, not in napari's activity dock (whose status-bar spinner
    # costs a software-rendered display most of a core).
    assert len(progress._all_instances) == 0
    _wait(qtbot, widget)
    assert widget.progress_bar.max == 4 and widget.progress_bar.value == 4
    points = viewer.layers["stack atoms"]
    assert set(points.features.columns) >= {"frame", "confidence"}
    np.testing.assert_allclose(points.scale, [1, 0.12, 0.12])
    truth = stack.columns[(stack.columns.frame == 0) & (stack.columns.n_atoms >= 3)]
    found = points.data[points.data[:, 0] == 0][:, 1:]
    distance = np.linalg.norm(found[:, None] - truth[["y", "x"]].to_numpy()[None], axis=-1)
    recall = np.mean(distance.min(axis=0) * 0.12 < 0.5)
    assert recall > 0.8, recall
    assert "atoms in 4 frame(s)" in widget.status.value and "on cpu" in widget.status.value
    assert widget.run_button.enabled


def test_threshold_change_refinds_peaks_without_the_network(qtbot, viewer_with_stack,
                                                            monkeypatch):
    viewer, widget, _ = viewer_with_stack
    widget.frames.value = "current frame"
    widget.run()
    _wait(qtbot, widget)
    before = len(viewer.layers["stack atoms"].data)
    import napari_tem_atoms.napari._detect_widget as module

    monkeypatch.setattr(module, "iter_detect_atoms", None)  # the network must not run again
    widget.threshold.value = 0.9
    after = len(viewer.layers["stack atoms"].data)
    assert after < before


def test_rerun_replaces_the_points_layer(qtbot, viewer_with_stack):
    viewer, widget, _ = viewer_with_stack
    widget.frames.value = "current frame"
    widget.run()
    _wait(qtbot, widget)
    widget.run()
    _wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers].count("stack atoms") == 1


@pytest.mark.slow
def test_cancel_stops_mid_stack(qtbot, make_napari_viewer, monkeypatch):
    import napari_tem_atoms.napari._detect_widget as module

    # Every frame its own batch, and frames slow enough that the run cannot end before the
    # first batch is seen (a faster network finished 30 small frames within one batch).
    monkeypatch.setattr(module, "YIELD_INTERVAL", 0.0)
    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=30, shape=(768, 768), seed=4)
    viewer.add_image(stack.images, name="long", scale=(1, 0.12, 0.12),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    widget.run()
    qtbot.waitUntil(lambda: len(widget._results) >= 1, timeout=120_000)
    widget.cancel()
    _wait(qtbot, widget)
    assert 1 <= len(widget._results) < 30
    assert "cancelled after" in widget.status.value


def test_missing_pixel_size_is_shown_and_blocks_the_run(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)), name="raw")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    assert "No pixel size" in widget.sampling_note.value
    assert not widget.run_button.enabled
    widget.sampling.value = 0.1
    assert widget.run_button.enabled


def test_errors_reach_the_user_in_plain_words(qtbot, make_napari_viewer, monkeypatch):
    import napari_tem_atoms.napari._worker as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((128, 128)), name="flat", scale=(0.1, 0.1),
                     units=("angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    widget.run()
    _wait(qtbot, widget)
    assert shown == ["Detect atoms: the image is constant (no contrast): nothing to detect"]


def test_a_bad_frame_is_named_in_the_message(qtbot, make_napari_viewer, monkeypatch):
    import napari_tem_atoms.napari._worker as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=3, shape=(128, 128), particle_radius=6.0, seed=3)
    images = stack.images.copy()
    images[2, 10, 10] = np.nan
    viewer.add_image(images, name="stack", scale=(1, 0.12, 0.12),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    for choice in ("all frames", "current frame"):
        widget.frames.value = choice
        viewer.dims.set_current_step(0, 2)
        widget.run()
        _wait(qtbot, widget)
        assert shown[-1].startswith("Detect atoms: frame 2: ") and "NaN" in shown[-1], shown


def test_imaging_conditions_show_for_a_model_that_takes_them(qtbot, viewer_with_stack):
    viewer, widget, _ = viewer_with_stack
    inputs = widget.conditions
    # Shown exactly when the selected model takes them: au-hrtem does, stem-columns not.
    widget.model.value = "au-hrtem"
    assert not inputs.native.isHidden()
    assert inputs.values() == {"cs": None, "defocus": None}  # none known yet
    assert not inputs.cs.enabled
    inputs.cs_known.value = True
    assert inputs.cs.enabled and not inputs.defocus.enabled
    inputs.cs.value = -15.0
    assert inputs.values() == {"cs": -15e4, "defocus": None}
    assert inputs.transfer_note.native.isHidden()  # said only with both values known
    inputs.defocus_known.value, inputs.defocus.value = True, 0.0
    assert not inputs.transfer_note.native.isHidden()
    assert inputs.transfer_note.value.startswith("⚠") and "{200}" in inputs.transfer_note.value
    inputs.defocus.value = -80.0
    assert inputs.transfer_note.value.startswith("✓")
    inputs.defocus_known.value = False

    widget.frames.value = "current frame"
    widget.run()
    _wait(qtbot, widget)
    points = viewer.layers["stack atoms"]
    assert points.metadata["cs_angstrom"] == -15e4 and points.metadata["defocus_angstrom"] is None

    widget.model.value = "stem-columns"
    assert inputs.native.isHidden()
    assert inputs.values() == {"cs": None, "defocus": None}


def test_model_lists_hold_only_models_of_their_task(make_napari_viewer):
    # A species network takes three images; offering it for detection ended in a traceback.
    viewer = make_napari_viewer()
    lists = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1].model.choices
             for name in ("Detect atoms", "Live mode", "Occupancy", "Species (focal series)")}
    for name in ("Detect atoms", "Live mode", "Occupancy"):
        assert "au-hrtem" in lists[name] and "mos2-focal" not in lists[name], name
    assert lists["Species (focal series)"] == ("mos2-focal",)


def test_pixel_size_set_on_the_layer_reaches_the_widget(make_napari_viewer):
    # The Calibration widget sets the layer's scale; Detect followed only a change of layer.
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.random.default_rng(0).random((64, 64)), name="raw")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    assert not widget.run_button.enabled
    layer.scale, layer.units = (0.12, 0.12), ("angstrom", "angstrom")
    assert widget.sampling.value == pytest.approx(0.12) and widget.run_button.enabled
    layer.scale = (1.0, 1.0)  # far outside the trained range: said, not refused
    assert "outside the trained range" in widget.sampling_note.value
    assert widget.run_button.enabled


def test_a_current_frame_run_keeps_the_other_frames(qtbot, viewer_with_stack):
    viewer, widget, _ = viewer_with_stack
    widget.frames.value = "all frames"
    widget.run()
    _wait(qtbot, widget)
    points = viewer.layers["stack atoms"]
    per_frame = np.bincount(points.features["frame"].astype(int), minlength=4)
    assert (per_frame > 0).all()
    widget.frames.value = "current frame"
    viewer.dims.set_current_step(0, 2)
    widget.run()
    _wait(qtbot, widget)
    np.testing.assert_array_equal(
        np.bincount(points.features["frame"].astype(int), minlength=4), per_frame)
    assert "keeps 3 frame(s) of earlier runs" in widget.status.value
    widget.mirrors.value = True  # other settings: a new result, this frame only
    widget.run()
    _wait(qtbot, widget)
    assert set(points.features["frame"]) == {2}
    viewer.layers["stack"].scale = (1, 0.24, 0.24)  # recalibrated: the points follow
    np.testing.assert_allclose(points.scale[-2:], (0.24, 0.24))
    assert "detect again" in widget.status.value


def test_status_follows_the_threshold_and_the_chosen_image(qtbot, viewer_with_stack):
    # The status said the run's count (1,238) after a new threshold left 1,174 points, and
    # still described the old image after another was chosen.
    viewer, widget, _ = viewer_with_stack
    widget.frames.value = "current frame"
    widget.run()
    _wait(qtbot, widget)
    points = viewer.layers["stack atoms"]
    widget.threshold.value = 0.9
    assert widget.status.value.startswith(f"{len(points.data)} atoms in 1 frame(s)")
    assert "0.90" in widget.status.value
    other = viewer.add_image(np.zeros((64, 64)), name="other", scale=(0.12, 0.12),
                             units=("angstrom", "angstrom"))
    widget.image_layer.value = other
    assert widget.status.value == "" and widget.progress_bar.value == 0
    widget.image_layer.value = viewer.layers["stack"]  # back: what its layer holds
    assert widget.status.value.startswith(f"{len(points.data)} atoms")


def test_the_defocus_sign_is_in_its_label(make_napari_viewer):
    # abTEM's sign (defocus = -C10) was said in a tooltip only.
    viewer = make_napari_viewer()
    for name in ("Detect atoms", "Live mode", "Occupancy"):
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert widget.conditions.defocus.label == "Defocus (Å, + = underfocus)", name
    _, species = viewer.window.add_plugin_dock_widget(PLUGIN, "Species (focal series)")
    assert "+ = underfocus" in species.defoci.label
