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

from ..errors import TEMFileError
from ._atomic import atomic_write

__all__ = ["AtomsTable", "atoms_table", "is_atoms_csv", "read_atoms_csv", "write_atoms_csv"]

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

    """
    coordinates = np.asarray(coordinates, dtype=float)
    if coordinates.ndim != 2 or coordinates.shape[1] not in (2, 3, 4):
        shape = coordinates.shape
        raise ValueError(
            f"atom positions must be (N, 2) as (y, x), (N, 3) as (frame, y, x) or (N, 4) as "
            f"(frame, image, y, x), not {shape}"
        )
    table = pd.DataFrame()
    leading = ("frame", "image")[: coordinates.shape[1] - 2]
    for axis, name in enumerate(leading):
        values = coordinates[:, axis]
        is_whole = np.all(np.isclose(values, np.round(values)))
        table[name] = np.round(values).astype(int) if is_whole else values
    table["y"] = coordinates[:, -2]
    table["x"] = coordinates[:, -1]
    if pixel_size_angstrom is not None:
        size_y, size_x = np.broadcast_to(np.asarray(pixel_size_angstrom, dtype=float), (2,))
        table["y_angstrom"] = table["y"] * size_y
        table["x_angstrom"] = table["x"] * size_x
    if features is not None and len(features.columns):
        if len(features) != len(table):
            raise ValueError(
                f"{len(features)} feature rows for {len(table)} atoms: they must match"
            )
        for column in features.columns:
            if str(column) not in table.columns:
                table[str(column)] = features[column].to_numpy()
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

    """
    path = Path(path)
    with atomic_write(path, "w", newline="", encoding="utf-8") as stream:
        table.to_csv(stream, index=False, float_format="%.6f")
    return path


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
        When the file is not a CSV with ``y`` and ``x`` columns of numbers.

    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TEMFileError(path, f"not a readable CSV file ({exc})") from exc
    missing = [c for c in ("y", "x") if c not in table.columns]
    if missing:
        raise TEMFileError(
            path, f"no {' and '.join(missing)} column: an atoms CSV has y and x in pixels"
        )
    position_columns = [c for c in POSITION_COLUMNS if c in table.columns
                        and (c != "image" or "frame" in table.columns)]
    try:
        coordinates = table[position_columns].to_numpy(dtype=float)
    except ValueError as exc:
        columns = ", ".join(position_columns)
        raise TEMFileError(path, f"the {columns} columns must be numbers") from exc
    if not np.all(np.isfinite(coordinates)):
        raise TEMFileError(path, "some positions are empty or not finite")
    pixel_size = None
    if all(c in table.columns for c in ANGSTROM_COLUMNS):
        pixel_size = (
            _fitted_ratio(table["y"].to_numpy(float), table["y_angstrom"].to_numpy(float)),
            _fitted_ratio(table["x"].to_numpy(float), table["x_angstrom"].to_numpy(float)),
        )
        if None in pixel_size:
            pixel_size = None
    feature_columns = [c for c in table.columns if c not in (*position_columns, *ANGSTROM_COLUMNS)]
    features = table[feature_columns].reset_index(drop=True)
    return AtomsTable(coordinates=coordinates, features=features,
                      pixel_size_angstrom=pixel_size)  # type: ignore[arg-type]


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
