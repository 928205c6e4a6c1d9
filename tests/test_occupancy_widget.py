"""The "Occupancy" dock widget in a viewer: heat map, coloured sites, plots, export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_tem_atoms.samples import synthetic_gold_stack

PLUGIN = "napari-tem-atoms"
pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_video(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=8, shape=(256, 256), particle_radius=11.0, seed=4,
                                 drift_per_frame=1.0)
    viewer.add_image(stack.images, name="video", scale=(1, 0.12, 0.12),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Occupancy")
    return viewer, widget, stack


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None and widget.cancel_button.enabled is False,
                    timeout=timeout)


def test_known_atoms_give_the_true_occupancy_as_a_heat_map(qtbot, viewer_with_video, tmp_path):
    viewer, widget, stack = viewer_with_video
    truth = stack.columns
    viewer.add_points(truth[["frame", "y", "x"]].to_numpy(), name="true atoms",
                      scale=(1, 0.12, 0.12))
    widget.atoms_layer.value = viewer.layers["true atoms"]
    assert widget.run_button.enabled, widget.note.value
    widget.run()
    assert not widget.run_button.enabled
    _wait(qtbot, widget)
    result = widget.result
    assert result is not None, widget.status.value
    # The drift was measured from the images and undone.
    np.testing.assert_allclose(result.drift, stack.drift, atol=0.3)
    sites = result.sites
    seen = stack.sites[stack.sites.site.isin(truth.site.unique())]
    assert len(sites) == len(seen)
    distance = np.linalg.norm(sites[["y", "x"]].to_numpy()[:, None]
                              - seen[["y", "x"]].to_numpy()[None], axis=-1)
    match = distance.argmin(axis=0)
    assert distance.min(axis=0).max() < 0.5
    np.testing.assert_allclose(sites["occupancy"].to_numpy()[match], seen["occupancy"],
                               atol=1e-9)

    points = viewer.layers["video sites"]
    np.testing.assert_allclose(points.scale, [0.12, 0.12])
    assert "occupancy" in points.features
    colours = points.face_color[:, :3]
    low, high = int(np.argmin(sites["occupancy"])), int(np.argmax(sites["occupancy"]))
    assert not np.allclose(colours[low], colours[high])  # coloured by occupancy
    heat = viewer.layers["video occupancy map"]
    assert heat.colorbar.visible and heat.contrast_limits == [0.0, 1.0]
    y, x = np.round(sites[["y", "x"]].to_numpy()[low]).astype(int)
    assert heat.data[y, x] == pytest.approx(sites["occupancy"][low])
    assert "video drift-corrected" in viewer.layers
    assert widget.plot is not None
    widget.plot.show_site(low)
    assert f"site {low}" in widget.plot.timeline_axes.get_title()

    widget.output.value = tmp_path / "sites.csv"
    widget.with_matrix.value = True
    widget.save()
    saved = pd.read_csv(tmp_path / "sites.csv")
    assert list(saved.columns[:3]) == ["site", "y", "x"] and len(saved) == len(sites)
    assert pd.read_csv(tmp_path / "sites_matrix.csv").shape == (8, len(sites) + 1)


def test_detecting_now_finds_most_sites(qtbot, viewer_with_video):
    _, widget, stack = viewer_with_video
    widget.run()
    _wait(qtbot, widget)
    sites = widget.result.sites
    truth = stack.sites[stack.sites.n_atoms >= 3]
    distance = np.linalg.norm(truth[["y", "x"]].to_numpy()[:, None]
                              - sites[["y", "x"]].to_numpy()[None], axis=-1)
    found = np.mean(distance.min(axis=1) * 0.12 < 0.5)
    assert found > 0.8, found


def test_bad_choices_are_explained_and_block_the_run(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Occupancy")
    assert not widget.run_button.enabled and "Open a video" in widget.note.value
    viewer.add_image(np.random.default_rng(0).normal(size=(64, 64)), name="one image")
    assert not widget.run_button.enabled and "stack of frames" in widget.note.value
    viewer.add_image(np.random.default_rng(0).normal(size=(3, 64, 64)), name="video")
    widget.video_layer.value = viewer.layers["video"]
    assert "pixel size" in widget.note.value
    viewer.add_points(np.zeros((3, 2)), name="2-D atoms")
    widget.atoms_layer.value = viewer.layers["2-D atoms"]
    assert "every frame" in widget.note.value and not widget.run_button.enabled


def test_imaging_conditions_reach_the_detector_and_wrong_ones_stop_the_run(
        qtbot, viewer_with_video, monkeypatch):
    import napari_tem_atoms.napari._occupancy_widget as module

    viewer, widget, stack = viewer_with_video
    inputs = widget.conditions
    widget.model.value = "au-hrtem"  # a model that takes the imaging conditions
    widget._validate()
    assert not inputs.native.isHidden()
    inputs.cs_known.value, inputs.cs.value = True, -15.0
    inputs.defocus_known.value, inputs.defocus.value = True, -60.0

    passed = []

    original = module.iter_video_occupancy

    def stand_in(*args, cs=None, defocus=None, **kwargs):
        passed.append({"cs": cs, "defocus": defocus})
        return original(*args, **kwargs)  # the shipped model may not take them

    monkeypatch.setattr(module, "iter_video_occupancy", stand_in)
    widget.run()
    _wait(qtbot, widget)
    assert passed == [{"cs": -15e4, "defocus": -60.0}]
    assert widget.result is not None

    # An uncorrected microscope's Cs is outside what the model knows: said at once, no run.
    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    inputs.cs.value = 1200.0
    widget.run()
    assert widget.worker is None and len(passed) == 1
    assert shown and shown[0].startswith("Occupancy: ") and "Cs" in shown[0], shown

    # Atoms given: nothing is detected here, so the conditions are neither shown nor passed
    # (the out-of-range Cs set above stops nothing).
    viewer.add_points(stack.columns[["frame", "y", "x"]].to_numpy(), name="true atoms",
                      scale=(1, 0.12, 0.12))
    widget.atoms_layer.value = viewer.layers["true atoms"]
    assert inputs.native.isHidden()
    widget.run()
    _wait(qtbot, widget)
    assert passed[-1] == {"cs": None, "defocus": None} and len(passed) == 2
    assert len(shown) == 1


def test_the_heat_map_has_a_title_and_the_legend_leaves_the_points(viewer_with_video):
    # The colour bar had no title, and the legend sat over the points of the occupancy panel.
    from napari_tem_atoms.analysis.occupancy import site_occupancy

    viewer, widget, stack = viewer_with_video
    widget._run_layer = viewer.layers["video"]
    widget.result = site_occupancy(stack.columns[["frame", "y", "x"]], 8, sampling=0.12)
    widget._show_result()
    heat = viewer.layers["video occupancy map"]
    assert heat.colorbar.visible and "occupancy" in heat.name
    # The layer's name, tiled beside the colour bar, is its title.
    assert heat.name_overlay.visible and heat.name_overlay.position == heat.colorbar.position
    plot = widget.plot
    plot.canvas.draw()
    renderer = plot.canvas.get_renderer()
    legend = plot.occupancy_axes.get_legend().get_window_extent(renderer)
    assert legend.y0 >= plot.occupancy_axes.get_window_extent(renderer).y1 - 1  # above it
