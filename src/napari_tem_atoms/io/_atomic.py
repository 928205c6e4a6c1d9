"""Write files so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import TEMFileError

__all__ = ["atomic_write", "check_writable"]


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse a path :func:`atomic_write` cannot replace: a folder, or one in a missing folder.

    Raises
    ------
    TEMFileError
        Saying which of the two it is.
    """
    path = Path(path)
    if path.is_dir():
        raise TEMFileError(path, "is a folder; give a file name")
    if not path.parent.is_dir():
        raise TEMFileError(path, f"the folder {path.parent} does not exist")
    return path


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`.

    The rename is atomic on the same file system, so readers see either the old file or the
    complete new one. On any error the temporary file is removed and `path` is untouched.

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
        The open temporary file.

    Raises
    ------
    TEMFileError
        When the system refuses to write or rename the file (a full disk, a quota, a
        read-only or vanished folder): the message names `path` and the system's reason.

    """
    path = check_writable(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".part")
    except OSError as exc:
        raise TEMFileError(path, f"cannot write there ({exc.strerror})") from exc
    try:
        with os.fdopen(handle, mode, **open_kwargs) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(temporary, path)
    except OSError as exc:  # the disk is full, the folder went away...: a message, no traceback
        Path(temporary).unlink(missing_ok=True)
        raise TEMFileError(path, f"could not be written ({_reason(exc)}); any earlier file of "
                           "that name is unchanged") from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _reason(error: OSError) -> str:
    """The system's reason for a failed write, with what to do about the usual ones."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason}: free some space, or write the file elsewhere"
    if error.errno == errno.EROFS:
        return f"{reason}: write the file elsewhere"
    return reason
