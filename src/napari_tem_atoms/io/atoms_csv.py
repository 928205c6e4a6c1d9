"""Atom tables as CSV: positions in pixels and Å, then every per-atom feature.

Columns, in order: ``frame`` (stacks only), ``image`` (time series of focal series only: the
image of the series the positions belong to: the middle defocus), ``y``, ``x`` in input pixels
(the centre of pixel ``[r, c]`` is at ``(r, c)``, row is y, as in napari), ``y_angstrom``,
``x_angstrom`` (when the pixel size is known: pixel coordinate × pixel size, origin at the
centre of pixel ``[0, 0]``), then the features (``species``, ``confidence``, ...).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, TEMFileError
from .tables import is_text, measured_text, unescaped, write_table

__all__ = ["AtomsTable", "atoms_table", "combined_atoms_table", "is_atoms_csv",
           "read_atoms_csv", "write_atoms_csv"]

POSITION_COLUMNS = ("frame", "image", "y", "x")
ANGSTROM_COLUMNS = ("y_angstrom", "x_angstrom")


@dataclass
class AtomsTable:
    """An atoms CSV read back: positions, features and the pixel size they imply.

    Attributes
    ----------
    coordinates : numpy.ndarray
        (N, 2) ``(y, x)``, (N, 3) ``(frame, y, x)`` or (N, 4) ``(frame, image, y, x)``
        positions in pixels.
    features : pandas.DataFrame
        Every other column (species, confidence, ...), one row per atom.
    pixel_size_angstrom : tuple of float or None
        (y, x) pixel size [Å/px] recovered from the Å columns, or ``None``.

    """

    coordinates: np.ndarray
    features: pd.DataFrame
    pixel_size_angstrom: tuple[float, float] | None


def _whole_as_int(values: np.ndarray) -> np.ndarray:
    """`values` as integers when every one is a whole number, else as they are."""
    values = np.asarray(values)
    if values.dtype.kind != "f" or not len(values):
        return values
    is_whole = np.all(np.isfinite(values)) and np.all(np.isclose(values, np.round(values)))
    return np.round(values).astype(int) if is_whole else values


def atoms_table(
    coordinates: np.ndarray,
    features: pd.DataFrame | None = None,
    pixel_size_angstrom: float | tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Assemble the CSV table from positions, features and a pixel size.

    Parameters
    ----------
    coordinates : array_like
        (N, 2) ``(y, x)``, (N, 3) ``(frame, y, x)``, or (N, 4) ``(frame, image, y, x)`` (a
        time series of focal series) positions in pixels.
    features : pandas.DataFrame, optional
        Per-atom columns, N rows. A feature named like a position column (e.g. ``frame``) is
        not written twice: the coordinate wins.
    pixel_size_angstrom : float or (float, float), optional
        Pixel size [Å/px], one number or (y, x). When given, Å columns are added.

    Returns
    -------
    pandas.DataFrame
        Columns in the documented order.

    Raises
    ------
    InputError
        Positions of another shape, or features of another length (a ``ValueError`` too).

    """
    coordinates = np.asarray(coordinates, dtype=float)
    if coordinates.ndim != 2 or coordinates.shape[1] not in (2, 3, 4):
        shape = coordinates.shape
        raise InputError(
            f"atom positions must be (N, 2) as (y, x), (N, 3) as (frame, y, x) or (N, 4) as "
            f"(frame, image, y, x), not {shape}"
        )
    table = pd.DataFrame()
    leading = ("frame", "image")[: coordinates.shape[1] - 2]
    for axis, name in enumerate(leading):
        values = coordinates[:, axis]
        table[name] = _whole_as_int(values)
    table["y"] = coordinates[:, -2]
    table["x"] = coordinates[:, -1]
    if pixel_size_angstrom is not None:
        size_y, size_x = np.broadcast_to(np.asarray(pixel_size_angstrom, dtype=float), (2,))
        table["y_angstrom"] = table["y"] * size_y
        table["x_angstrom"] = table["x"] * size_x
    if features is not None and len(features.columns):
        if len(features) != len(table):
            raise InputError(
                f"{len(features)} feature rows for {len(table)} atoms: they must match"
            )
        for column in features.columns:
            if str(column) not in table.columns:
                values = features[column].to_numpy()
                # Counts a layer holds as floats (to colour them on a scale) stay counts.
                table[str(column)] = _whole_as_int(values) if column == "n_atoms" else values
    if "site" in table.columns:  # a sites table (occupancy) leads with the site number
        table = table[["site", *(c for c in table.columns if c != "site")]]
    return table


