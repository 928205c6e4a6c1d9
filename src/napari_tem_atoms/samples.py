"""Sample data: a synthetic HRTEM-like stack made on the spot, and fetched samples (pooch).

The synthetic stack is not a multislice simulation: it is a quick, physically shaped stand-in
(a gold particle in a [110] zone axis as a phase object whose phase grows with the number of
atoms per column, an amorphous support, imaged through the training microscope model with
negative Cs; drift, surface atoms that come and go, shot noise) that opens in a second without
a network or abTEM, so that every widget has something to work on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ._cache import fetch_file
from .simulation.microscope import MicroscopeSettings, form_image, shift_waves

__all__ = ["REMOTE_SAMPLES", "RemoteSample", "SyntheticStack", "fetch_sample",
           "synthetic_focal_series", "synthetic_gold_stack"]

#: Lattice constant of gold [Å].
GOLD_LATTICE_CONSTANT = 4.078


@dataclass
class SyntheticStack:
    """A synthetic HRTEM stack and its truth.

    Attributes
    ----------
    images : numpy.ndarray
        (frame, y, x) float32 intensities in electrons per pixel.
    sampling : float
        Pixel size [Å/px].
    columns : pandas.DataFrame
        The true atomic columns present in each frame: ``frame``, ``y``, ``x`` (pixels, napari
        convention), ``site`` (lattice site index), ``n_atoms`` (atoms in the column).
    drift : numpy.ndarray
        (frame, 2) shift of the particle in each frame [px], (y, x).
    dose : float
        Electron dose per frame [e/Å²].

    """

    images: np.ndarray
    sampling: float
    columns: pd.DataFrame
    drift: np.ndarray
    dose: float
    sites: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)


def _gold_110_columns(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Projected column positions [Å] of a round fcc gold particle seen along [110].

    Also returns the number of atoms in each column (a sphere's chord over the atom spacing).
    """
    a = GOLD_LATTICE_CONSTANT
    cell_x, cell_y = a / np.sqrt(2.0), a  # [1-10] and [001] in the image plane
    n = int(np.ceil(radius / min(cell_x, cell_y))) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    corners = np.stack([j * cell_y, i * cell_x], -1).reshape(-1, 2)
    centres = corners + np.array([cell_y / 2, cell_x / 2])
    positions = np.concatenate([corners, centres])  # the centred rectangular lattice
    r = np.hypot(positions[:, 0], positions[:, 1])
    inside = r < radius
    chord = 2.0 * np.sqrt(np.clip(radius**2 - r[inside] ** 2, 0.0, None))
    atom_spacing = a / np.sqrt(2.0)  # along [110]
    n_atoms = np.maximum(1, np.round(chord / atom_spacing)).astype(int)
    return positions[inside], n_atoms


def _render(shape: tuple[int, int], positions_px: np.ndarray, weights: np.ndarray,
            sigma_px: float) -> np.ndarray:
    """Sum of Gaussians of width `sigma_px` at sub-pixel `positions_px` (y, x)."""
    image = np.zeros(shape, dtype=np.float64)
    half = int(np.ceil(4 * sigma_px))
    offsets = np.arange(-half, half + 1)
    for (y, x), weight in zip(positions_px, weights, strict=True):
        row0, col0 = round(y), round(x)
        rows, cols = row0 + offsets, col0 + offsets
        keep_r = (rows >= 0) & (rows < shape[0])
        keep_c = (cols >= 0) & (cols < shape[1])
        if not keep_r.any() or not keep_c.any():
            continue
        gy = np.exp(-0.5 * ((rows[keep_r] - y) / sigma_px) ** 2)
        gx = np.exp(-0.5 * ((cols[keep_c] - x) / sigma_px) ** 2)
        image[np.ix_(rows[keep_r], cols[keep_c])] += weight * np.outer(gy, gx)
    return image


