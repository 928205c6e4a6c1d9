"""Live analysis while the microscope records: watch a folder, keep up with the frames.

No Qt here: the napari widget drives these from a worker thread, and scripts can too.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TEMAtomsError, TEMFileError
from .events import Events, Notice, Progress, run
from .io import FRAME_EXTENSIONS, natural_sort_key, read_image

__all__ = ["FolderWatcher", "FrameQueue", "LiveStatistics", "iter_live_analysis"]


#: A file's identity and version: (device, inode, size, modification time in ns). A rename
#: keeps it; writing the file again, or deleting it and writing a new one, changes it.
_Key = tuple[int, int, int, int]


def _key(status: os.stat_result) -> _Key:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass
class _Pending:
    """A frame file not reported yet: its version, since when, and whether a read is put off."""

    key: _Key
    since: float  # when this version (key) was first seen
    held_until: float | None = None  # a read failed or gave a blank frame: not again before


def _is_blank(data: object) -> bool:
    """True when every value of the image is the same (zeros before the pixels are written)."""
    values = np.asarray(data).ravel()
    return values.size == 0 or bool((values == values[0]).all())


class FolderWatcher:
    """Report the frame files that appear in a folder, once each, only when complete.

    A file counts as complete when its size and modification time have not changed for
    `settle_seconds` and it opens cleanly; a file still being written is looked at again on the
    next poll, never read half-way.

    What :meth:`read_ready` does with a file that does not look complete:

    - A file that cannot be read is read again once it changes (its writer paused longer than
      `settle_seconds`), and reported in :attr:`failed` only when it has stayed unchanged and
      unreadable for `give_up_seconds`. Should it change after that, it is read again.
    - A frame whose pixels all have one value (a file written as a memory map, e.g. with
      ``numpy.lib.format.open_memmap``, holds zeros until its pixels are written, at its final
      size) is held back until it has stayed unchanged for ``3 * settle_seconds``, then read
      again: a frame still blank then (the beam blanked) is reported as it is. Comparing the
      content of successive polls would catch more, at the cost of reading every file twice.

    Files are told apart by inode as well as name: a file written again under a name already
    reported, or deleted and written anew, is a new frame; a reported file renamed (to a frame
    name, or from a temporary name such as ``x.tmp`` to ``x.tif``) is not reported again.
    Entries that cannot be looked at (a link that leads nowhere or to itself) are skipped, with
    one entry in :attr:`failed` each.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder the acquisition software writes into.
    extensions : tuple of str, optional
        Frame files to look for.
    settle_seconds : float, optional
        How long a file's size must stay the same before it is read.
    include_existing : bool, optional
        Also report the files already there when watching starts (those left out are reported
        only if they are written again).
    give_up_seconds : float, optional
        How long an unreadable file must stay unchanged before it is reported as failed;
        default ``5 * settle_seconds``.

    Attributes
    ----------
    failed : list of TEMFileError
        Files given up on, for the caller to show and clear.
    """

    def __init__(self, folder: str | os.PathLike, extensions: tuple[str, ...] = FRAME_EXTENSIONS,
                 settle_seconds: float = 0.2, include_existing: bool = False,
                 give_up_seconds: float | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise TEMFileError(self.folder, "no such folder to watch")
        self.extensions = tuple(e.lower() for e in extensions)
        self.settle_seconds = settle_seconds
        self.give_up_seconds = 5 * settle_seconds if give_up_seconds is None else give_up_seconds
        self._reported: dict[str, _Key] = {}  # name -> the version reported (read or failed)
        self._pending: dict[str, _Pending] = {}
        self._unreachable: set[str] = set()  # said once each in `failed`
        self.failed: list[TEMFileError] = []
        if not include_existing:
            self._reported = {name: key for name, (_, key) in self._scan(quiet=True).items()}

    def _scan(self, quiet: bool = False) -> dict[str, tuple[Path, _Key]]:
        """The frame files in the folder now: name -> (path, key)."""
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            raise TEMFileError(self.folder, f"cannot be read ({exc.strerror})") from exc
        found = {}
        unreachable = set()
        for entry in entries:
            suffix = Path(entry.name).suffix.lower()
            if entry.name.startswith(".") or suffix not in self.extensions:
                continue
            try:
                status = entry.stat()  # follows links: the file a link leads to
            except OSError as exc:
                # Removed meanwhile (skipped), or a link that leads nowhere or loops (said once:
                # DirEntry.is_file() raises for a loop, which stopped the watching).
                if entry.is_symlink():
                    unreachable.add(entry.name)
                    if entry.name not in self._unreachable and not quiet:
                        self.failed.append(TEMFileError(
                            entry.path, f"a link that cannot be followed ({exc.strerror}); "
                            "skipped until the link is mended"))
                continue
            if stat.S_ISREG(status.st_mode):
                found[entry.name] = (Path(entry.path), _key(status))
        self._unreachable = unreachable
        return found

    def _settled(self, now: float) -> list[Path]:
        """Files complete and not reported yet, in natural order; updates what is pending."""
        found = self._scan()
        reported_keys = set(self._reported.values())
        ready = []
        for name, (path, key) in found.items():
            if self._reported.get(name) == key:
                continue
            if key in reported_keys:  # a reported file under a new name: renamed, not new
                self._reported[name] = key
                self._pending.pop(name, None)
                continue
            pending = self._pending.get(name)
            if pending is None or pending.key != key:  # new, or changed since the last poll
                self._pending[name] = _Pending(key, now)
                continue
            if key[2] == 0 or now - pending.since < self.settle_seconds:
                continue
            if pending.held_until is not None and now < pending.held_until:
                continue
            ready.append(path)
        # Forget what left the folder: memory stays bounded by what the folder holds.
        self._pending = {name: p for name, p in self._pending.items() if name in found}
        self._reported = {name: k for name, k in self._reported.items() if name in found}
        ready.sort(key=lambda p: natural_sort_key(p.name))
        return ready

    def _mark_reported(self, path: Path) -> None:
        pending = self._pending.pop(path.name, None)
        if pending is not None:
            self._reported[path.name] = pending.key

    def _changed_while_read(self, path: Path, now: float) -> bool:
        """True (and the file pending again) when it is not the version that was settled."""
        pending = self._pending[path.name]
        try:
            key = _key(path.stat())
        except OSError:  # gone, or renamed: the next poll sees what is there
            self._pending.pop(path.name, None)
            return True
        if key != pending.key:
            self._pending[path.name] = _Pending(key, now)
            return True
        return False

    def poll(self, now: float | None = None) -> list[Path]:
        """The files that became complete since the last poll, in natural order.

        Each is reported once, whether or not the caller reads it; :meth:`read_ready` reads
        them and gives files that do not read cleanly more time.
        """
        ready = self._settled(time.monotonic() if now is None else now)
        for path in ready:
            self._mark_reported(path)
        return ready

    def read_ready(self, now: float | None = None,
                   max_files: int | None = 8) -> list[tuple[Path, object]]:
        """Read the complete new files: (path, TEMImage); unreadable ones go to `failed`.

        Parameters
        ----------
        now : float, optional
            The time (:func:`time.monotonic` by default; tests pass their own).
        max_files : int or None, optional
            Read at most this many files per call (those after them in natural order wait,
            complete, for the next call), so that a burst of files neither blocks the caller
            for long nor holds every frame in memory at once; None: every complete file.

        Returns
        -------
        list of (pathlib.Path, TEMImage)
            In natural order of the file names.
        """
        now = time.monotonic() if now is None else now
        images = []
        ready = self._settled(now)
        for path in ready if max_files is None else ready[:max(max_files, 0)]:
            pending = self._pending[path.name]
            unchanged_for = now - pending.since
            try:
                image = read_image(path)
            except TEMFileError as exc:
                if self._changed_while_read(path, now):
                    continue
                if unchanged_for < self.give_up_seconds:  # its writer may only have paused
                    pending.held_until = pending.since + self.give_up_seconds
                    continue
                self.failed.append(exc)
                self._mark_reported(path)
                continue
            if self._changed_while_read(path, now):
                continue
            blank_wait = 3 * self.settle_seconds
            if unchanged_for < blank_wait and _is_blank(image.data):  # pixels maybe not written
                pending.held_until = pending.since + blank_wait
                continue
            self._mark_reported(path)
            images.append((path, image))
        return images


@dataclass
class LiveStatistics:
    """Frames received, analysed and skipped, the rate and the backlog, for the status line."""

    analysed: int = 0
    skipped: int = 0
    received: int = 0
    started: float = field(default_factory=time.monotonic)
    recent: deque = field(default_factory=lambda: deque(maxlen=20))

    def frame_received(self) -> None:
        """Count one frame that arrived (shown at once, analysed when the network is free)."""
        self.received += 1

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
        """One line for the widget: analysed, rate, backlog; received and skipped once known."""
        text = (f"{self.analysed} frames analysed, {self.frames_per_second:.1f} frames/s, "
                f"backlog {backlog}")
        if self.received:
            text += f"; {self.received} received"
        if self.skipped:
            text += (f"; frames arrive faster than they are analysed: skipped {self.skipped} "
                     "(shown without atoms)")
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


#: How long the session waits when no frame is waiting [s].
IDLE_WAIT = 0.03


def iter_live_analysis(queue: FrameQueue, model: str, threshold: float,
                       sampling: float | None = None, watcher: FolderWatcher | None = None,
                       cs: float | None = None, defocus: float | None = None,
                       imaging_mode: str | None = None) -> Events[None]:
    """Detect the atoms of frames as they come, until the consumer stops asking.

    Frames come from `watcher` (complete files in a folder) and from whoever fills `queue` (a
    followed layer, filled by the GUI thread with ``(index, frame, sampling or None)``). Every
    frame is passed on as it arrives, before it is analysed, and each analysed frame after.
    `imaging_mode` (``"STEM-ABF"``...) is every frame's: it decides whether a STEM model sees
    the frames negated, and a model not trained on it says so once.

    Yields
    ------
    Progress("model", 1, 1, item)
        First: the model is loaded; `item` is its runtime, in words.
    Progress("received", frames received, None, item)
        A frame of the folder arrived; `item` is ``(index, frame, sampling)``.
    Progress("detect", frames analysed, None, item)
        A frame was analysed; `item` is ``(index, atoms, sampling)``.
    Progress("idle", frames analysed, None)
        No frame is waiting (the consumer may stop here).
    Notice("frame_left_out", text)
        A file or frame that cannot be analysed, and why; the session goes on. A frame's own
        notices (pixel size, transfer) are passed on too.

    Raises
    ------
    TEMAtomsError
        A file of the folder carries no pixel size and none is given: every frame would fail.
    """
    from .analysis.detect import iter_detect_atoms
    from .models import load_cached_model

    statistics = queue.statistics
    loaded = load_cached_model(model)
    yield Progress("model", 1, 1, loaded.describe_runtime())
    next_index, shape = 0, None
    notices: list[Notice] = []  # a frame's own notices, passed on after it

    def keep_notice(event: Notice | Progress) -> None:
        if isinstance(event, Notice):
            notices.append(event)

    while True:
        if watcher is not None:
            for path, image in watcher.read_ready():
                frame = np.asarray(image.data)
                frame_sampling = sampling or image.pixel_size_angstrom
                if frame_sampling is None:  # every frame would fail: said once, and stop
                    raise TEMAtomsError(f"{path.name} carries no pixel size "
                                        f"({image.calibration.note}): type it in 'Pixel size' "
                                        "(Å/px) and start again")
                if frame.ndim != 2 or (shape is not None and frame.shape != shape):
                    yield Notice("frame_left_out", f"{path.name}: shape {frame.shape} is not "
                                 f"one 2-D image of the stack's {shape or 'shape'}; left out")
                    continue
                shape = frame.shape
                statistics.frame_received()
                # Shown before it is analysed.
                yield Progress("received", statistics.received, None,
                               (next_index, frame, frame_sampling))
                queue.put((next_index, frame, frame_sampling))
                next_index += 1
            for error in watcher.failed:
                yield Notice("frame_left_out", str(error))
            watcher.failed.clear()
        item = queue.take()
        if item is None:
            yield Progress("idle", statistics.analysed, None)
            time.sleep(IDLE_WAIT)
            continue
        index, frame, frame_sampling = item
        frame_sampling = frame_sampling or sampling
        if frame.ndim != 2:
            yield Notice("frame_left_out", f"frame {index}: shape {frame.shape} is not one 2-D "
                         "image")
            continue
        notices.clear()
        try:
            atoms = run(iter_detect_atoms(frame, loaded, sampling=frame_sampling,
                                          threshold=threshold, cs=cs, defocus=defocus,
                                          imaging_mode=imaging_mode),
                        on_event=keep_notice)
        except TEMAtomsError as exc:
            yield Notice("frame_left_out", f"frame {index}: {exc}")
            continue
        yield from list(notices)  # the driver says each once
        statistics.frame_done()
        yield Progress("detect", statistics.analysed, None,
                       (index, atoms.assign(frame=index), frame_sampling))
