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
from .occupancy import sites_in_view

__all__ = [
    "SITE_THRESHOLD",
    "evidence_polarity",
    "image_evidence",
    "lattice_step_sites",
    "mean_map",
    "site_evidence",
    "sites_from_mean_map",
]

#: Smallest mean confidence over the video for a site [0-1]: a column the network finds at 0.5
#: confidence in 8 % of the frames.
SITE_THRESHOLD = 0.04
#: Footprint of a site in which the largest confidence is its evidence [Å].
FOOTPRINT = 0.6
#: Width (σ) of the Gaussian that weighs the image around a site [Å]: about an atom's image in
#: HRTEM (on simulated adatom videos at 500 e/Å², 0.2-0.3 Å separated occupied from empty
#: frames best: 8 noise σ, against 5 at 0.45 Å and 3 at 0.6 Å).
IMAGE_SIGMA = 0.25
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
        inside = sites_in_view(sites, shift[None], frame_map.shape, margin)[0]
        largest = ndimage.maximum_filter(frame_map, size=size, mode="nearest")
        values = ndimage.map_coordinates(largest, positions[inside].T, order=1, mode="nearest")
        values = np.clip(values, EPSILON, 1 - EPSILON)
        evidence[index, inside] = np.log(values / (1 - values))
        observed[index] = inside
    return evidence, observed


def image_evidence(frames: Sequence[np.ndarray], sites: np.ndarray, drift: np.ndarray,
                   sampling: float, sigma: float = IMAGE_SIGMA, margin: float = 2.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame image intensity at every site, weighed by a Gaussian of an atom's size.

    A single adatom at a few hundred e/Å² is marginal to a network in one frame, but its
    contrast summed over its footprint stands several noise σ above the empty site's: the
    image itself is the evidence. Each frame is smoothed by a Gaussian of `sigma` and divided
    by its mean magnitude (doses that change from frame to frame cancel); the site's value is
    read at its drifted position. Its sign is the image's: whether atoms are bright or dark is
    decided by :func:`evidence_polarity`.

    Parameters
    ----------
    frames : sequence of numpy.ndarray
        (H, W) frames (read one at a time: a lazily read video stays lazy).
    sites : numpy.ndarray
        (N, 2) reference positions ``(y, x)`` in frame pixels (drift undone).
    drift : numpy.ndarray
        (frames, 2) drift [px]: reference point ``p`` is at ``p + drift`` in a frame.
    sampling : float
        Pixel size [Å/px].
    sigma : float, optional
        Gaussian width [Å].
    margin : float, optional
        A site closer than this to a frame's border is not observed in that frame [px].

    Returns
    -------
    evidence : numpy.ndarray
        (frames, N) relative intensities, NaN where not observed.
    observed : numpy.ndarray
        (frames, N) bool.
    """
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    drift = np.asarray(drift, dtype=float)
    if len(frames) != len(drift):
        raise TEMAtomsError(f"{len(frames)} frames but a drift of {len(drift)} frames")
    evidence = np.full((len(frames), len(sites)), np.nan)
    observed = np.zeros((len(frames), len(sites)), dtype=bool)
    for index in range(len(frames)):
        frame = np.asarray(frames[index], dtype=np.float32)
        # The mean magnitude, not the median: a background-subtracted STEM frame has a median
        # near zero, and an atom changes the mean of a whole frame by nothing noticeable.
        level = float(np.abs(frame).mean())
        if not np.isfinite(level) or level == 0.0:
            level = 1.0
        smooth = ndimage.gaussian_filter(frame, sigma / sampling, mode="nearest") / level
        positions = sites + drift[index]
        inside = sites_in_view(sites, drift[index:index + 1], frame.shape, margin)[0]
        evidence[index, inside] = ndimage.map_coordinates(smooth, positions[inside].T, order=1)
        observed[index] = inside
    return evidence, observed


def evidence_polarity(image: np.ndarray, network: np.ndarray, observed: np.ndarray) -> float:
    """+1 when atoms raise the image's evidence, −1 when they lower it (dark atoms).

    Decided by the network, whose evidence rises with an atom whatever the image's contrast:
    the sign of the correlation of the two over every site and frame, each site's mean taken
    off (a site's constant surroundings say nothing about its atom).
    """
    observed = observed & np.isfinite(image) & np.isfinite(network)
    counts = np.maximum(observed.sum(axis=0), 1)

    def centred(values: np.ndarray) -> np.ndarray:
        filled = np.where(observed, values, 0.0)
        return np.where(observed, filled - filled.sum(axis=0) / counts, 0.0)

    return -1.0 if float((centred(image) * centred(network)).sum()) < 0 else 1.0


def lattice_step_sites(columns: np.ndarray, min_predictions: int = 1) -> np.ndarray:
    """Empty sites one lattice step beyond the columns: where an adatom would sit.

    Continuing the crystal by one step from column ``i`` away from its neighbour ``j`` gives
    ``2 p_i − p_j``. Points where no column is, predicted by at least `min_predictions` such
    pairs (the same site seen from two directions; averaged), are the lattice sites just
    outside the surface (and vacancies inside): the hollow sites where adatoms sit. Local, so
    twinned or strained particles need no global lattice.

    Parameters
    ----------
    columns : numpy.ndarray
        (N, 2) positions of the columns present (any unit).
    min_predictions : int, optional
        Pairs that must agree on a site.

    Returns
    -------
    numpy.ndarray
        (M, 2) sites, in the unit of `columns`.
    """
    from scipy.spatial import cKDTree

    columns = np.asarray(columns, dtype=float).reshape(-1, 2)
    if len(columns) < 3:
        return np.zeros((0, 2))
    tree = cKDTree(columns)
    nearest = tree.query(columns, k=2)[0][:, 1]
    spacing = float(np.median(nearest))
    pairs = tree.query_pairs(1.25 * spacing, output_type="ndarray")
    if not len(pairs):
        return np.zeros((0, 2))
    first, second = columns[pairs[:, 0]], columns[pairs[:, 1]]
    predicted = np.vstack([2 * first - second, 2 * second - first])
    empty = tree.query(predicted)[0] > 0.5 * spacing
    predicted = predicted[empty]
    if not len(predicted):
        return np.zeros((0, 2))
    # Group the predictions that agree (within a third of a spacing) and average them.
    groups = _connected_groups(predicted, spacing / 3)
    sizes = np.bincount(groups)
    sums = np.stack([np.bincount(groups, predicted[:, axis]) for axis in (0, 1)], axis=1)
    sites = sums[sizes >= min_predictions] / sizes[sizes >= min_predictions, None]
    return sites


def _connected_groups(points: np.ndarray, radius: float) -> np.ndarray:
    """Labels of the groups of points linked by chains of neighbours within `radius`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                       shape=(len(points), len(points)))
    return connected_components(graph, directed=False)[1]
