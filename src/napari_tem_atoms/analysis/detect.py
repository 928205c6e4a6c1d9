"""Find atomic columns with a trained network: rescale, normalise, tile, predict, find peaks.

Every step keeps napari's pixel convention (the centre of pixel ``[r, c]`` is at ``(r, c)``):
the image is resampled so that output pixel ``j`` sits at input coordinate ``j × f``
(``f = model sampling / input sampling``), so a peak found at ``p`` maps back to ``p × f``
exactly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, special

from ..errors import TEMAtomsError
from ..events import DomainWarning, Events, Notice, Progress, run
from ..models.description import ModelDescription, describe
from .conditions import model_condition_vector
from .modes import choose_model, contrast_for_model
from .transfer import model_optics

__all__ = [
    "DetectionStep",
    "DomainWarning",
    "atoms_from_heatmap",
    "default_tile_size",
    "detect_atoms",
    "domain_warning",
    "find_peaks",
    "imaging_mode_of",
    "iter_detect_atoms",
    "model_imaging_modes",
    "normalise_image",
    "predict_heatmap",
    "rescale_to_sampling",
    "sampling_warning",
]

#: Smallest distance between two columns [Å] (gold's closest projected spacing is 2.04 Å).
MIN_COLUMN_DISTANCE = 1.2
#: Input sampling range the shipped models were trained on [Å/px].
TRAINED_SAMPLING = (0.05, 0.25)
#: Tile edge at the model's sampling [px]: a 1024² frame at 0.25 Å/px (1280² at the model's
#: 0.2 Å/px) runs as two tiles a side; 512² tiles need three, with 20 % of the pixels twice.
DEFAULT_TILE_SIZE = 768
#: Tile edge per engine (see :func:`default_tile_size`).
TILE_SIZES = {"torch": 768, "openvino": 1344}


def rescale_to_sampling(image: np.ndarray, sampling: float, target_sampling: float
                        ) -> tuple[np.ndarray, float]:
    """Resample an image from `sampling` to `target_sampling` [Å/px], keeping pixel centres.

    Output pixel ``j`` is input coordinate ``j × factor``; downsampling is preceded by a
    Gaussian anti-aliasing filter (σ = (factor − 1) / 2 input pixels); interpolation is cubic
    (B-splines, edges continued with the nearest pixel). The result equals
    ``ndimage.affine_transform`` of the filtered image to float32 rounding; it is computed as
    two sparse matrix products (the operation is separable), 10–20 times faster.

    Returns
    -------
    rescaled : numpy.ndarray
        float32 image.
    factor : float
        ``target_sampling / sampling``: input pixels per output pixel.
    """
    image = np.asarray(image, dtype=np.float32)
    factor = float(target_sampling) / float(sampling)
    if abs(factor - 1.0) < 1e-6:
        return image, 1.0
    along_rows = _resampling_matrix(image.shape[0], factor)
    along_cols = _resampling_matrix(image.shape[1], factor)
    rescaled = (along_cols @ (along_rows @ image).T).T
    return np.ascontiguousarray(rescaled, dtype=np.float32), factor


@functools.lru_cache(maxsize=16)
def _resampling_matrix(length: int, factor: float) -> Any:
    """The 1-D resampling of :func:`rescale_to_sampling` as a sparse (outputs, length) matrix.

    Its columns are the responses to unit impulses. Impulses `period` px apart do not reach
    each other (the Gaussian ends at 4 σ, the cubic B-spline at 2 px, its prefilter decays as
    0.27^distance), so one pass over `period` columns of impulses gives every response.
    """
    from scipy import sparse

    outputs = int(np.floor((length - 1) / factor)) + 1
    sigma = (factor - 1.0) / 2.0 if factor > 1.0 else 0.0
    period = min(length, 2 * (48 + int(np.ceil(4 * sigma + 2 * factor))))
    positions = np.arange(length)
    impulses = np.zeros((length, period))
    impulses[positions, positions % period] = 1.0
    if sigma:
        impulses = ndimage.gaussian_filter1d(impulses, sigma, axis=0, mode="nearest")
    response = ndimage.affine_transform(impulses, [factor, 1.0], output_shape=(outputs, period),
                                        order=3, mode="nearest")
    # Output j in column r comes from that column's impulse nearest to input j × factor.
    row = np.arange(outputs)[:, None]
    column = np.arange(period)[None, :]
    source = column + period * np.round((row * factor - column) / period)
    source = np.where(source < 0, source + period, np.where(source >= length,
                                                            source - period, source))
    keep = ((source >= 0) & (source < length)
            & (np.abs(response) >= 1e-7 * np.abs(response).max()))
    rows = np.broadcast_to(row, response.shape)[keep]
    return sparse.csr_matrix((response[keep].astype(np.float32),
                              (rows, source[keep].astype(np.int64))), shape=(outputs, length))


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (how the networks were trained)."""
    image = np.asarray(image, dtype=np.float32)
    mean, std = float(image.mean()), float(image.std())
    # Relative to the mean: a constant frame rescaled in float32 varies by rounding (~1e-7),
    # which normalising would blow up into noise with "atoms" in it.
    if not np.isfinite(std) or std <= 1e-5 * abs(mean):
        raise TEMAtomsError("the image is constant (no contrast): nothing to detect")
    return (image - mean) / std


