"""The event stream of the long operations, its plain runner, and the terminal driver."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from napari_tem_atoms import TEMAtomsError, detect_atoms, iter_detect_atoms
from napari_tem_atoms.events import (
    DomainWarning,
    FocalSeriesWarning,
    Notice,
    Progress,
    SamplingWarning,
    TEMAtomsWarning,
    TransferWarning,
    batch_progress,
    ignore,
    map_events,
    run,
)
from napari_tem_atoms.samples import synthetic_gold_stack
from napari_tem_atoms.terminal import TerminalDriver


def _stream(result="table"):
    """Two frames, a notice between them, then the result."""
    yield Progress("detect", 1, 2, "frame 0")
    yield Notice("sampling", "pixel size 0.5 Å/px is outside the trained range",
                 {"sampling": 0.5})
    yield Progress("detect", 2, 2, "frame 1")
    return result


def test_run_returns_the_result_and_issues_notices_as_warnings_of_their_class():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(_stream()) == "table"
    assert [(w.category, str(w.message)) for w in caught] == [
        (SamplingWarning, "pixel size 0.5 Å/px is outside the trained range")]
    assert caught[0].filename == __file__  # pointed at the caller, not at the runner
    seen = []
    assert run(_stream(), on_event=seen.append) == "table"
    assert [type(event).__name__ for event in seen] == ["Progress", "Notice", "Progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run(_stream(), on_event=ignore) == "table"


def test_every_notice_kind_is_a_filterable_user_warning():
    for kind, category in (("sampling", SamplingWarning), ("domain", DomainWarning),
                           ("transfer", TransferWarning), ("focal_series", FocalSeriesWarning),
                           ("something else", TEMAtomsWarning)):
        assert Notice(kind, "text").warning_class is category
        assert issubclass(category, TEMAtomsWarning) and issubclass(category, UserWarning)
    # The classes' old homes give the same classes.
    from napari_tem_atoms.analysis import detect, transfer

    assert detect.DomainWarning is DomainWarning and transfer.TransferWarning is TransferWarning


def test_events_are_frozen_and_a_notice_s_data_read_only():
    notice = Notice("transfer", "barely transferred", {"cs": -15e4})
    with pytest.raises(AttributeError):
        notice.text = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        notice.data["cs"] = 0.0  # type: ignore[index]
    assert Progress("drift", 1, 3) == Progress("drift", 1, 3, None)


def test_map_events_changes_progress_only_and_keeps_the_result():
    def stage():
        result = yield from map_events(_stream(), lambda p: Progress("frames", p.done, p.total))
        return result * 2

    events = []
    assert run(stage(), on_event=events.append) == "tabletable"
    assert [getattr(event, "stage", "notice") for event in events] == [
        "frames", "notice", "frames"]


def test_batch_progress_holds_progress_and_passes_notices_and_errors_on():
    times = iter([0.0, 0.1, 0.2, 0.3, 0.4, 5.0, 5.1])

    def frames():
        for done in range(1, 6):
            yield Progress("detect", done, 5, done)
            if done == 2:
                yield Notice("sampling", "said")
        return "all"

    events = []
    assert run(batch_progress(frames(), 1.0, clock=lambda: next(times)),
               on_event=events.append) == "all"
    # Held until the notice (which follows the held frames at once), then until 1 s passed.
    assert [(type(e).__name__, getattr(e, "item", None)) for e in events] == [
        ("Progress", [1, 2]), ("Notice", None), ("Progress", [3, 4, 5])]
    assert events[-1].done == 5

    def failing():
        yield Progress("detect", 1, 3, "frame 0")
        raise TEMAtomsError("frame 1: contains NaN")

    kept = []
    with pytest.raises(TEMAtomsError, match="frame 1"):
        run(batch_progress(failing(), 60.0), on_event=kept.append)
    assert [event.item for event in kept] == [["frame 0"]]  # what came before is kept


def test_detection_yields_notices_and_detect_atoms_warns():
    image = synthetic_gold_stack(n_frames=1, shape=(96, 96), particle_radius=5.0).images[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stream warns of nothing: it yields
        events = list(iter_detect_atoms(image, sampling=0.4))
    assert [type(event).__name__ for event in events] == ["Notice", "Progress"]
    assert events[0].kind == "sampling" and events[0].data["sampling"] == 0.4
    assert (events[1].stage, events[1].done, events[1].total) == ("detect", 1, 1)
    assert list(events[1].item.atoms.columns[:3]) == ["frame", "y", "x"]
    with pytest.warns(SamplingWarning, match="outside the trained range"):
        detect_atoms(image, sampling=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", TEMAtomsWarning)  # what a script can now write
        assert len(detect_atoms(image, sampling=0.4)) >= 0


def test_the_terminal_driver_says_each_notice_once_with_its_file_and_a_bar_per_stage():
    stream = io.StringIO()
    driver = TerminalDriver(stream=stream, where="video.tif")

    def stages():
        for done in (1, 2):
            yield Progress("drift", done, 2)
            yield Notice("transfer", "barely transferred")
        yield Notice("sampling", "too coarse", {"path": "other.tif"})
        yield Progress("sites", 1, 1)
        return 42

    driver.notice(Notice("transfer", "barely transferred"))  # said before the run
    assert driver.run(stages()) == 42
    text = stream.getvalue()
    assert text.count("warning: video.tif: barely transferred") == 1
    assert text.count("warning: other.tif: too coarse") == 1
    assert "drift: 100%" in text and "sites: 100%" in text
    assert driver.status(wrote=True) == 0 and driver.status(wrote=False) == 1
    driver.error("frame 3: contains NaN")
    assert "error: frame 3: contains NaN" in stream.getvalue()
    assert driver.status(wrote=True) == 2  # a partial result


def test_the_terminal_driver_closes_its_bar_and_raises_on_bad_input():
    stream = io.StringIO()
    driver = TerminalDriver(stream=stream)

    def failing():
        yield Progress("detect", 1, 3)
        raise TEMAtomsError("frame 1: contains NaN")

    with pytest.raises(TEMAtomsError, match="contains NaN"):
        driver.run(failing())
    assert driver._bar is None  # closed: the error line that follows is not mixed into it
    assert "detect:  33%" in stream.getvalue()


def test_drift_and_focal_series_alignment_report_progress():
    from napari_tem_atoms.analysis.align import iter_align_focal_series, iter_estimate_drift

    stack = synthetic_gold_stack(n_frames=3, shape=(96, 96), particle_radius=5.0).images
    progress = []
    shifts = run(iter_estimate_drift(stack), on_event=progress.append)
    assert [(p.stage, p.done, p.total, p.item.frame) for p in progress] == [
        ("drift", 1, 3, 0), ("drift", 2, 3, 1), ("drift", 3, 3, 2)]
    assert shifts.shape == (3, 2)
    progress = []
    shifts = run(iter_align_focal_series(stack, window="hann"), on_event=progress.append)
    assert [(p.stage, p.done, p.total) for p in progress] == [
        ("align", 1, 3), ("align", 2, 3), ("align", 3, 3)]  # 3 pairs of 3 images
    np.testing.assert_array_equal(shifts[1], 0.0)  # the middle image is the reference
