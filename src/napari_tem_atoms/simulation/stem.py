"""STEM images in the incoherent approximation, for training and scoring ``stem-columns``.

A STEM image is recorded one probe position at a time. For annular dark field (HAADF/ADF) the
signal is incoherent: the image is close to the probe intensity convolved with an object made of
one peak per atomic column, whose height grows with the atomic number (about Z^1.5-2) and,
sub-linearly, with the column's length (channelling). Annular bright field (ABF) shows every
column, light ones too, as a dark disc (here: a narrower dip with a weak bright halo, the
column's weight growing as about Z^0.3-0.7). Both are drawn from a wide envelope: probe
aberrations, convergence 15-35 mrad, source size, scan noise (line jitter, fly-back
distortion, drift), detector background and gain, Poisson and Gaussian noise, and sampling
0.05-0.25 Å/px. How close this is to multislice is measured by ``benchmarks/stem_multislice.py``
(abTEM) and stated in the model card.

Positions are (row, col) = (y, x): a column at (y, x) [Å] from the scan's first pixel centre
lies at pixel (y, x) / sampling of an undistorted scan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy.ndimage import gaussian_filter, map_coordinates

from .columns import column_labels
from .microscope import _log_uniform, _uniform, wavelength

__all__ = ["HAADF_LIGHT_Z", "HELD_OUT_STRUCTURES", "STEM_MODES", "TRAINING_STRUCTURES",
           "ProjectedStructure", "StemEnvelope", "StemSettings", "StemStructureSpec",
           "atom_weight", "column_height", "project_structure", "render_stem_image",
           "structure_pool"]

#: Imaging modes the simulator draws (bright columns; dark columns).
STEM_MODES = ("HAADF", "ABF")
#: A column is a target when its signal reaches this fraction of the structure's brightest
#: columns; between IGNORED_FRACTION and this it is neither a target nor an error.
VISIBLE_FRACTION, IGNORED_FRACTION = 0.10, 0.035
#: HAADF: atoms much lighter than this atomic number scatter less to high angles than Z^γ
#: says (see :func:`atom_weight`).
HAADF_LIGHT_Z = 8.0
#: ABF detector signal: ABF_DIRECT + background of the direct beam, less ABF_CONTRAST × the
#: column image (1 for an isolated column of relative signal 1), and at least ABF_FLOOR.
ABF_DIRECT, ABF_CONTRAST, ABF_FLOOR = 0.5, 0.6, 0.02


@dataclass(frozen=True)
class StemStructureSpec:
    """A crystal (or particle) and a zone axis.

    Attributes
    ----------
    name : str
        Name of the material, e.g. ``"SrTiO3"``.
    kind : str
        ``"bulk"`` (a slab filling the field), ``"monolayer"`` (a 2D sheet) or ``"particle"``
        (an fcc nanoparticle in vacuum or on a thin support).
    zone_axis : tuple of int
        Direction [uvw] along the beam, in the cell's basis (hexagonal: three-index).
    """

    name: str
    kind: str
    zone_axis: tuple[int, int, int]

    @property
    def label(self) -> str:
        """``"SrTiO3 [001]"``."""
        return f"{self.name} [{''.join(str(i) for i in self.zone_axis)}]"


def _specs(entries: list[tuple[str, str, list[tuple[int, int, int]]]]) -> tuple:
    return tuple(StemStructureSpec(name, kind, tuple(axis)) for name, kind, axes in entries
                 for axis in axes)


#: What the model is trained on.
TRAINING_STRUCTURES = _specs([
    ("SrTiO3", "bulk", [(0, 0, 1), (1, 1, 0)]),
    ("Au", "bulk", [(0, 0, 1), (1, 1, 0), (1, 1, 1)]),
    ("Pt", "bulk", [(0, 0, 1), (1, 1, 0)]),
    ("Cu", "bulk", [(0, 0, 1), (1, 1, 0)]),
    ("Si", "bulk", [(1, 1, 0), (0, 0, 1)]),
    ("GaAs", "bulk", [(1, 1, 0), (0, 0, 1)]),
    ("GaN", "bulk", [(0, 0, 1), (1, 1, 0)]),
    ("MoS2", "monolayer", [(0, 0, 1)]),
    ("WS2", "monolayer", [(0, 0, 1)]),
    ("Au", "particle", [(1, 1, 0), (0, 0, 1)]),
    ("Pt", "particle", [(1, 1, 0)]),
    # Added for a fine-tuning trial (configs/stem-columns-finetune.toml; the shipped model's
    # configuration names the materials above): weak columns next to heavy ones, dumbbells.
    ("PbTiO3", "bulk", [(1, 1, 0), (0, 0, 1)]),
    ("KTaO3", "bulk", [(1, 1, 0)]),
    ("GaP", "bulk", [(1, 1, 0)]),
    ("CdTe", "bulk", [(1, 1, 0)]),
    ("ZnO", "bulk", [(1, 1, 0)]),
])
#: Never trained on: the held-out evaluation (other perovskites, chalcogenides, metals and
#: semiconductors).
HELD_OUT_STRUCTURES = _specs([
    ("BaTiO3", "bulk", [(0, 0, 1), (1, 1, 0)]),
    ("LaAlO3", "bulk", [(0, 0, 1)]),
    ("Ag", "bulk", [(1, 1, 0), (0, 0, 1)]),
    ("Ge", "bulk", [(1, 1, 0)]),
    ("InP", "bulk", [(1, 1, 0)]),
    ("AlN", "bulk", [(0, 0, 1)]),
    ("WSe2", "monolayer", [(0, 0, 1)]),
    ("MoSe2", "monolayer", [(0, 0, 1)]),
    ("Pd", "particle", [(1, 1, 0)]),
    ("Ag", "particle", [(0, 0, 1)]),
])

_FCC = {"Au": 4.078, "Pt": 3.924, "Cu": 3.615, "Ag": 4.086, "Pd": 3.891}
_PEROVSKITE = {"SrTiO3": ("Sr", "Ti", 3.905), "BaTiO3": ("Ba", "Ti", 4.00),
               "LaAlO3": ("La", "Al", 3.79), "PbTiO3": ("Pb", "Ti", 3.90),
               "KTaO3": ("K", "Ta", 3.989)}
_DIAMOND = {"Si": 5.431, "Ge": 5.658}
_ZINCBLENDE = {"GaAs": 5.653, "InP": 5.869, "GaP": 5.451, "CdTe": 6.481}
_WURTZITE = {"GaN": (3.189, 5.185), "AlN": (3.112, 4.982), "ZnO": (3.250, 5.207)}
_TMD = {"MoS2": 3.18, "WS2": 3.18, "WSe2": 3.28, "MoSe2": 3.29}


def _unit_cell(name: str):
    from ase.build import bulk
    from ase.spacegroup import crystal

    if name in _FCC:
        return bulk(name, "fcc", a=_FCC[name], cubic=True)
    if name in _PEROVSKITE:
        a_site, b_site, a = _PEROVSKITE[name]
        return crystal([a_site, b_site, "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                       spacegroup=221, cellpar=[a, a, a, 90, 90, 90])
    if name in _DIAMOND:
        return bulk(name, "diamond", a=_DIAMOND[name], cubic=True)
    if name in _ZINCBLENDE:
        return bulk(name, "zincblende", a=_ZINCBLENDE[name], cubic=True)
    if name in _WURTZITE:
        a, c = _WURTZITE[name]
        return bulk(name, "wurtzite", a=a, c=c)
    raise ValueError(f"no unit cell for {name!r}")


@dataclass
class ProjectedStructure:
    """Atomic columns of a structure projected along the beam.

    Attributes
    ----------
    spec : StemStructureSpec
        What it is.
    positions : numpy.ndarray
        (N, 2) column positions (y, x) [Å], centred on the structure's middle.
    counts : numpy.ndarray
        (N, E) number of atoms of each element of `elements` in each column.
    elements : numpy.ndarray
        (E,) atomic numbers.
    extent : float
        Half-width [Å] of the square the columns fill (particles: their radius).
    """

    spec: StemStructureSpec
    positions: np.ndarray
    counts: np.ndarray
    elements: np.ndarray
    extent: float

    @property
    def n_atoms(self) -> np.ndarray:
        """(N,) atoms in each column."""
        return self.counts.sum(axis=1)


def _rotate_to_beam(atoms, direction: np.ndarray) -> None:
    atoms.rotate(direction, "z", center="COP")


def _columns(atoms, spec: StemStructureSpec, extent: float) -> ProjectedStructure:
    positions = atoms.positions - atoms.positions.mean(axis=0)
    numbers = atoms.numbers
    elements = np.unique(numbers)
    label = column_labels(positions)
    n_columns = int(label.max()) + 1 if len(label) else 0
    counts = np.zeros((n_columns, len(elements)), dtype=np.int32)
    np.add.at(counts, (label, np.searchsorted(elements, numbers)), 1)
    total = counts.sum(axis=1)
    mean_x = np.bincount(label, weights=positions[:, 0], minlength=n_columns) / total
    mean_y = np.bincount(label, weights=positions[:, 1], minlength=n_columns) / total
    return ProjectedStructure(spec, np.stack([mean_y, mean_x], axis=1), counts, elements,
                              extent)


def project_structure(spec: StemStructureSpec, rng: np.random.Generator,
                      half_width: float = 30.0) -> ProjectedStructure:
    """Build a random instance of `spec` (thickness, vacancies, particle size) and project it.

    Parameters
    ----------
    spec : StemStructureSpec
        Material, kind and zone axis.
    rng : numpy.random.Generator
        Draws the thickness (bulk 15-100 Å), vacancies (0-3 %; chalcogen 0-8 %) and particle
        size (20-45 Å).
    half_width : float, optional
        Half the side of the square field the columns of a slab fill [Å].
    """
    from ase.build import mx2

    if spec.kind == "monolayer":
        a = _TMD[spec.name]
        from ase.formula import Formula

        # The element twice in the formula (S of MoS2, Se of WSe2): cutting the name's last
        # two characters gave "e" for the selenides, so they had no chalcogen vacancies.
        chalcogen = next(symbol for symbol, count in Formula(spec.name).count().items()
                         if count == 2)
        repeats = int(np.ceil(2.6 * half_width / a)) + 2
        atoms = mx2(spec.name, kind="2H", a=a, thickness=3.19, size=(repeats, repeats, 1),
                    vacuum=2.0)
        vacancy = np.where(np.array(atoms.get_chemical_symbols()) == chalcogen,
                           rng.uniform(0, 0.08), rng.uniform(0, 0.02))
        del atoms[np.flatnonzero(rng.random(len(atoms)) < vacancy)]
        positions = atoms.positions - atoms.positions.mean(axis=0)
        keep = (np.abs(positions[:, :2]) < half_width).all(axis=1)
        del atoms[np.flatnonzero(~keep)]
        return _columns(atoms, spec, half_width)
    if spec.kind == "particle":
        from ase.cluster import Octahedron

        a = _FCC[spec.name]
        diameter = rng.uniform(20.0, 45.0)
        length = max(3, int(np.rint(diameter / (a / np.sqrt(2)))))
        cutoff = int(rng.integers(0, max(1, (length - 1) // 2)))
        atoms = Octahedron(spec.name, length, cutoff=cutoff, latticeconstant=a)
        _rotate_to_beam(atoms, np.array(spec.zone_axis, dtype=float))
        extent = float(np.linalg.norm(atoms.positions[:, :2]
                                      - atoms.positions[:, :2].mean(axis=0), axis=1).max())
        return _columns(atoms, spec, extent)
    cell = _unit_cell(spec.name)
    direction = np.asarray(spec.zone_axis, dtype=float) @ np.asarray(cell.cell)
    thickness = rng.uniform(15.0, 100.0)
    side = 2 * half_width + thickness  # a cube that still holds the rotated prism
    repeats = np.ceil(side * 1.5 / np.linalg.norm(cell.cell, axis=1)).astype(int)
    atoms = cell.repeat(tuple(repeats))
    atoms.positions -= atoms.positions.mean(axis=0)
    _rotate_to_beam(atoms, direction)
    positions = atoms.positions - atoms.positions.mean(axis=0)
    keep = ((np.abs(positions[:, :2]) < half_width).all(axis=1)
            & (np.abs(positions[:, 2]) < thickness / 2))
    keep &= rng.random(len(atoms)) >= rng.uniform(0, 0.03)  # vacancies
    del atoms[np.flatnonzero(~keep)]
    return _columns(atoms, spec, half_width)


def structure_pool(specs: tuple[StemStructureSpec, ...], per_spec: int, seed: int
                   ) -> list[ProjectedStructure]:
    """`per_spec` random instances of every structure of `specs` (reproducible from `seed`)."""
    rng = np.random.default_rng(seed)
    return [project_structure(spec, rng) for spec in specs for _ in range(per_spec)]


@dataclass(frozen=True)
class StemSettings:
    """One STEM microscope and scan, as drawn for one image.

    Lengths are in Å, angles in mrad (convergence) or rad (azimuths).
    """

    mode: str = "HAADF"
    energy: float = 300e3
    convergence: float = 25.0
    defocus: float = 0.0
    cs: float = 0.0
    astigmatism: float = 0.0
    astigmatism_angle: float = 0.0
    coma: float = 0.0
    coma_angle: float = 0.0
    source_size: float = 0.3  #: standard deviation of the Gaussian source [Å]
    column_width: float = 0.1  #: thermal and static spread of a column [Å]
    z_exponent: float = 1.7  #: column signal ∝ Σ Z^z_exponent ...
    length_exponent: float = 0.8  #: ... × n_atoms^(length_exponent - 1) (channelling)
    abf_width: float = 0.35  #: width of an ABF column's dip [Å]
    abf_halo: float = 0.2  #: relative weight of the bright halo around it
    sampling: float = 0.1  #: scan step [Å/px]
    dose: float = 1e5  #: electrons per Å² of the scan
    signal: float = 0.1  #: fraction of the probe the brightest columns send to the detector
    background: float = 0.1  #: uniform background, relative to the column signal
    amorphous: float = 0.05  #: amorphous layer (contamination, support), relative
    readout_noise: float = 0.5  #: Gaussian noise in units of one electron's signal
    line_jitter: float = 0.05  #: standard deviation of each line's shift [Å]
    flyback: float = 0.2  #: shift of the start of each line [Å] ...
    flyback_decay: float = 10.0  #: ... decaying over this many pixels
    drift: tuple[float, float] = (0.0, 0.0)  #: specimen drift (y, x) per scan line [Å]
    line_gain: float = 0.01  #: relative gain fluctuation from line to line
    rotation: float = 0.0  #: in-plane rotation of the structure [rad]

    def as_dict(self) -> dict[str, Any]:
        """The values as a plain dictionary (for metadata and cards)."""
        return asdict(self)


@dataclass(frozen=True)
class StemEnvelope:
    """The ranges STEM microscopes are drawn from (uniform; sampling, dose, signal: log)."""

    abf_fraction: float = 0.35
    energy: tuple[float, ...] = (60e3, 80e3, 200e3, 300e3)
    convergence: tuple[float, float] = (15.0, 35.0)  # mrad
    defocus: tuple[float, float] = (-40.0, 40.0)  # Å
    cs: tuple[float, float] = (-5e4, 5e4)  # Å (±5 µm: corrected)
    astigmatism: tuple[float, float] = (0.0, 30.0)
    coma: tuple[float, float] = (0.0, 400.0)
    source_size: tuple[float, float] = (0.1, 0.45)
    column_width: tuple[float, float] = (0.05, 0.15)
    z_exponent: tuple[float, float] = (1.5, 2.0)
    abf_z_exponent: tuple[float, float] = (0.3, 0.7)
    length_exponent: tuple[float, float] = (0.55, 0.95)
    abf_width: tuple[float, float] = (0.25, 0.5)
    abf_halo: tuple[float, float] = (0.0, 0.35)
    sampling: tuple[float, float] = (0.05, 0.25)  # Å/px
    dose: tuple[float, float] = (3e3, 3e6)  # e/Å²
    signal: tuple[float, float] = (0.02, 0.3)
    background: tuple[float, float] = (0.0, 0.4)
    amorphous: tuple[float, float] = (0.0, 0.2)
    readout_noise: tuple[float, float] = (0.0, 2.0)
    line_jitter: tuple[float, float] = (0.0, 0.25)
    flyback: tuple[float, float] = (0.0, 0.8)
    flyback_decay: tuple[float, float] = (3.0, 40.0)
    drift: tuple[float, float] = (0.0, 0.01)  # Å per line
    line_gain: tuple[float, float] = (0.0, 0.03)

    def draw(self, rng: np.random.Generator, mode: str | None = None) -> StemSettings:
        """Draw one microscope; `mode` (``"HAADF"`` or ``"ABF"``) or at random."""
        if mode is None:
            mode = "ABF" if rng.random() < self.abf_fraction else "HAADF"
        drift = _uniform(rng, self.drift)
        angle = rng.uniform(0, 2 * np.pi)
        return StemSettings(
            mode=mode,
            energy=float(rng.choice(self.energy)),
            convergence=_uniform(rng, self.convergence),
            defocus=_uniform(rng, self.defocus),
            cs=_uniform(rng, self.cs),
            astigmatism=_uniform(rng, self.astigmatism),
            astigmatism_angle=float(rng.uniform(0, np.pi)),
            coma=_uniform(rng, self.coma),
            coma_angle=float(rng.uniform(0, 2 * np.pi)),
            source_size=_uniform(rng, self.source_size),
            column_width=_uniform(rng, self.column_width),
            z_exponent=_uniform(rng, self.z_exponent if mode == "HAADF"
                                else self.abf_z_exponent),
            length_exponent=_uniform(rng, self.length_exponent),
            abf_width=_uniform(rng, self.abf_width),
            abf_halo=_uniform(rng, self.abf_halo),
            sampling=_log_uniform(rng, self.sampling),
            dose=_log_uniform(rng, self.dose),
            signal=_log_uniform(rng, self.signal),
            background=_uniform(rng, self.background),
            amorphous=_uniform(rng, self.amorphous),
            readout_noise=_uniform(rng, self.readout_noise),
            line_jitter=_uniform(rng, self.line_jitter),
            flyback=_uniform(rng, self.flyback),
            flyback_decay=_uniform(rng, self.flyback_decay),
            drift=(float(drift * np.sin(angle)), float(drift * np.cos(angle))),
            line_gain=_uniform(rng, self.line_gain),
            rotation=float(rng.uniform(0, 2 * np.pi)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The values as a plain dictionary (for metadata and cards)."""
        return asdict(self)