def predict_heatmap(loaded: Any, image: np.ndarray, tile_size: int | None = None,
                    overlap: int = 32, average_mirrors: bool = False,
                    conditions: np.ndarray | None = None) -> np.ndarray:
    """Run the network over a normalised image at the model's sampling, tile by tile.

    Tiles of `tile_size` overlap by `overlap` pixels on each side; only their centres are kept,
    so the result does not depend on the tiling and memory stays bounded for any image size.
    The network runs on the model's engine at its precision (``loaded.describe_runtime()``).
    With `average_mirrors` the network also sees the image flipped up-down, left-right and
    both, and the four maps (flipped back) are averaged: four times the network's time.
    `conditions` is the (4,) vector of
    :func:`~napari_tem_atoms.analysis.conditions.condition_vector` for a network built with
    condition inputs (None: nothing known); a network without them refuses one.

    Returns
    -------
    numpy.ndarray
        (classes, H, W) probabilities in [0, 1]; for a model with counts, one more map after
        them: log(atoms along the beam), meaningful at the columns' centres.
    """
    if tile_size is None:
        tile_size = default_tile_size(loaded)
    if average_mirrors:
        total = np.zeros((len(loaded.classes) + loaded.counts, *image.shape[-2:]), np.float32)
        for axes in ((), (-2,), (-1,), (-2, -1)):
            mirrored = np.ascontiguousarray(np.flip(image, axes))
            heatmap = predict_heatmap(loaded, mirrored, tile_size, overlap,
                                      conditions=conditions)
            total += np.flip(heatmap, axes)
        return total / 4
    multiple = 2 ** loaded.network.depth
    rows, cols = image.shape[-2:]
    channels = image.shape[0] if image.ndim == 3 else 1
    image = image.reshape(channels, rows, cols)
    step = max(multiple, tile_size - 2 * overlap)
    # A side that fits in one tile is not cut (two overlapping tiles cost a third more).
    step_r = rows if rows <= tile_size else step
    step_c = cols if cols <= tile_size else step
    n_classes = len(loaded.classes)
    out = np.zeros((n_classes + loaded.counts, rows, cols), dtype=np.float32)
    condition_rows = None
    if conditions is not None:
        if not loaded.takes_conditions:
            raise TEMAtomsError("this model does not take imaging conditions (Cs, defocus)")
        condition_rows = np.asarray(conditions, np.float32)[None]
    for top in range(0, rows, step_r):
        for left in range(0, cols, step_c):
            # The tile with its margin, clipped to the image, then padded to a valid size.
            r0, c0 = max(0, top - overlap), max(0, left - overlap)
            r1, c1 = min(rows, top + step_r + overlap), min(cols, left + step_c + overlap)
            tile = image[:, r0:r1, c0:c1]
            pad_r = (-tile.shape[1]) % multiple
            pad_c = (-tile.shape[2]) % multiple
            if pad_r or pad_c:
                mode = "reflect" if min(tile.shape[1:]) > max(pad_r, pad_c) else "edge"
                tile = np.pad(tile, ((0, 0), (0, pad_r), (0, pad_c)), mode=mode)
            logits = loaded.run(tile[None], condition_rows)[0]
            keep_r1, keep_c1 = min(rows, top + step_r), min(cols, left + step_c)
            kept = logits[:, top - r0: keep_r1 - r0, left - c0: keep_c1 - c0]
            # The logistic function, in place on the kept part only (the tile's margins are
            # thrown away).
            out[:n_classes, top:keep_r1, left:keep_c1] = special.expit(kept[:n_classes])
            out[n_classes:, top:keep_r1, left:keep_c1] = kept[n_classes:]  # log(atoms)
    return out


