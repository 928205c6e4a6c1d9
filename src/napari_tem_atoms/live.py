"""Live analysis while the microscope records: watch a folder, keep up with the frames.

No Qt here: the napari widget drives these from a worker thread, and scripts can too.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TEMFileError
from .io import FRAME_EXTENSIONS, natural_sort_key, read_image

__all__ = ["FolderWatcher", "FrameQueue", "LiveStatistics"]


@dataclass
class _Pending:
    size: int
    modified: float
    since: float


class FolderWatcher:
    """Report the frame files that appear in a folder, once each, only when complete.

    A file counts as complete when its size and modification time have not changed for
    `settle_seconds` and it opens cleanly; a file still being written is looked at again on the
    next poll, never read half-way.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder the acquisition software writes into.
    extensions : tuple of str, optional
        Frame files to look for.
    settle_seconds : float, optional
        How long a file's size must stay the same before it is read.
    include_existing : bool, optional
        Also report the files already there when watching starts.
    """

    def __init__(self, folder: str | os.PathLike, extensions: tuple[str, ...] = FRAME_EXTENSIONS,
                 settle_seconds: float = 0.2, include_existing: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise TEMFileError(self.folder, "no such folder to watch")
        self.extensions = tuple(e.lower() for e in extensions)
        self.settle_seconds = settle_seconds
        self._done: set[str] = set()
        self._pending: dict[str, _Pending] = {}
        self.failed: list[TEMFileError] = []
        if not include_existing:
            self._done.update(p.name for p in self._candidates())

    def _candidates(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise TEMFileError(self.folder, f"cannot be read ({exc.strerror})") from exc
        return [Path(e.path) for e in entries
                if e.is_file() and not e.name.startswith(".")
                and Path(e.name).suffix.lower() in self.extensions]

    def poll(self, now: float | None = None) -> list[Path]:
        """The files that became complete since the last poll, in natural order."""
        now = time.monotonic() if now is None else now
        ready = []
        for path in self._candidates():
            if path.name in self._done:
                continue
            try:
                stat = path.stat()
            except OSError:  # removed or renamed meanwhile
                continue
            pending = self._pending.get(path.name)
            if (pending is None or pending.size != stat.st_size
                    or pending.modified != stat.st_mtime):
                self._pending[path.name] = _Pending(stat.st_size, stat.st_mtime, now)
                continue
            if stat.st_size == 0 or now - pending.since < self.settle_seconds:
                continue
            ready.append(path)
        ready.sort(key=lambda p: natural_sort_key(p.name))
        for path in ready:
            self._pending.pop(path.name, None)
            self._done.add(path.name)
        return ready

    def read_ready(self, now: float | None = None) -> list[tuple[Path, object]]:
        """Read the complete new files: (path, TEMImage); unreadable ones go to `failed`."""
        images = []
        for path in self.poll(now):
            try:
                images.append((path, read_image(path)))
            except TEMFileError as exc:
                self.failed.append(exc)
        return images


@dataclass
class LiveStatistics:
    """Frames analysed, rate and backlog of a live session, for the status line."""

    analysed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    recent: deque = field(default_factory=lambda: deque(maxlen=20))

    def frame_done(self, now: float | None = None) -> None:
        """Count one analysed frame."""
        self.analysed += 1
        self.recent.append(time.monotonic() if now is None else now)

    @property
    def frames_per_second(self) -> float:
        """Rate over the last (up to 20) frames."""
        if len(self.recent) < 2:
            return 0.0
        span = self.recent[-1] - self.recent[0]
        return (len(self.recent) - 1) / span if span > 0 else 0.0

    def describe(self, backlog: int) -> str:
        """One line for the widget."""
        text = (f"{self.analysed} frames analysed, {self.frames_per_second:.1f} frames/s, "
                f"backlog {backlog}")
        if self.skipped:
            text += f"; frames arrive faster than they are analysed: skipped {self.skipped}"
        return text


class FrameQueue:
    """Frames waiting for analysis; when `keep_up`, only the newest is kept.

    Parameters
    ----------
    keep_up : bool
        Skip to the newest frame when frames arrive faster than they are analysed (the view
        stays live); otherwise analyse every frame, however far behind.
    statistics : LiveStatistics
        Receives the count of skipped frames.
    """

    def __init__(self, keep_up: bool, statistics: LiveStatistics) -> None:
        self.keep_up = keep_up
        self.statistics = statistics
        self._items: deque = deque()
        self._lock = threading.Lock()  # filled by the GUI thread, emptied by the worker

    def put(self, item: object) -> None:
        """Add a frame."""
        with self._lock:
            self._items.append(item)

    def take(self) -> object | None:
        """The next frame to analyse (the newest when keeping up), or None."""
        with self._lock:
            if not self._items:
                return None
            if self.keep_up and len(self._items) > 1:
                self.statistics.skipped += len(self._items) - 1
                item = self._items[-1]
                self._items.clear()
                return item
            return self._items.popleft()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
