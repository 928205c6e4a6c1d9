"""Occupancy of a whole video in one go: drift, detection, sites (the `tem-atoms occupancy` job).

Two methods. ``"detections"`` (the default): a frame is occupied where a thresholded
detection was assigned to the site. ``"evidence"``: the network's maps of every frame, drift
undone, are averaged to find the sites (a site occupied in a tenth of the frames still shows),
each frame gives a continuous evidence per site, and a two-state hidden Markov model per site
decides the states, occupancy and rates from the whole video. On simulated adatom videos
(``benchmarks/adatom_occupancy.py``) the evidence method found fewer adatom sites than the
detections (0.56 against 0.89 at 500 e/Å² with au-hrtem-adatoms) for a similar occupancy error,
so it is not the default yet.
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
from .detect import _as_frames, imaging_mode_of, iter_detect_atoms
from .occupancy import SiteOccupancy, evidence_occupancy, site_occupancy

#: The detector occupancy uses by default: trained on adatoms and columns of every height
#: (au-hrtem misses single adatoms, which are what diffuses; see its model card).
OCCUPANCY_MODEL = "au-hrtem-adatoms"
#: The occupancy methods (see the module's docstring).
OCCUPANCY_METHODS = ("evidence", "detections")

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
    method: str = "detections",
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
        result = _evidence_result(maps, atoms, drift, tuple(frames.shape[-2:]), sampling)
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


def _evidence_result(maps: list[np.ndarray], atoms: pd.DataFrame, drift: np.ndarray,
                     frame_shape: tuple[int, int], sampling: float) -> SiteOccupancy:
    """Sites from the mean map, evidence per frame, and the HMM fit (the evidence method)."""
    from .hmm import fit_two_state
    from .site_evidence import mean_map, site_evidence, sites_from_mean_map

    model_sampling = float(atoms.attrs["model_sampling"])
    factor = model_sampling / sampling  # input pixels per map pixel
    drift_map = np.asarray(drift, dtype=float) / factor
    mean = mean_map(maps, drift_map)
    sites = sites_from_mean_map(mean, model_sampling)
    if len(sites) == 0:
        raise TEMAtomsError("no site was found in the mean of the network's maps: the video "
                            "shows no atomic columns the detector can see")
    evidence, observed = site_evidence(maps, sites, drift_map, model_sampling)
    threshold = float(atoms.attrs.get("threshold", 0.5))
    logit = float(np.log(threshold / (1 - threshold)))
    # A peak of the mean map that the model never calls occupied is no site: a first fit
    # decides which peaks stay, the result is the fit over those alone (the emissions are
    # shared by the sites, so dropping some changes the others' fit).
    first = fit_two_state(evidence, observed, threshold=logit)
    keep = (np.nan_to_num(first.posterior, nan=0.0) > 0.5).any(axis=0)
    if not keep.any():
        raise TEMAtomsError("no site of the mean map is occupied in any frame: the video shows "
                            "no atomic columns the detector can see")
    return evidence_occupancy(evidence[:, keep], sites[keep] * factor, observed[:, keep],
                              drift=drift, frame_shape=frame_shape, sampling=sampling,
                              threshold=logit)


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
    method: str = "detections",
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
        ``"detections"`` (default): a frame is occupied where a detection was assigned to the
        site; ``"evidence"``: sites from the mean of the network's maps, a hidden Markov model
        per site over its per-frame evidence (see the module's docstring). With `atoms` given,
        the detections method is used.
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
