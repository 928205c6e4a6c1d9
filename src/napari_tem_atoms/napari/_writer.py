"""npe2 writer: a Points layer to the atoms CSV (pixels, Å and every feature)."""

from __future__ import annotations

from typing import Any

from ..errors import TEMFileError
from ..io import atoms_table, write_atoms_csv
from ._layers import pixel_size_of_layer


def write_points_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Points layer as an atoms CSV (see :mod:`napari_tem_atoms.io.atoms_csv`).

    Parameters
    ----------
    path : str
        Destination ``.csv`` file; written to a temporary file and renamed when complete.
    data : array_like
        The layer's (N, 2) ``(y, x)``, (N, 3) ``(frame, y, x)`` or (N, 4)
        ``(frame, image, y, x)`` point coordinates, in data (pixel) coordinates.
    meta : dict
        The layer's state (``scale``, ``units``, ``features``, ``metadata``...).

    Returns
    -------
    list of str
        The written path.

    """
    pixel_size = pixel_size_of_layer(meta.get("scale"), meta.get("units"), meta.get("metadata"))
    try:
        table = atoms_table(data, meta.get("features"), pixel_size)
    except ValueError as exc:
        raise TEMFileError(path, str(exc)) from exc
    return [str(write_atoms_csv(path, table))]