def synthetic_gold_stack(
    n_frames: int = 12,
    shape: tuple[int, int] = (384, 384),
    sampling: float = 0.12,
    particle_radius: float = 15.0,
    dose: float = 5000.0,
    surface_occupancy: float = 0.75,
    drift_per_frame: float = 0.6,
    seed: int = 0,
) -> SyntheticStack:
    """Make a synthetic HRTEM-like stack of a gold nanoparticle on amorphous carbon.

    Parameters
    ----------
    n_frames : int, optional
        Number of frames.
    shape : (int, int), optional
        Frame size (rows, columns) [px].
    sampling : float, optional
        Pixel size [Å/px].
    particle_radius : float, optional
        Radius of the particle [Å].
    dose : float, optional
        Electron dose per frame [e/Å²]; sets the shot noise.
    surface_occupancy : float, optional
        Long-run fraction of frames in which each outermost column is present; surface columns
        switch on and off as Markov chains (a stand-in for surface diffusion).
    drift_per_frame : float, optional
        Standard deviation of the random-walk drift per frame [px].
    seed : int, optional
        Seed of the random generator; the same seed gives the same stack.

    Returns
    -------
    SyntheticStack
        The images and the true column positions of every frame.

    """
    rng = np.random.default_rng(seed)
    positions, n_atoms = _gold_110_columns(particle_radius)
    angle = rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    positions = positions @ rotation.T
    centre = np.array(shape, dtype=float) / 2.0
    sites_px = centre + positions / sampling

    # Surface columns: the outermost shell of columns flickers.
    radius_of_site = np.hypot(*positions.T)
    is_surface = radius_of_site > particle_radius - 1.6
    p_off = 0.25  # chance per frame that a present surface column leaves
    p_on = p_off * surface_occupancy / (1.0 - surface_occupancy)
    present = np.ones((n_frames, len(sites_px)), dtype=bool)
    state = rng.random(len(sites_px)) < surface_occupancy
    for frame in range(n_frames):
        if frame:
            flip = rng.random(len(sites_px))
            state = np.where(state, flip >= p_off, flip < p_on)
        present[frame] = np.where(is_surface, state, True)

    drift = np.cumsum(rng.normal(0.0, drift_per_frame, size=(n_frames, 2)), axis=0)
    drift -= drift[0]
    # The exit wave is a phase object on a grid twice as fine as the image: each column shifts
    # the phase by about 0.15 rad per atom (less than linearly, as channelling saturates), the
    # amorphous carbon support by a smooth random 0.1 rad; it is imaged through the same
    # microscope model as the training data (negative Cs, overfocus: bright columns).
    fine = sampling / 2.0
    fine_shape = (2 * shape[0], 2 * shape[1])
    pad = int(np.ceil(np.abs(drift).max() * 2)) + 4
    support = ndimage.gaussian_filter(
        rng.normal(size=(fine_shape[0] + 2 * pad, fine_shape[1] + 2 * pad)), sigma=1.0 / fine)
    support *= 0.1 / support.std()
    microscope = MicroscopeSettings(defocus=-60.0, cs=-15e4, focal_spread=30.0,
                                    sampling=sampling, dose=dose)
    sigma_fine = 0.35 / fine
    images = np.empty((n_frames, *shape), dtype=np.float32)
    rows = []
    for frame in range(n_frames):
        here = present[frame]
        columns_fine = 2.0 * (sites_px[here] + drift[frame])
        phase = _render(fine_shape, columns_fine, 0.15 * n_atoms[here] ** 0.8, sigma_fine)
        shift = np.round(2.0 * drift[frame]).astype(int)
        phase += support[pad + shift[0]: pad + shift[0] + fine_shape[0],
                         pad + shift[1]: pad + shift[1] + fine_shape[1]]
        wave = np.exp(1j * phase - 0.02 * phase).astype(np.complex64)
        image, _ = form_image(wave[None], fine, microscope, rng, aperture=1.0 / (4 * fine))
        images[frame] = image[: shape[0], : shape[1]]
        for site in np.flatnonzero(here):
            y, x = sites_px[site] + drift[frame]
            if 0 <= y <= shape[0] - 1 and 0 <= x <= shape[1] - 1:
                rows.append((frame, y, x, site, n_atoms[site]))

    columns = pd.DataFrame(rows, columns=["frame", "y", "x", "site", "n_atoms"])
    sites = pd.DataFrame({
        "site": np.arange(len(sites_px)), "y": sites_px[:, 0], "x": sites_px[:, 1],
        "n_atoms": n_atoms, "surface": is_surface, "occupancy": present.mean(axis=0),
    })
    return SyntheticStack(images=images, sampling=sampling, columns=columns, drift=drift,
                          dose=dose, sites=sites)


