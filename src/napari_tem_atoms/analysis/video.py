"""Occupancy of a whole video in one go: drift, detection, sites (the `tem-atoms occupancy` job).

Two methods. ``"evidence"`` (the default) decides every site from the whole video: the
network's maps of all frames, drift undone, are averaged; the columns it sees in most frames,
the lattice sites one step beyond them (where adatoms sit) and the weaker peaks of the mean
are the sites. In each frame a site's evidence is the image itself around it (a Gaussian of an
atom's size: a single adatom at 200-500 e/Å² stands 3-8 noise σ above its empty site there,
where the network, one frame at a time, finds it in one frame of four), and a two-state hidden
Markov model per site, with the site's own levels, gives the state of every frame, the
occupancy with its interval and the rates; a site whose series does not switch is a column
present throughout, or no site. ``"detections"``: a frame is occupied where a thresholded
detection was assigned to the site (for comparison, and for detections made elsewhere).
On simulated adatom videos (``benchmarks/adatom_occupancy.py``) the evidence method finds
93 % of the adatom sites at 200 e/Å² per frame (98 % at 500) and reads their occupancy within
0.016 (0.002); the detections method misses three single adatoms in four in any one frame.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import TEMAtomsError
from ..events import Events, Progress, map_events, run
from ..io.imaging_mode import is_stem
from .align import iter_estimate_drift
from .detect import _as_frames, imaging_mode_of, iter_detect_atoms, required_sampling
from .occupancy import SiteOccupancy, evidence_occupancy, site_occupancy

#: The detector occupancy uses by default: trained on adatoms and columns of every height
#: (au-hrtem misses single adatoms, which are what diffuses; see its model card).
OCCUPANCY_MODEL = "au-hrtem-adatoms"
#: The occupancy methods (see the module's docstring); the first is the default.
OCCUPANCY_METHODS = ("evidence", "detections")
#: Mean confidence over the video above which a peak of the mean map is a column present in
#: (most) frames; weaker peaks come and go.
STEADY_CONFIDENCE = 0.5
#: A weaker peak of the mean map this close to a lattice site is that site [Å].
SNAP_DISTANCE = 0.5

__all__ = ["iter_video_occupancy", "video_occupancy"]


def iter_video_occupancy(
    video: Any,
    model: Any = "auto",
    sampling: float | None = None,
    atoms: pd.DataFrame | None = None,
    drift: np.ndarray | None = None,
    threshold: float | None = None,
    max_shift: float | None = None,
    site_radius: float | None = None,
    device: str | None = None,
    cs: float | None = None,
    defocus: float | None = None,
    precision: str | None = "auto",
    engine: str | None = "auto",
    method: str = "evidence",
    imaging_mode: str | None = None,
) -> Events[SiteOccupancy]:
    """The event stream of :func:`video_occupancy`.

    Yields the :class:`~napari_tem_atoms.events.Progress` of three stages in turn, ``"drift"``
    and ``"detect"`` (frames done, frames: those of
    :func:`~napari_tem_atoms.analysis.align.iter_estimate_drift` and
    :func:`~napari_tem_atoms.detect_atoms`, skipped when `drift` or `atoms` are given) and
    ``"sites"`` (0, then 1, of 1), and the detector's notices; returns the
    :class:`~napari_tem_atoms.analysis.occupancy.SiteOccupancy`.
    """
    if method not in OCCUPANCY_METHODS:
        raise TEMAtomsError(f"unknown occupancy method {method!r}: use one of "
                            f"{', '.join(OCCUPANCY_METHODS)}")
    from ..io import TEMImage, read_image

    if isinstance(video, (str, os.PathLike)):
        video = read_image(video, lazy=True)
    mode = imaging_mode_of(video, imaging_mode)[0]
    if model is None or model == "auto":  # STEM videos: the STEM column model
        model = "stem-columns" if is_stem(mode) else OCCUPANCY_MODEL
    # The detector gets the TEMImage itself when there is one: it checks the mode it was
    # trained on against the file's (a DomainWarning) and negates ABF/BF for a STEM model.
    from_file = isinstance(video, TEMImage) and imaging_mode is None
    frames, sampling, is_stack = _as_frames(video, sampling)
    if atoms is None:  # refused before the drift is measured, not after
        sampling = required_sampling(sampling)
    detector_input, detector_mode = (video, None) if from_file else (frames, mode)
    if not is_stack or frames.shape[0] < 2:
        raise TEMAtomsError(f"an occupancy needs a video of at least 2 frames, got data of "
                            f"shape {tuple(frames.shape) if is_stack else frames.shape[1:]}")
    n_frames = int(frames.shape[0])
    if drift is None:
        drift = yield from iter_estimate_drift(frames, max_shift=max_shift, sampling=sampling)
    if atoms is None and method == "evidence":
        maps: list[np.ndarray] = []

        def keep_map(progress: Progress) -> Progress:
            maps.append(progress.item.heatmap.astype(np.float16))  # half the memory; 1e-3 is
            # plenty. The step is passed on without it: a caller need not hold every map.
            return replace(progress, item=replace(progress.item, heatmap=None))

        atoms = yield from map_events(iter_detect_atoms(
            detector_input, model, sampling, threshold, device, cs=cs, defocus=defocus,
            precision=precision, engine=engine, keep_heatmaps=True,
            imaging_mode=detector_mode), keep_map)
        yield Progress("sites", 0, 1)
        result = _evidence_result(frames, maps, atoms, drift, sampling)
        yield Progress("sites", 1, 1)
        return result
    if atoms is None:
        atoms = yield from iter_detect_atoms(
            detector_input, model, sampling, threshold, device, cs=cs, defocus=defocus,
            precision=precision, engine=engine, imaging_mode=detector_mode)
    elif len(atoms) and "frame" in atoms.columns and atoms["frame"].max() >= n_frames:
        raise TEMAtomsError(f"the atoms reach frame {int(atoms['frame'].max())} but the video "
                            f"has {n_frames} frames: they do not belong to this video")
    yield Progress("sites", 0, 1)
    result = site_occupancy(atoms, n_frames=n_frames, drift=drift,
                            frame_shape=tuple(frames.shape[-2:]), sampling=sampling,
                            site_radius=site_radius)
    yield Progress("sites", 1, 1)
    return result


def _evidence_result(frames: Any, maps: list[np.ndarray], atoms: pd.DataFrame,
                     drift: np.ndarray, sampling: float) -> SiteOccupancy:
    """Sites, image evidence per frame and a two-state HMM per site (the evidence method).

    Sites: the columns of the mean map (drift undone) that the network sees in most frames,
    the lattice sites one step beyond them (:func:`lattice_step_sites`, where adatoms sit;
    a weaker peak of the mean map within :data:`SNAP_DISTANCE` of one is that site), and the
    weaker peaks elsewhere. Evidence: the image around each site in each frame
    (:func:`image_evidence`), its sign set by the network (:func:`evidence_polarity`). A site
    whose series does not switch is a column present throughout if the network saw it in most
    frames, and no site otherwise; such a column switches only where the network, too, loses
    it in the frames the image calls empty.
    """
    from .site_evidence import (
        evidence_polarity,
        image_evidence,
        lattice_step_sites,
        mean_map,
        site_evidence,
        sites_from_mean_map,
    )

    model_sampling = float(atoms.attrs["model_sampling"])
    factor = model_sampling / sampling  # input pixels per map pixel
    drift = np.asarray(drift, dtype=float)
    drift_map = drift / factor
    mean = mean_map(maps, drift_map)
    peaks = sites_from_mean_map(mean, model_sampling)
    if len(peaks) == 0:
        raise TEMAtomsError("no site was found in the mean of the network's maps: the video "
                            "shows no atomic columns the detector can see")
    pixels = np.clip(np.round(peaks).astype(int), 0, np.asarray(mean.shape) - 1)
    confidence = np.nan_to_num(mean[tuple(pixels.T)], nan=0.0)
    peaks = peaks * factor
    columns = peaks[confidence >= STEADY_CONFIDENCE]
    weak = peaks[confidence < STEADY_CONFIDENCE]
    lattice = lattice_step_sites(columns)
    if len(lattice) and len(weak):
        # Adatoms sit on the lattice: a weak peak near a lattice site is that site, whose
        # position the columns around it give better than a peak of a few frames' maps.
        from scipy.spatial import cKDTree

        weak = weak[cKDTree(lattice).query(weak)[0] > SNAP_DISTANCE / sampling]
    sites = np.vstack([columns, weak, lattice])
    steady = np.arange(len(sites)) < len(columns)
    image, observed = image_evidence(frames, sites, drift, sampling)
    network, network_observed = site_evidence(maps, sites / factor, drift_map, model_sampling)
    observed &= network_observed
    # A lattice site beyond the field's edge in every frame but one has no series to judge.
    seen = observed.sum(axis=0) >= 2
    sites, steady, image, network, observed = (sites[seen], steady[seen], image[:, seen],
                                               network[:, seen], observed[:, seen])
    polarity = evidence_polarity(image, network, observed)
    threshold = float(atoms.attrs.get("threshold", 0.5))
    # A column the network sees in most frames switches only where the network agrees that
    # it is gone: thick columns change contrast with defocus from frame to frame.
    result = evidence_occupancy(polarity * image, sites, observed, drift=drift,
                                frame_shape=tuple(np.shape(frames)[-2:]), sampling=sampling,
                                levels="own", steady=steady, confirm=network,
                                confirm_threshold=float(np.log(threshold / (1 - threshold))))
    if len(result.sites) == 0:
        raise TEMAtomsError("no site of the video is occupied in any frame: it shows no atomic "
                            "columns the detector can see")
    if polarity < 0:
        result.notes.append("atoms are dark in this video: the evidence is the image's "
                            "intensity with its sign reversed")
    return result


def video_occupancy(
    video: Any,
    model: Any = "auto",
    sampling: float | None = None,
    atoms: pd.DataFrame | None = None,
    drift: np.ndarray | None = None,
    threshold: float | None = None,
    max_shift: float | None = None,
    site_radius: float | None = None,
    device: str | None = None,
    cs: float | None = None,
    defocus: float | None = None,
    precision: str | None = "auto",
    engine: str | None = "auto",
    method: str = "evidence",
    imaging_mode: str | None = None,
) -> SiteOccupancy:
    """Drift-correct a video, detect its atoms and measure every site's occupancy.

    Parameters
    ----------
    video : array_like, TEMImage or path
        (frame, y, x) video, or a file :func:`~napari_tem_atoms.read_image` reads.
    model : str, path or LoadedModel, optional
        Detector (see :func:`~napari_tem_atoms.detect_atoms`); default ``"auto"``:
        :data:`OCCUPANCY_MODEL`, which sees adatoms, for HRTEM (and unknown) videos, and
        ``stem-columns`` for STEM ones.
    sampling : float, optional
        Pixel size [Å/px]; required unless the file gives it.
    atoms : pandas.DataFrame, optional
        Detections made already (``frame, y, x`` in frame pixels): detection is skipped.
    drift : numpy.ndarray, optional
        (frames, 2) drift [px] known already: drift estimation is skipped.
    threshold : float, optional
        Detection threshold (default: the model's).
    max_shift : float, optional
        Largest drift between neighbouring frames [px] (default: 0.9 Å, below half a lattice
        period, so that the correlation cannot jump by a lattice vector).
    site_radius : float, optional
        Detections closer than this to a site belong to it [px] (default 0.6 Å).
    device : str, optional
        ``"cpu"`` or ``"cuda"``.
    cs, defocus : float, optional
        Imaging conditions [Å] for a detector that takes them (see
        :func:`~napari_tem_atoms.detect_atoms`).
    precision, engine : str, optional
        How the detector runs (see :func:`~napari_tem_atoms.detect_atoms`).
    method : {"detections", "evidence"}, optional
        ``"evidence"`` (default): sites from the mean of the network's maps and the lattice,
        a hidden Markov model per site over the image's evidence in every frame (see the
        module's docstring); ``"detections"``: a frame is occupied where a detection was
        assigned to the site. With `atoms` given, the detections method is used.
    imaging_mode : str, optional
        How the video was recorded, over what its file says (see
        :func:`~napari_tem_atoms.detect_atoms`): it picks the default model, and a model not
        trained on it warns (:class:`~napari_tem_atoms.analysis.detect.DomainWarning`).

    Returns
    -------
    SiteOccupancy
        Sites (positions in first-frame pixels after drift correction), occupancy matrix, drift.
    """
    return run(iter_video_occupancy(video, model, sampling, atoms, drift, threshold, max_shift,
                                    site_radius, device, cs, defocus, precision, engine,
                                    method, imaging_mode))
