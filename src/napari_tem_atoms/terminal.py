"""The terminal driver of the event streams: progress bars on stderr, notices said once.

``tem-atoms`` runs every long operation through one :class:`TerminalDriver` per command: a bar
per stage (drift, detect, sites...), each :class:`~napari_tem_atoms.events.Notice` printed as a
``warning:`` line the first time it comes (a notice said per frame is said once), errors as
``error:`` lines, and the exit status from what was said (see :meth:`TerminalDriver.status`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO, TypeVar

from .events import Event, Events, Notice, Progress, run

__all__ = ["TerminalDriver"]

R = TypeVar("R")

#: What a unit of each stage is, in the bar ("frame" when not listed).
STAGE_UNITS = {"sites": "step", "species": "series", "detect": "frame", "drift": "frame"}


class TerminalDriver:
    """Run event streams on a terminal.

    Parameters
    ----------
    stream : file, optional
        Where the bars and lines go (default: ``sys.stderr``, read when the driver is made, so
        that pytest's capture sees it).
    where : str, optional
        Named before every notice (``warning: FILE: ...``), unless the notice names its own
        file in ``data["path"]``.
    descriptions : mapping, optional
        The bar's title per stage (default: the stage's name).
    """

    def __init__(self, stream: TextIO | None = None, where: str | None = None,
                 descriptions: Mapping[str, str] | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.where = where
        self.descriptions = dict(descriptions or {})
        self.errors = 0
        self._said: set[tuple[str | None, str]] = set()
        self._bar: Any = None

    def run(self, events: Events[R]) -> R:
        """Run `events` to its end, showing progress and notices; return its result.

        A :class:`~napari_tem_atoms.errors.TEMAtomsError` raised by the stream is raised on
        (the bar is closed first): the command says it and chooses its exit status.
        """
        try:
            return run(events, on_event=self._show)
        finally:
            self._close_bar()

    def _show(self, event: Event) -> None:
        if isinstance(event, Notice):
            self.notice(event)
        else:
            self._progress(event)

    def notice(self, notice: Notice, where: str | None = None) -> None:
        """Print ``warning: [FILE: ]TEXT``, unless this text was said for this file already."""
        where = notice.data.get("path", where or self.where)
        if (where, notice.text) in self._said:
            return
        self._said.add((where, notice.text))
        self._write(f"warning: {where}: {notice.text}" if where else f"warning: {notice.text}")

    def error(self, message: str) -> None:
        """Print ``error: MESSAGE`` and count it (see :meth:`status`)."""
        self.errors += 1
        self._write(f"error: {message}")

    def status(self, wrote: bool) -> int:
        """The exit status: 0, 1 when nothing was written, 2 when errors left a partial result."""
        if not wrote:
            return 1
        return 2 if self.errors else 0

    def _progress(self, progress: Progress) -> None:
        from tqdm import tqdm

        bar = self._bar
        description = self.descriptions.get(progress.stage, progress.stage)
        if bar is None or bar.desc != description:  # one bar per stage at a time
            self._close_bar()
            bar = self._bar = tqdm(total=progress.total, desc=description, file=self.stream,
                                   unit=STAGE_UNITS.get(progress.stage, "frame"))
        bar.update(progress.done - bar.n)

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)  # above the bar, which stays whole
        else:
            print(line, file=self.stream)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
