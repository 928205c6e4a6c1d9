"""Simulated diffusion videos with known truth, to validate the occupancy analysis.

A gold nanoparticle seen along [110]: every surface column switches between present and absent
as a two-state Markov chain with its own rates (known), the rest of the particle stays. Each
frame is a fresh abTEM multislice exit wave of the atoms present (one frozen-phonon
configuration per frame: thermal vibration changes from frame to frame as it does in a real
video), shifted by a random-walk drift and imaged through the detector's microscope model with
Poisson noise at the dose per frame. Needs the ``simulate`` extra (abTEM, ase).

:func:`simulate_adatom_video` is what surface diffusion looks like: the particle stays whole,
and single adatoms and two-atom columns on hollow sites one layer outside its surface come and
go, faster at edges and corners than on facets, in a slow regime (as in vacuum) or a fast one
(as in oxygen). Its truth comes from the geometry alone, not from the analysis it validates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .columns import column_labels, project_columns
from .exit_waves import ExitWaveConfig, _configure_abtem, _multislice
from .microscope import MicroscopeSettings, form_image, shift_waves
from .structures import GOLD_LATTICE_CONSTANT

__all__ = ["DIFFUSION_REGIMES", "DiffusionVideo", "outline_columns", "simulate_adatom_video",
           "simulate_diffusion_video"]

#: Leaving rates per frame of adatoms on facets, by regime; at edges and corners twice that.
DIFFUSION_REGIMES = {"slow": (0.03, 0.10), "fast": (0.12, 0.30)}


@dataclass
class DiffusionVideo:
    """A simulated video and its truth.

    Attributes
    ----------
    frames : numpy.ndarray
        (T, rows, cols) float32 counts.
    sampling : float
        Pixel size [Å/px].
    sites : pandas.DataFrame
        One row per column: ``site``, ``y``, ``x`` (first-frame pixels), ``n_atoms``,
        ``surface`` (switches), ``rate_off``, ``rate_on`` (per frame), ``occupancy`` (the
        fraction of frames it was present in this video); adatom videos add ``kind``
        (``"particle"``, ``"facet"`` or ``"edge"``: an adatom site with few particle atoms
        around it, at an edge or a corner).
    present : numpy.ndarray
        (T, sites) bool: which columns were there in each frame.
    drift : numpy.ndarray
        (T, 2) drift ``(dy, dx)`` [px], zero in the first frame.
    dose : float
        Electron dose per frame [e/Å²].
    """

    frames: np.ndarray
    sampling: float
    sites: pd.DataFrame
    present: np.ndarray
    drift: np.ndarray
    dose: float


def _particle(rng: np.random.Generator, diameter: float):
    """A truncated octahedron of gold along [110], rotated at random about the beam."""
    from ase import Atoms
    from ase.cluster import Octahedron

    length = max(5, round(diameter / 2.45))  # atoms along an edge: 2.45 Å of width each
    atoms = Atoms(Octahedron("Au", length=length, cutoff=max(1, length // 3)))
    atoms.positions -= atoms.positions.mean(axis=0)
    atoms.rotate((1, 1, 0), (0, 0, 1), center=(0, 0, 0))
    atoms.rotate(float(rng.uniform(0, 360)), "z", center=(0, 0, 0))
    return atoms


def simulate_adatom_video(
    n_frames: int = 40,
    dose: float = 500.0,
    sampling: float = 0.1,
    diameter: float = 30.0,
    adatom_sites: int = 20,
    regime: str = "slow",
    occupancy_range: tuple[float, float] = (0.1, 0.9),
    drift_per_frame: float = 0.5,
    defocus_jitter: float = 5.0,
    microscope: MicroscopeSettings | None = None,
    seed: int = 0,
) -> DiffusionVideo:
    """Simulate an HRTEM video of a particle whose adatoms (1-2 atom columns) come and go.

    Parameters
    ----------
    n_frames : int, optional
        Number of frames.
    dose : float, optional
        Electron dose per frame [e/Å²].
    sampling : float, optional
        Pixel size [Å/px].
    diameter : float, optional
        Approximate particle diameter [Å] (a truncated octahedron along [110]).
    adatom_sites : int, optional
        Adatom columns (hollow sites one layer outside the surface; one or two atoms each).
    regime : {"slow", "fast"}, optional
        Leaving rates of :data:`DIFFUSION_REGIMES` (facets; edges and corners twice as fast).
    occupancy_range : (float, float), optional
        Long-run occupancy of each adatom site, drawn uniformly.
    drift_per_frame : float, optional
        Standard deviation of the random-walk drift per frame [px].
    defocus_jitter : float, optional
        Standard deviation of the defocus from frame to frame [Å].
    microscope : MicroscopeSettings, optional
        Default as :func:`simulate_diffusion_video`.
    seed : int, optional
        The same seed gives the same video.

    Returns
    -------
    DiffusionVideo
        ``sites`` has the particle's columns (``kind`` "particle", always present) and the
        adatom sites.
    """
    from scipy.spatial import cKDTree

    from .structures import add_adatoms

    if regime not in DIFFUSION_REGIMES:
        raise ValueError(f"regime must be one of {', '.join(DIFFUSION_REGIMES)}")
    _configure_abtem()
    rng = np.random.default_rng(seed)
    from ase import Atoms
    from ase.cluster import Octahedron

    length = max(5, round(diameter / 2.45))
    particle = Octahedron("Au", length=length, cutoff=max(1, length // 3),
                          latticeconstant=GOLD_LATTICE_CONSTANT).positions
    adatoms = add_adatoms(particle, np.array([1.0, 1.0, 0.0]) / np.sqrt(2), rng, adatom_sites)
    atoms = Atoms(f"Au{len(particle) + len(adatoms)}", positions=np.vstack([particle, adatoms]))
    atoms.positions -= atoms.positions[: len(particle)].mean(axis=0)
    atoms.rotate((1, 1, 0), (0, 0, 1), center=(0, 0, 0))
    atoms.rotate(float(rng.uniform(0, 360)), "z", center=(0, 0, 0))
    labels = column_labels(atoms.positions)
    columns = project_columns(atoms.positions)
    is_adatom_column = np.zeros(len(columns), dtype=bool)
    is_adatom_column[np.unique(labels[len(particle):])] = True
    # Edges and corners: adatom sites with fewer particle atoms within two bond lengths.
    crowd = np.array([len(n) for n in cKDTree(atoms.positions[: len(particle)]).query_ball_point(
        [atoms.positions[labels == c].mean(axis=0) for c in range(len(columns))],
        2 * GOLD_LATTICE_CONSTANT / np.sqrt(2) + 0.3)])
    adatom_crowd = crowd[is_adatom_column]
    edge = is_adatom_column & (crowd < (np.median(adatom_crowd) if len(adatom_crowd) else 0))
    kind = np.where(~is_adatom_column, "particle", np.where(edge, "edge", "facet"))
    low, high = DIFFUSION_REGIMES[regime]
    n_sites = len(columns)
    occupancy = np.where(is_adatom_column, rng.uniform(*occupancy_range, n_sites), 1.0)
    rate_off = np.where(is_adatom_column, rng.uniform(low, high, n_sites), 0.0)
    rate_off = np.where(edge, np.minimum(2 * rate_off, 0.9), rate_off)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_on = np.where(is_adatom_column,
                           np.minimum(rate_off * occupancy / (1 - occupancy), 1.0), 0.0)
    present = _markov_presence(rng, n_frames, is_adatom_column, occupancy, rate_off, rate_on)
    microscope = microscope or MicroscopeSettings(defocus=-60.0, cs=-15e4, focal_spread=30.0)
    return _render(atoms, labels, columns, present, is_adatom_column, rate_off, rate_on, kind,
                   n_frames, dose, sampling, drift_per_frame, microscope, rng,
                   defocus_jitter=defocus_jitter)


def outline_columns(positions: np.ndarray,
                    lattice_constant: float = GOLD_LATTICE_CONSTANT) -> np.ndarray:
    """Which columns of an fcc particle seen along [110] lie on its outline (the truth).

    Along [110] the columns of an fcc crystal form a centred rectangular lattice: every
    column inside the particle has six neighbouring columns within a/√2 (four {111} neighbours
    at a√(3/8) and two at a/√2). A column with fewer lies on the outline: these are the
    surface columns that come and go. Geometry alone, not the analysis the videos validate.

    Parameters
    ----------
    positions : numpy.ndarray
        (N, 2) projected column positions [Å].
    lattice_constant : float, optional
        The fcc lattice constant a [Å].

    Returns
    -------
    numpy.ndarray
        (N,) bool.
    """
    from scipy.spatial import cKDTree

    reach = 1.05 * lattice_constant / math.sqrt(2)  # a little over a/√2: rounding
    neighbours = cKDTree(positions).query_ball_point(positions, reach, return_length=True)
    return np.asarray(neighbours) - 1 < 6  # each column finds itself


def _markov_presence(rng: np.random.Generator, n_frames: int, switching: np.ndarray,
                     occupancy: np.ndarray, rate_off: np.ndarray, rate_on: np.ndarray
                     ) -> np.ndarray:
    """(T, sites) presence: two-state Markov chains where `switching`, present elsewhere."""
    n_sites = len(switching)
    present = np.ones((n_frames, n_sites), dtype=bool)
    state = rng.random(n_sites) < occupancy
    for frame in range(n_frames):
        if frame:
            draw = rng.random(n_sites)
            state = np.where(state, draw >= rate_off, draw < rate_on)
        present[frame] = np.where(switching, state, True)
    return present


def _render(atoms, labels: np.ndarray, columns: np.ndarray, present: np.ndarray,
            switching: np.ndarray, rate_off: np.ndarray, rate_on: np.ndarray,
            kind: np.ndarray | None, n_frames: int, dose: float, sampling: float,
            drift_per_frame: float, microscope: MicroscopeSettings, rng: np.random.Generator,
            defocus_jitter: float = 0.0) -> DiffusionVideo:
    """Image every frame (a multislice of the atoms present, drift, microscope, noise)."""
    config = ExitWaveConfig()
    extent = float(np.ptp(atoms.positions[:, :2], axis=0).max())
    margin = 8.0 + 3.0 * drift_per_frame * math.sqrt(n_frames) * sampling
    field = 4.0 * math.ceil((extent + 2 * margin) / 4.0)
    thickness = float(np.ptp(atoms.positions[:, 2])) + 4.0
    atoms.positions += [field / 2, field / 2, thickness / 2]
    atoms.set_cell((field, field, thickness))
    atoms.pbc = True
    columns_px = (columns[:, :2] + field / 2) / sampling
    microscope = MicroscopeSettings(**{**microscope.as_dict(), "sampling": sampling,
                                       "dose": dose})
    drift = np.cumsum(rng.normal(0.0, drift_per_frame, size=(n_frames, 2)), axis=0)
    drift -= drift[0]
    frames = []
    for frame in range(n_frames):
        vibrating = atoms[present[frame][labels]]
        vibrating.positions += rng.normal(0.0, config.rms_displacement, vibrating.positions.shape)
        waves = _multislice(vibrating, field, config, 1, seed=0)
        # Drift: shift the periodic exit wave by a phase ramp (exact for any sub-pixel shift).
        waves = shift_waves(waves, drift[frame] * sampling, config.stored_sampling)
        settings = microscope
        if defocus_jitter:
            settings = MicroscopeSettings(**{**microscope.as_dict(), "defocus": float(
                microscope.defocus + rng.normal(0.0, defocus_jitter))})
        image, exact = form_image(waves, config.stored_sampling, settings, rng,
                                  aperture=config.aperture)
        frames.append(image)
    shape = min(f.shape[0] for f in frames), min(f.shape[1] for f in frames)
    stack = np.stack([f[: shape[0], : shape[1]] for f in frames])
    scale = sampling / exact  # the recorded grid may differ from `sampling` by rounding
    sites = pd.DataFrame({
        "site": np.arange(len(columns)), "y": columns_px[:, 0] * scale,
        "x": columns_px[:, 1] * scale, "n_atoms": columns[:, 2].astype(int),
        "surface": switching, "rate_off": rate_off, "rate_on": rate_on,
        "occupancy": present.mean(axis=0),
    })
    if kind is not None:
        sites["kind"] = kind
    return DiffusionVideo(frames=stack, sampling=float(exact), sites=sites, present=present,
                          drift=drift * scale, dose=dose)


def simulate_diffusion_video(
    n_frames: int = 100,
    dose: float = 500.0,
    sampling: float = 0.1,
    diameter: float = 25.0,
    occupancy_range: tuple[float, float] = (0.3, 0.9),
    switch_range: tuple[float, float] = (0.05, 0.4),
    drift_per_frame: float = 0.5,
    microscope: MicroscopeSettings | None = None,
    seed: int = 0,
) -> DiffusionVideo:
    """Simulate an HRTEM video of a particle whose surface columns come and go.

    Parameters
    ----------
    n_frames : int, optional
        Number of frames.
    dose : float, optional
        Electron dose per frame [e/Å²].
    sampling : float, optional
        Pixel size [Å/px].
    diameter : float, optional
        Approximate particle diameter [Å].
    occupancy_range : (float, float), optional
        Long-run occupancy of each surface column, drawn uniformly from this range.
    switch_range : (float, float), optional
        Rate of leaving (per frame, while present), drawn uniformly; the rate of returning
        follows from the occupancy: ``on = off × p / (1 − p)`` (capped at 1).
    drift_per_frame : float, optional
        Standard deviation of the random-walk drift per frame [px].
    microscope : MicroscopeSettings, optional
        The microscope; default: 300 kV, Cs −15 µm, 60 Å overfocus (C10 = +60 Å, abTEM
        ``defocus`` −60 Å), focal spread 30 Å: bright columns.
    seed : int, optional
        Seed: the same seed gives the same video.

    Returns
    -------
    DiffusionVideo
        Frames and truth.
    """
    _configure_abtem()
    rng = np.random.default_rng(seed)
    atoms = _particle(rng, diameter)
    labels = column_labels(atoms.positions)
    columns = project_columns(atoms.positions)  # (y, x, n) [Å], rows indexed by label

    surface = outline_columns(columns[:, :2])
    n_sites = len(columns)
    occupancy = np.where(surface, rng.uniform(*occupancy_range, n_sites), 1.0)
    rate_off = np.where(surface, rng.uniform(*switch_range, n_sites), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_on = np.where(surface, np.minimum(rate_off * occupancy / (1 - occupancy), 1.0), 0.0)
    present = _markov_presence(rng, n_frames, surface, occupancy, rate_off, rate_on)
    microscope = microscope or MicroscopeSettings(defocus=-60.0, cs=-15e4, focal_spread=30.0)
    return _render(atoms, labels, columns, present, surface, rate_off, rate_on, None,
                   n_frames, dose, sampling, drift_per_frame, microscope, rng)