def write_atoms_csv(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write an atoms table (see :func:`atoms_table`) to CSV, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; a temporary file beside it is renamed over it once complete.
    table : pandas.DataFrame
        The table to write.

    Returns
    -------
    pathlib.Path
        The written file.

    Notes
    -----
    Numbers get 6 decimals, or 6 significant digits below 1. Text cells a spreadsheet would
    run as a formula (starting with ``=``, ``+``, ``-``, ``@``...) get a leading ``'``, which
    :func:`read_atoms_csv` removes. Other tables have their own writers
    (:mod:`~napari_tem_atoms.io.tables`).

    """
    return write_table(path, table, measured_text)


def combined_atoms_table(parts: list[tuple[pd.DataFrame, float | None, str]], stacks: bool,
                         name_files: bool) -> pd.DataFrame:
    """One atoms table, in one layout, from the detections of several images.

    Parameters
    ----------
    parts : list of (pandas.DataFrame, float or None, str)
        Per image: its detections (``frame``, ``y``, ``x`` and features such as
        ``confidence``, ``n_atoms``), its pixel size [Å/px] and its file.
    stacks : bool
        True when any input is a stack: every row then has a ``frame`` (0 for an image).
    name_files : bool
        True to add a ``file`` column (several inputs).

    Returns
    -------
    pandas.DataFrame
        The rows of every image, in the order given, as :func:`atoms_table` lays them out.
    """
    tables = []
    for atoms, pixel_size, path in parts:
        columns = ["frame", "y", "x"] if stacks else ["y", "x"]
        features = [c for c in ("confidence", "n_atoms") if c in atoms.columns]
        table = atoms_table(atoms[columns].to_numpy(float), atoms[features], pixel_size)
        if name_files:
            table["file"] = str(path)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def read_atoms_csv(path: str | os.PathLike) -> AtomsTable:
    """Read an atoms CSV written by :func:`write_atoms_csv` (or any CSV with y and x columns).

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.

    Returns
    -------
    AtomsTable
        Positions, features, and the pixel size recovered from the Å columns.

    Raises
    ------
    TEMFileError
        When the file is not a CSV with ``y`` and ``x`` columns of numbers, or a row has more
        values than the header has columns.

    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TEMFileError(path, f"not a readable CSV file ({exc})") from exc
    if not isinstance(table.index, pd.RangeIndex):
        # pandas takes the extra leading values of a row longer than the header for an
        # index: "1,2,3,4" under "y,x" was read as y=3, x=4.
        raise TEMFileError(path, _ragged_row(path))
    missing = [c for c in ("y", "x") if c not in table.columns]
    if missing:
        raise TEMFileError(
            path, f"no {' and '.join(missing)} column: an atoms CSV has y and x in pixels"
        )
    position_columns = [c for c in POSITION_COLUMNS if c in table.columns
                        and (c != "image" or "frame" in table.columns)]
    coordinates = np.column_stack([_numbers(path, table, c) for c in position_columns])
    if not np.all(np.isfinite(coordinates)):
        raise TEMFileError(path, "some positions are empty or not finite")
    pixel_size = None
    if all(c in table.columns for c in ANGSTROM_COLUMNS):
        pixel_size = (
            _fitted_ratio(_numbers(path, table, "y"), _numbers(path, table, "y_angstrom")),
            _fitted_ratio(_numbers(path, table, "x"), _numbers(path, table, "x_angstrom")),
        )
        if None in pixel_size:
            pixel_size = None
    feature_columns = [c for c in table.columns if c not in (*position_columns, *ANGSTROM_COLUMNS)]
    features = table[feature_columns].reset_index(drop=True)
    for column in features.columns:
        if is_text(features[column]):
            features[column] = features[column].map(unescaped)
    return AtomsTable(coordinates=coordinates, features=features,
                      pixel_size_angstrom=pixel_size)  # type: ignore[arg-type]


def _numbers(path: Path, table: pd.DataFrame, column: str) -> np.ndarray:
    """A column as floats, or a TEMFileError naming the column and the first line that is not."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TEMFileError(
            path, f"the {column} column must be numbers: line {_line_of_row(path, row)} has "
            f"{table[column].iloc[row]!r}"
        )
    return values.to_numpy(dtype=float)


def _line_of_row(path: Path, row: int) -> int:
    """The line number of data row `row` (from 0), skipping blank lines as pandas does."""
    with open(path, newline="", encoding="utf-8") as stream:
        rows = csv.reader(stream)
        next(rows, None)  # the header
        data_rows = (rows.line_num for values in rows if values)
        return next((n for i, n in enumerate(data_rows) if i == row), row + 2)


def _ragged_row(path: Path) -> str:
    """Which line has more values than the header has columns (pandas does not say)."""
    with open(path, newline="", encoding="utf-8") as stream:
        rows = csv.reader(stream)
        header = next(rows, [])
        for row in rows:
            if len(row) > len(header):
                return (f"line {rows.line_num} has {len(row)} values for the {len(header)} "
                        f"columns of the header ({', '.join(header)}): fix or remove it")
    return "a row has more values than the header has columns"


def _fitted_ratio(pixels: np.ndarray, angstrom: np.ndarray) -> float | None:
    """Least-squares pixel size from pixel and Å coordinates (None when undetermined)."""
    keep = np.isfinite(pixels) & np.isfinite(angstrom)
    norm = float(np.sum(pixels[keep] ** 2))
    if norm < 1e-6:
        return None
    ratio = float(np.sum(pixels[keep] * angstrom[keep]) / norm)
    return ratio if ratio > 0 else None


def is_atoms_csv(path: str | os.PathLike) -> bool:
    """True when the first line of `path` names ``y`` and ``x`` columns."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            header = next(csv.reader(stream), [])
    except (OSError, UnicodeDecodeError):
        return False
    return {"y", "x"} <= {name.strip() for name in header}
