"""Chemical species from a focal series: align, rescale, normalise, predict, label the peaks.

The species network (``mos2-focal``) takes three images of one area at increasing defocus
(abTEM's sign, ``defocus = −C10``) and draws one map per class (Mo, S2, S1). A column is a peak
of the maps' maximum; its species is the class whose map is highest there. Positions are in the
pixels of the middle image (the reference of the alignment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import TEMAtomsError
from ..events import Events, Notice, Progress, run
from .align import align_focal_series, apply_shifts
from .detect import (
    MIN_COLUMN_DISTANCE,
    DetectionStep,
    domain_warning,
    find_peaks,
    imaging_mode_of,
    normalise_image,
    predict_heatmap,
    rescale_to_sampling,
)

__all__ = ["detect_species", "iter_detect_species", "middle_defocus_image", "order_focal_series",
           "species_atoms_table", "species_counts", "species_from_heatmaps"]

#: Smallest distance between two columns in MoS2's projection (Mo-S: 1.84 Å) [Å].
MIN_SPECIES_DISTANCE = 1.2
#: The focal series the shipped species model was trained on [Å] (abTEM's sign).
TRAINED_CENTRAL_DEFOCUS = (-100.0, 100.0)
TRAINED_FOCAL_STEP = (30.0, 100.0)


def species_from_heatmaps(maps: np.ndarray, threshold: float, sampling: float
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns and their class from per-class maps.

    Parameters
    ----------
    maps : numpy.ndarray
        (classes, H, W) probabilities.
    threshold : float
        Smallest peak height kept.
    sampling : float
        Pixel size of the maps [Å/px].

    Returns
    -------
    positions : numpy.ndarray
        (N, 2) sub-pixel ``(y, x)`` in map pixels.
    classes : numpy.ndarray
        (N,) index of the class whose map is highest at each peak.
    confidence : numpy.ndarray
        (N,) that class's probability.
    """
    combined = maps.max(axis=0)
    distance = max(MIN_COLUMN_DISTANCE, MIN_SPECIES_DISTANCE) / sampling
    positions, heights = find_peaks(combined, threshold, distance)
    if not len(positions):
        return positions, np.zeros(0, dtype=int), heights
    rows = np.clip(np.round(positions[:, 0]).astype(int), 0, maps.shape[1] - 1)
    cols = np.clip(np.round(positions[:, 1]).astype(int), 0, maps.shape[2] - 1)
    classes = np.argmax(maps[:, rows, cols], axis=0)
    return positions, classes, heights


def middle_defocus_image(defoci: Sequence[float] | None) -> int:
    """Index, in the given order, of the image whose frame the positions are in.

    That is the middle defocus: image 1 when no defoci are given (the series is then in
    increasing defocus).
    """
    return 1 if not defoci else int(np.argsort(defoci)[1])


def species_atoms_table(atoms: pd.DataFrame, sampling: float | None, time_series: bool,
                        defoci: Sequence[float] | None = None) -> pd.DataFrame:
    """The atoms CSV table of :func:`detect_species`'s columns.

    Parameters
    ----------
    atoms : pandas.DataFrame
        ``frame``, ``y``, ``x``, ``species``, ``confidence``.
    sampling : float or None
        Pixel size [Å/px].
    time_series : bool
        True for a (T, 3, H, W) time series of focal series: the rows then give ``frame`` and
        ``image``, the image of the series the positions lie on (the middle defocus, as the
        Species widget writes them).
    defoci : sequence of float, optional
        The defoci in the order of the file's images (which image is the middle defocus).
    """
    from ..io import atoms_table

    columns = ["y", "x"]
    if time_series:
        atoms = atoms.assign(image=middle_defocus_image(defoci))
        columns = ["frame", "image", "y", "x"]
    return atoms_table(atoms[columns].to_numpy(float), atoms[["species", "confidence"]],
                       sampling)


def species_counts(atoms: pd.DataFrame) -> str:
    """``"12 Mo, 11 S2, 27 S1"``: the columns of each species."""
    counts = pd.Series(atoms["species"]).value_counts()
    return ", ".join(f"{counts.get(name, 0)} {name}" for name in ("Mo", "S2", "S1"))


#: Below this, two images of a series differ by less than a tenth of their contrast: the same
#: image (copied, or recorded without changing the defocus), not a focal series.
IDENTICAL_DIFFERENCE = 0.1


