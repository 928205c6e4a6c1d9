"""A randomised HRTEM microscope applied to exit waves.

Aberrations, partial coherence, detector MTF, blur, sampling, contrast and shot noise.

Conventions follow abTEM: arrays here are (y, x) images (abTEM's are (x, y)-indexed and are
transposed when stored); ``defocus`` is ``-C10`` (a positive defocus is underfocus), so for a
positive Cs the Scherzer defocus is positive and for negative-Cs imaging (bright atoms,
overfocus) the defocus is negative. The phase error (:mod:`napari_tem_atoms.optics`) is

    χ(α, φ) = 2π/λ [½ α² (C10 + C12 cos 2(φ − φ12)) + ¼ α⁴ Cs],   α = λk,

the wave is multiplied by exp(−iχ) and by the temporal-coherence envelope
exp(−(½ π λ Δ k²)²) with focal spread Δ (abTEM's quasi-coherent model).

References
----------
Madsen et al., "A deep learning approach to identify local structures in atomic-resolution
transmission electron microscopy images", Adv. Theory Simul. 1, 1800037 (2018).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import fft as sp_fft

from .. import optics
from ..optics import wavelength

__all__ = ["MicroscopeEnvelope", "MicroscopeSettings", "expected_image", "form_image",
           "fourier_resample", "phase_error", "shift_waves", "wavelength"]


@dataclass(frozen=True)
class MicroscopeSettings:
    """One microscope, as drawn for one training image.

    Attributes
    ----------
    energy : float
        Beam energy [eV].
    defocus : float
        Defocus [Å] (abTEM convention, ``-C10``).
    cs : float
        Spherical aberration C30 [Å] (1 µm = 10⁴ Å).
    astigmatism : float
        Two-fold astigmatism C12 [Å].
    astigmatism_angle : float
        Its azimuth φ12 [rad].
    focal_spread : float
        Focal spread Δ [Å] of the temporal-coherence envelope.
    sampling : float
        Pixel size of the recorded image [Å/px].
    dose : float
        Electron dose [e/Å²].
    blur : float
        Standard deviation of an isotropic Gaussian blur (vibration, drift) [Å].
    mtf_floor, mtf_half, mtf_power : float
        Detector MTF(q) = floor + (1 - floor) / (1 + (q / half)^power), q in units of the
        Nyquist frequency.
    gamma : float
        Non-linear contrast applied to the intensity before the noise.
    """

    energy: float = 300e3
    defocus: float = 0.0
    cs: float = 0.0
    astigmatism: float = 0.0
    astigmatism_angle: float = 0.0
    focal_spread: float = 30.0
    sampling: float = 0.1
    dose: float = 1000.0
    blur: float = 0.0
    mtf_floor: float = 1.0
    mtf_half: float = 1.0
    mtf_power: float = 2.0
    gamma: float = 1.0

    def as_dict(self) -> dict[str, float]:
        """The settings as a plain dictionary (for logs and model cards)."""
        return asdict(self)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


@dataclass(frozen=True)
class MicroscopeEnvelope:
    """The ranges microscopes are drawn from for training (documented in the model card).

    Ranges are uniform unless said otherwise; sampling and dose are log-uniform.
    """

    energy: float = 300e3
    defocus: tuple[float, float] = (-200.0, 200.0)  # [Å], abTEM sign (defocus = -C10)
    cs: tuple[float, float] = (-30e4, 30e4)  # [Å] = -30..+30 µm
    astigmatism: tuple[float, float] = (0.0, 50.0)  # [Å]
    focal_spread: tuple[float, float] = (20.0, 50.0)  # [Å]
    sampling: tuple[float, float] = (0.05, 0.25)  # [Å/px], log-uniform
    dose: tuple[float, float] = (10.0, 1e4)  # [e/Å²], log-uniform
    blur: tuple[float, float] = (0.0, 0.3)  # [Å]
    mtf_floor: tuple[float, float] = (0.0, 0.6)
    mtf_half: tuple[float, float] = (0.4, 1.2)
    mtf_power: tuple[float, float] = (1.5, 4.0)
    gamma: tuple[float, float] = (0.85, 1.15)
    #: Chance that the MTF is perfect (direct electron detector in counting mode).
    perfect_mtf_probability: float = 0.25
    extra: dict = field(default_factory=dict, compare=False)

    def draw(self, rng: np.random.Generator) -> MicroscopeSettings:
        """Draw one microscope."""
        perfect = rng.random() < self.perfect_mtf_probability
        return MicroscopeSettings(
            energy=self.energy,
            defocus=_uniform(rng, self.defocus),
            cs=_uniform(rng, self.cs),
            astigmatism=_uniform(rng, self.astigmatism),
            astigmatism_angle=float(rng.uniform(0, np.pi)),
            focal_spread=_uniform(rng, self.focal_spread),
            sampling=_log_uniform(rng, self.sampling),
            dose=_log_uniform(rng, self.dose),
            blur=_uniform(rng, self.blur),
            mtf_floor=1.0 if perfect else _uniform(rng, self.mtf_floor),
            mtf_half=_uniform(rng, self.mtf_half),
            mtf_power=_uniform(rng, self.mtf_power),
            gamma=_uniform(rng, self.gamma),
        )

    def as_dict(self) -> dict:
        """The envelope as a plain dictionary (for the model card)."""
        values = asdict(self)
        values.pop("extra")
        return values


def _frequencies(shape: tuple[int, int], sampling: float) -> tuple[np.ndarray, np.ndarray]:
    ky = np.fft.fftfreq(shape[0], sampling)[:, None]
    kx = np.fft.fftfreq(shape[1], sampling)[None, :]
    return ky, kx


def phase_error(ky: np.ndarray, kx: np.ndarray, settings: MicroscopeSettings) -> np.ndarray:
    """The aberration phase χ [rad] of `settings` at spatial frequencies (`ky`, `kx`) [1/Å].

    :func:`napari_tem_atoms.optics.phase_error` with this microscope's aberrations.
    """
    return optics.phase_error(ky, kx, settings.energy, settings.defocus, settings.cs,
                              settings.astigmatism, settings.astigmatism_angle)


def transfer_function(shape: tuple[int, int], sampling: float, settings: MicroscopeSettings,
                      aperture: float) -> np.ndarray:
    """Coherent transfer function exp(−iχ) × temporal envelope × aperture on an FFT grid.

    Parameters
    ----------
    shape : (int, int)
        Wave shape (rows, columns).
    sampling : float
        Wave pixel size [Å/px].
    settings : MicroscopeSettings
        The microscope.
    aperture : float
        Spatial frequency cut-off [1/Å] (the band limit of the stored exit waves).
    """
    # Single precision: χ reaches ~100 rad at the aperture, known to ~1e-5 rad; twice as fast.
    ky, kx = (k.astype(np.float32) for k in _frequencies(shape, sampling))
    chi = phase_error(ky, kx, settings)
    k2 = kx**2 + ky**2
    lam = wavelength(settings.energy)
    envelope = np.exp(-((0.5 * np.pi * lam * settings.focal_spread * k2) ** 2))
    return (np.exp(-1j * chi) * envelope * (k2 <= aperture**2)).astype(np.complex64)


def fourier_resample(image: np.ndarray, sampling: float, new_sampling: float
                     ) -> tuple[np.ndarray, float]:
    """Resample a periodic, band-limited image to another pixel size by Fourier padding/cropping.

    Pixel ``[i, j]`` stays at position ``(i, j) × sampling`` (napari's convention: pixel centres
    at integer coordinates), so a position p [Å] is at pixel p / sampling before and after.

    Returns
    -------
    image : numpy.ndarray
        The resampled image.
    sampling : float
        The exact new pixel size (the shape is rounded to whole pixels).
    """
    rows, cols = image.shape
    new_rows = max(2, round(rows * sampling / new_sampling))
    new_cols = max(2, round(cols * sampling / new_sampling))
    # scipy's FFT keeps single precision (numpy's would double the work for no visible gain).
    spectrum = np.fft.fftshift(sp_fft.fft2(np.asarray(image, dtype=np.float32)))
    out = np.zeros((new_rows, new_cols), dtype=np.complex64)
    r, c = min(rows, new_rows), min(cols, new_cols)
    # Keep the zero frequency in place: fftshift puts it at index n // 2 for any size n.
    src_r, dst_r = rows // 2 - r // 2, new_rows // 2 - r // 2
    src_c, dst_c = cols // 2 - c // 2, new_cols // 2 - c // 2
    out[dst_r:dst_r + r, dst_c:dst_c + c] = spectrum[src_r:src_r + r, src_c:src_c + c]
    resampled = sp_fft.ifft2(np.fft.ifftshift(out)).real * (new_rows * new_cols) / (rows * cols)
    return resampled, rows * sampling / new_rows


def shift_waves(waves: np.ndarray, shift: np.ndarray, sampling: float = 1.0) -> np.ndarray:
    """Shift periodic waves by `shift` = (dy, dx) with a Fourier phase ramp (exact, sub-pixel).

    `shift` is in the units of `sampling` (Å with the pixel size in Å/px; pixels with 1).
    """
    ky, kx = _frequencies(waves.shape[-2:], sampling)
    ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(np.fft.fft2(waves) * ramp).astype(np.complex64)


def expected_image(waves: np.ndarray, wave_sampling: float, settings: MicroscopeSettings,
                   aperture: float = 2.0) -> tuple[np.ndarray, float]:
    """The noise-free HRTEM image of exit waves: what the shot noise is drawn around.

    Parameters are those of :func:`form_image` (the dose is not used).

    Returns
    -------
    image : numpy.ndarray
        float32 intensity at the recorded sampling, normalised to a mean of 1 (times the dose
        and the pixel area, the expected electrons per pixel).
    sampling : float
        Its exact pixel size [Å/px].
    """
    ctf = transfer_function(waves.shape[-2:], wave_sampling, settings, aperture)
    intensity = np.zeros(waves.shape[-2:], dtype=np.float32)
    for wave in waves:  # single-precision FFTs: twice as fast, far below the shot noise
        imaged = sp_fft.ifft2(sp_fft.fft2(np.asarray(wave, dtype=np.complex64)) * ctf)
        intensity += imaged.real**2 + imaged.imag**2
    intensity /= len(waves)

    image, sampling = fourier_resample(intensity, wave_sampling, settings.sampling)
    # Detector MTF and blur act on the recorded image.
    ky, kx = _frequencies(image.shape, sampling)
    q = np.sqrt(kx**2 + ky**2) * 2 * sampling  # in units of the Nyquist frequency
    mtf = settings.mtf_floor + (1 - settings.mtf_floor) / (
        1 + (q / settings.mtf_half) ** settings.mtf_power)
    blur = np.exp(-2 * np.pi**2 * settings.blur**2 * (kx**2 + ky**2))
    image = sp_fft.ifft2(sp_fft.fft2(image) * (mtf * blur).astype(np.float32)).real
    image = np.clip(image, 0, None) ** settings.gamma
    image /= max(float(image.mean()), 1e-12)
    return image, sampling


def form_image(waves: np.ndarray, wave_sampling: float, settings: MicroscopeSettings,
               rng: np.random.Generator, aperture: float = 2.0) -> tuple[np.ndarray, float]:
    """Form a noisy HRTEM image from exit waves (one per frozen-phonon configuration).

    Parameters
    ----------
    waves : numpy.ndarray
        (configurations, rows, cols) complex exit waves, (y, x)-indexed, periodic, normalised
        so that vacuum is 1, band-limited to `aperture`.
    wave_sampling : float
        Their pixel size [Å/px]; fine enough to hold the intensity (≤ 1 / (4 × aperture)).
    settings : MicroscopeSettings
        The microscope.
    rng : numpy.random.Generator
        Source of the shot noise.
    aperture : float, optional
        Band limit of the waves [1/Å].

    Returns
    -------
    image : numpy.ndarray
        float32 counts per pixel at the recorded sampling.
    sampling : float
        Its exact pixel size [Å/px].
    """
    image, sampling = expected_image(waves, wave_sampling, settings, aperture)
    electrons_per_pixel = settings.dose * sampling**2
    counts = rng.poisson(image * electrons_per_pixel).astype(np.float32)
    return counts, sampling