def synthetic_focal_series(
    shifts: np.ndarray | None = None,
    defoci: tuple[float, ...] = (-80.0, 0.0, 80.0),
    dose: float = 1e4,
    sampling: float = 0.1,
    shape: tuple[int, int] = (256, 256),
    particle_radius: float = 8.0,
    cs: float = -15e4,
    seed: int = 0,
) -> np.ndarray:
    """A focal series of one gold particle on carbon, each image shifted by a known amount.

    The particle and support are the phase object of :func:`synthetic_gold_stack`; each image is
    formed at its own defocus (column contrast changes and reverses between them) with its own
    shot noise, after a sub-pixel shift of the exit wave (a Fourier phase ramp: exact).

    Parameters
    ----------
    shifts : numpy.ndarray, optional
        (N, 2) shift ``(dy, dx)`` [px] of each image; default: none.
    defoci : tuple of float, optional
        Defocus of each image [Å], abTEM's sign (``defocus = −C10``).
    dose : float, optional
        Electron dose per image [e/Å²].
    sampling : float, optional
        Pixel size [Å/px].
    shape : (int, int), optional
        Image size [px].
    particle_radius : float, optional
        Radius of the particle [Å].
    cs : float, optional
        Spherical aberration [Å] (default −15 µm).
    seed : int, optional
        Seed of the support and the noise.

    Returns
    -------
    numpy.ndarray
        (N, rows, cols) float32 series.
    """
    rng = np.random.default_rng(seed)
    shifts = np.zeros((len(defoci), 2)) if shifts is None else np.asarray(shifts, dtype=float)
    fine = sampling / 2.0
    fine_shape = (2 * shape[0], 2 * shape[1])
    positions, n_atoms = _gold_110_columns(particle_radius)
    centre = np.array(fine_shape, dtype=float) / 2.0
    phase = _render(fine_shape, centre + positions / fine, 0.15 * n_atoms**0.8, 0.35 / fine)
    support = ndimage.gaussian_filter(rng.normal(size=fine_shape), 1.0 / fine, mode="wrap")
    phase = phase + 0.1 * support / support.std()
    wave = np.exp(1j * phase - 0.02 * phase)
    images = []
    for defocus, shift in zip(defoci, shifts, strict=True):
        shifted = shift_waves(wave, 2 * shift)  # 2 fine pixels per image pixel
        settings = MicroscopeSettings(defocus=defocus, cs=cs, focal_spread=30.0,
                                      sampling=sampling, dose=dose)
        image, _ = form_image(shifted[None], fine, settings, rng, aperture=1.0 / (4 * fine))
        images.append(image[: shape[0], : shape[1]])
    return np.array(images, dtype=np.float32)


@dataclass(frozen=True)
class RemoteSample:
    """A published sample file that is fetched once and cached (see :func:`fetch_sample`).

    Attributes
    ----------
    name : str
        Short name used to ask for it.
    url : str
        Where it is published.
    sha256 : str
        Its SHA-256; a file with another hash is refused.
    description : str
        One line: what it shows, microscope, dose, pixel size.

    """

    name: str
    url: str
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        """File name in the cache."""
        return self.url.rsplit("/", 1)[-1]


#: Fetched samples by name. Experimental data sets register here once they are published
#: with a stable address and hash; none is registered yet.
REMOTE_SAMPLES: dict[str, RemoteSample] = {}


def fetch_sample(sample: str | RemoteSample) -> Path:
    """Download a registered sample once, check its hash, and return its cached path.

    Parameters
    ----------
    sample : str or RemoteSample
        A name in :data:`REMOTE_SAMPLES`, or a sample description.

    Returns
    -------
    pathlib.Path
        The local file, inside the cache folder (``$NAPARI_TEM_ATOMS_CACHE/samples``).

    """
    if isinstance(sample, str):
        if sample not in REMOTE_SAMPLES:
            known = ", ".join(sorted(REMOTE_SAMPLES)) or "none yet"
            raise KeyError(f"no sample named {sample!r}; registered samples: {known}")
        sample = REMOTE_SAMPLES[sample]
    return fetch_file(sample.url, sample.sha256, sample.filename, kind="samples")
