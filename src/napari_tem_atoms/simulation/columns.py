"""Projected atomic columns: the truth the detector is trained and scored against."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

#: Atoms whose projections are closer than this [Å] belong to one column.
COLUMN_CLUSTER_DISTANCE = 0.5


def column_labels(positions: np.ndarray, distance: float = COLUMN_CLUSTER_DISTANCE
                  ) -> np.ndarray:
    """Column index of every atom: projected atoms closer than `distance` [Å] share a column.

    The indices are those of the rows of :func:`project_columns` for the same atoms.
    """
    xy = np.asarray(positions, dtype=float)[:, :2]
    pairs = cKDTree(xy).query_pairs(distance, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(xy), len(xy)))
    return connected_components(graph, directed=False)[1]


def project_columns(positions: np.ndarray,
                    distance: float = COLUMN_CLUSTER_DISTANCE) -> np.ndarray:
    """Cluster atoms projected along the beam (z) into columns.

    Parameters
    ----------
    positions : numpy.ndarray
        (N, 3) atom positions (x, y, z) [Å]; the beam runs along z.
    distance : float, optional
        Projected atoms closer than this [Å] are linked into one column (single linkage).

    Returns
    -------
    numpy.ndarray
        (M, 3) columns as (y, x, n_atoms): mean projected position [Å] (y first, as images
        index rows) and the number of atoms in the column.
    """
    xy = np.asarray(positions, dtype=float)[:, :2]
    if len(xy) == 0:
        return np.zeros((0, 3))
    label = column_labels(positions, distance)
    n_columns = int(label.max()) + 1
    counts = np.bincount(label, minlength=n_columns)
    mean_x = np.bincount(label, weights=xy[:, 0], minlength=n_columns) / counts
    mean_y = np.bincount(label, weights=xy[:, 1], minlength=n_columns) / counts
    return np.stack([mean_y, mean_x, counts], axis=1)