def default_tile_size(loaded: Any) -> int:
    """Tile edge [px at the model's sampling] for `loaded`'s engine, as measured.

    ``benchmarks/engine_speed.py --tiles`` times 512² to 1344² tiles per engine and precision
    (1024² frames at 0.25 Å/px, a 1280² network input): PyTorch is fastest at 768² (bfloat16;
    512-1024 within noise at fp32), OpenVINO keeps gaining up to one whole 1344² tile (3.59
    frames/s in bfloat16 against 3.13 at 768²).
    """
    return TILE_SIZES.get(loaded.engine_name, DEFAULT_TILE_SIZE)


def find_peaks(heatmap: np.ndarray, threshold: float = 0.5, min_distance: float = 3.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a probability map, refined to sub-pixel precision.

    Parameters
    ----------
    heatmap : numpy.ndarray
        (H, W) probabilities.
    threshold : float
        Smallest peak height kept.
    min_distance : float
        Smallest distance between two peaks [px].

    Returns
    -------
    positions : numpy.ndarray
        (N, 2) (y, x) in pixels of `heatmap`, refined by a Gaussian (log-parabola) fit through
        each maximum and its neighbours.
    heights : numpy.ndarray
        (N,) peak heights (the confidence).
    """
    distance = max(1, int(np.floor(min_distance)))
    peaks = _local_maxima(heatmap, threshold, distance)
    if len(peaks) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    heights = heatmap[peaks[:, 0], peaks[:, 1]]
    # A Gaussian is a parabola in log space: fit one through each peak and its two neighbours
    # along each axis (exact for the Gaussian columns the networks are trained to draw).
    log_map = np.log(np.clip(np.pad(heatmap, 1, mode="edge"), 1e-6, None))
    rows, cols = peaks[:, 0] + 1, peaks[:, 1] + 1
    offsets = []
    for before, after in (((rows - 1, cols), (rows + 1, cols)),
                          ((rows, cols - 1), (rows, cols + 1))):
        low, centre, high = log_map[before], log_map[rows, cols], log_map[after]
        curvature = low - 2 * centre + high
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(curvature < 0, 0.5 * (low - high) / curvature, 0.0)
        offsets.append(np.clip(offset, -1.0, 1.0))
    return peaks + np.stack(offsets, axis=1), heights


def _disc(radius: int) -> np.ndarray:
    """(2·radius+1)² bool footprint of the pixels within `radius` of the centre."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def _local_maxima(heatmap: np.ndarray, threshold: float, distance: int) -> np.ndarray:
    """Pixels above `threshold` that are the maximum of the disc of radius `distance` around.

    A disc, not a square: a square neighbourhood of half-width `distance` suppresses a column
    up to √2 × `distance` away along a diagonal (in STEM, dumbbells 1.4-1.7 Å apart: a
    sixth of stem-columns' held-out misses; ``benchmarks/stem_misses.py``). What
    ``skimage.feature.peak_local_max(heatmap, min_distance=distance, threshold_abs=threshold,
    footprint=disc, p_norm=2, exclude_border=False)`` returns (highest first, ties in raster
    order; of equal maxima closer than `distance` apart, the first), but the neighbourhoods
    are only looked at around the pixels above the threshold: few in a map of atoms, so a
    1280² map of a 5-nm particle takes 10 ms, not the 40 ms of a maximum filter over every
    pixel (a twelfth of a frame's time). A constant map has no peaks (as for skimage); maps
    are the network's probabilities, so NaN, where skimage and this differ, does not occur.
    """
    rows, cols = np.nonzero(heatmap > threshold)
    if len(rows) > heatmap.size // 8:  # a map mostly above threshold: filter it whole
        # (Only such a map can be constant and have pixels above the threshold.)
        if heatmap.min() == heatmap.max():
            return np.zeros((0, 2), dtype=np.intp)
        is_max = heatmap == ndimage.maximum_filter(heatmap, footprint=_disc(distance),
                                                   mode="nearest")
        rows, cols = np.nonzero(is_max & (heatmap > threshold))
    else:
        values = heatmap[rows, cols]
        keep = np.ones(len(rows), dtype=bool)
        last_row, last_col = heatmap.shape[0] - 1, heatmap.shape[1] - 1
        for d_row, d_col in np.argwhere(_disc(distance)) - distance:
            near_rows = np.clip(rows + d_row, 0, last_row)  # "nearest" edges, as the filter
            keep &= values >= heatmap[near_rows, np.clip(cols + d_col, 0, last_col)]
        rows, cols = rows[keep], cols[keep]
    values = heatmap[rows, cols]
    order = np.argsort(-values, kind="stable")  # of equal heights, the first in raster order
    peaks = np.stack([rows[order], cols[order]], axis=1)
    if distance > 1 and len(peaks) > 1:
        # Maxima closer than `distance` are equal (a plateau): keep the first of them.
        from scipy.spatial import cKDTree

        tree = cKDTree(peaks)
        removed = np.zeros(len(peaks), dtype=bool)
        neighbourhoods = tree.query_ball_point(peaks, r=distance - 1e-9)  # closer than
        for index, neighbours in enumerate(neighbourhoods):
            if not removed[index]:
                for other in neighbours:
                    if other > index:
                        removed[other] = True
        peaks = peaks[~removed]
    return peaks


def atoms_from_heatmap(heatmap: np.ndarray, threshold: float, model_sampling: float,
                       factor: float, frame: int = 0, log_counts: np.ndarray | None = None
                       ) -> pd.DataFrame:
    """The atoms table of one frame from the network's map at the model's sampling.

    Parameters
    ----------
    heatmap : numpy.ndarray
        (H, W) probabilities at the model's sampling.
    threshold : float
        Smallest peak height kept.
    model_sampling : float
        Pixel size of `heatmap` [Å/px].
    factor : float
        Input pixels per map pixel (from :func:`rescale_to_sampling`).
    frame : int, optional
        Frame index written in the ``frame`` column.
    log_counts : numpy.ndarray, optional
        (H, W) the count head's log(atoms) map (a model with counts): adds ``n_atoms``.

    Returns
    -------
    pandas.DataFrame
        ``frame``, ``y``, ``x`` (input pixels), ``confidence``; with `log_counts`, ``n_atoms``
        (the estimated atoms along the beam, a whole number ≥ 1).
    """
    positions, heights = find_peaks(heatmap, threshold, MIN_COLUMN_DISTANCE / model_sampling)
    table = pd.DataFrame({"frame": np.full(len(positions), frame, dtype=int),
                          "y": positions[:, 0] * factor, "x": positions[:, 1] * factor,
                          "confidence": heights.astype(float)})
    if log_counts is not None:
        values = ndimage.map_coordinates(log_counts, positions.T.reshape(2, -1), order=1,
                                         mode="nearest") if len(positions) else np.zeros(0)
        table["n_atoms"] = np.maximum(np.round(np.exp(values)), 1).astype(int)
    return table


def sampling_warning(sampling: float) -> str | None:
    """A warning when `sampling` [Å/px] is well outside the range the models were trained on.

    A fifth below and a quarter above the range pass without one.
    """
    if TRAINED_SAMPLING[0] * 0.8 <= sampling <= TRAINED_SAMPLING[1] * 1.25:
        return None
    return (f"pixel size {sampling:.4g} Å/px is outside the trained range "
            f"{TRAINED_SAMPLING[0]}-{TRAINED_SAMPLING[1]} Å/px: results may be unreliable")


#: Edge of the central crop [px at the model's sampling] on which the polarity is judged.
POLARITY_CROP = 384


def mean_peak_confidence(loaded: Any, image: np.ndarray, sampling: float) -> float:
    """The network's mean confidence at the columns it finds in the middle of `image`.

    The image is rescaled to the model's sampling and cropped to :data:`POLARITY_CROP`² in its
    middle (a few tenths of a second); columns are peaks above 0.3. 0 when it finds none.
    """
    rescaled, _ = rescale_to_sampling(np.asarray(image, dtype=np.float32), sampling,
                                      loaded.sampling)
    rows, cols = rescaled.shape
    top, left = max(0, (rows - POLARITY_CROP) // 2), max(0, (cols - POLARITY_CROP) // 2)
    crop = rescaled[top:top + POLARITY_CROP, left:left + POLARITY_CROP]
    heatmap = predict_heatmap(loaded, normalise_image(crop))[0]
    _, confidence = find_peaks(heatmap, 0.3, MIN_COLUMN_DISTANCE / loaded.sampling)
    return float(np.mean(confidence)) if len(confidence) else 0.0


def frame_contrast(loaded: Any, frame: np.ndarray, sampling: float, mode: str
                   ) -> tuple[bool, str | None]:
    """:func:`~.modes.contrast_for_model` for `loaded`, its network judging the polarity.

    Returns whether to negate `frame` (and the frames of its stack) for the model, and the
    sentence the user should read, if any.
    """
    return contrast_for_model(frame, sampling, mode, loaded.description, loaded.name,
                              lambda image: mean_peak_confidence(loaded, image, sampling))


def model_imaging_modes(model: ModelDescription | Mapping[str, Any]) -> list[str]:
    """The imaging modes a model was trained on (its metadata's ``imaging_modes``).

    Models without the key (au-hrtem, mos2-focal, and every model trained so far) were trained
    on simulated HRTEM images only.
    """
    return list(describe(model).imaging_modes)


def domain_warning(imaging_mode: str | None, source: str | None, model_name: str,
                   model: ModelDescription | Mapping[str, Any]) -> str | None:
    """A sentence when an image's mode is not one the model was trained on, else None.

    Parameters
    ----------
    imaging_mode : str or None
        The image's mode (:data:`~napari_tem_atoms.io.imaging_mode.IMAGING_MODES`);
        ``"unknown"`` and None never warn.
    source : str or None
        Where the mode was read (named in the sentence).
    model_name : str
        The model, named in the sentence.
    model : ModelDescription or mapping
        The model's description or metadata (its ``imaging_modes``, see
        :func:`model_imaging_modes`).
    """
    from ..io.imaging_mode import is_stem

    if not imaging_mode or imaging_mode == "unknown":
        return None
    trained = model_imaging_modes(model)
    if imaging_mode in trained or (imaging_mode == "STEM" and any(map(is_stem, trained))):
        return None
    article = "an" if imaging_mode == "HRTEM" else "a"
    where = "" if not source else (f" ({source})" if source.startswith("set by")
                                   else f" (from {source})")
    said = f"this is {article} {imaging_mode} image{where}"
    said += f" but model {model_name} was trained on {' and '.join(trained)} images only"
    if is_stem(imaging_mode) and not any(map(is_stem, trained)):
        return (f"{said}: its detections will be wrong (dark sites between columns); use "
                "stem-columns, the model for STEM images (the default: --model auto). If the "
                "image is in fact HRTEM, say so (tem-atoms detect --mode hrtem; "
                "imaging_mode=\"HRTEM\")")
    return (f"{said}: its detections are not to be trusted; use a model trained on "
            f"{imaging_mode} images")


def imaging_mode_of(image: Any, imaging_mode: str | None = None) -> tuple[str, str]:
    """``(mode, source)`` of an input: `imaging_mode` when given, else a TEMImage's own.

    ``"auto"`` or None: the TEMImage's mode (an array's is ``"unknown"``).
    """
    from ..io import TEMImage
    from ..io.imaging_mode import parse_imaging_mode

    if imaging_mode is not None and str(imaging_mode).strip().lower() != "auto":
        return parse_imaging_mode(imaging_mode), "set by the user"
    if isinstance(image, TEMImage):
        return image.imaging_mode, image.imaging_mode_source
    return "unknown", "an array carries no metadata"


@dataclass
class DetectionStep:
    """What one frame of :func:`iter_detect_atoms` produced (the ``item`` of its progress).

    Attributes
    ----------
    frame : int
        Index of the frame just analysed.
    n_frames : int
        Number of frames.
    atoms : pandas.DataFrame
        The atoms of that frame (frame, y, x, confidence).
    heatmap : numpy.ndarray or None
        The network's map at the model's sampling (kept when asked for).
    log_counts : numpy.ndarray or None
        A model with counts: its log(atoms) map at the model's sampling (kept when asked for).
    """

    frame: int
    n_frames: int
    atoms: pd.DataFrame
    heatmap: np.ndarray | None = None
    log_counts: np.ndarray | None = None


def required_sampling(sampling: float | None) -> float:
    """The pixel size [Å/px] a network needs, or an error that says how to give it."""
    if sampling is None:
        raise TEMAtomsError(
            "the pixel size of the image is not known: give it in Å/px (sampling=..., "
            "--sampling, or the Calibration widget); the network needs it to see atoms at the "
            "size it was trained on"
        )
    sampling = float(sampling)
    if not sampling > 0:
        raise TEMAtomsError(f"the pixel size must be positive, not {sampling} Å/px")
    return sampling


def _as_frames(image: Any, sampling: float | None) -> tuple[Any, float | None, bool]:
    """Accept an array, a TEMImage or a path; return (frames, sampling, is a stack)."""
    from ..io import TEMImage, read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, lazy=True)
    if isinstance(image, TEMImage):
        if sampling is None:
            sampling = image.pixel_size_angstrom
        image = image.data
    if not hasattr(image, "ndim"):
        image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise TEMAtomsError(
            f"expected an image (2-D) or a stack of images (3-D), got {image.ndim}-D data of "
            f"shape {tuple(image.shape)}"
        )
    frames = image[None] if image.ndim == 2 else image
    return frames, sampling, image.ndim == 3


def iter_detect_atoms(
    image: Any,
    model: Any = "auto",
    sampling: float | None = None,
    threshold: float | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    keep_heatmaps: bool = False,
    average_mirrors: bool = False,
    cs: float | None = None,
    defocus: float | None = None,
    precision: str | None = "auto",
    engine: str | None = "auto",
    imaging_mode: str | None = None,
) -> Events[pd.DataFrame]:
    """Detect atomic columns frame by frame: the event stream of :func:`detect_atoms`.

    Parameters are those of :func:`detect_atoms`. Yields a
    :class:`~napari_tem_atoms.events.Progress` ``("detect", frames done, frames, item)`` per
    frame, whose `item` is the frame's :class:`DetectionStep`, and, before the first frame, a
    :class:`~napari_tem_atoms.events.Notice` for each of: a pixel size outside the trained
    range (``"sampling"``), an imaging mode the model was not trained on (``"domain"``), a Cs
    and defocus that barely transfer the lattice (``"transfer"``). Returns the table of
    :func:`detect_atoms`.
    """
    from ..io import read_image
    from ..models import LoadedModel, load_cached_model

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, lazy=True)
    mode, mode_source = imaging_mode_of(image, imaging_mode)
    model_reason = None
    if model is None or (isinstance(model, str) and model == "auto"):
        model, model_reason = choose_model(mode, mode_source)
    frames, sampling, is_stack = _as_frames(image, sampling)
    sampling = required_sampling(sampling)
    warning = sampling_warning(sampling)
    if warning:
        yield Notice("sampling", warning, {"sampling": sampling})
    loaded = (model if isinstance(model, LoadedModel)
              else load_cached_model(model, device, precision, engine))
    if loaded.description.is_species:
        raise TEMAtomsError(f"model {loaded.name!r} finds species in a three-image focal series, "
                            "not columns in one image: use tem-atoms species (or the Species "
                            "widget), or a column model such as au-hrtem")
    domain = domain_warning(mode, mode_source, loaded.name, loaded.description)
    if domain:
        yield Notice("domain", domain, {"imaging_mode": mode, "model": loaded.name})
    if threshold is None:
        threshold = loaded.threshold
    conditions = None
    if cs is not None or defocus is not None:
        try:
            conditions = model_condition_vector(loaded.description, cs, defocus)
        except TEMAtomsError as exc:
            raise TEMAtomsError(f"model {loaded.name}: {exc}") from None
        cs, defocus = (None if value is None else float(value) for value in (cs, defocus))
    optics = model_optics(loaded.description)
    transfer = optics.warning(cs, defocus) if optics else None
    if transfer:
        yield Notice("transfer", transfer, {"cs": cs, "defocus": defocus})
    n_frames = int(frames.shape[0])

    def where(index: int) -> str:  # name the frame in messages about stacks
        return f"frame {index}: " if is_stack else ""

    tables = []
    negate, contrast_note = False, None
    for index in range(n_frames):
        frame = np.asarray(frames[index], dtype=np.float32)
        if not np.all(np.isfinite(frame)):
            raise TEMAtomsError(f"{where(index)}contains NaN or infinite values")
        if index == 0:  # one decision for the whole stack, from its first frame
            negate, contrast_note = frame_contrast(loaded, frame, sampling, mode)
            if contrast_note:
                yield Notice("domain", contrast_note, {"imaging_mode": mode,
                                                       "model": loaded.name})
        if negate:  # dark columns (ABF, BF): the STEM model finds bright ones
            frame = -frame
        if min(frame.shape) * sampling / loaded.sampling < 16:
            raise TEMAtomsError(
                f"{where(index)}too small ({frame.shape[0]} × {frame.shape[1]} px at "
                f"{sampling:.4g} Å/px): at least {16 * loaded.sampling:.1f} Å across is needed"
            )
        rescaled, factor = rescale_to_sampling(frame, sampling, loaded.sampling)
        try:
            normalised = normalise_image(rescaled)
        except TEMAtomsError as exc:
            raise TEMAtomsError(f"{where(index)}{exc}") from None
        heatmap = predict_heatmap(loaded, normalised, tile_size=tile_size,
                                  average_mirrors=average_mirrors, conditions=conditions)
        table = atoms_from_heatmap(heatmap[0], threshold, loaded.sampling, factor, index,
                                   heatmap[-1] if loaded.counts else None)
        tables.append(table)
        yield Progress("detect", index + 1, n_frames, DetectionStep(
            index, n_frames, table, heatmap[0] if keep_heatmaps else None,
            heatmap[-1] if keep_heatmaps and loaded.counts else None))
    atoms = pd.concat(tables, ignore_index=True)
    atoms.attrs.update(sampling=sampling, model=loaded.name, device=loaded.device,
                       precision=loaded.precision, engine=loaded.engine_name,
                       model_sampling=loaded.sampling, threshold=threshold,
                       average_mirrors=average_mirrors, cs=cs, defocus=defocus,
                       transfer_warning=transfer, imaging_mode=mode, domain_warning=domain,
                       model_reason=model_reason, negated=negate, contrast_note=contrast_note)
    return atoms


