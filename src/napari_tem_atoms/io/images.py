"""Read TEM images and stacks, with their pixel size in Å, from the formats microscopes write.

Formats: DM3/DM4 (Gatan), EMD (Velox and Berkeley/NCEM), SER/EMI (TIA), MRC, HSPY (through
RosettaSciIO); TIFF and TIFF stacks with ImageJ, OME or vendor calibration (tifffile, then
RosettaSciIO for vendor tags); NPY; and a folder of frames read in natural order as one stack.

Every problem is raised as :class:`~napari_tem_atoms.errors.TEMFileError`, whose message names
the file and says what is wrong.

Data larger than :data:`MAX_BYTES` (what one read may allocate: the whole image or stack, or
one frame when reading lazily) is refused from the file's header, before anything is
allocated; the environment variable ``NAPARI_TEM_ATOMS_MAX_BYTES`` raises the limit. HDF5
files (EMD, HSPY) whose data lies in other files are refused unless
``NAPARI_TEM_ATOMS_ALLOW_EXTERNAL_HDF5=1``.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import re
import threading
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TEMFileError
from .calibration import Calibration, calibration_from_axes, normalise_unit
from .imaging_mode import read_imaging_mode

__all__ = [
    "FRAME_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MAX_BYTES",
    "TEMImage",
    "frame_files",
    "natural_sort_key",
    "read_folder",
    "read_image",
    "read_images",
]

#: RosettaSciIO plugin module for each extension it reads for us.
_RSCIIO_MODULES = {
    ".dm3": ("digitalmicrograph", "DM3"),
    ".dm4": ("digitalmicrograph", "DM4"),
    ".emd": ("emd", "EMD"),
    ".ser": ("tia", "SER"),
    ".emi": ("tia", "EMI"),
    ".mrc": ("mrc", "MRC"),
    ".mrcs": ("mrc", "MRC"),
    ".rec": ("mrc", "MRC"),
    ".st": ("mrc", "MRC"),
    ".ali": ("mrc", "MRC"),
    ".hspy": ("hspy", "HSPY"),
}
_TIFF_EXTENSIONS = (".tif", ".tiff")

#: Extensions of single files that hold an image or a stack.
IMAGE_EXTENSIONS: tuple[str, ...] = (*_RSCIIO_MODULES, *_TIFF_EXTENSIONS, ".npy")
#: Extensions accepted as frames of a folder stack (what acquisition software writes per frame).
FRAME_EXTENSIONS: tuple[str, ...] = (
    ".tif", ".tiff", ".dm3", ".dm4", ".mrc", ".npy", ".ser", ".emd",
)

#: Most bytes of decoded data one read may allocate (an image or stack, or one frame of a lazily
#: read stack). A damaged or hostile header can declare terabytes in a file of a few bytes;
#: allocating them fails with MemoryError at best, and at worst gets the process (napari, with
#: the user's work) killed by the system. Raised by the environment variable below.
MAX_BYTES = 8_000_000_000
_MAX_BYTES_VARIABLE = "NAPARI_TEM_ATOMS_MAX_BYTES"
_ALLOW_EXTERNAL_VARIABLE = "NAPARI_TEM_ATOMS_ALLOW_EXTERNAL_HDF5"

_SPECTRAL_SIGNALS = ("EELS", "EDS", "EDX", "CL", "SPECTRUM")
_SPECTRAL_UNITS = {"eV", "keV", "meV"}
_SPECTRAL_AXIS_NAMES = ("energy", "wavelength", "wavenumber")


@dataclass
class TEMImage:
    """An image or image stack as read from a file, with its calibration.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        Intensities, (y, x) for an image, (frame, y, x) for a stack, or (frame, image, y, x)
        for a time series of focal series.
    path : pathlib.Path
        The file (or folder) it came from.
    name : str
        A short name for display (the file stem, plus the signal title when a file holds
        several images).
    calibration : Calibration
        The pixel size in Å, or why there is none.
    file_format : str
        What the file was read as (``"DM4"``, ``"TIFF (ImageJ)"``, ...).
    frame_interval_s : float or None
        Time between frames [s] when the file gives it.
    original_metadata : dict
        The metadata tree of the file, as RosettaSciIO or tifffile give it.
    imaging_mode : str
        How it was recorded: ``"HRTEM"``, ``"STEM-HAADF"`` (any annular dark field),
        ``"STEM-ABF"``, ``"STEM-BF"``, ``"STEM"`` (detector not named) or ``"unknown"``
        (see :mod:`napari_tem_atoms.io.imaging_mode`; ``dataclasses.replace`` sets another).
    imaging_mode_source : str
        Where the mode was read (``"Velox metadata: detector HAADF"``, ``"set by the
        user"``), or why it is unknown.

    """

    data: Any
    path: Path
    name: str
    calibration: Calibration
    file_format: str
    frame_interval_s: float | None = None
    original_metadata: dict = field(default_factory=dict, repr=False)
    imaging_mode: str = "unknown"
    imaging_mode_source: str = "not read from the file"

    @property
    def pixel_size_angstrom(self) -> float | None:
        """The x pixel size [Å/px], or ``None`` when the image has no real-space calibration."""
        size = self.calibration.pixel_size_angstrom
        return None if size is None else size[1]


def natural_sort_key(name: str | os.PathLike) -> list[Any]:
    """Key that sorts ``frame2`` before ``frame10`` (numbers compared as numbers).

    Examples
    --------
    >>> sorted(["f10.tif", "f2.tif", "f1.tif"], key=natural_sort_key)
    ['f1.tif', 'f2.tif', 'f10.tif']

    """
    parts = re.split(r"(\d+)", os.fspath(name).lower())
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def read_images(path: str | os.PathLike, *, lazy: bool = False) -> list[TEMImage]:
    """Read every image (or stack) a file holds, or a folder of frames as one stack.

    Parameters
    ----------
    path : str or os.PathLike
        A file with one of :data:`IMAGE_EXTENSIONS`, or a folder of frames.
    lazy : bool, optional
        Return dask arrays that read data on demand (RosettaSciIO formats, NPY as a memory
        map, folders). Checks that need all the data (NaN) are then left to the analysis.

    Returns
    -------
    list of TEMImage
        One entry per image signal in the file (a Velox EMD may hold several), at least one.

    Raises
    ------
    TEMFileError
        When the file does not exist, is empty, is damaged, holds no image, or holds data
        that is not a grey-scale image (1-D, 5-D, RGB, complex, NaN).

    """
    path = Path(path)
    if path.is_dir():
        return [read_folder(path, lazy=lazy)]
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in _TIFF_EXTENSIONS:
        images = [_read_tiff(path, lazy=lazy)]
    elif suffix == ".npy":
        images = [_read_npy(path, lazy=lazy)]
    elif suffix in _RSCIIO_MODULES:
        images = _read_rsciio(path, lazy=lazy)
    else:
        raise TEMFileError(
            path, f"unsupported file type {suffix!r}; readable: {', '.join(IMAGE_EXTENSIONS)}"
        )
    return [_checked(image) for image in images]


def read_image(path: str | os.PathLike, *, lazy: bool = False) -> TEMImage:
    """Read the image (or stack) in a file, or a folder of frames as one stack.

    Parameters
    ----------
    path : str or os.PathLike
        The file or folder.
    lazy : bool, optional
        See :func:`read_images`.

    Returns
    -------
    TEMImage
        The first image signal in the file (see :func:`read_images` for all of them).

    Examples
    --------
    >>> image = read_image("particle.dm4")  # doctest: +SKIP
    >>> image.pixel_size_angstrom  # doctest: +SKIP
    0.1775

    """
    return read_images(path, lazy=lazy)[0]


def read_folder(path: str | os.PathLike, *, lazy: bool = False) -> TEMImage:
    """Read a folder of frames, one 2-D image per file, as one stack in natural order.

    Only files with the most common extension among :data:`FRAME_EXTENSIONS` are used, so a
    folder that also holds a log or a settings file still reads. Hidden files are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.
    lazy : bool, optional
        Read each frame only when it is needed (a dask array, one chunk per frame).

    Returns
    -------
    TEMImage
        A (frame, y, x) stack calibrated like its first frame.

    """
    path = Path(path)
    frames = frame_files(path)
    if not frames:
        raise TEMFileError(
            path, f"the folder holds no frames ({', '.join(FRAME_EXTENSIONS)} files)"
        )
    first = read_image(frames[0])
    if first.data.ndim != 2:
        raise TEMFileError(
            frames[0], f"a frame of a folder stack must be one 2-D image, not shape "
            f"{first.data.shape}"
        )
    if lazy:
        import dask
        import dask.array as da

        def load(frame: Path) -> np.ndarray:
            return _frame_data(frame, first.data.shape, first.data.dtype)

        data = da.stack([
            da.from_delayed(dask.delayed(load)(f), first.data.shape, first.data.dtype)
            for f in frames
        ])
    else:
        _check_size(path, (len(frames), *first.data.shape), first.data.dtype)
        data = np.stack(
            [first.data] + [_frame_data(f, first.data.shape, None) for f in frames[1:]]
        )
    return TEMImage(
        data=data,
        path=path,
        name=path.name,
        calibration=first.calibration,
        file_format=f"folder of {len(frames)} {first.file_format} frames",
        original_metadata={"frames": [f.name for f in frames],
                           "first_frame": first.original_metadata},
        imaging_mode=first.imaging_mode,
        imaging_mode_source=f"first frame: {first.imaging_mode_source}",
    )


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame files of a folder, in natural order (see :func:`read_folder`)."""
    folder = Path(folder)
    candidates = [
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_EXTENSIONS
    ]
    if not candidates:
        return []
    suffixes = Counter(".tif" if p.suffix.lower() == ".tiff" else p.suffix.lower()
                       for p in candidates)
    suffix = suffixes.most_common(1)[0][0]
    chosen = [p for p in candidates
              if (".tif" if p.suffix.lower() == ".tiff" else p.suffix.lower()) == suffix]
    return sorted(chosen, key=lambda p: natural_sort_key(p.name))


def _frame_data(frame: Path, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    data = np.asarray(read_image(frame).data)
    if data.shape != shape:
        raise TEMFileError(
            frame, f"frame shape {data.shape} differs from the first frame's {shape}"
        )
    if dtype is None:
        return data
    # A lazy stack's type is the first frame's, fixed before the others are read: a frame
    # that does not fit it (float32 in uint16) would be cut silently.
    fits = np.can_cast(data.dtype, dtype, "safe") or (
        np.issubdtype(data.dtype, np.floating) and np.issubdtype(dtype, np.floating))
    if not fits:
        raise TEMFileError(
            frame, f"the frame's values are {data.dtype}, which the stack's {np.dtype(dtype)} "
            "(the first frame's type) cannot hold without loss: save every frame with one "
            "type, or read the folder without lazy loading, which picks a type that holds "
            "them all"
        )
    return data.astype(dtype, copy=False)


# --- checks -----------------------------------------------------------------------------------


def _max_bytes() -> int:
    """:data:`MAX_BYTES`, or the environment variable that overrides it."""
    value = os.environ.get(_MAX_BYTES_VARIABLE, "").strip()
    if not value:
        return MAX_BYTES
    try:
        return int(float(value))  # "16e9" as well as "16000000000"
    except ValueError:
        raise TEMFileError(
            _MAX_BYTES_VARIABLE, f"{value!r} is not a number of bytes (e.g. 16e9)"
        ) from None


def _check_size(path: Path, shape: tuple[int, ...], dtype: Any, *,
                at_once: tuple[int, ...] | None = None, what: str = "the data") -> None:
    """Refuse, from a header, data larger than the limit before anything is allocated.

    Parameters
    ----------
    path : pathlib.Path
        The file, named in the message.
    shape, dtype
        What the header declares.
    at_once : tuple of int, optional
        The shape read at once when that is less than all of it (a frame, read lazily).
    what : str, optional
        What the header declares it for (``"the dataset /data"``), for the message.

    Raises
    ------
    TEMFileError
        Naming the declared shape, the size, and how to raise the limit.

    """
    shape = tuple(int(n) for n in shape)
    part = shape if at_once is None else tuple(int(n) for n in at_once)
    size = math.prod(part) * np.dtype(dtype).itemsize
    limit = _max_bytes()
    if size > limit:
        read = "it" if part == shape else f"one frame {part} of it"
        raise TEMFileError(
            path, f"{what} is declared as shape {shape} of {np.dtype(dtype)}: reading {read} "
            f"takes {size / 1e9:.3g} GB, more than the limit of {limit / 1e9:.3g} GB (is the "
            f"file damaged?). If the data is really that large, raise the limit: set the "
            f"environment variable {_MAX_BYTES_VARIABLE} to a number of bytes, e.g. "
            f"{_MAX_BYTES_VARIABLE}={math.ceil(size / 1e9)}e9"
        )


def _check_file(path: Path) -> None:
    if not path.exists():
        raise TEMFileError(path, "no such file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TEMFileError(path, f"cannot be accessed ({exc.strerror})") from exc
    if size == 0:
        raise TEMFileError(path, "the file is empty (0 bytes): was it still being written?")


def _checked(image: TEMImage) -> TEMImage:
    """Squeeze leading single frames, and refuse data that is not a grey-scale image."""
    data, path = image.data, image.path
    if getattr(data.dtype, "names", None):
        raise TEMFileError(
            path, "this is an RGB colour image; atom detection needs the recorded grey-scale "
            "intensities: export the raw image (DM4, TIFF, MRC...) rather than a screenshot"
        )
    if np.issubdtype(data.dtype, np.complexfloating):
        raise TEMFileError(
            path, "the data is complex-valued (an FFT or an exit wave): a real intensity "
            "image is needed"
        )
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim < 2:
        raise TEMFileError(
            path, f"the data is {data.ndim}-D (shape {data.shape}), a spectrum or a profile: "
            "an image (2-D) or a stack of images (3-D) is needed"
        )
    if data.ndim > 4:
        raise TEMFileError(
            path, f"the data is {data.ndim}-D (shape {data.shape}): an image (2-D), a stack "
            "(3-D) or a time series of focal series (4-D) is needed"
        )
    if min(data.shape[-2:]) < 2:
        raise TEMFileError(path, f"the image is too small to be an image: shape {data.shape}")
    if isinstance(data, np.ndarray) and np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise TEMFileError(
                path, f"{bad} of {data.size} pixels are NaN or infinite: the image is "
                "damaged or was masked; replace them before analysis"
            )
    return replace(image, data=data)


# --- RosettaSciIO formats -------------------------------------------------------------------


def _read_rsciio(path: Path, *, lazy: bool) -> list[TEMImage]:
    module_name, label = _RSCIIO_MODULES[path.suffix.lower()]
    if label in ("EMD", "HSPY"):
        _check_hdf5(path, lazy=lazy)
    module = importlib.import_module(f"rsciio.{module_name}")
    hdf5 = label in ("EMD", "HSPY")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # HDF5 is always opened lazily: its data is then read by _hdf5_frames, frame by
            # frame, whatever the file's chunking (RosettaSciIO makes a task per chunk).
            signals = module.file_reader(str(path), lazy=lazy or hdf5)
    except Exception as exc:  # RosettaSciIO raises many types for damaged files
        raise TEMFileError(
            path, f"not a readable {label} file: it may be truncated, damaged or of another "
            f"format ({type(exc).__name__}: {exc})"
        ) from exc
    if not signals:
        raise TEMFileError(path, f"the {label} file holds no data")

    images, skipped = [], []
    for signal in signals:
        reason = _why_not_an_image(signal)
        if reason:
            skipped.append(reason)
        else:
            images.append(signal)
    if not images:
        raise TEMFileError(path, f"the {label} file holds no image: " + "; ".join(skipped))

    results = []
    opened = [d for signal in signals for d in _hdf5_datasets(signal.get("data"))]
    for signal in images:
        title = str(signal.get("metadata", {}).get("General", {}).get("title") or "")
        name = path.stem if len(images) == 1 or not title else f"{path.stem} [{title}]"
        axes = signal["axes"]
        calibration = calibration_from_axes(
            [axes[-2].get("scale", 1.0), axes[-1].get("scale", 1.0)],
            [axes[-2].get("units"), axes[-1].get("units")],
        )
        original_metadata = _plain(signal.get("original_metadata", {}))
        mode = read_imaging_mode(label, original_metadata,
                                 metadata=_plain(signal.get("metadata", {})), title=title,
                                 path=path, calibration_kind=calibration.kind)
        data = signal["data"]
        if hdf5:
            data = _hdf5_frames(path, label, data, lazy=lazy)
        results.append(TEMImage(
            data=data,
            path=path,
            name=name,
            calibration=calibration,
            file_format=label,
            frame_interval_s=_frame_interval(axes),
            original_metadata=original_metadata,
            imaging_mode=mode.mode,
            imaging_mode_source=mode.source,
        ))
    if opened and not any(_hdf5_datasets(image.data) for image in results):
        # RosettaSciIO's lazy reading left the file open: nothing reads from it any more, and
        # an open file cannot be written to (or, on Windows, deleted) by the user.
        opened[0].file.close()
    return results


def _check_hdf5(path: Path, *, lazy: bool) -> None:
    """Refuse, before RosettaSciIO reads an HDF5 file, data in other files and oversized data.

    External raw storage, virtual datasets and external links read whatever files they name
    (any file the user can read) into the image, without a word; a file from elsewhere is
    refused unless ``NAPARI_TEM_ATOMS_ALLOW_EXTERNAL_HDF5=1``. Image-like datasets (2-D or
    more) larger than the limit are refused as in :func:`_check_size` (when reading lazily,
    one image of them: their two largest axes).
    """
    import h5py

    try:
        hdf5 = h5py.File(path, "r")
    except OSError:
        return  # not HDF5: RosettaSciIO says so in its words
    allow_external = os.environ.get(_ALLOW_EXTERNAL_VARIABLE, "").strip() == "1"

    def refuse(name: str, how: str) -> None:
        raise TEMFileError(
            path, f"the HDF5 object /{name} {how}: reading it would pull another file into "
            f"this one, so it is refused. If you trust this file, set the environment "
            f"variable {_ALLOW_EXTERNAL_VARIABLE}=1"
        )

    groups: list[tuple[str, Any]] = [("", hdf5)]

    def check(name: str, item: Any) -> None:
        if isinstance(item, h5py.Group):
            groups.append((f"{name}/", item))
        if not isinstance(item, h5py.Dataset):
            return
        if not allow_external and item.external:
            refuse(name, f"stores its data in the raw file(s) "
                   f"{', '.join(str(e[0]) for e in item.external)}")
        if not allow_external and item.is_virtual:
            # "." is this file itself
            sources = sorted({str(s.file_name) for s in item.virtual_sources()} - {"."})
            if sources:
                refuse(name, f"is a virtual dataset that maps data from {', '.join(sources)}")
        if item.ndim >= 2:
            _check_size(path, item.shape, item.dtype, what=f"the dataset /{name}",
                        at_once=tuple(sorted(item.shape)[-2:]) if lazy else None)

    with hdf5:
        hdf5.visititems(check)  # every object once, following neither soft nor external links
        for prefix, group in [] if allow_external else groups:
            for name in group:
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    refuse(f"{prefix}{name}", f"is an external link to {link.path} in "
                           f"{link.filename}")


#: Most bytes of HDF5 data read at once to serve one frame: a slab of the frames that share
#: the file's chunks (a chunk spanning 8 frames is read, and decompressed, once for all 8).
_SLAB_BYTES = 64_000_000
#: HDF5's chunk cache per dataset (h5py's default is 1 MB): a slab larger than the cache whose
#: chunks span several rows of frames decompresses them again for each row.
_CHUNK_CACHE_BYTES = 64 * 2**20
#: Most HDF5 chunks one read touches (see _Hdf5Frames._read).
_CHUNKS_PER_READ = 1024


def _hdf5_frames(path: Path, label: str, data: Any, *, lazy: bool) -> Any:
    """The data of an HDF5 signal, read by frames (lazily: one dask chunk per frame).

    Not `lazy`: a numpy array filled slab by slab.

    RosettaSciIO's lazy arrays have one dask task per HDF5 chunk: a 53 MB EMD with 1x1-pixel
    chunks made 655,360 tasks and took 7-10 minutes and 3.7 GB to read. Here each frame is one
    HDF5 read (of the frames that share its chunks), so memory is bounded by a few frames and
    the per-chunk cost is HDF5's alone. Data this cannot map to its dataset (a stack of several
    datasets) is returned as RosettaSciIO gave it.
    """
    frames = _Hdf5Frames.of(path, label, data)
    if frames is None:
        return data if lazy else np.asarray(data)
    if not lazy:
        return frames.read_all()
    import dask.array as da

    status = path.stat()
    chunks = (*(1,) * (len(frames.shape) - 2), *frames.shape[-2:])
    return da.from_array(
        frames, chunks=chunks, asarray=False,
        name=f"hdf5-{path.resolve()}-{status.st_mtime_ns}-{status.st_size}-{frames.dataset}",
    )


@dataclass(frozen=True)
class _Hdf5Frames:
    """An HDF5 dataset as the (frame, ..., y, x) array a reader made of it, read by frames.

    Indexing with a frame index (or slices of a frame, as dask asks) reads the slab of frames
    that share the frame's HDF5 chunks, keeps the last slab, and returns the frame. Only plain
    values are held, so dask can send it to other processes; each opens the file itself.
    """

    path: str
    dataset: str
    shape: tuple[int, ...]
    dtype: np.dtype
    #: The dataset's axis for each of this array's axes (the reader's transpose).
    order: tuple[int, ...]
    #: Frames read at once (a multiple of the chunking along the frame axis, or 1).
    slab: int

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def of(cls, path: Path, label: str, data: Any) -> _Hdf5Frames | None:
        """The frames behind RosettaSciIO's lazy `data`, or None when they cannot be mapped."""
        dataset = _only_hdf5_dataset(data)
        if dataset is None or data.ndim not in (2, 3, 4) or dataset.ndim != data.ndim:
            return None
        if dataset.dtype != data.dtype or dataset.dtype.names is not None:
            return None  # converted by the reader (Velox FFT and DPC: complex)
        order = _reader_axes_order(dataset, label)
        if tuple(dataset.shape[axis] for axis in order) != tuple(data.shape):
            return None
        frame_bytes = math.prod(data.shape[1:]) * data.dtype.itemsize
        slab = 1
        if data.ndim > 2 and dataset.chunks is not None:
            along_frames = dataset.chunks[order[0]]
            if along_frames * frame_bytes <= _SLAB_BYTES:
                slab = along_frames
        return cls(str(path), dataset.name, tuple(data.shape), data.dtype, order, slab)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if self.ndim == 2:
            return self._slab(0)[key]
        first = key[0]
        if isinstance(first, slice):
            start, stop, step = first.indices(self.shape[0])
            if step != 1 or stop - start != 1:  # dask asks for one frame per chunk
                return np.stack([self[(i, *key[1:])] for i in range(start, stop, step)])
            return self[(start, *key[1:])][np.newaxis]
        index = int(first) % self.shape[0]
        start = index - index % self.slab
        slab = self._slab(start)
        return slab[(index - start, *key[1:])]

    def read_all(self) -> np.ndarray:
        """Every frame, read slab by slab into one array, the file closed afterwards."""
        import h5py

        out = np.empty(self.shape, self.dtype)
        with h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES) as hdf5:
            dataset = hdf5[self.dataset]
            if self.ndim == 2:
                out[...] = self._read(dataset, slice(None))
            for start in range(0, self.shape[0] if self.ndim > 2 else 0, self.slab):
                stop = min(start + self.slab, self.shape[0])
                out[start:stop] = self._read(dataset, slice(start, stop))
        return out

    def _slab(self, start: int) -> np.ndarray:
        stop = min(start + self.slab, self.shape[0]) if self.ndim > 2 else None
        cache_key = (self.path, self.dataset, start, stop)
        # One read at a time (h5py takes a global lock anyway): two of Dask's threads asking
        # for frames of one slab read it once.
        with _SLAB_LOCK:
            if cache_key in _SLAB_CACHE:
                _SLAB_CACHE.move_to_end(cache_key)
                return _SLAB_CACHE[cache_key]
            hdf5 = _open_hdf5(self.path)
            slab = self._read(hdf5[self.dataset], slice(start, stop))
            if self.slab > 1:
                _SLAB_CACHE[cache_key] = slab
                while len(_SLAB_CACHE) > _SLABS_KEPT:
                    _SLAB_CACHE.popitem(last=False)
        return slab

    def _read(self, dataset: Any, frames: slice) -> np.ndarray:
        """Frames `frames` of `dataset` (all of a 2-D image), in this array's axis order.

        Read in blocks of whole chunk rows of at most :data:`_CHUNKS_PER_READ` chunks: HDF5
        keeps a few kB per chunk of one read, and keeps that memory afterwards (a frame of
        65,536 one-pixel chunks read at once took 430 MB; in blocks of 4,096 chunks 43 MB, of
        1,024 chunks 24 MB, in the same time).
        """
        selection = [slice(None)] * self.ndim
        selection[self.order[0]] = frames
        extent = [len(range(*part.indices(size)))
                  for part, size in zip(selection, dataset.shape, strict=True)]
        rows_axis = self.order[-2]
        step = extent[rows_axis]
        if dataset.chunks is not None:
            chunks_per_row = math.prod(
                math.ceil(size / chunk)
                for axis, (size, chunk) in enumerate(zip(extent, dataset.chunks, strict=True))
                if axis != rows_axis)
            step = dataset.chunks[rows_axis] * max(1, _CHUNKS_PER_READ // chunks_per_row)
        if step >= extent[rows_axis]:
            return np.transpose(dataset[tuple(selection)], self.order)
        raw = np.empty(extent, self.dtype)
        for start in range(0, extent[rows_axis], step):
            selection[rows_axis] = part = slice(start, start + step)
            target = [slice(None)] * self.ndim
            target[rows_axis] = part
            raw[tuple(target)] = dataset[tuple(selection)]
        return np.transpose(raw, self.order)


#: The last slabs of frames read (see _Hdf5Frames), a few: Dask's threads read frames of
#: neighbouring slabs at once. At most _SLABS_KEPT * _SLAB_BYTES.
_SLAB_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_SLABS_KEPT = 4
_SLAB_LOCK = threading.Lock()


def _open_hdf5(path: str) -> Any:
    """An open HDF5 file per process and file version (a file written again is reopened)."""
    status = os.stat(path)
    return _open_hdf5_version(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _open_hdf5_version(path: str, mtime_ns: int, size: int) -> Any:
    import h5py

    return h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)


def _only_hdf5_dataset(data: Any) -> Any:
    """The one h5py dataset a lazy RosettaSciIO array reads from, or None."""
    found = _hdf5_datasets(data)
    return found[0] if len(found) == 1 else None


def _hdf5_datasets(data: Any) -> list[Any]:
    """The h5py datasets a lazy RosettaSciIO array reads from (none for a numpy array)."""
    import h5py

    layers = getattr(getattr(data, "dask", None), "layers", None)
    if layers is None:
        return []
    # from_array keeps the array it wraps as the one value of an 'original-array' layer
    # (the other layers would build a task per chunk when read).
    return [value for name, layer in layers.items() if name.startswith("original-array-")
            for value in dict(layer).values() if isinstance(value, h5py.Dataset)]


def _reader_axes_order(dataset: Any, label: str) -> tuple[int, ...]:
    """The dataset axis of each axis of RosettaSciIO's array (how its reader transposes)."""
    ndim = dataset.ndim
    if label == "EMD" and ndim == 3 and re.fullmatch(r"/Data/Image/[^/]+/Data", dataset.name):
        return (2, 0, 1)  # Velox stores (y, x, frame)
    if label == "EMD":
        # Berkeley EMD stores the axes reversed, except py4DSTEM files (dim0) and datacubes.
        if dataset.name.endswith("/datacube") or "dim0" in dataset.parent:
            return tuple(range(ndim))
        return tuple(reversed(range(ndim)))
    return tuple(range(ndim))


def _why_not_an_image(signal: Mapping[str, Any]) -> str | None:
    """A reason when a RosettaSciIO signal is not an image or image stack, else None."""
    axes = signal.get("axes", [])
    signal_type = str(signal.get("metadata", {}).get("Signal", {}).get("signal_type") or "")
    title = signal.get("metadata", {}).get("General", {}).get("title") or "untitled"
    if len(axes) < 2:
        return f"'{title}' is 1-D (a spectrum or profile)"
    spectral_axes = [
        str(a.get("name")) for a in axes
        if normalise_unit(a.get("units")) in _SPECTRAL_UNITS
        or any(word in str(a.get("name") or "").lower() for word in _SPECTRAL_AXIS_NAMES)
    ]
    if spectral_axes:
        return f"'{title}' has a spectral axis ({spectral_axes[0]}): a spectrum image"
    if len(axes) > 2 and any(tag in signal_type.upper() for tag in _SPECTRAL_SIGNALS):
        # A 2-D CL or EELS signal can be an image (panchromatic CL, energy-filtered TEM), but
        # a 3-D one is a spectrum image whatever its axes are called.
        return f"'{title}' is a {signal_type} spectrum image"
    if any(a.get("navigate") for a in axes[-2:]) and not all(a.get("navigate") for a in axes):
        return f"'{title}' is not an image (its last two axes are not image axes)"
    return None


def _frame_interval(axes: list[Mapping[str, Any]]) -> float | None:
    if len(axes) < 3:
        return None
    unit = normalise_unit(axes[0].get("units"))
    factor = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}.get(unit)
    return None if factor is None else float(axes[0].get("scale", 1.0)) * factor


def _plain(tree: Any) -> Any:
    """Convert RosettaSciIO's metadata (DictionaryTreeBrowser or dict) to plain dicts."""
    if hasattr(tree, "as_dictionary"):
        tree = tree.as_dictionary()
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    return tree


# --- TIFF ---------------------------------------------------------------------------------


def _open_tiff(path: str) -> tuple[Any, threading.Lock]:
    """An open TiffFile per process and file version, and the lock its readers take.

    One open file: reading page i does not re-walk the pages before it. The lock: threads
    (Dask's, napari's) share the file's position, and two reads at once get each other's bytes
    (50 pages computed at once raised "invalid data type" for the later pages). A file written
    again under the same name (another export of the same run) is opened again.
    """
    status = os.stat(path)
    return _open_tiff_version(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _open_tiff_version(path: str, mtime_ns: int, size: int) -> tuple[Any, threading.Lock]:
    import tifffile

    return tifffile.TiffFile(path), threading.Lock()


def _lazy_tiff_frames(path: Path, shape: tuple[int, ...], dtype: Any) -> Any:
    """A dask stack that reads one TIFF page per frame, when it is needed."""
    import dask
    import dask.array as da

    def page(index: int) -> np.ndarray:
        tif, lock = _open_tiff(str(path))
        with lock:
            return tif.pages[index].asarray()

    return da.stack([da.from_delayed(dask.delayed(page)(i), shape[1:], dtype)
                     for i in range(shape[0])])


def _read_tiff(path: Path, lazy: bool = False) -> TEMImage:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            one_page_per_frame = (len(series.shape) == 3 and "S" not in axes
                                  and len(series.pages) == series.shape[0])
            lazy_pages = lazy and one_page_per_frame
            _check_size(path, series.shape, series.dtype,
                        at_once=series.shape[1:] if lazy_pages else None)
            if lazy_pages:
                data = _lazy_tiff_frames(path, tuple(series.shape), series.dtype)
            else:
                data = series.asarray()
            if tif.is_imagej:
                calibration, flavour = _imagej_calibration(tif), "TIFF (ImageJ)"
                metadata = {"imagej": dict(tif.imagej_metadata or {})}
            elif tif.is_ome:
                calibration, flavour = _ome_calibration(tif.ome_metadata), "TIFF (OME)"
                metadata = {"ome": tif.ome_metadata}
            else:
                calibration, flavour, metadata = None, "TIFF", {}
            if calibration is None:
                metadata["tags"] = {
                    tag.name: _tag_value(tag.value) for tag in tif.pages[0].tags.values()
                }
    except TEMFileError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        if "imagecodecs" in str(exc):
            raise TEMFileError(
                path, f"the TIFF is compressed in a way that needs the imagecodecs package "
                f"(pip install imagecodecs): {exc}"
            ) from exc
        raise TEMFileError(
            path, f"not a readable TIFF file: it may be truncated or damaged "
            f"({type(exc).__name__}: {exc})"
        ) from exc

    if "S" in axes and data.shape[axes.index("S")] in (3, 4):
        if np.dtype(data.dtype) == np.uint8:
            raise TEMFileError(
                path, "this is an RGB colour image; atom detection needs the recorded "
                "grey-scale intensities: export the raw image rather than a rendered one"
            )
        # Not a rendered picture: tifffile stores any (3 or 4, rows, cols) array as RGB(A)
        # unless told otherwise, so a focal series saved with a plain imwrite lands here.
        data = np.moveaxis(np.asarray(data), axes.index("S"), 0)
    if calibration is None:
        calibration, vendor = _vendor_tiff_calibration(path)
        if vendor:
            flavour = f"TIFF ({vendor})"
    mode = read_imaging_mode(flavour, metadata, path=path, calibration_kind=calibration.kind)
    return TEMImage(
        data=data, path=path, name=path.stem.removesuffix(".ome"), calibration=calibration,
        file_format=flavour, original_metadata=metadata, imaging_mode=mode.mode,
        imaging_mode_source=mode.source,
    )


def _tag_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return value


def _imagej_calibration(tif: Any) -> Calibration:
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit", "")
    tags = tif.pages[0].tags
    try:
        num_x, den_x = tags["XResolution"].value
        num_y, den_y = tags["YResolution"].value
        scale = (den_y / num_y, den_x / num_x)  # resolution is pixels per unit
    except (KeyError, ZeroDivisionError, TypeError, ValueError):
        return Calibration.uncalibrated()
    return calibration_from_axes(scale, (unit, unit))


def _ome_calibration(ome_xml: str | None) -> Calibration:
    if not ome_xml:
        return Calibration.uncalibrated()
    root = ET.fromstring(ome_xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return Calibration.uncalibrated()
    size_x = float(pixels.attrib["PhysicalSizeX"])
    size_y = float(pixels.attrib.get("PhysicalSizeY", size_x))
    # The OME schema's default unit is the micrometre.
    unit_x = pixels.attrib.get("PhysicalSizeXUnit", "µm")
    unit_y = pixels.attrib.get("PhysicalSizeYUnit", unit_x)
    return calibration_from_axes((size_y, size_x), (unit_y, unit_x))


def _vendor_tiff_calibration(path: Path) -> tuple[Calibration, str | None]:
    """Calibration from vendor tags (FEI/Thermo Fisher, DM, Zeiss, JEOL, Olympus)."""
    from rsciio import tiff as rsciio_tiff

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Lazily: only the tags are needed, not a second copy of a (large) stack.
            signal = rsciio_tiff.file_reader(str(path), lazy=True)[0]
    except Exception:  # vendor tags are optional; the image itself was read by tifffile
        return Calibration.uncalibrated(), None
    axes = signal["axes"]
    calibration = calibration_from_axes(
        [axes[-2].get("scale", 1.0), axes[-1].get("scale", 1.0)],
        [axes[-2].get("units"), axes[-1].get("units")],
    )
    return calibration, ("vendor tags" if calibration.kind != "none" else None)


# --- NPY ----------------------------------------------------------------------------------


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an NPY file declares, checked against the bytes the file holds.

    Raises
    ------
    TEMFileError
        When the header is unreadable, holds Python objects, or declares a negative shape or
        more data than the file holds (NumPy would raise MemoryError or OverflowError, or try
        to allocate it all).

    """
    from numpy.lib import format as npy_format

    with open(path, "rb") as stream:
        if stream.read(2) == b"PK":  # a zip file
            raise TEMFileError(path, "not a single NumPy array (an .npz archive?)")
    try:
        with open(path, "rb") as stream:
            version = npy_format.read_magic(stream)
            # Versions 2 and 3 differ only in the header's text encoding.
            read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                           else npy_format.read_array_header_2_0)
            shape, _, dtype = read_header(stream)
            data_bytes = os.fstat(stream.fileno()).st_size - stream.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise TEMFileError(
            path, f"not a readable NPY file: it may be truncated or damaged ({exc})"
        ) from exc
    if dtype.hasobject:
        raise TEMFileError(
            path, "it holds Python objects, which are not loaded for safety (pickle)"
        )
    if any(n < 0 for n in shape):
        raise TEMFileError(path, f"the header declares a negative shape {shape}: the file is "
                           "damaged")
    needed = math.prod(shape) * dtype.itemsize
    if needed > data_bytes:
        raise TEMFileError(
            path, f"the header declares shape {shape} of {dtype} ({needed} bytes) but the file "
            f"holds {data_bytes} bytes of data: it is truncated or damaged"
        )
    return shape, dtype


class _NpyFile:
    """An NPY file as an array dask can slice: each slice maps the file, nothing is copied.

    Given the memory map itself, ``dask.array.from_array`` copies it (the whole file into
    memory), and ``tokenize`` hashes every byte of it.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype, self.ndim = path, shape, dtype, len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)[key]


def _read_npy(path: Path, *, lazy: bool) -> TEMImage:
    shape, dtype = _npy_header(path)
    _check_size(path, shape, dtype, at_once=shape[1:] if lazy and len(shape) >= 3 else None)
    if lazy:
        import dask.array as da

        status = path.stat()
        chunks = (1, *shape[1:]) if len(shape) >= 3 else shape
        data = da.from_array(
            _NpyFile(path, shape, dtype), chunks=chunks,
            name=f"npy-{path.resolve()}-{status.st_mtime_ns}-{status.st_size}",
        )
    else:
        try:
            data = np.load(path, allow_pickle=False)
        except MemoryError as exc:
            size = math.prod(shape) * dtype.itemsize
            raise TEMFileError(
                path, f"not enough memory to read its {size / 1e9:.3g} GB: close other "
                "programs, or read it lazily"
            ) from exc
        except (ValueError, OSError, EOFError) as exc:
            raise TEMFileError(
                path, f"not a readable NPY file: it may be truncated or damaged ({exc})"
            ) from exc
    return TEMImage(
        data=data, path=path, name=path.stem,
        calibration=Calibration.uncalibrated(
            "an NPY file carries no pixel size: coordinates stay in pixels unless you give one"
        ),
        file_format="NPY",
        imaging_mode_source=read_imaging_mode("NPY", None).source,
    )

