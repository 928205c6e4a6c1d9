"""Exceptions and warnings of napari-tem-atoms, with messages written for microscopists.

Every error raised on purpose is a :class:`TEMAtomsError`: the command line prints its message
on one line (no traceback) and the widgets show it as a notification. Errors about a value a
user gave (a file, a configuration, a table) are also :class:`ValueError`, so code that caught
``ValueError`` before keeps working.

Every warning is a :class:`TEMAtomsWarning`, and each kind has its class, so a script can
silence or escalate one kind::

    import warnings
    from napari_tem_atoms import SamplingWarning
    warnings.simplefilter("ignore", SamplingWarning)

This module is the bottom floor of the package: it imports nothing from it.
"""

from __future__ import annotations

import os

__all__ = [
    "ConfigError",
    "DomainWarning",
    "FocalSeriesWarning",
    "InputError",
    "SamplingWarning",
    "TEMAtomsError",
    "TEMAtomsWarning",
    "TEMFileError",
    "TransferWarning",
]


class TEMAtomsError(Exception):
    """Base class of every error napari-tem-atoms raises on purpose."""


class InputError(TEMAtomsError, ValueError):
    """A value given to a function does not fit (positions of the wrong shape, a bad option)."""


class ConfigError(TEMAtomsError, ValueError):
    """A training configuration (TOML) cannot be used; the message names the file and key."""


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


class TEMAtomsWarning(UserWarning):
    """Base class of every warning napari-tem-atoms gives: results may be unreliable."""


class TransferWarning(TEMAtomsWarning):
    """The microscope's conditions barely transfer the lattice a model finds.

    See :mod:`napari_tem_atoms.analysis.transfer`.
    """


class DomainWarning(TEMAtomsWarning):
    """The image is of a kind the model was not trained on (e.g. STEM for an HRTEM model)."""


class SamplingWarning(TEMAtomsWarning):
    """The image's pixel size lies outside the range the model was trained on."""


class FocalSeriesWarning(TEMAtomsWarning):
    """A focal series outside the trained defoci, or with two images the same."""
