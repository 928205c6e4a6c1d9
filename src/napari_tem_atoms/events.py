"""The one event stream of every long operation: progress, notices, and a result at the end.

Every ``iter_*`` function of the core (detection, species, drift, occupancy, batch jobs) is a
generator that yields two kinds of event and *returns* its result:

- :class:`Progress` (stage, done, total, item): how far a stage has got, usually sent as a
  unit of work finishes; `item` carries what that unit produced when a caller can show it
  early (a frame's atoms), else None;
- :class:`Notice` (kind, text, data): something the user must read (a pixel size outside the
  trained range, an HRTEM model given a STEM image, a defocus that barely transfers the
  lattice, a focal series unlike the trained ones). It is an event, not a ``warnings.warn``:
  whoever drives the stream decides how to say it, once.

Why the result is the generator's return value and not a last ``Result`` event: stages compose
with ``result = yield from iter_stage(...)`` (progress and notices pass through untouched, the
value comes back typed, see :func:`~napari_tem_atoms.analysis.video.iter_video_occupancy`);
the annotation ``Events[pandas.DataFrame]`` says what comes back; and no caller can take an
unfinished stream for a finished one, since a stream closed early has no return value at all.

The drivers, and only they, run a stream to its end:

- :func:`run` (here): the plain API functions (``detect_atoms``, ...). Progress is dropped, each
  notice becomes a Python warning of its class (:data:`NOTICE_WARNINGS`, all subclasses of
  :class:`TEMAtomsWarning`), so scripts can filter them as before;
- :class:`~napari_tem_atoms.terminal.TerminalDriver`: ``tem-atoms`` and its batch jobs
  (progress bar on stderr, each notice printed once, the exit status);
- :class:`~napari_tem_atoms.napari._worker.WorkerRunner`: the dock widgets (progress bar,
  status, notifications, Cancel).

Nothing here imports napari, Qt or the analysis code: every layer may import it.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

from .errors import (
    DomainWarning,
    FocalSeriesWarning,
    SamplingWarning,
    TEMAtomsWarning,
    TransferWarning,
)

__all__ = [
    "NOTICE_WARNINGS",
    "DomainWarning",
    "Event",
    "Events",
    "FocalSeriesWarning",
    "Notice",
    "Progress",
    "SamplingWarning",
    "TEMAtomsWarning",
    "TransferWarning",
    "batch_progress",
    "ignore",
    "map_events",
    "run",
    "warn",
]

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """How far a stage has got (usually: one more unit of work done).

    Attributes
    ----------
    stage : str
        What is being done, in one word (``"detect"``, ``"drift"``, ``"species"``,
        ``"sites"``, ``"frames"``).
    done : int
        Units of this stage done so far (1 after the first; a stage may announce itself
        with 0).
    total : int or None
        Units in this stage (None: not known, e.g. frames still arriving).
    item : object, optional
        What the unit produced, for a caller that shows results as they come (the
        :class:`~napari_tem_atoms.analysis.detect.DetectionStep` of a frame); None otherwise.
    """

    stage: str
    done: int
    total: int | None
    item: Any = None


@dataclass(frozen=True)
class Notice:
    """Something the user must read; it does not stop the work.

    Attributes
    ----------
    kind : str
        What it is about, a key of :data:`NOTICE_WARNINGS` (``"sampling"``, ``"domain"``,
        ``"transfer"``, ``"focal_series"``), or another word for notices that only drivers show.
    text : str
        The sentence, in plain words, without a "warning:" prefix.
    data : mapping, optional
        The values the sentence was made from (e.g. ``{"sampling": 0.5}``), read-only.
    """

    kind: str
    text: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    @property
    def warning_class(self) -> type[Warning]:
        """The Python warning class :func:`run` issues this notice as."""
        return NOTICE_WARNINGS.get(self.kind, TEMAtomsWarning)


Event: TypeAlias = Progress | Notice
#: A long operation: yields events, returns its result.
Events: TypeAlias = Generator[Event, None, R]


#: The warning class of each notice kind (others are issued as :class:`TEMAtomsWarning`).
NOTICE_WARNINGS: dict[str, type[Warning]] = {
    "sampling": SamplingWarning,
    "domain": DomainWarning,
    "transfer": TransferWarning,
    "focal_series": FocalSeriesWarning,
}


def warn(event: Event) -> None:
    """Issue a :class:`Notice` as a Python warning of its class; ignore progress.

    The default of :func:`run`: what the plain API functions did before the events existed.
    """
    if isinstance(event, Notice):
        warnings.warn(event.text, event.warning_class, stacklevel=_outside_the_package())


def _outside_the_package() -> int:
    """The `stacklevel` of the first caller of :func:`warn` outside this package.

    A warning then points at the user's line (their ``detect_atoms(...)``), however many of
    the package's own functions lie between (what ``skip_file_prefixes`` does from Python 3.12).
    """
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(2), 2  # warn's caller, seen from warnings.warn in warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def ignore(event: Event) -> None:
    """Drop an event: for callers that say a file's notices once themselves (batch frames)."""


def run(events: Events[R], on_event: Callable[[Event], object] = warn) -> R:
    """Run an event stream to its end and return its result.

    Parameters
    ----------
    events : generator
        An ``iter_*`` operation.
    on_event : callable, optional
        Called with every event, in order. Default :func:`warn`: notices become Python warnings
        (the behaviour of ``detect_atoms`` and the other plain functions); :func:`ignore` drops
        them.

    Returns
    -------
    object
        The generator's return value.
    """
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        on_event(event)


def map_events(events: Events[R], change: Callable[[Progress], Progress]) -> Events[R]:
    """Pass a stream on with each :class:`Progress` replaced by ``change(progress)``.

    Notices pass unchanged; the result is returned, so that a stage composes as
    ``result = yield from map_events(iter_stage(...), change)``.
    """
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        yield change(event) if isinstance(event, Progress) else event


def batch_progress(events: Events[R], interval: float,
                   clock: Callable[[], float] = time.perf_counter) -> Events[R]:
    """Gather the progress of a stream into one event at most every `interval` seconds.

    For a driver that pays for each event (a GUI thread woken per frame): the progress events
    that arrive within `interval` of the last one passed on are held and passed on together as
    ``Progress(stage, done, total, item=[their items])`` (the last one's stage, done and
    total). Notices are passed on at once, after the progress held so far. What is held is
    passed on before an error raised by the stream, and at its end.
    """
    held: list[Progress] = []
    sent = clock()

    def flush() -> Progress:
        last = held[-1]
        gathered = Progress(last.stage, last.done, last.total, [event.item for event in held])
        held.clear()
        return gathered

    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                result = stop.value
                break
            if isinstance(event, Notice):
                if held:
                    yield flush()
                yield event
                continue
            held.append(event)
            if clock() - sent >= interval:
                yield flush()
                sent = clock()
    except Exception:
        if held:  # what was done before the error is kept
            yield flush()
        raise
    if held:
        yield flush()
    return result
