"""Result tables as CSV: one atomic writer, and a writer per kind of table with its formats.

Every table goes through :func:`write_table`: written to a temporary file beside the
destination and renamed over it once complete (:func:`~._atomic.atomic_write`), text cells a
spreadsheet would run as formulas escaped. The writers of each kind of table say which number
format its columns get:

======================================  =====================================================
:func:`~.atoms_csv.write_atoms_csv`     atoms: 6 decimals, 6 significant digits below 1
:func:`write_sites_csv`                 occupancy sites: as atoms (positions, rates, p-values)
:func:`write_occupancy_matrix_csv`      per-frame occupancy: as atoms (0/1 or a posterior;
                                        an empty cell where the site was out of view)
:func:`write_comparison_csv`            transition-rate comparisons: as atoms
:func:`write_scores_csv`                evaluation scores: 6 decimals
======================================  =====================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ._atomic import atomic_write

__all__ = ["write_comparison_csv", "write_occupancy_matrix_csv", "write_scores_csv",
           "write_sites_csv", "write_table"]

#: First characters that make a spreadsheet run a text cell as a formula (OWASP's list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def measured_text(value: float) -> str:
    """Six decimals, or six significant digits below 1 (a p-value of 3e-11 was 0.000000)."""
    return f"{value:.6g}" if 0 < abs(value) < 1 else f"{value:.6f}"


def six_decimals(value: float) -> str:
    """Six decimals: scores between 0 and 1 and RMSEs in pm, aligned."""
    return f"{value:.6f}"


def write_table(path: str | os.PathLike, table: pd.DataFrame,
                float_format: Callable[[float], str] = measured_text) -> Path:
    """Write `table` to CSV at `path`, atomically, text cells escaped.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; a temporary file beside it is renamed over it once complete.
    table : pandas.DataFrame
        The table; its index is not written.
    float_format : callable, optional
        Text of a float cell (integers and text are written as they are; NaN as an empty cell).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    text_columns = [column for column in table.columns if is_text(table[column])]
    if text_columns:
        table = table.copy()
        for column in text_columns:
            table[column] = table[column].astype(object).map(escaped)
    with atomic_write(path, "w", newline="", encoding="utf-8") as stream:
        table.to_csv(stream, index=False, float_format=float_format)
    return path


def write_sites_csv(path: str | os.PathLike, sites: pd.DataFrame) -> Path:
    """Write an occupancy sites table (:attr:`OccupancyResult.sites`) to CSV, atomically."""
    return write_table(path, sites, measured_text)


def write_occupancy_matrix_csv(path: str | os.PathLike, matrix: pd.DataFrame) -> Path:
    """Write a per-frame occupancy matrix (frames × sites) to CSV, atomically."""
    return write_table(path, matrix, measured_text)


def write_comparison_csv(path: str | os.PathLike, comparison: pd.DataFrame) -> Path:
    """Write a comparison of two videos' transition rates to CSV, atomically."""
    return write_table(path, comparison, measured_text)


def write_scores_csv(path: str | os.PathLike, scores: pd.DataFrame) -> Path:
    """Write an evaluation's scores (per dose and method) to CSV, atomically."""
    return write_table(path, scores, six_decimals)


def is_text(column: pd.Series) -> bool:
    """True for a column of text (object or string dtype)."""
    return column.dtype.kind == "O" or pd.api.types.is_string_dtype(column.dtype)


def escaped(cell: object) -> object:
    """A text cell a spreadsheet would run as a formula, with a leading ``'`` (OWASP's rule).

    A file name or species label such as ``=HYPERLINK(...)`` would otherwise run when the CSV
    is opened in a spreadsheet. Text that is a plain number (``-1.5``) is left as it is; so is
    text that starts with ``'`` but not before a formula, so :func:`unescaped` is exact.
    """
    if (isinstance(cell, str) and cell.lstrip("'").startswith(_FORMULA_STARTS)
            and not _NUMBER.fullmatch(cell)):
        return "'" + cell
    return cell


def unescaped(cell: object) -> object:
    """Undo :func:`escaped`."""
    if isinstance(cell, str) and cell.startswith("'") and escaped(cell[1:]) == cell:
        return cell[1:]
    return cell