def detect_atoms(
    image: Any,
    model: Any = "auto",
    sampling: float | None = None,
    threshold: float | None = None,
    device: str | None = None,
    tile_size: int | None = None,
    average_mirrors: bool = False,
    cs: float | None = None,
    defocus: float | None = None,
    precision: str | None = "auto",
    engine: str | None = "auto",
    imaging_mode: str | None = None,
) -> pd.DataFrame:
    """Find the atomic columns in an HRTEM image or stack.

    Parameters
    ----------
    image : array_like, TEMImage or path
        (y, x) image or (frame, y, x) stack; or anything :func:`~napari_tem_atoms.read_image`
        reads (its pixel size is then used).
    model : str, path or LoadedModel, optional
        Registered model name (``"au-hrtem"``), a ``.safetensors`` file, or a loaded model.
        ``"auto"`` (default): the model for the image's imaging mode (HRTEM and unknown:
        ``au-hrtem``; STEM: ``stem-columns``, see :mod:`napari_tem_atoms.analysis.modes`);
        ``attrs["model_reason"]`` says why.
    sampling : float, optional
        Pixel size of `image` [Å/px]; required unless the file gives it.
    threshold : float, optional
        Smallest network confidence (0-1) for a column to count; default: the model's own,
        chosen for the best F1 on validation images (see its model card).
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default CUDA when available. The table's ``attrs["device"]``
        says which was used.
    tile_size : int, optional
        Tile edge [px at the model's sampling]; bounds the memory per step (768² tiles: about
        0.2 GB on the CPU). Default: the fastest for the engine (:func:`default_tile_size`).
    average_mirrors : bool, optional
        Average the network's maps of the image and its three mirror images: four times slower,
        a little more accurate at low dose (see the model card).
    cs : float, optional
        Spherical aberration C30 of the microscope [Å] (1 µm = 10⁴ Å), for a model that takes
        imaging conditions; None: not known.
    defocus : float, optional
        The defocus set [Å], abTEM's sign (``-C10``: positive is underfocus, negative-Cs
        imaging uses a negative one); tens of Å off is fine. None: not known.
    precision : {"auto", "fp32", "bf16"}, optional
        ``"auto"``: bfloat16 where the processor computes it natively (AMX, AVX-512-BF16, a
        GPU with bfloat16), else float32 (emulated bfloat16 is several times slower).
        Ignored when `model` is a LoadedModel (it has its own).
    engine : {"auto", "torch", "openvino"}, optional
        ``"auto"``: OpenVINO on the CPU when installed (``napari-tem-atoms[fast]``), else
        PyTorch. Ignored when `model` is a LoadedModel.
    imaging_mode : str, optional
        How the image was recorded (``"HRTEM"``, ``"STEM-HAADF"``, ``"STEM-ABF"``,
        ``"STEM-BF"``), over what the file says; None or ``"auto"``: the TEMImage's (read from
        the file's metadata, see :mod:`napari_tem_atoms.io.imaging_mode`), ``"unknown"`` for an
        array. A mode the model was not trained on (STEM, for the HRTEM models) is said in a
        :class:`DomainWarning`.

    Returns
    -------
    pandas.DataFrame
        One row per column: ``frame``, ``y``, ``x`` (input pixels, napari convention),
        ``confidence``. ``attrs`` holds ``sampling``, ``model``, ``device``, ``precision``,
        ``engine``, ``threshold``,
        ``average_mirrors``, ``cs``, ``defocus`` and ``transfer_warning``: with both Cs and
        the defocus given, a sentence (also issued as a warning) when they barely transfer
        the crystal's lowest-order reflections, where the detector is less reliable (see
        :mod:`napari_tem_atoms.analysis.transfer`); None otherwise. ``imaging_mode`` and
        ``domain_warning``: the image's mode, and the sentence of the :class:`DomainWarning`
        when the model was not trained on it (None otherwise). ``model_reason``: why the model
        was chosen (None when it was given); ``negated``: the image was negated for a
        bright-column STEM model (ABF/BF); ``contrast_note``: what was decided from the
        image's contrast, or how it contradicts the mode (also a :class:`DomainWarning`).

    Examples
    --------
    >>> atoms = detect_atoms("particle.dm4")  # doctest: +SKIP
    >>> atoms.attrs["device"]  # doctest: +SKIP
    'cpu'
    """
    return run(iter_detect_atoms(image, model, sampling, threshold, device, tile_size,
                                       average_mirrors=average_mirrors, cs=cs,
                                       defocus=defocus, precision=precision, engine=engine,
                                       imaging_mode=imaging_mode))