#: MoS2 seen along [001]: a honeycomb of Mo and S2 columns, each with three of the other kind
#: at a / √3 (a = 3.16 Å).
MOS2_NEIGHBOUR_DISTANCE, MOS2_NEIGHBOURS = 3.16 / np.sqrt(3), 3


def specimen_note(atoms: pd.DataFrame, sampling: float) -> str | None:
    """A note when the labelled columns do not form MoS2's honeycomb, else None.

    The species model names Mo and S columns of MoS2-like crystals; on another crystal (a gold
    particle, a perovskite) its labels are not species. Checked on the columns found: their
    nearest-neighbour distance (MoS2: 1.82 Å, within 15 %), how many neighbours each has within
    1.25 times that (3), and how many of a Mo column's neighbours are sulfur (most of them).
    Fewer than 12 columns are not judged.
    """
    from scipy.spatial import cKDTree

    if len(atoms) < 12:
        return None
    positions = atoms[["y", "x"]].to_numpy(float) * sampling
    tree = cKDTree(positions)
    distance, _ = tree.query(positions, k=2)
    nearest = float(np.median(distance[:, 1]))
    reach = 1.25 * MOS2_NEIGHBOUR_DISTANCE
    neighbours = np.array([len(found) - 1 for found in tree.query_ball_point(positions, reach)])
    species = atoms["species"].to_numpy(str)
    molybdenum = np.flatnonzero(species == "Mo")
    sulfur_share = 1.0
    if len(molybdenum):
        around = tree.query_ball_point(positions[molybdenum], reach)
        pairs = [(i, j) for i, found in zip(molybdenum, around, strict=True) for j in found
                 if j != i]
        sulfur_share = (float(np.mean([species[j] != "Mo" for _, j in pairs])) if pairs
                        else 0.0)
    typical = int(np.median(neighbours))
    if (abs(nearest - MOS2_NEIGHBOUR_DISTANCE) <= 0.15 * MOS2_NEIGHBOUR_DISTANCE
            and typical == MOS2_NEIGHBOURS and sulfur_share >= 0.6):
        return None
    return (f"the columns found do not form MoS2's honeycomb (nearest neighbours {nearest:.2f} Å "
            f"apart, {typical} per column, {sulfur_share:.0%} of the Mo columns' neighbours "
            f"sulfur; MoS2 along [001]: {MOS2_NEIGHBOUR_DISTANCE:.2f} Å, "
            f"{MOS2_NEIGHBOURS}, all): the species model names Mo and S columns of MoS2-like "
            "crystals only, and these labels are not species")


def identical_images_note(series: np.ndarray) -> str | None:
    """A note when two images of a focal series are (nearly) the same image, else None.

    Each image is normalised (zero mean, unit spread); two images whose difference has a spread
    below :data:`IDENTICAL_DIFFERENCE` carry no second defocus: the species the model then
    reports come from one image seen three times.
    """
    normalised = []
    for image in np.asarray(series, dtype=np.float64):
        spread = image.std()
        normalised.append((image - image.mean()) / spread if spread > 0 else image * 0)
    pairs = [(i, j) for i in range(len(normalised)) for j in range(i + 1, len(normalised))
             if np.std(normalised[i] - normalised[j]) < IDENTICAL_DIFFERENCE]
    if not pairs:
        return None
    which = ", ".join(f"{i + 1} and {j + 1}" for i, j in pairs)
    return (f"images {which} of the focal series are the same image (they differ by less than "
            f"{IDENTICAL_DIFFERENCE:g} of their contrast): a focal series needs three defoci, "
            "and species from it are not to be trusted")


