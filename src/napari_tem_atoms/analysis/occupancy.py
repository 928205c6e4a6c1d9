"""Per-site occupancy and transition rates of atomic columns across the frames of a video.

Detections of every frame are put into the reference frame's coordinates (drift undone), pooled
and clustered into *sites*: the peaks of the pooled detection density, at least
``site_radius`` apart, each detection assigned to the nearest site within ``site_radius``. A
site needs only one detection, so rarely occupied sites are kept. In each frame where a site is
inside the field of view it is *occupied* when a detection was assigned to it, else *empty*;
frames where it drifted out of view do not count.

From the occupancy matrix (frames × sites) come, per site: the occupancy fraction with a 95 %
Wilson interval (on the effective number of independent frames: successive frames of a Markov
chain are correlated), the occupied→empty (``off``) and empty→occupied (``on``) transitions and
their rates per frame, and the distance to the particle's edge, which sorts sites into surface,
sub-surface and bulk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, spatial, stats

from ..errors import TEMAtomsError

__all__ = [
    "SiteOccupancy",
    "compare_transition_rates",
    "edge_distances",
    "evidence_occupancy",
    "field_of_view",
    "occupancy_map",
    "occupancy_statistics",
    "site_occupancy",
    "sites_in_view",
]

#: Default radius within which detections of different frames are one site [Å] (gold's closest
#: projected columns are 1.44 Å apart along [110]).
DEFAULT_SITE_RADIUS = 0.6
#: Edge-distance classes, in nearest-neighbour spacings: below 0.5 surface, below 1.5 sub-surface.
LAYER_NAMES = ("surface", "sub-surface", "bulk")

SITE_COLUMNS = ("site", "y", "x", "y_angstrom", "x_angstrom", "occupancy", "occupancy_low",
                "occupancy_high", "transitions_off", "transitions_on", "n_frames",
                "edge_distance_angstrom")


@dataclass
class SiteOccupancy:
    """The result of :func:`site_occupancy`.

    Attributes
    ----------
    sites : pandas.DataFrame
        One row per site, columns :data:`SITE_COLUMNS` then ``rate_off``, ``rate_on``
        (transitions per frame spent occupied / empty), ``transition_rate`` (flips per observed
        frame pair), ``layer`` (surface, sub-surface, bulk), ``n_detections`` and ``switching``
        (the site comes and goes in this video). ``y, x`` are in reference-frame pixels (drift
        undone).
    occupied : numpy.ndarray
        (frames, sites) bool: a detection was assigned to the site in that frame.
    observed : numpy.ndarray
        (frames, sites) bool: the site was inside the field of view in that frame.
    drift : numpy.ndarray
        (frames, 2) drift ``(dy, dx)`` [px] that was undone.
    site_of_detection : numpy.ndarray
        Site index of every input detection, −1 when it was left unassigned (empty for the
        evidence method).
    sampling : float or None
        Pixel size [Å/px].
    method : str
        ``"evidence"`` (a hidden Markov model per site over per-frame evidence, see
        :func:`evidence_occupancy`) or ``"detections"`` (a frame is occupied when a detection
        was assigned to the site, see :func:`site_occupancy`).
    evidence : numpy.ndarray or None
        (frames, sites) the evidence per frame (evidence method), NaN where not observed.
    posterior : numpy.ndarray or None
        (frames, sites) probability of being occupied given the whole video (evidence method).
    evidence_levels : numpy.ndarray or None
        (sites, 2) the fitted evidence of each site when empty and when occupied (evidence
        method).
    notes : list of str
        What a user should know about the result (e.g. no particle edge in the field).
    """

    sites: pd.DataFrame
    occupied: np.ndarray
    observed: np.ndarray
    drift: np.ndarray
    site_of_detection: np.ndarray
    sampling: float | None
    method: str = "detections"
    evidence: np.ndarray | None = None
    posterior: np.ndarray | None = None
    evidence_levels: np.ndarray | None = None
    notes: list = field(default_factory=list)

    def occupancy_matrix(self) -> pd.DataFrame:
        """Per-frame occupancy as a table: 1 occupied, 0 empty, empty cell when out of view.

        With the evidence method, each cell is the probability that the site is occupied in
        that frame given the whole video (the posterior), not a hard 0/1.
        """
        values = self.posterior if self.posterior is not None else self.occupied.astype(float)
        matrix = np.where(self.observed, values, np.nan)
        table = pd.DataFrame(matrix, columns=[f"site_{i}" for i in range(matrix.shape[1])])
        table.insert(0, "frame", np.arange(matrix.shape[0]))
        return table


def _as_detections(detections: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(detections, pd.DataFrame):
        missing = [name for name in ("frame", "y", "x") if name not in detections.columns]
        if missing:
            raise TEMAtomsError(f"the detections have no {', '.join(missing)} column: an "
                                f"occupancy needs frame, y and x")
        frames = detections["frame"].to_numpy()
        positions = detections[["y", "x"]].to_numpy(dtype=float)
    else:
        array = np.asarray(detections, dtype=float)
        if array.ndim != 2 or array.shape[1] != 3:
            raise TEMAtomsError(f"detections must be (N, 3) as (frame, y, x), not {array.shape}")
        frames, positions = array[:, 0], array[:, 1:]
    if len(frames) and not np.allclose(frames, np.round(frames)):
        raise TEMAtomsError("detection frame numbers must be whole numbers")
    if not np.all(np.isfinite(positions)):
        raise TEMAtomsError("detections contain NaN or infinite positions")
    return np.round(frames).astype(int), positions


def _density_peaks(points: np.ndarray, radius: float) -> np.ndarray:
    """Peaks of the pooled detection density, at least `radius` apart (pixel units)."""
    bin_size = radius / 3.0
    origin = points.min(axis=0) - 2 * radius
    shape = np.ceil((points.max(axis=0) - origin + 2 * radius) / bin_size).astype(int) + 1
    index = np.floor((points - origin) / bin_size + 0.5).astype(int)
    flat = np.ravel_multi_index((index[:, 0], index[:, 1]), tuple(shape))
    density = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape)
    density = ndimage.gaussian_filter(density.astype(np.float32), sigma=1.0)
    size = 2 * int(np.ceil(radius / bin_size)) + 1
    is_peak = (density == ndimage.maximum_filter(density, size=size, mode="constant")) & (
        density > 0.05)  # a lone detection smoothed with σ = 1 bin peaks at 0.16
    peaks = np.argwhere(is_peak)
    heights = density[peaks[:, 0], peaks[:, 1]]
    return _suppress(peaks.astype(float) * bin_size + origin, heights, radius)


def _suppress(sites: np.ndarray, weights: np.ndarray, radius: float) -> np.ndarray:
    """Keep the strongest of sites closer than `radius` (equal density maxima tie in pairs)."""
    order = np.argsort(-weights, kind="stable")
    tree = spatial.cKDTree(sites)
    kept = np.zeros(len(sites), dtype=bool)
    removed = np.zeros(len(sites), dtype=bool)
    for index in order:
        if removed[index]:
            continue
        kept[index] = True
        removed[tree.query_ball_point(sites[index], radius)] = True
    return sites[kept]


def _assign(points: np.ndarray, sites: np.ndarray, radius: float) -> np.ndarray:
    if len(sites) == 0:
        return np.full(len(points), -1)
    distance, nearest = spatial.cKDTree(sites).query(points, distance_upper_bound=radius)
    return np.where(np.isfinite(distance), nearest, -1)


def _wilson_interval(successes: np.ndarray, trials: np.ndarray, z: float = 1.959964
                     ) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / trials
        denominator = 1 + z**2 / trials
        centre = (p + z**2 / (2 * trials)) / denominator
        half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def occupancy_statistics(occupied: np.ndarray, observed: np.ndarray | None = None
                         ) -> pd.DataFrame:
    """Occupancy and transitions of each site from a (frames, sites) occupancy matrix.

    Parameters
    ----------
    occupied : numpy.ndarray
        (frames, sites) bool or 0/1.
    observed : numpy.ndarray, optional
        (frames, sites) bool: frames where the site was in view (default: all). A transition is
        only counted between two consecutive observed frames.

    Returns
    -------
    pandas.DataFrame
        Per site: ``occupancy``, ``occupancy_low``, ``occupancy_high`` (95 % Wilson interval on
        the effective number of frames ``n (1 − ρ) / (1 + ρ)``, ρ the lag-1 autocorrelation),
        ``transitions_off``, ``transitions_on``, ``n_frames``, ``rate_off`` (off transitions per
        occupied frame that has a successor), ``rate_on`` (likewise for empty frames) and
        ``transition_rate`` (flips per consecutive pair of frames).

    Examples
    --------
    >>> occupied = np.array([[1, 1], [0, 1], [1, 1], [0, 1]], dtype=bool)
    >>> occupancy_statistics(occupied)[["occupancy", "transitions_off", "transitions_on"]]
       occupancy  transitions_off  transitions_on
    0        0.5                2               1
    1        1.0                0               0
    """
    occupied = np.asarray(occupied).astype(bool)
    if occupied.ndim != 2:
        raise TEMAtomsError(f"an occupancy matrix is (frames, sites), not {occupied.shape}")
    observed = (np.ones_like(occupied) if observed is None
                else np.asarray(observed).astype(bool))
    if observed.shape != occupied.shape:
        raise TEMAtomsError(f"observed {observed.shape} and occupied {occupied.shape} differ")
    occupied = occupied & observed
    n_frames = observed.sum(axis=0)
    n_occupied = occupied.sum(axis=0)
    pair = observed[:-1] & observed[1:]
    off = (pair & occupied[:-1] & ~occupied[1:]).sum(axis=0)
    on = (pair & ~occupied[:-1] & occupied[1:]).sum(axis=0)
    occupied_before = (pair & occupied[:-1]).sum(axis=0)
    empty_before = (pair & ~occupied[:-1]).sum(axis=0)
    n_pairs = pair.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = n_occupied / n_frames
        # Lag-1 autocorrelation of a two-state chain from its transition probabilities.
        rho = 1.0 - off / occupied_before - on / empty_before
        rho = np.where(np.isfinite(rho), np.clip(rho, 0.0, 0.99), 0.0)
        effective = np.maximum(n_frames * (1 - rho) / (1 + rho), 1.0)
        low, high = _wilson_interval(fraction * effective, effective)
        table = pd.DataFrame({
            "occupancy": fraction,
            "occupancy_low": low,
            "occupancy_high": high,
            "transitions_off": off,
            "transitions_on": on,
            "n_frames": n_frames,
            "rate_off": off / occupied_before,
            "rate_on": on / empty_before,
            "transition_rate": (off + on) / n_pairs,
        })
    return table


def edge_distances(sites: np.ndarray, spacing: float | None = None,
                   seen: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> tuple[np.ndarray, float]:
    """Distance of every site to the particle's edge (pixel units).

    The particle is the union of discs of radius one nearest-neighbour spacing around every site
    (neighbouring discs overlap, so the lattice becomes one solid shape), holes filled. Sites
    less than half a spacing deeper inside it than that radius are the *surface* (edge distance
    zero); every other site's edge distance is its distance to the nearest surface site: one
    layer spacing for the next layer, and so on.

    Where the video never showed (outside the field of view) nothing is known, so it is not
    vacuum: with `seen`, the outline only runs where the field shows vacuum. A field full of
    crystal has no edge: every distance is then infinite (and no site is surface).

    Parameters
    ----------
    sites : numpy.ndarray
        (N, 2) site positions ``(y, x)``.
    spacing : float, optional
        Nearest-neighbour spacing; default: the median distance of each site to its nearest one.
    seen : callable, optional
        ``seen(points)`` → bool per (M, 2) point: whether any frame showed it. Default: all.

    Returns
    -------
    distances : numpy.ndarray
        (N,) edge distances, ≥ 0 (``inf`` without an edge), same units as `sites`.
    spacing : float
        The nearest-neighbour spacing used.
    """
    sites = np.asarray(sites, dtype=float)
    if len(sites) < 2:
        return np.zeros(len(sites)), float("nan")
    if spacing is None:
        spacing = _spacing(sites)
    step = spacing / 8.0  # grid of the distance transform: 1/8 of a spacing
    origin = sites.min(axis=0) - 2 * spacing
    shape = np.ceil((sites.max(axis=0) - origin + 2 * spacing) / step).astype(int) + 1
    grid = np.zeros(shape, dtype=bool)
    index = np.round((sites - origin) / step).astype(int)
    grid[index[:, 0], index[:, 1]] = True
    inside = ndimage.distance_transform_edt(~grid) * step <= spacing
    if seen is not None:
        cells = np.indices(shape).reshape(2, -1).T * step + origin
        inside |= ~seen(cells).reshape(shape)  # unseen: maybe crystal, never vacuum
        if inside.all():
            return np.full(len(sites), np.inf), spacing
        # (An outline left only at the grid's own border is no particle edge either.)
        border = np.zeros(shape, dtype=bool)
        border[[0, -1], :] = border[:, [0, -1]] = True
        if not (~inside & ~border).any():
            return np.full(len(sites), np.inf), spacing
    inside = ndimage.binary_fill_holes(inside)
    depth = ndimage.distance_transform_edt(inside) * step - spacing
    depth = depth[index[:, 0], index[:, 1]]
    # The disc union's outline is scalloped between surface sites (up to 13 % of a spacing
    # closer), so depths below the surface are measured to the surface sites themselves.
    surface = depth < 0.5 * spacing
    if not surface.any():
        return np.full(len(sites), np.inf), spacing
    distances = np.zeros(len(sites))
    if not surface.all():
        distances[~surface], _ = spatial.cKDTree(sites[surface]).query(sites[~surface])
    return distances, spacing


def field_of_view(drift: np.ndarray, frame_shape: Sequence[int], margin: float = 0.0
                  ) -> Callable[[np.ndarray], np.ndarray]:
    """``seen(points)``: whether any frame of a drifting video showed each reference point.

    Parameters
    ----------
    drift : numpy.ndarray
        (frames, 2) drift ``(dy, dx)`` [px]: reference point ``p`` is at ``p + drift`` in a frame.
    frame_shape : (int, int)
        Frame size [px].
    margin : float, optional
        Points closer than this to a frame's border count as unseen in it [px].
    """
    drift = np.asarray(drift, dtype=float)
    limits = np.asarray(frame_shape[-2:], dtype=float) - 1 - margin

    def seen(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=float)
        result = np.zeros(len(points), dtype=bool)
        for shift in np.unique(np.round(drift, 1), axis=0):
            moved = points + shift
            result |= np.all((moved >= margin) & (moved <= limits), axis=1)
        return result

    return seen


def _describe_sites(table: pd.DataFrame, sites: np.ndarray, sampling: float | None,
                    seen: Callable[[np.ndarray], np.ndarray] | None, notes: list[str]
                    ) -> pd.DataFrame:
    """Add positions, Å columns, edge distance and layer to a per-site statistics table."""
    distance, spacing_px = edge_distances(sites, seen=seen)
    table.insert(0, "site", np.arange(len(sites)))
    table.insert(1, "y", sites[:, 0])
    table.insert(2, "x", sites[:, 1])
    if sampling:
        table.insert(3, "y_angstrom", sites[:, 0] * sampling)
        table.insert(4, "x_angstrom", sites[:, 1] * sampling)
        table.insert(table.columns.get_loc("n_frames") + 1, "edge_distance_angstrom",
                     distance * sampling)
    else:
        table.insert(table.columns.get_loc("n_frames") + 1, "edge_distance_px", distance)
    if len(sites) > 1 and not np.isfinite(distance).any():
        notes.append("no particle edge (vacuum next to the crystal) in the field of view: no "
                     "site is called surface; every site is counted as bulk")
    layer = np.digitize(distance, [0.5 * spacing_px, 1.5 * spacing_px])
    table["layer"] = np.asarray(LAYER_NAMES)[layer] if len(sites) > 1 else LAYER_NAMES[0]
    return table


def site_occupancy(detections: pd.DataFrame | np.ndarray, n_frames: int | None = None,
                   drift: np.ndarray | None = None, frame_shape: Sequence[int] | None = None,
                   sampling: float | None = None, site_radius: float | None = None,
                   margin: float = 2.0) -> SiteOccupancy:
    """Sites, their occupancy and transitions from detections over the frames of a video.

    Parameters
    ----------
    detections : pandas.DataFrame or numpy.ndarray
        The atoms of every frame: a table with ``frame, y, x`` (as :func:`detect_atoms` returns
        and atoms CSVs hold) or an (N, 3) array; positions in frame pixels.
    n_frames : int, optional
        Number of frames of the video (frames without detections count as all-empty); default:
        last detected frame + 1.
    drift : numpy.ndarray, optional
        (frames, 2) drift ``(dy, dx)`` [px] of each frame relative to the reference, e.g. from
        :func:`~napari_tem_atoms.analysis.align.estimate_drift`; default none.
    frame_shape : (int, int), optional
        Frame size [px]: a site is only counted in frames where it lies at least `margin` px
        inside the frame. Default: every frame sees every site.
    sampling : float, optional
        Pixel size [Å/px]: adds Å columns and sets the default `site_radius`.
    site_radius : float, optional
        Detections closer than this to a site belong to it [px]. Default: 0.6 Å (with
        `sampling`) or 3 px.
    margin : float, optional
        Distance from the frame border below which a site counts as out of view [px].

    Returns
    -------
    SiteOccupancy
        Sites table, occupancy matrix, drift.

    Raises
    ------
    TEMAtomsError
        Fewer than two frames, no detections, frames beyond `n_frames`, a drift of the wrong
        length.
    """
    frames, positions = _as_detections(detections)
    if len(frames) == 0:
        raise TEMAtomsError("there are no detections: nothing to build sites from (detect "
                            "atoms first, or lower the detection threshold)")
    if frames.min() < 0:
        raise TEMAtomsError(f"detection frame numbers must be ≥ 0, found {frames.min()}")
    if n_frames is None:
        n_frames = int(frames.max()) + 1 if drift is None else len(drift)
    if frames.max() >= n_frames:
        raise TEMAtomsError(f"detections reach frame {frames.max()} but the video has "
                            f"{n_frames} frames: detections and video do not match")
    if n_frames < 2:
        raise TEMAtomsError(f"an occupancy needs at least 2 frames, got {n_frames}")
    if drift is None:
        drift = np.zeros((n_frames, 2))
    drift = np.asarray(drift, dtype=float)
    if drift.shape != (n_frames, 2):
        raise TEMAtomsError(f"the drift must be ({n_frames}, 2) for {n_frames} frames, got "
                            f"{drift.shape}")
    if site_radius is None:
        site_radius = DEFAULT_SITE_RADIUS / sampling if sampling else 3.0
    corrected = positions - drift[frames]

    sites = _density_peaks(corrected, site_radius)
    site_of_detection = _assign(corrected, sites, site_radius)
    for _ in range(2):  # move each site to the mean of its detections, then reassign
        assigned = site_of_detection >= 0
        counts = np.bincount(site_of_detection[assigned], minlength=len(sites))
        keep = counts > 0
        sums = np.stack([np.bincount(site_of_detection[assigned], corrected[assigned, axis],
                                     minlength=len(sites)) for axis in (0, 1)], axis=1)
        sites = _suppress(sums[keep] / counts[keep, None], counts[keep].astype(float),
                          site_radius)
        site_of_detection = _assign(corrected, sites, site_radius)
    counts = np.bincount(site_of_detection[site_of_detection >= 0], minlength=len(sites))

    occupied = np.zeros((n_frames, len(sites)), dtype=bool)
    assigned = site_of_detection >= 0
    occupied[frames[assigned], site_of_detection[assigned]] = True
    observed = sites_in_view(sites, drift, frame_shape, margin)
    observed |= occupied  # a detection proves the site was in view

    notes: list[str] = []
    seen = None if frame_shape is None else field_of_view(drift, frame_shape)
    table = _describe_sites(occupancy_statistics(occupied, observed), sites, sampling, seen,
                            notes)
    table["n_detections"] = counts
    table["switching"] = (table["transitions_off"] + table["transitions_on"]) > 0
    return SiteOccupancy(sites=table, occupied=occupied, observed=observed, drift=drift,
                         site_of_detection=site_of_detection, sampling=sampling, notes=notes)


def sites_in_view(sites: np.ndarray, drift: np.ndarray, frame_shape: Sequence[int] | None,
                  margin: float = 2.0) -> np.ndarray:
    """(frames, sites) bool: the site lies at least `margin` px inside the frame.

    Reference positions `sites` are at ``site + drift[frame]`` in each frame; without a
    `frame_shape` every frame sees every site.
    """
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    if frame_shape is None:
        return np.ones((len(drift), len(sites)), dtype=bool)
    in_frame = sites[None, :, :] + np.asarray(drift, dtype=float)[:, None, :]
    limits = np.asarray(frame_shape[-2:], dtype=float) - 1 - margin
    return np.all((in_frame >= margin) & (in_frame <= limits), axis=2)


def evidence_occupancy(evidence: np.ndarray, sites: np.ndarray, observed: np.ndarray | None = None,
                       drift: np.ndarray | None = None, frame_shape: Sequence[int] | None = None,
                       sampling: float | None = None, threshold: float | None = None,
                       levels: str = "shared", steady: np.ndarray | None = None,
                       confirm: np.ndarray | None = None, confirm_threshold: float = 0.0
                       ) -> SiteOccupancy:
    """Occupancy and transitions of every site from per-frame evidence, by a two-state HMM.

    Parameters
    ----------
    evidence : numpy.ndarray
        (frames, sites) evidence that each site is occupied in each frame (larger: more likely;
        e.g. the logit of the network's confidence there); NaN where not observed.
    sites : numpy.ndarray
        (sites, 2) reference positions ``(y, x)`` [px] (drift undone).
    observed : numpy.ndarray, optional
        (frames, sites) bool; default: where `evidence` is finite.
    drift : numpy.ndarray, optional
        (frames, 2) drift [px] that was undone (kept with the result; with `frame_shape` it
        tells where the field showed vacuum).
    frame_shape : (int, int), optional
        Frame size [px].
    sampling : float, optional
        Pixel size [Å/px]: adds Å columns.
    threshold : float, optional
        Evidence above which a frame starts the fit as occupied (see
        :func:`~napari_tem_atoms.analysis.hmm.fit_two_state`; shared levels only).
    levels : {"shared", "own"}, optional
        ``"shared"``: one empty level for every site (the network's evidence,
        :func:`~napari_tem_atoms.analysis.hmm.fit_two_state`); ``"own"``: each site its own
        levels and a test of whether it switches at all (image evidence, whose empty level
        holds the site's surroundings; :func:`~napari_tem_atoms.analysis.hmm.fit_site_levels`).
    steady : numpy.ndarray, optional
        (sites,) bool, own levels only: what a site that does not switch is, occupied in every
        frame (True: a column always there) or no site at all (False: dropped). Default: all
        False.
    confirm : numpy.ndarray, optional
        (frames, sites) a second evidence (the network's logit), own levels only: a steady
        site switches only where its mean over the frames called empty is below
        `confirm_threshold` (a thick column whose contrast changes with defocus looks like two
        levels in the image, but the network sees the column in every frame).
    confirm_threshold : float, optional
        See `confirm`.

    Returns
    -------
    SiteOccupancy
        ``method="evidence"``; its sites table has the columns of :func:`site_occupancy`, with
        the occupancy as the mean posterior over the observed frames (95 % Wilson interval on the
        effective number of frames of the fitted chain), the expected numbers of transitions
        (``transitions_off``, ``transitions_on``, fractional), the fitted per-frame rates
        (``rate_off``, ``rate_on``), and ``n_detections`` the frames whose more probable state is
        occupied. ``posterior`` and ``evidence`` hold the per-frame values.
    """
    from .hmm import fit_site_levels, fit_two_state

    evidence = np.asarray(evidence, dtype=float)
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    if evidence.ndim != 2 or evidence.shape[1] != len(sites):
        raise TEMAtomsError(f"evidence {evidence.shape} does not fit {len(sites)} sites")
    n_frames = evidence.shape[0]
    drift = np.zeros((n_frames, 2)) if drift is None else np.asarray(drift, dtype=float)
    observed = (np.isfinite(evidence) if observed is None
                else np.asarray(observed, bool) & np.isfinite(evidence))
    if levels == "own":
        fit = fit_site_levels(evidence, observed)
        steady = (np.zeros(len(sites), bool) if steady is None
                  else np.asarray(steady, bool).reshape(len(sites)))
        if confirm is not None:
            empty_frames = observed & ~fit.states
            with np.errstate(invalid="ignore", divide="ignore"):
                empty_level = (np.where(empty_frames, confirm, 0.0).sum(axis=0)
                               / empty_frames.sum(axis=0))
            refuted = steady & ~(empty_level < confirm_threshold)
            fit = replace(fit, switching=fit.switching & ~refuted)
        keep = fit.switching | steady
        evidence, sites, observed = evidence[:, keep], sites[keep], observed[:, keep]
        fit = _constant_where_steady(fit, keep, fit.switching[keep], observed)
    elif levels == "shared":
        fit = fit_two_state(evidence, observed, threshold=threshold)
    else:
        raise TEMAtomsError(f"levels must be 'shared' or 'own', not {levels!r}")
    occupancy = fit.occupancy
    n_frames_seen = observed.sum(axis=0)
    pairs = (observed[:-1] & observed[1:]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(1.0 - fit.p_off - fit.p_on, 0.0, 0.99)
        effective = np.maximum(n_frames_seen * (1 - rho) / (1 + rho), 1.0)
        if levels == "own":  # a column seen in every frame: as the detections method says it
            effective = np.where(fit.switching, effective, n_frames_seen)
        low, high = _wilson_interval(occupancy * effective, effective)
        table = pd.DataFrame({
            "occupancy": occupancy, "occupancy_low": low, "occupancy_high": high,
            "transitions_off": fit.expected_off, "transitions_on": fit.expected_on,
            "n_frames": n_frames_seen, "rate_off": fit.p_off, "rate_on": fit.p_on,
            "transition_rate": (fit.expected_off + fit.expected_on) / pairs,
        })
    notes: list[str] = []
    seen = None if frame_shape is None else field_of_view(drift, frame_shape)
    table = _describe_sites(table, sites, sampling, seen, notes)
    states = fit.states
    table["n_detections"] = states.sum(axis=0)
    table["switching"] = (fit.switching if levels == "own"
                          else (fit.expected_off + fit.expected_on) >= 0.5)
    return SiteOccupancy(sites=table, occupied=states, observed=observed, drift=drift,
                         site_of_detection=np.zeros(0, dtype=int), sampling=sampling,
                         method="evidence", evidence=np.where(observed, evidence, np.nan),
                         posterior=fit.posterior, evidence_levels=fit.means, notes=notes)


def _constant_where_steady(fit: Any, keep: np.ndarray, switching: np.ndarray,
                           observed: np.ndarray) -> Any:
    """The fit of the kept sites, those that do not switch occupied in every observed frame."""
    steady = ~switching
    posterior = fit.posterior[:, keep]
    posterior[:, steady] = np.where(observed[:, steady], 1.0, np.nan)
    pairs = (observed[:-1] & observed[1:]).sum(axis=0).astype(float)

    def pick(values: np.ndarray, constant: np.ndarray | float) -> np.ndarray:
        return np.where(steady, constant, np.asarray(values)[keep])

    # A column seen present throughout: no transition; never empty, so no rate of return
    # (as the detections method reports such a site).
    return replace(fit, posterior=posterior, p_off=pick(fit.p_off, 0.0),
                   p_on=pick(fit.p_on, np.nan), expected_off=pick(fit.expected_off, 0.0),
                   expected_on=pick(fit.expected_on, 0.0),
                   occupied_pairs=pick(fit.occupied_pairs, pairs),
                   empty_pairs=pick(fit.empty_pairs, 0.0), means=fit.means[keep],
                   sigmas=fit.sigmas[keep], gain=fit.gain[keep], switching=switching)


def occupancy_map(sites: np.ndarray, values: np.ndarray, shape: Sequence[int],
                  cell_radius: float | None = None) -> np.ndarray:
    """A heat map of the particle: each site's cell (its Voronoi cell) filled with its value.

    Parameters
    ----------
    sites : numpy.ndarray
        (N, 2) site positions ``(y, x)`` [px].
    values : numpy.ndarray
        (N,) value per site (e.g. the occupancy).
    shape : (int, int)
        Shape of the map [px], in the sites' pixel grid.
    cell_radius : float, optional
        Cells end this far from their site [px], so the map stops at the particle's edge;
        default: 0.7 nearest-neighbour spacings.

    Returns
    -------
    numpy.ndarray
        float32 map, NaN outside every cell.
    """
    sites = np.asarray(sites, dtype=float)
    values = np.asarray(values, dtype=np.float32)
    result = np.full(tuple(int(n) for n in shape[-2:]), np.nan, dtype=np.float32)
    if len(sites) == 0:
        return result
    if cell_radius is None:
        spacing = _spacing(sites)
        cell_radius = 0.7 * spacing if np.isfinite(spacing) else 5.0
    low = np.clip(np.floor(sites.min(axis=0) - cell_radius), 0, None).astype(int)
    high = np.minimum(np.ceil(sites.max(axis=0) + cell_radius) + 1, result.shape).astype(int)
    if np.any(high <= low):
        return result
    rows, cols = np.mgrid[low[0]:high[0], low[1]:high[1]]
    distance, nearest = spatial.cKDTree(sites).query(
        np.stack([rows.ravel(), cols.ravel()], axis=1), distance_upper_bound=cell_radius)
    inside = np.isfinite(distance)
    block = np.full(rows.size, np.nan, dtype=np.float32)
    block[inside] = values[nearest[inside]]
    result[low[0]:high[0], low[1]:high[1]] = block.reshape(rows.shape)
    return result


def _spacing(sites: np.ndarray) -> float:
    if len(sites) < 2:
        return float("nan")
    nearest, _ = spatial.cKDTree(sites).query(sites, k=2)
    return float(np.median(nearest[:, 1]))


def compare_transition_rates(first: pd.DataFrame, second: pd.DataFrame,
                             names: tuple[str, str] = ("first", "second"),
                             column: str = "transition_rate") -> pd.DataFrame:
    """Compare the per-site transition rates of two videos, layer by layer.

    Parameters
    ----------
    first, second : pandas.DataFrame
        Sites tables of :func:`site_occupancy` (or read back from their CSV), e.g. vacuum and gas.
    names : (str, str), optional
        Names of the two videos in the output columns.
    column : str, optional
        The per-site quantity to compare (default ``transition_rate``: flips per frame).

    Returns
    -------
    pandas.DataFrame
        One row per layer (surface, sub-surface, bulk, all), and one for the sites that switch
        (``switching``, where both tables say which do): number of sites and median of each
        video, and the two-sided Mann–Whitney U test (``u``, ``p_value``) of whether one video's
        rates tend to be larger than the other's. The ``switching`` row is the diffusion's: in
        the surface layer the columns of the particle that never move (rate 0 in both videos)
        dilute the difference (on simulated adatom videos, slow against fast: p 0.18-0.35 for
        the surface layer, 0.0008-0.005 for the switching sites).
    """
    rows = []
    for table, name in ((first, names[0]), (second, names[1])):
        for needed in (column, "layer"):
            if needed not in table.columns:
                raise TEMAtomsError(f"the sites of {name} have no {needed!r} column")
    groups = [*LAYER_NAMES, "all"]
    if "switching" in first.columns and "switching" in second.columns:
        groups.append("switching")
    for layer in groups:
        values = []
        for table in (first, second):
            if layer == "switching":
                chosen = table[table["switching"].astype(str).str.lower().isin(["true", "1"])]
            else:
                chosen = table if layer == "all" else table[table["layer"] == layer]
            values.append(chosen[column].dropna().to_numpy(dtype=float))
        row = {"layer": layer, f"n_{names[0]}": len(values[0]), f"n_{names[1]}": len(values[1]),
               f"median_{names[0]}": np.median(values[0]) if len(values[0]) else np.nan,
               f"median_{names[1]}": np.median(values[1]) if len(values[1]) else np.nan,
               "u": np.nan, "p_value": np.nan}
        if len(values[0]) and len(values[1]):
            test = stats.mannwhitneyu(values[0], values[1], alternative="two-sided")
            row.update(u=float(test.statistic), p_value=float(test.pvalue))
        rows.append(row)
    return pd.DataFrame(rows)
