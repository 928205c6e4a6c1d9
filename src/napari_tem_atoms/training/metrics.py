"""Scoring detections against true columns: Hungarian matching within 0.5 Å."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

__all__ = ["MatchCounts", "match_columns", "match_pairs"]

#: A detection within this distance [Å] of a column can be matched to it.
MATCH_RADIUS = 0.5
#: Columns with at least this many atoms must be found; thinner ones are not scored.
SCORED_MIN_ATOMS = 3


@dataclass
class MatchCounts:
    """Counts accumulated over images.

    Attributes
    ----------
    true_positives, false_positives, false_negatives : int
        Scored matches, unmatched detections, unmatched columns of ≥ 3 atoms.
    squared_error : float
        Sum of squared position errors of the true positives [Å²].
    """

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    squared_error: float = 0.0

    def __iadd__(self, other: MatchCounts) -> MatchCounts:
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.false_negatives += other.false_negatives
        self.squared_error += other.squared_error
        return self

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        present = self.true_positives + self.false_negatives
        return self.true_positives / present if present else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def rmse_pm(self) -> float:
        """Root-mean-square position error of the true positives [pm]."""
        if not self.true_positives:
            return float("nan")
        return 100.0 * float(np.sqrt(self.squared_error / self.true_positives))


def match_columns(detected: np.ndarray, columns: np.ndarray, sampling: float,
                  radius: float = MATCH_RADIUS, min_atoms: int = SCORED_MIN_ATOMS
                  ) -> MatchCounts:
    """Match detections to true columns and count.

    Parameters
    ----------
    detected : numpy.ndarray
        (N, 2) detections (y, x) [px].
    columns : numpy.ndarray
        (M, 3) true columns (y, x) [px] and atom counts.
    sampling : float
        Pixel size [Å/px] of both.
    radius : float, optional
        Matching radius [Å].
    min_atoms : int, optional
        Columns with fewer atoms are not scored.

    Returns
    -------
    MatchCounts
        Detections matched to columns of fewer than `min_atoms` atoms are neither rewarded
        nor penalised.
    """
    detected = np.asarray(detected, dtype=float).reshape(-1, 2)
    columns = np.asarray(columns, dtype=float).reshape(-1, 3)
    scored = columns[:, 2] >= min_atoms
    _, cols, distance = match_pairs(detected, columns[:, :2], sampling, radius)
    true = scored[cols]
    tp = int(true.sum())
    ignored = int((~true).sum())
    return MatchCounts(
        true_positives=tp,
        false_positives=len(detected) - tp - ignored,
        false_negatives=int(scored.sum()) - tp,
        squared_error=float((distance[true] ** 2).sum()),
    )


def match_pairs(detected: np.ndarray, positions: np.ndarray, sampling: float,
                radius: float = MATCH_RADIUS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one matching :func:`match_columns` counts: nearest pairs within `radius`.

    Parameters
    ----------
    detected, positions : numpy.ndarray
        (N, 2) detections and (M, 2) true columns (y, x) [px].
    sampling : float
        Pixel size [Å/px].
    radius : float, optional
        Matching radius [Å].

    Returns
    -------
    detection, column : numpy.ndarray
        Indices of the matched detections and of their columns.
    distance : numpy.ndarray
        Their distances [Å].
    """
    detected = np.asarray(detected, dtype=float).reshape(-1, 2)
    positions = np.asarray(positions, dtype=float).reshape(-1, 2)
    if len(detected) == 0 or len(positions) == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    distance = cdist(detected, positions) * sampling
    cost = np.where(distance <= radius, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    matched = cost[rows, cols] <= radius
    rows, cols = rows[matched], cols[matched]
    return rows, cols, distance[rows, cols]
