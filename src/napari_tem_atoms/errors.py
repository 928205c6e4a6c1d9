"""Exceptions raised by napari-tem-atoms, with messages written for microscopists."""

from __future__ import annotations

import os

__all__ = ["TEMAtomsError", "TEMFileError"]


class TEMAtomsError(Exception):
    """Base class of every error napari-tem-atoms raises on purpose."""


class TEMFileError(TEMAtomsError, ValueError):
    """A file could not be read or written; the message names the file and the problem.

    Parameters
    ----------
    path : str or os.PathLike
        The file (or folder) concerned.
    problem : str
        What is wrong, in plain words, ideally with what to do about it.

    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