@lru_cache(maxsize=8)
def _frequencies(shape: tuple[int, int], sampling: float) -> tuple[np.ndarray, np.ndarray]:
    ky = np.fft.fftfreq(shape[0], sampling).astype(np.float32)[:, None]
    kx = np.fft.fftfreq(shape[1], sampling).astype(np.float32)[None, :]
    return ky, kx


def probe_intensity_spectrum(shape: tuple[int, int], sampling: float,
                             settings: StemSettings) -> np.ndarray:
    """Fourier transform of the probe's intensity (normalised to 1 at k = 0), source included.

    The probe is the aperture (semi-angle ``convergence``) with the aberration phase χ:
    defocus (abTEM sign, C10 = -defocus), Cs, two-fold astigmatism and axial coma.
    """
    ky, kx = _frequencies(shape, sampling)
    lam = wavelength(settings.energy)
    k2 = kx**2 + ky**2
    aperture = settings.convergence * 1e-3 / lam  # [1/Å]
    # A soft aperture edge (one pixel of k) avoids ringing from the grid; χ is only needed
    # inside it (a few % of the grid).
    dk = 1.0 / (sampling * max(shape))
    edge = np.clip((aperture - np.sqrt(k2)) / dk + 0.5, 0.0, 1.0)
    inside = edge > 0
    k_y, k_x = np.broadcast_to(ky, shape)[inside], np.broadcast_to(kx, shape)[inside]
    alpha = lam * np.sqrt(k_y**2 + k_x**2)
    phi = np.arctan2(k_y, k_x)
    chi = 2 * np.pi / lam * (
        0.5 * alpha**2 * (-settings.defocus
                          + settings.astigmatism * np.cos(2 * (phi - settings.astigmatism_angle)))
        + alpha**3 / 3 * settings.coma * np.cos(phi - settings.coma_angle)
        + 0.25 * alpha**4 * settings.cs)
    wave = np.zeros(shape, dtype=np.complex64)
    wave[inside] = edge[inside] * np.exp(-1j * chi)
    probe = sp_fft.ifft2(wave)
    spectrum = sp_fft.fft2((probe.real**2 + probe.imag**2).astype(np.float32))
    spectrum = spectrum / spectrum[0, 0]
    source = np.exp(-2 * (np.pi * settings.source_size) ** 2 * k2)
    return (spectrum * source).astype(np.complex64)


