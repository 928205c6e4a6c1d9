"""Sites and per-frame evidence from the network's maps of a whole drift-corrected video.

A site occupied in a tenth of the frames leaves a tenth of a column's confidence in the mean of
the maps (drift undone), where noise averages away: its peaks are the sites. In each frame, the
evidence at a site is the logit of the largest confidence within a footprint of 0.6 Å around it
(the network's peak moves a little with noise): a continuous number, not a detection, which
:func:`~napari_tem_atoms.analysis.hmm.fit_two_state` turns into states over the whole video.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import TEMAtomsError
from .detect import MIN_COLUMN_DISTANCE, find_peaks

__all__ = ["SITE_THRESHOLD", "mean_map", "site_evidence", "sites_from_mean_map"]

#: Smallest mean confidence over the video for a site [0-1]: a column the network finds at 0.5
#: confidence in 8 % of the frames.
SITE_THRESHOLD = 0.04
#: Footprint of a site in which the largest confidence is its evidence [Å].
FOOTPRINT = 0.6
#: Confidences are clipped to [ε, 1 − ε] before the logit (the network saturates).
EPSILON = 1e-4


def mean_map(maps: Sequence[np.ndarray], drift: np.ndarray) -> np.ndarray:
    """The mean of per-frame maps with the drift undone, in the reference frame's pixels.

    Parameters
    ----------
    maps : sequence of numpy.ndarray
        (H, W) maps, one per frame.
    drift : numpy.ndarray
        (frames, 2) drift ``(dy, dx)`` in the maps' pixels: reference point ``p`` is at
        ``p + drift`` in a frame.

    Returns
    -------
    numpy.ndarray
        float32 (H, W); NaN where no frame showed that point.
    """
    if len(maps) != len(drift):
        raise TEMAtomsError(f"{len(maps)} maps but a drift of {len(drift)} frames")
    total = np.zeros(maps[0].shape, dtype=np.float64)
    count = np.zeros(maps[0].shape, dtype=np.int32)
    for frame_map, shift in zip(maps, np.asarray(drift, dtype=float), strict=True):
        moved = ndimage.shift(np.asarray(frame_map, dtype=np.float32), -shift, order=1,
                              mode="constant", cval=np.nan, prefilter=False)
        seen = np.isfinite(moved)
        total[seen] += moved[seen]
        count += seen
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def sites_from_mean_map(mean: np.ndarray, map_sampling: float,
                        threshold: float = SITE_THRESHOLD) -> np.ndarray:
    """Sites: peaks of the mean map above `threshold`, at least 1.2 Å apart (map pixels)."""
    positions, _ = find_peaks(np.nan_to_num(mean, nan=0.0), threshold,
                              MIN_COLUMN_DISTANCE / map_sampling)
    return positions


def site_evidence(maps: Sequence[np.ndarray], sites: np.ndarray, drift: np.ndarray,
                  map_sampling: float, margin: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame evidence at every site: the logit of the largest confidence in its footprint.

    Parameters
    ----------
    maps : sequence of numpy.ndarray
        (H, W) per-frame confidence maps (0-1).
    sites : numpy.ndarray
        (N, 2) reference positions in map pixels.
    drift : numpy.ndarray
        (frames, 2) drift in map pixels.
    map_sampling : float
        Pixel size of the maps [Å/px].
    margin : float, optional
        A site closer than this to a map's border is not observed in that frame [px].

    Returns
    -------
    evidence : numpy.ndarray
        (frames, N) logits, NaN where not observed.
    observed : numpy.ndarray
        (frames, N) bool.
    """
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    size = max(1, round(2 * FOOTPRINT / map_sampling) | 1)  # odd, ~1.2 Å across
    evidence = np.full((len(maps), len(sites)), np.nan)
    observed = np.zeros((len(maps), len(sites)), dtype=bool)
    for index, (frame_map, shift) in enumerate(zip(maps, np.asarray(drift, float), strict=True)):
        frame_map = np.asarray(frame_map, dtype=np.float32)
        positions = sites + shift
        limits = np.asarray(frame_map.shape, dtype=float) - 1 - margin
        inside = np.all((positions >= margin) & (positions <= limits), axis=1)
        largest = ndimage.maximum_filter(frame_map, size=size, mode="nearest")
        values = ndimage.map_coordinates(largest, positions[inside].T, order=1, mode="nearest")
        values = np.clip(values, EPSILON, 1 - EPSILON)
        evidence[index, inside] = np.log(values / (1 - values))
        observed[index] = inside
    return evidence, observed
