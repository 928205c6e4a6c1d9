"""The "Species" dock widget: what it refuses before a run starts."""

from __future__ import annotations

import pytest

PLUGIN = "napari-tem-atoms"
pytestmark = pytest.mark.gui


def test_a_constant_image_is_refused_before_the_progress_bar(make_napari_viewer, monkeypatch):
    # The bar started, and the model was loaded, before the core refused the image.
    from napari_tem_atoms.napari import _species_widget as module
    from napari_tem_atoms.samples import synthetic_focal_series

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    viewer = make_napari_viewer()
    series = synthetic_focal_series(shape=(64, 64))
    series[1] = 5.0
    viewer.add_image(series, name="series", scale=(1, 0.1, 0.1),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Species (focal series)")
    assert widget.run_button.enabled, widget.note.value
    widget.run()
    assert widget.worker is None and widget.progress_bar.value == 0
    assert widget.status.value == "image 2: the image is constant (no contrast): nothing to detect"
    assert shown == [f"Species: {widget.status.value}"]
    assert widget.run_button.enabled  # the inputs are fine: the image is the problem
