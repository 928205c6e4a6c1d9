"""The napari driver of the event streams: progress, notifications once, errors, Cancel."""

from __future__ import annotations

import time

import pytest

from napari_tem_atoms import TEMAtomsError
from napari_tem_atoms.events import Notice, Progress

pytestmark = pytest.mark.gui


def _runner():
    from magicgui.widgets import Container, Label, PushButton

    from napari_tem_atoms.napari._worker import WorkerRunner, make_progress_bar

    class Runner(WorkerRunner, Container):
        title = "Test"

        def __init__(self):
            super().__init__()
            self.run_button, self.cancel_button = PushButton(), PushButton()
            self.status, self.progress_bar = Label(), make_progress_bar()
            self.results, self.errors, self.progress, self.ended = [], [], [], 0

        def _on_progress(self, progress):
            self.progress.append(progress.done)
            super()._on_progress(progress)

        def _on_result(self, result):
            self.results.append(result)

        def _on_error(self, message):
            self.errors.append(message)

        def _after_run(self):
            self.ended += 1
            self.run_button.enabled = True

    return Runner()


@pytest.fixture
def shown(monkeypatch):
    import napari_tem_atoms.napari._worker as module

    said = {"warning": [], "error": []}
    monkeypatch.setattr(module, "show_warning", said["warning"].append)
    monkeypatch.setattr(module, "show_error", said["error"].append)
    return said


def _wait(qtbot, runner):
    qtbot.waitUntil(lambda: runner.worker is None, timeout=30_000)


def test_progress_notices_once_and_the_result_reach_the_gui_thread(qtbot, shown):
    runner = _runner()

    def work():
        for done in (1, 2, 3):
            yield Notice("sampling", "pixel size 0.5 Å/px is outside the trained range")
            yield Progress("detect", done, 3)
        return "atoms"

    runner._start_worker(work, 3, "Detecting", "Detecting...")
    assert not runner.run_button.enabled and runner.cancel_button.enabled
    _wait(qtbot, runner)
    assert runner.progress == [1, 2, 3] and runner.progress_bar.value == 3
    # A notice said per frame is shown once, named by the widget.
    assert shown["warning"] == ["Test: pixel size 0.5 Å/px is outside the trained range"]
    assert runner.results == ["atoms"] and runner.ended == 1
    assert not runner.cancel_button.enabled and runner.run_button.enabled


def test_bad_input_is_said_in_words_and_the_bar_follows_the_stream_s_total(qtbot, shown):
    runner = _runner()

    def work():
        yield Progress("align", 1, 6)
        raise TEMAtomsError("image 2: the image is constant")

    runner._start_worker(work, None, "Aligning", "Aligning...")
    _wait(qtbot, runner)
    assert shown["error"] == ["Test: image 2: the image is constant"]
    assert runner.errors == ["image 2: the image is constant"] and runner.results == []
    assert runner.progress_bar.max == 6 and runner.progress_bar.value == 1
    assert runner.ended == 1


def test_stages_share_one_bar(qtbot, shown):
    runner = _runner()

    def work():
        yield Progress("drift", 2, 2)
        yield Progress("detect", 1, 2)
        return None

    runner._start_worker(work, 5, "Occupancy", "Starting...",
                         stage_offsets={"drift": 0, "detect": 2, "sites": 4})
    _wait(qtbot, runner)
    assert runner.progress_bar.value == 3  # 2 frames of drift, 1 of detection


def test_cancel_stops_the_stream_between_events(qtbot, shown):
    runner = _runner()
    closed = []

    def work():
        try:
            for done in range(1, 10_000):
                time.sleep(0.01)
                yield Progress("detect", done, 10_000)
            return "never"
        finally:
            closed.append(True)  # the stream is closed, not left hanging

    runner._start_worker(work, 10_000, "Detecting", "Detecting...")
    qtbot.waitUntil(lambda: len(runner.progress) >= 2, timeout=30_000)
    runner.cancel()
    assert runner.cancelled and runner.status.value == "Cancelling..."
    _wait(qtbot, runner)
    assert runner.results == [] and runner.ended == 1
    assert len(runner.progress) < 1_000
    qtbot.waitUntil(lambda: closed == [True], timeout=10_000)


def test_the_species_widget_shows_its_notices(qtbot, make_napari_viewer, shown, monkeypatch):
    # It dropped every warning, the STEM one with the rest.
    import numpy as np
    import pandas as pd

    from napari_tem_atoms.napari import _species_widget as module
    from napari_tem_atoms.samples import synthetic_focal_series

    atoms = pd.DataFrame({"frame": 0, "y": [10.0], "x": [10.0], "species": ["Mo"],
                          "confidence": 0.9})

    def stream(*args, **kwargs):
        yield Notice("domain", "this is a STEM-HAADF image but model mos2-focal was trained "
                               "on HRTEM images only")
        yield Progress("species", 1, 1, None)
        yield Notice("focal_series", "focal steps 300, 300 Å are outside the trained 30 to "
                                     "100 Å")
        return atoms

    monkeypatch.setattr(module, "iter_detect_species", stream)
    monkeypatch.setattr(module.SpeciesWidget, "_on_progress", lambda self, progress: None)
    viewer = make_napari_viewer()
    viewer.add_image(synthetic_focal_series(shape=(64, 64)), name="series",
                     scale=(1, 0.1, 0.1), units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms",
                                                     "Species (focal series)")
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert shown["warning"] == [
        "Species: this is a STEM-HAADF image but model mos2-focal was trained on HRTEM images "
        "only", "Species: focal steps 300, 300 Å are outside the trained 30 to 100 Å"]
    assert np.asarray(viewer.layers["series species"].data).shape == (1, 2)
