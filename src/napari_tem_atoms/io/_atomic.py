"""Write files so that a failure never leaves a half-written file behind.

The data go to a temporary file beside the destination, named ``.NAME.HOST.PID.XXXXXXXX.part``
(the writing computer and process in the name), and are renamed over the destination once
complete. A run that is killed leaves its temporary file behind; the next write to the same
destination removes those whose process on this computer is gone.

What a destination may be:

- absent, or a regular file: written atomically;
- a symbolic link: its target is written (atomically, beside the target); the link stays;
- a character device or a named pipe (``/dev/stdout``, ``/dev/null``, a FIFO another program
  reads): written through, as a shell redirection would. A stream keeps no earlier file to
  protect, and replacing the node by a regular file would break the pipe (or, for root, replace
  ``/dev/null`` for the whole system);
- anything else (a folder, a block device, a socket): refused.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import TEMFileError

__all__ = ["atomic_write", "check_writable"]

#: Temporary files of the old naming (no process in the name) older than this are stale.
_UNNAMED_PART_AGE_S = 3600.0


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a destination :func:`atomic_write` could not write.

    Refused: a folder; a file in a missing folder or in one this process cannot write to (a
    read-only disk, a folder of another user); a block device, a socket or a symbolic link
    that loops. A symbolic link is judged by its target.

    Parameters
    ----------
    path : str or os.PathLike
        The destination.

    Returns
    -------
    Path
        `path`, as given.

    Raises
    ------
    TEMFileError
        Naming `path` and what is wrong with it.
    """
    path = Path(path)
    target = _target(path)
    kind = _kind(path, target)
    if kind == "stream":
        if not os.access(target, os.W_OK):
            raise TEMFileError(path, "this process may not write to it")
        return path
    if not target.parent.is_dir():
        where = "" if target == path else f" (where the link points: {target})"
        missing = "is not a folder" if target.parent.exists() else "does not exist"
        raise TEMFileError(path, f"the folder {target.parent} {missing}{where}")
    try:  # the only sure test: os.access says yes to root on read-only places such as /sys
        handle, probe = _temporary_file(target)
    except OSError as exc:
        raise TEMFileError(path, f"cannot write in the folder {target.parent} "
                           f"({_reason(exc)})") from None
    os.close(handle)
    Path(probe).unlink(missing_ok=True)
    return path


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`.

    The rename is atomic on the same file system, so readers see either the old file or the
    complete new one. On any error the temporary file is removed and `path` is untouched.
    Temporary files that killed runs left beside `path` are removed first. A symbolic link is
    kept and its target written; a character device or a named pipe is written through (see
    the module's description).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    mode : str, optional
        ``"w"`` (text) or ``"wb"`` (binary).
    **open_kwargs
        Passed to :func:`open` (``newline``, ``encoding``...).

    Yields
    ------
    file object
        The open temporary file (or the stream).

    Raises
    ------
    TEMFileError
        When `path` cannot be written (see :func:`check_writable`), or when the system refuses
        to write or rename the file (a full disk, a quota, a read-only or vanished folder):
        the message names `path` and the system's reason.

    """
    path = check_writable(path)
    target = _target(path)
    if _kind(path, target) == "stream":
        with _written_through(path, target, mode, **open_kwargs) as stream:
            yield stream
        return
    _remove_stale_parts(target)
    try:
        handle, temporary = _temporary_file(target)
    except OSError as exc:
        raise TEMFileError(path, f"cannot write there ({_reason(exc)})") from exc
    try:
        with os.fdopen(handle, mode, **open_kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(temporary, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        os.replace(temporary, target)
    except OSError as exc:  # the disk is full, the folder went away...: a message, no traceback
        Path(temporary).unlink(missing_ok=True)
        raise TEMFileError(path, f"could not be written ({_reason(exc)}); any earlier file of "
                           "that name is unchanged") from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def _written_through(path: Path, target: Path, mode: str, **open_kwargs) -> Iterator[IO]:
    """Open a stream (device, named pipe) and write to it directly: it has no file to replace."""
    try:
        stream = open(target, mode, **open_kwargs)  # noqa: SIM115 (closed below, errors said)
    except OSError as exc:
        raise TEMFileError(path, f"could not be opened ({_reason(exc)})") from exc
    try:
        with stream:
            yield stream
    except OSError as exc:
        raise TEMFileError(path, f"could not be written ({_reason(exc)})") from exc


def _target(path: Path) -> Path:
    """The file a write to `path` changes: the final target of a symbolic link, else `path`."""
    if not path.is_symlink():
        return path
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TEMFileError(path, "is a symbolic link that loops; give a file name") from None
        # A dangling link: its target is created, as a shell redirection would.
    return Path(os.path.realpath(path))


def _kind(path: Path, target: Path) -> str:
    """``"file"`` (absent or regular) or ``"stream"`` (character device, named pipe).

    Raises
    ------
    TEMFileError
        For a folder, a block device, a socket or anything else that is no file.
    """
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # its folder is checked next
        return "file"
    except OSError as exc:
        raise TEMFileError(path, f"cannot be written ({_reason(exc)})") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    if stat.S_ISDIR(mode):
        raise TEMFileError(path, "is a folder; give a file name")
    what = ("a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise TEMFileError(path, f"is {what}; give a file name")


def _host() -> str:
    """The name of this computer, as it goes into a temporary file's name (no dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _temporary_file(target: Path) -> tuple[int, str]:
    """Create the temporary file for `target`: ``.NAME.HOST.PID.XXXXXXXX.part`` beside it."""
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_host()}.{os.getpid()}.",
                            suffix=".part")


def _remove_stale_parts(target: Path) -> None:
    """Remove the temporary files of `target` that killed runs on this computer left behind.

    Only files whose process is gone are removed: another process may be writing `target` at
    the same time, and on a shared disk another computer too (its files are left alone).
    Files of the old naming, which names no process, are removed once an hour old.
    """
    name = re.escape(target.name)
    named = re.compile(rf"\.{name}\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.\w+\.part")
    unnamed = re.compile(rf"\.{name}\.\w{{8}}\.part")
    host = _host()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return  # said by the write itself
    for entry in entries:
        match = named.fullmatch(entry.name)
        try:
            if match:
                stale = match["host"] == host and not _process_alive(int(match["pid"]))
            elif unnamed.fullmatch(entry.name):
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
                stale = age > _UNNAMED_PART_AGE_S
            else:
                continue
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            continue  # gone already, or not ours to remove: it does no harm


def _process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this computer (True where that cannot be told)."""
    if os.name == "nt":  # os.kill would end the process there
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except (OverflowError, ValueError):  # no process can have that number
        return False
    return True


def _reason(error: OSError) -> str:
    """The system's reason for a failed write, with what to do about the usual ones."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason}: free some space, or write the file elsewhere"
    if error.errno == errno.EROFS:
        return f"{reason}: write the file elsewhere"
    return reason