def order_focal_series(series: np.ndarray, defoci: Sequence[float] | None
                       ) -> tuple[np.ndarray, list[str]]:
    """Put the images in increasing defocus and say what falls outside the trained series.

    Parameters
    ----------
    series : numpy.ndarray
        (3, H, W) images.
    defoci : sequence of float, optional
        Their defocus [Å] (abTEM sign); ``None``: already in increasing defocus.

    Returns
    -------
    ordered : numpy.ndarray
        The images in increasing defocus.
    warnings : list of str
        Where the series is outside what the model was trained on.
    """
    if defoci is None:
        return series, []
    defoci = [float(d) for d in defoci]
    if len(defoci) != series.shape[0]:
        raise TEMAtomsError(f"{len(defoci)} defocus values for {series.shape[0]} images: give "
                            "one per image")
    if len(set(defoci)) != len(defoci):
        raise TEMAtomsError(f"the defocus values {defoci} repeat: the order of the images is "
                            "unknown")
    order = np.argsort(defoci)
    ordered = sorted(defoci)
    notes = []
    centre, steps = ordered[1], np.diff(ordered)
    low, high = TRAINED_CENTRAL_DEFOCUS
    if not low - 20 <= centre <= high + 20:
        notes.append(f"the middle defocus {centre:g} Å is outside the trained {low:g} to "
                     f"{high:g} Å")
    low, high = TRAINED_FOCAL_STEP
    if np.any(steps < 0.7 * low) or np.any(steps > 1.3 * high):
        notes.append(f"focal steps {', '.join(f'{s:g}' for s in steps)} Å are outside the "
                     f"trained {low:g} to {high:g} Å")
    return series[order], notes


def _as_series(series: Any, sampling: float | None) -> tuple[np.ndarray, float | None]:
    from ..io import TEMImage, read_image

    if isinstance(series, (str, bytes)) or hasattr(series, "__fspath__"):
        series = read_image(series, lazy=True)
    if isinstance(series, TEMImage):
        sampling = sampling or series.pixel_size_angstrom
        series = series.data
    if isinstance(series, (list, tuple)):
        series = np.stack([np.asarray(image) for image in series])
    # Arrays that know their shape (NumPy, Dask, Zarr) are read one series at a time.
    array = series if hasattr(series, "shape") and hasattr(series, "ndim") else np.asarray(
        series, dtype=np.float32)
    if array.ndim == 3:  # one series: small, read it now
        array = np.asarray(array, dtype=np.float32)[None]
    if array.ndim != 4:
        raise TEMAtomsError(f"a focal series is (3, rows, columns), or (time, 3, rows, "
                            f"columns) for a time series; got shape {array.shape}")
    if array.shape[1] != 3:
        raise TEMAtomsError(f"a focal series needs 3 images, got {array.shape[1]}")
    return array, sampling


