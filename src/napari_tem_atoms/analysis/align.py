"""Register images of one area: focal series (contrast changes between defoci) and drift.

Two images are compared through their cross-power spectrum, partly whitened and low-passed to
keep shot noise out, under an apodising window; for a focal series the spectrum is squared first,
so that the contrast reversals between defoci (sign flips of whole rings of the spectrum) do not
matter. The peak is refined to sub-pixel precision with an upsampled matrix DFT around it.

A crystal repeats itself, so a correlation also peaks at every lattice translation of the true
shift. The peak is therefore only searched within ``max_shift`` pixels of an expected shift (zero
for a focal series, the previous frame's shift along a video).

Sign convention: a shift ``s = (dy, dx)`` [px] means that ``moving[r] ≈ reference[r − s]``: a
feature at ``p`` in the reference is at ``p + s`` in the moving image. Positions found in the
moving image are put into the reference frame by subtracting ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import TEMAtomsError
from ..events import Events, Progress, run

__all__ = [
    "WINDOWS",
    "AlignmentStep",
    "align_focal_series",
    "apply_shifts",
    "common_area",
    "estimate_drift",
    "estimate_shift",
    "iter_align_focal_series",
    "iter_estimate_drift",
]

#: Default bound on the shift between two images, as a fraction of the smaller image side.
DEFAULT_MAX_SHIFT_FRACTION = 0.125
#: Default spectral low-pass of the correlation [cycles/px] (measured best at 300-3000 e/Å²).
DEFAULT_CUTOFF = 0.1


#: Apodising windows: "hann" weighs the centre of the field (best for a particle or flake
#: surrounded by vacuum or support), "tukey" is flat over the inner half (best when the crystal
#: fills the field), "auto" registers with both and keeps the more significant correlation.
WINDOWS = ("auto", "hann", "tukey")
#: Fraction of each side over which the Tukey window tapers.
TUKEY_TAPER = 0.5


#: Default search bound when the pixel size is known [Å]: below half the lattice period of
#: fcc metals (gold: 2.04 Å), so a correlation cannot lock onto a neighbouring lattice translate.
DEFAULT_MAX_SHIFT_ANGSTROM = 0.9


def default_max_shift(shape: Sequence[int], sampling: float | None = None) -> float:
    """The default search bound [px].

    With the pixel size `sampling` [Å/px] known: 0.9 Å (below half a lattice period), at most
    1/8 of the smaller image side; otherwise 1/8 of the smaller side.
    """
    bound = DEFAULT_MAX_SHIFT_FRACTION * float(min(shape[-2:]))
    if sampling:
        bound = min(bound, DEFAULT_MAX_SHIFT_ANGSTROM / float(sampling))
    return max(2.0, bound)


class _Registration:
    """The Fourier transform of a prepared reference, reused for every moving image.

    The cross-power spectrum ``C = F_moving · conj(F_reference)`` is weighted by ``|C|^-1/2``
    (half-way to a phase correlation: the lattice's strong reflections do not drown the particle
    outline and support, yet noise-dominated frequencies are not raised to full weight) and
    low-passed above `cutoff`. With ``contrast_invariant`` the spectrum is squared first: a
    contrast reversal between two defoci flips the sign of whole rings of ``C`` (the signs of the
    two transfer functions), which ``C²`` does not see; its correlation peaks at twice the shift.
    """

    def __init__(self, reference: np.ndarray, smoothing: float, cutoff: float,
                 contrast_invariant: bool, window: str = "hann") -> None:
        self.shape = reference.shape
        self.smoothing = smoothing
        self.contrast_invariant = contrast_invariant
        rows, cols = self.shape
        # The image borders would otherwise correlate as a strong cross at zero shift.
        self.window = _window(window, rows, cols)
        # Signed shift of every correlation pixel, and its length.
        self.lag_y = (np.arange(rows) + rows // 2) % rows - rows // 2
        self.lag_x = (np.arange(cols) + cols // 2) % cols - cols // 2
        self.lag = np.hypot(self.lag_y[:, None], self.lag_x[None, :])
        ky = np.fft.fftfreq(rows)[:, None]
        kx = np.fft.fftfreq(cols)[None, :]
        self.low_pass = np.exp(-0.5 * (ky**2 + kx**2) / cutoff**2)
        self.reference_fft = np.fft.fft2(self.prepare(reference))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if image.shape != self.shape:
            raise TEMAtomsError(
                f"images to align must have the same shape: {image.shape} vs {self.shape}"
            )
        if not np.all(np.isfinite(image)):
            raise TEMAtomsError("an image to align contains NaN or infinite values")
        if self.smoothing > 0:
            image = ndimage.gaussian_filter(image, self.smoothing, mode="nearest")
        std = float(image.std())
        if std == 0:
            raise TEMAtomsError("an image to align is constant (no contrast to align on)")
        return (image - float(image.mean())) / std * self.window

    def shift(self, moving: np.ndarray, expected: np.ndarray, max_shift: float,
              upsample: int) -> tuple[np.ndarray, float]:
        """The shift [px] and its significance (peak over the spread at small lags)."""
        cross = np.fft.fft2(self.prepare(moving)) * np.conj(self.reference_fft)
        magnitude = np.abs(cross) + 1e-12 * float(np.abs(cross).max())
        factor = 1.0
        if self.contrast_invariant:
            cross = cross**2 / magnitude
            factor = 2.0  # the correlation of C² peaks at 2 s
        else:
            cross = cross / magnitude**0.5
        cross *= self.low_pass
        correlation = np.fft.ifft2(cross).real
        rows, cols = self.shape
        dy, dx = self.lag_y, self.lag_x
        centre = factor * expected
        # Only correlation pixels within the bound may win.
        distance = np.hypot(dy[:, None] - centre[0], dx[None, :] - centre[1])
        allowed = distance <= factor * max_shift + 0.5
        if not allowed.any() or factor * (np.abs(expected).max() + max_shift) >= min(rows,
                                                                                     cols) / 2:
            raise TEMAtomsError(f"a shift of up to {max_shift:g} px around {tuple(expected)} "
                                f"does not fit images of {self.shape} px: lower max_shift")
        masked = np.where(allowed, correlation, -np.inf)
        peak = np.unravel_index(int(np.argmax(masked)), masked.shape)
        coarse = np.array([dy[peak[0]], dx[peak[1]]], dtype=float)
        refined, height = _refine_peak(cross, coarse, upsample)
        if np.hypot(*(refined - centre)) > factor * max_shift + 1.0:  # walked off: keep coarse
            refined, height = coarse, float(correlation[peak])
        # Significance against the correlation's spread at small lags only: far from the
        # centre a Hann-windowed map fades faster than a Tukey-windowed one, and a whole-map
        # spread would favour the Hann window even on pure noise.
        small = self.lag <= max(min(rows, cols) / 8, factor * max_shift + 2)
        spread = float(correlation[small].std())
        return refined / factor, height / max(spread, 1e-30)


def _window(name: str, rows: int, cols: int) -> np.ndarray:
    """The 2-D "hann" or "tukey" window (names checked by :func:`_windows_to_try`)."""
    along = np.hanning if name == "hann" else _tukey
    return np.outer(along(rows), along(cols)).astype(np.float32)


def _tukey(length: int) -> np.ndarray:
    """Flat in the middle, a half-cosine taper over `TUKEY_TAPER` / 2 of the length at each end."""
    position = np.linspace(0.0, 1.0, length)
    edge = np.minimum(position, 1.0 - position) / (TUKEY_TAPER / 2)
    return np.where(edge >= 1.0, 1.0, 0.5 * (1 - np.cos(np.pi * np.clip(edge, 0.0, 1.0))))


def _refine_peak(cross: np.ndarray, coarse: np.ndarray, upsample: int
                 ) -> tuple[np.ndarray, float]:
    """Evaluate the correlation on a grid `upsample` times finer within ±1.5 px of `coarse`."""
    rows, cols = cross.shape
    offsets = np.arange(-1.5, 1.5 + 1e-9, 1.0 / upsample)
    ky = np.fft.fftfreq(rows)
    kx = np.fft.fftfreq(cols)
    along_y = np.exp(2j * np.pi * np.outer(coarse[0] + offsets, ky))
    along_x = np.exp(2j * np.pi * np.outer(kx, coarse[1] + offsets))
    fine = (along_y @ cross @ along_x).real / (rows * cols)
    best = np.unravel_index(int(np.argmax(fine)), fine.shape)
    shift = coarse + np.array([offsets[best[0]], offsets[best[1]]])
    return shift, float(fine[best])


def estimate_shift(reference: np.ndarray, moving: np.ndarray, max_shift: float | None = None,
                   expected: Sequence[float] = (0.0, 0.0), contrast_invariant: bool = False,
                   cutoff: float = DEFAULT_CUTOFF, smoothing: float = 0.0, upsample: int = 20,
                   window: str = "auto") -> np.ndarray:
    """Find the translation of `moving` relative to `reference`, with sub-pixel precision.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        Two 2-D images of the same shape.
    max_shift : float, optional
        Largest shift away from `expected` that may be found [px]. Keep it below half a lattice
        period when the field of view is mostly crystal, or the result may be off by a lattice
        vector. Default: 1/8 of the smaller image side.
    expected : (float, float), optional
        Centre of the search [px], e.g. the previous frame's drift.
    contrast_invariant : bool, optional
        Insensitive to contrast reversals (images at different defoci); a little noisier.
    cutoff : float, optional
        Width of the spectral low-pass [cycles/px]: lower it for very noisy images.
    smoothing : float, optional
        Extra Gaussian σ applied to both images first [px].
    upsample : int, optional
        Sub-pixel refinement: the correlation peak is located to 1/`upsample` px.
    window : {"auto", "hann", "tukey"}, optional
        Apodising window: ``"hann"`` for an object surrounded by vacuum or support, ``"tukey"``
        when the crystal fills the field, ``"auto"`` (default) tries both and keeps the more
        significant correlation (twice the work).

    Returns
    -------
    numpy.ndarray
        ``(dy, dx)`` [px] with ``moving[r] ≈ reference[r − (dy, dx)]``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> reference = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 2)
    >>> moving = ndimage.shift(reference, (3.25, -1.5), mode="wrap")
    >>> np.round(estimate_shift(reference, moving), 2)
    array([ 3.25, -1.5 ])
    """
    reference = np.asarray(reference)
    if reference.ndim != 2:
        raise TEMAtomsError(f"images to align must be 2-D, not {reference.ndim}-D")
    if max_shift is None:
        max_shift = default_max_shift(reference.shape)
    shift, _ = _register_pair(reference, moving, np.asarray(expected, dtype=float),
                              float(max_shift), upsample, smoothing, cutoff, contrast_invariant,
                              _windows_to_try(window))
    return shift


def _windows_to_try(window: str) -> tuple[str, ...]:
    if window not in WINDOWS:
        raise TEMAtomsError(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")
    return ("hann", "tukey") if window == "auto" else (window,)


def _register_pair(reference: np.ndarray, moving: np.ndarray, expected: np.ndarray,
                   max_shift: float, upsample: int, smoothing: float, cutoff: float,
                   contrast_invariant: bool, windows: tuple[str, ...]
                   ) -> tuple[np.ndarray, str]:
    """The shift under whichever of `windows` gives the most significant peak, and that window."""
    best: tuple[float, np.ndarray, str] | None = None
    for name in windows:
        registration = _Registration(reference, smoothing, cutoff, contrast_invariant, name)
        shift, significance = registration.shift(moving, expected, max_shift, upsample)
        if best is None or significance > best[0]:
            best = (significance, shift, name)
    return best[1], best[2]


def _check_stack(images: np.ndarray, minimum: int, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise TEMAtomsError(f"{what} must be a stack of 2-D images (N, rows, columns), "
                            f"not an array of shape {images.shape}")
    if images.shape[0] < minimum:
        raise TEMAtomsError(f"{what} needs at least {minimum} images, got {images.shape[0]}")
    return images


def iter_align_focal_series(images: np.ndarray, reference: int | None = None,
                            max_shift: float | None = None, cutoff: float = DEFAULT_CUTOFF,
                            upsample: int = 20, sampling: float | None = None,
                            window: str = "auto") -> Events[np.ndarray]:
    """The event stream of :func:`align_focal_series`.

    Yields a :class:`~napari_tem_atoms.events.Progress` ``("align", pairs registered, pairs)``
    per pair of images (under each window tried) and returns the (N, 2) shifts.
    """
    images = _check_stack(images, 2, "a focal series")
    n_images = images.shape[0]
    if reference is None:
        reference = n_images // 2
    if not -n_images <= reference < n_images:
        raise TEMAtomsError(f"reference image {reference} does not exist in a series of "
                            f"{n_images}")
    reference %= n_images
    if max_shift is None:
        max_shift = default_max_shift(images.shape, sampling)
    pairs = [(first, second) for first in range(n_images)
             for second in range(first + 1, n_images)]
    windows = _windows_to_try(window)
    targets, best_significance, done = [], -np.inf, 0
    for name in windows:
        shifts, significance = [], 0.0
        for first in range(n_images):
            registration = _Registration(images[first], 0.0, cutoff, True, name)
            for second in range(first + 1, n_images):
                shift, pair_significance = registration.shift(images[second], np.zeros(2),
                                                              float(max_shift), upsample)
                shifts.append(shift)
                significance += pair_significance
                done += 1
                yield Progress("align", done, len(pairs) * len(windows))
        if significance > best_significance:
            targets, best_significance = shifts, significance
    rows = np.zeros((len(pairs) + 1, n_images))
    for index, (first, second) in enumerate(pairs):
        rows[index, second], rows[index, first] = 1.0, -1.0
    rows[-1, reference] = 1.0  # anchors the reference at zero
    solution, *_ = np.linalg.lstsq(rows, np.array([*targets, np.zeros(2)]), rcond=None)
    return solution - solution[reference]


def align_focal_series(images: np.ndarray, reference: int | None = None,
                       max_shift: float | None = None, cutoff: float = DEFAULT_CUTOFF,
                       upsample: int = 20, sampling: float | None = None,
                       window: str = "auto") -> np.ndarray:
    """Register every image of a focal series to one of them, whatever their contrast.

    Every pair of images is registered with the contrast-invariant correlation and the shifts
    are the least-squares solution of all pairs (each image is compared with each other, so one
    low-contrast image, e.g. near Gaussian focus, does not spoil the rest). With
    ``window="auto"`` this is done under both windows and the set of pairs with the larger
    summed significance is kept.

    Parameters
    ----------
    images : numpy.ndarray
        (N, rows, columns) series, N ≥ 2, in any order of defocus.
    reference : int, optional
        Index of the reference image (its shift is zero); default: the middle one.
    max_shift : float, optional
        Largest misalignment between two images [px]; default: 0.9 Å when `sampling` is given,
        else 1/8 of the smaller side. Keep it below half a lattice period when the crystal
        fills the field of view.
    cutoff, upsample
        As in :func:`estimate_shift`.
    sampling : float, optional
        Pixel size [Å/px], for the default `max_shift`.
    window : {"auto", "hann", "tukey"}, optional
        As in :func:`estimate_shift`.

    Returns
    -------
    numpy.ndarray
        (N, 2) shifts ``(dy, dx)`` [px] of each image relative to the reference; undo them with
        :func:`apply_shifts`.
    """
    return run(iter_align_focal_series(images, reference, max_shift, cutoff, upsample,
                                       sampling, window))


@dataclass(frozen=True)
class AlignmentStep:
    """One frame registered by :func:`iter_estimate_drift` (the ``item`` of its progress)."""

    frame: int
    n_frames: int
    shift: np.ndarray


def iter_estimate_drift(frames: Sequence[np.ndarray] | np.ndarray, reference: int = 0,
                        max_shift: float | None = None, mode: str = "reference",
                        contrast_invariant: bool = False, cutoff: float = DEFAULT_CUTOFF,
                        upsample: int = 20, sampling: float | None = None, window: str = "hann"
                        ) -> Events[np.ndarray]:
    """Drift of every frame of a video, one frame at a time: the event stream of the GUI.

    Yields a :class:`~napari_tem_atoms.events.Progress` ``("drift", frames done, frames,
    AlignmentStep)`` per frame (the reference first) and returns the (T, 2) shifts; see
    :func:`estimate_drift` for the parameters.
    """
    n_frames = len(frames)
    if n_frames < 2:
        raise TEMAtomsError(f"drift needs at least 2 frames, got {n_frames}")
    if mode not in ("reference", "previous"):
        raise TEMAtomsError(f"drift mode must be 'reference' or 'previous', not {mode!r}")
    candidates = _windows_to_try(window)
    reference %= n_frames
    first = np.asarray(frames[reference])
    if first.ndim != 2:
        raise TEMAtomsError(f"drift needs a stack of 2-D frames, not frames of shape "
                            f"{first.shape}")
    if max_shift is None:
        max_shift = default_max_shift(first.shape, sampling)
    shifts = np.zeros((n_frames, 2))
    # Walk outwards from the reference so that each search starts from its neighbour's drift.
    order = [*range(reference + 1, n_frames), *range(reference - 1, -1, -1)]
    window = candidates[0]
    if len(candidates) > 1:
        # "auto": chosen once per video, on the reference and its neighbour, so that every
        # frame is registered the same way.
        _, window = _register_pair(first, np.asarray(frames[order[0]]), np.zeros(2),
                                   float(max_shift), upsample, 0.0, cutoff, contrast_invariant,
                                   candidates)
    registration = _Registration(first, 0.0, cutoff, contrast_invariant, window)
    yield Progress("drift", 1, n_frames, AlignmentStep(reference, n_frames,
                                                       shifts[reference].copy()))
    for done, frame in enumerate(order, start=2):
        neighbour = frame - 1 if frame > reference else frame + 1
        if mode == "previous":
            step_registration = _Registration(np.asarray(frames[neighbour]), 0.0, cutoff,
                                              contrast_invariant, window)
            step, _ = step_registration.shift(np.asarray(frames[frame]), np.zeros(2),
                                              float(max_shift), upsample)
            shifts[frame] = shifts[neighbour] + step
        else:
            shifts[frame], _ = registration.shift(np.asarray(frames[frame]), shifts[neighbour],
                                                  float(max_shift), upsample)
        yield Progress("drift", done, n_frames, AlignmentStep(frame, n_frames,
                                                              shifts[frame].copy()))
    return shifts


def estimate_drift(frames: Sequence[np.ndarray] | np.ndarray, reference: int = 0,
                   max_shift: float | None = None, mode: str = "reference",
                   contrast_invariant: bool = False, cutoff: float = DEFAULT_CUTOFF,
                   upsample: int = 20, sampling: float | None = None, window: str = "hann"
                   ) -> np.ndarray:
    """Drift of every frame of a video relative to a reference frame.

    Parameters
    ----------
    frames : array_like
        (T, rows, columns) video (a NumPy or Dask array, or a list of frames), T ≥ 2.
    reference : int, optional
        The frame that defines the coordinates (default: the first).
    max_shift : float, optional
        Largest drift between neighbouring frames [px]: each frame is searched within this
        distance of its neighbour's drift, so the total drift may be much larger. Default:
        0.9 Å when `sampling` is given (below half a lattice period: a larger bound lets the
        correlation jump by a lattice vector), else 1/8 of the smaller side.
    mode : {"reference", "previous"}, optional
        ``"reference"``: every frame is registered to the reference frame (no accumulated error;
        best when the sample changes little). ``"previous"``: every frame is registered to its
        neighbour and the steps are summed (robust when the sample changes over the video; the
        error grows as √T).
    contrast_invariant, cutoff, upsample
        As in :func:`estimate_shift`.
    sampling : float, optional
        Pixel size [Å/px], for the default `max_shift`.
    window : {"hann", "auto", "tukey"}, optional
        Apodising window (see :func:`estimate_shift`): ``"tukey"`` when the crystal fills the
        frame; ``"auto"`` chooses once, on the reference and its neighbour. One window per
        video, so every frame is registered the same way.

    Returns
    -------
    numpy.ndarray
        (T, 2) drift ``(dy, dx)`` [px] of each frame; zero for the reference.
    """
    return run(iter_estimate_drift(frames, reference, max_shift, mode, contrast_invariant,
                                         cutoff, upsample, sampling, window))


def apply_shifts(images: np.ndarray, shifts: np.ndarray, order: int = 3) -> np.ndarray:
    """Undo the shifts: resample every image into the reference frame.

    Parameters
    ----------
    images : numpy.ndarray
        (N, rows, columns) stack.
    shifts : numpy.ndarray
        (N, 2) shifts from :func:`align_focal_series` or :func:`estimate_drift`.
    order : int, optional
        Spline order of the interpolation.

    Returns
    -------
    numpy.ndarray
        float32 stack of the same shape; pixels that came from outside an image are NaN (see
        :func:`common_area` to crop them away).
    """
    images = _check_stack(images, 1, "images to shift")
    shifts = np.asarray(shifts, dtype=float)
    if shifts.shape != (images.shape[0], 2):
        raise TEMAtomsError(f"{images.shape[0]} images need ({images.shape[0]}, 2) shifts, "
                            f"got {shifts.shape}")
    aligned = np.empty(images.shape, dtype=np.float32)
    for index, (image, shift) in enumerate(zip(images, shifts, strict=True)):
        aligned[index] = ndimage.shift(np.asarray(image, dtype=np.float32), -shift, order=order,
                                       mode="constant", cval=np.nan, prefilter=order > 1)
    return aligned


def common_area(shape: Sequence[int], shifts: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns that every aligned image covers (crop with ``stack[:, rows, cols]``).

    Parameters
    ----------
    shape : (int, int)
        Image shape (rows, columns).
    shifts : numpy.ndarray
        (N, 2) shifts that :func:`apply_shifts` undid.

    Returns
    -------
    (slice, slice)
        Row and column slices of the common area.
    """
    shifts = np.asarray(shifts, dtype=float)
    rows, cols = int(shape[-2]), int(shape[-1])
    # aligned[r] = image[r + s]: a positive shift loses the far edge, a negative one the near.
    start = np.ceil(np.maximum(-shifts.min(axis=0), 0.0)).astype(int)
    cut = np.ceil(np.maximum(shifts.max(axis=0), 0.0)).astype(int)
    row_slice = slice(int(start[0]), rows - int(cut[0]))
    col_slice = slice(int(start[1]), cols - int(cut[1]))
    if row_slice.stop - row_slice.start < 1 or col_slice.stop - col_slice.start < 1:
        raise TEMAtomsError(f"the shifts {shifts.tolist()} leave no area common to all images")
    return row_slice, col_slice