def atom_weight(elements: np.ndarray, settings: StemSettings) -> np.ndarray:
    """One atom's signal in the drawn mode: Z^γ, in HAADF times Z⁴ / (Z⁴ + HAADF_LIGHT_Z⁴).

    The light-atom factor (oxygen 0.5, sulfur 0.94, titanium 0.98) brings the oxygen columns
    to what abTEM multislice and real HAADF images show: 0.03-0.04 of Sr in SrTiO3 [001] and
    barely above the background in [110] (``benchmarks/stem_multislice.py``, the card), where
    Z^γ alone gave twice that, which taught the network to mark them.
    """
    z = np.asarray(elements, dtype=float)
    weight = z ** settings.z_exponent
    if settings.mode == "HAADF":
        weight = weight * z**4 / (z**4 + HAADF_LIGHT_Z**4)
    return weight


def column_signal(structure: ProjectedStructure, settings: StemSettings) -> np.ndarray:
    """Each column's signal in the drawn mode: Σ atom_weight(Z) × n^(β-1), before scaling."""
    weights = structure.counts @ atom_weight(structure.elements, settings)
    n_atoms = np.maximum(structure.n_atoms, 1)
    return weights * n_atoms ** (settings.length_exponent - 1.0)


def _scan_offsets(rng: np.random.Generator, shape: tuple[int, int],
                  settings: StemSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel's probe really was, minus where it should have been [Å].

    Returns dy and dx of the smooth distortions (drift, fly-back), and each line's random
    shift along it (line jitter): the probe was at dx + jitter[:, None].
    """
    rows, cols = shape
    jitter = rng.normal(0.0, settings.line_jitter, rows)
    jitter = gaussian_filter(jitter, 0.7)  # lines are a little correlated
    col = np.arange(cols, dtype=float)
    flyback = settings.flyback * np.exp(-col / max(settings.flyback_decay, 1e-3))
    line_time = np.arange(rows, dtype=float)[:, None] + col[None, :] / cols
    dy = settings.drift[0] * line_time
    dx = settings.drift[1] * line_time + flyback[None, :]
    return dy, dx, jitter


def _to_image_pixels(positions: np.ndarray, settings: StemSettings, dy: np.ndarray,
                     dx: np.ndarray) -> np.ndarray:
    """The (row, col) where each specimen position (y, x) [Å] appears in the distorted scan."""
    s = settings.sampling
    pixels = positions / s
    rows, cols = dy.shape
    for _ in range(4):  # fixed point: pixel = (position - offset(pixel)) / s
        coords = [np.clip(pixels[:, 0], 0, rows - 1), np.clip(pixels[:, 1], 0, cols - 1)]
        oy = map_coordinates(dy, coords, order=1, mode="nearest")
        ox = map_coordinates(dx, coords, order=1, mode="nearest")
        pixels = np.stack([positions[:, 0] - oy, positions[:, 1] - ox], axis=1) / s
    return pixels


def column_height(noise_free: np.ndarray, settings: StemSettings) -> np.ndarray:
    """A noise-free image (``render_stem_image(..., noise=False)``) in column units.

    Columns are positive in both modes: 1 is the peak of an isolated column of relative
    signal 1, 0 the vacuum (ABF: down to where the detector's signal was clipped).
    """
    level = np.asarray(noise_free, dtype=np.float32) / (
        settings.signal * settings.dose * settings.sampling**2)
    if settings.mode == "HAADF":
        return level - settings.background
    return (ABF_DIRECT + settings.background - level) / ABF_CONTRAST


def render_stem_image(structure: ProjectedStructure, settings: StemSettings,
                      shape: tuple[int, int], rng: np.random.Generator,
                      offset: tuple[float, float] = (0.0, 0.0), noise: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One recorded STEM image of `structure`, and where its columns appear in it.

    Parameters
    ----------
    structure : ProjectedStructure
        The columns (centred on 0).
    settings : StemSettings
        Microscope, scan and noise.
    shape : (int, int)
        Scan size in pixels.
    rng : numpy.random.Generator
        Noise and scan distortions.
    offset : (float, float)
        Position [Å] of the structure's centre from the field's centre.
    noise : bool, optional
        False: the expected counts, without line-to-line gain, Poisson and read-out noise
        (the same scan, distortions and amorphous layer as with noise, for the same `rng`).

    Returns
    -------
    image : numpy.ndarray
        (rows, cols) float32 detector signal (HAADF: bright columns; ABF: dark columns).
    columns : numpy.ndarray
        (M, 2) (row, col) [px] of the columns inside the field, in the scan distorted by drift
        and fly-back (not by each line's random shift, which blurs a column's image).
    visibility : numpy.ndarray
        (M,) each column's signal relative to the structure's brightest columns (its 95th
        percentile) in this mode.
    """
    s = settings.sampling
    rows, cols = shape
    cos, sin = np.cos(settings.rotation), np.sin(settings.rotation)
    rotated = structure.positions @ np.array([[cos, sin], [-sin, cos]])
    centre = np.array([(rows - 1) * s / 2 + offset[0], (cols - 1) * s / 2 + offset[1]])
    positions = rotated + centre
    signal = column_signal(structure, settings)
    reference = np.percentile(signal, 95) if len(signal) else 1.0
    relative = signal / reference

    dy, smooth_dx, jitter = _scan_offsets(rng, shape, settings)
    dx = smooth_dx + jitter[:, None]
    margin = 3.0 + float(np.abs(dy).max() + np.abs(dx).max())
    # The probe's intensity holds frequencies up to 2α/λ (3.6 1/Å at 300 kV, 35 mrad): a
    # grid of 0.1 Å or finer carries it; coarser scans sample a finer grid (an integer factor).
    fine = s / int(np.ceil(s / 0.1 - 1e-9))
    fine_shape = (int(np.ceil(((rows - 1) * s + 2 * margin) / fine)) + 1,
                  int(np.ceil(((cols - 1) * s + 2 * margin) / fine)) + 1)
    fine_shape = tuple(sp_fft.next_fast_len(n) for n in fine_shape)
    # Bilinear splat of each column's weight onto the fine grid (keeps its centroid).
    grid = (positions + margin) / fine
    inside = ((grid[:, 0] >= 0) & (grid[:, 0] < fine_shape[0] - 1)
              & (grid[:, 1] >= 0) & (grid[:, 1] < fine_shape[1] - 1))
    obj = np.zeros(fine_shape, dtype=np.float32)
    g, w = grid[inside], relative[inside]
    r0, c0 = np.floor(g[:, 0]).astype(int), np.floor(g[:, 1]).astype(int)
    fr, fc = g[:, 0] - r0, g[:, 1] - c0
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)),
                           (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        np.add.at(obj, (r0 + dr, c0 + dc), w * weight)
    ky, kx = _frequencies(fine_shape, fine)
    k2 = kx**2 + ky**2
    probe = probe_intensity_spectrum(fine_shape, fine, settings)
    if settings.mode == "HAADF":
        column = np.exp(-2 * (np.pi * settings.column_width) ** 2 * k2)
    else:  # ABF: a dip with a weak, wider bright halo
        column = -(np.exp(-2 * (np.pi * settings.abf_width) ** 2 * k2)
                   - settings.abf_halo * np.exp(-2 * (np.pi * 2.2 * settings.abf_width) ** 2
                                                * k2))
    kernel = column * probe
    # Height of one isolated column of relative signal 1 (the image of a unit point is the
    # inverse transform of the kernel; at its centre, the kernel's mean).
    peak = abs(float(kernel.mean().real))
    spectrum = sp_fft.fft2(obj) * (kernel / peak)
    if settings.amorphous > 0:  # a thin amorphous layer: smooth random texture
        texture = sp_fft.fft2(rng.standard_normal(fine_shape, dtype=np.float32))
        texture *= np.exp(-2 * (np.pi * 0.4) ** 2 * k2) * probe
        texture /= np.sqrt(np.mean(np.abs(texture) ** 2)) / np.sqrt(texture.size)
        spectrum += texture * settings.amorphous * (1 if settings.mode == "HAADF" else -1)
    sampled_fine = sp_fft.ifft2(spectrum).real.astype(np.float32)
    scan_y = (np.arange(rows)[:, None] * s + dy + margin) / fine
    scan_x = (np.arange(cols)[None, :] * s + dx + margin) / fine
    sampled = map_coordinates(sampled_fine, [np.broadcast_to(scan_y, shape),
                                             np.broadcast_to(scan_x, shape)], order=1)
    if settings.mode == "HAADF":
        intensity = settings.signal * (np.maximum(sampled, 0) + settings.background)
    else:
        bright = ABF_DIRECT + settings.background  # the detector's share of the direct beam
        intensity = settings.signal * np.maximum(bright + ABF_CONTRAST * sampled, ABF_FLOOR)
    gain = 1 + settings.line_gain * rng.standard_normal((rows, 1))
    electrons = settings.dose * s**2
    if noise:
        intensity *= gain
        counts = rng.poisson(np.maximum(intensity, 0) * electrons).astype(np.float32)
        counts += rng.normal(0.0, settings.readout_noise, shape).astype(np.float32)
    else:  # the noise is drawn last, so everything above is the same as with it
        counts = (np.maximum(intensity, 0) * electrons).astype(np.float32)

    # Where the column is in the smoothly distorted scan: its image averages the random shifts
    # of the lines the probe spans, an error of the measurement, not where the column is.
    pixels = _to_image_pixels(positions, settings, dy, smooth_dx)
    keep = ((pixels[:, 0] >= -0.5) & (pixels[:, 0] <= rows - 0.5)
            & (pixels[:, 1] >= -0.5) & (pixels[:, 1] <= cols - 0.5))
    return counts, pixels[keep], relative[keep]