def into_reference_frame(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Undo the `shifts` of a focal series (as :func:`apply_shifts`).

    Where a pixel came from outside its image it gets that image's mean, not invented structure.
    """
    images = apply_shifts(images, shifts)
    for image in images:
        image[~np.isfinite(image)] = np.nanmean(image)
    return images


def iter_detect_species(
    series: Any,
    model: Any = "mos2-focal",
    sampling: float | None = None,
    defoci: Sequence[float] | None = None,
    align: bool = True,
    threshold: float | None = None,
    max_shift: float | None = None,
    device: str | None = None,
    precision: str | None = "auto",
    engine: str | None = "auto",
    imaging_mode: str | None = None,
) -> Events[pd.DataFrame]:
    """The event stream of :func:`detect_species`.

    Yields a :class:`~napari_tem_atoms.events.Progress` ``("species", series done, series,
    DetectionStep)`` per focal series, a ``"domain"``
    :class:`~napari_tem_atoms.events.Notice` before them for a mode the model was not trained
    on, and after them a ``"focal_series"`` notice for each of the table's ``attrs["notes"]``;
    returns the table.
    """
    from ..io import read_image
    from ..models import LoadedModel, load_cached_model

    if isinstance(series, (str, bytes)) or hasattr(series, "__fspath__"):
        series = read_image(series, lazy=True)
    mode, mode_source = imaging_mode_of(series, imaging_mode)
    array, sampling = _as_series(series, sampling)
    if sampling is None:
        raise TEMAtomsError("the pixel size of the series is not known: give it in Å/px "
                            "(sampling=..., --sampling)")
    loaded = (model if isinstance(model, LoadedModel)
              else load_cached_model(model, device, precision, engine))
    if not loaded.description.is_species:
        raise TEMAtomsError(f"model {loaded.name!r} does not tell species apart; use a species "
                            "model such as mos2-focal")
    domain = domain_warning(mode, mode_source, loaded.name, loaded.description)
    if domain:
        yield Notice("domain", domain, {"imaging_mode": mode, "model": loaded.name})
    if threshold is None:
        threshold = loaded.threshold
    notes: list[str] = []
    same_images: list[str] = []  # per series, kept for every series of a time series
    specimen = None
    tables = []
    for index in range(array.shape[0]):
        images = np.asarray(array[index], dtype=np.float32)
        if not np.all(np.isfinite(images)):
            raise TEMAtomsError(f"series {index} contains NaN or infinite values")
        images, notes = order_focal_series(images, defoci)
        identical = identical_images_note(images)
        if identical:
            same_images.append(f"series {index}: {identical}" if array.shape[0] > 1
                               else identical)
        if align:
            shifts = align_focal_series(images, reference=1, max_shift=max_shift,
                                        sampling=sampling)
            images = into_reference_frame(images, shifts)
        prepared = []
        for image in images:
            rescaled, factor = rescale_to_sampling(image, sampling, loaded.sampling)
            try:
                prepared.append(normalise_image(rescaled))
            except TEMAtomsError as exc:
                raise TEMAtomsError(f"series {index}: {exc}") from None
        stacked = (np.stack(prepared) if loaded.description.in_channels == 3
                   else prepared[1][None])
        maps = predict_heatmap(loaded, stacked)
        positions, classes, confidence = species_from_heatmaps(maps, threshold,
                                                               loaded.sampling)
        names = np.asarray(loaded.classes)[classes] if len(classes) else np.zeros(0, str)
        table = pd.DataFrame({"frame": np.full(len(positions), index, dtype=int),
                              "y": positions[:, 0] * factor, "x": positions[:, 1] * factor,
                              "species": names, "confidence": confidence.astype(float)})
        tables.append(table)
        if index == 0:  # the specimen: judged once, on the first series
            specimen = specimen_note(table, sampling)
        yield Progress("species", index + 1, array.shape[0],
                       DetectionStep(index, array.shape[0], table))
    notes = [*notes, *same_images]
    for note in notes:
        yield Notice("focal_series", note)
    if specimen:  # not MoS2-like: the model is outside its domain
        yield Notice("domain", specimen, {"model": loaded.name})
        notes.append(specimen)
    atoms = pd.concat(tables, ignore_index=True)
    atoms.attrs.update(sampling=sampling, model=loaded.name, device=loaded.device,
                       precision=loaded.precision, engine=loaded.engine_name,
                       threshold=threshold, notes=notes, imaging_mode=mode,
                       domain_warning=domain)
    return atoms


def detect_species(
    series: Any,
    model: Any = "mos2-focal",
    sampling: float | None = None,
    defoci: Sequence[float] | None = None,
    align: bool = True,
    threshold: float | None = None,
    max_shift: float | None = None,
    device: str | None = None,
    precision: str | None = "auto",
    engine: str | None = "auto",
    imaging_mode: str | None = None,
) -> pd.DataFrame:
    """Find the columns of a focal series and their species.

    Parameters
    ----------
    series : array_like, TEMImage or path
        (3, rows, cols) images of one area at three defoci, or (time, 3, rows, cols).
    model : str, path or LoadedModel, optional
        A species model (default ``"mos2-focal"``).
    sampling : float, optional
        Pixel size [Å/px]; required unless the file gives it.
    defoci : sequence of 3 floats, optional
        Defocus of each image [Å], abTEM's sign; the images are put in increasing defocus and a
        warning says when the series is outside the trained one. Default: the images are in
        increasing defocus already.
    align : bool, optional
        Register the images to the middle one first (contrast-invariant, bounded).
    threshold : float, optional
        Smallest confidence kept (default: the model's).
    max_shift : float, optional
        Largest misalignment searched [px] (default 0.9 Å, below half a lattice period).
    device : str, optional
        ``"cpu"`` or ``"cuda"``.
    precision, engine : str, optional
        How the network runs (see :func:`~napari_tem_atoms.detect_atoms`).
    imaging_mode : str, optional
        How the series was recorded, over what the file says (see
        :func:`~napari_tem_atoms.detect_atoms`): a STEM series warns
        (:class:`~napari_tem_atoms.analysis.detect.DomainWarning`), the species models being
        trained on HRTEM focal series.

    Returns
    -------
    pandas.DataFrame
        ``frame`` (index of the series in time), ``y``, ``x`` (pixels of the middle image),
        ``species`` (``Mo``, ``S2``, ``S1``), ``confidence``. ``attrs`` holds ``notes``,
        ``imaging_mode`` and ``domain_warning`` (see :func:`~napari_tem_atoms.detect_atoms`).
    """
    return run(iter_detect_species(series, model, sampling, defoci, align, threshold,
                                         max_shift, device, precision, engine,
                                         imaging_mode=imaging_mode))
