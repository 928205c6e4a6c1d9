"""Training samples: a cached exit wave, a freshly drawn microscope, and the column map.

Each sample goes through exactly the preparation :func:`~napari_tem_atoms.detect_atoms` applies
to a real image (rescale to the model's sampling, normalise), so training and inference see the
same kind of input; no two samples are the same image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..analysis.conditions import condition_vector
from ..analysis.detect import normalise_image, rescale_to_sampling
from ..simulation.microscope import MicroscopeEnvelope, MicroscopeSettings, form_image

__all__ = ["ConditionDraw", "HardRegime", "Sample", "SampleMaker", "column_targets",
           "total_fraction"]

#: Width (standard deviation) of a column in the target map [Å].
TARGET_SIGMA = 0.4
#: By default, columns with fewer atoms are neither targets nor errors (a loss mask) [atoms];
#: ``[data] min_column_atoms = 1`` trains on every column (what surface diffusion needs).
MIN_COLUMN_ATOMS = 3
#: Radius around a column's centre where its atom count is a target [Å].
COUNT_RADIUS = 0.4
#: Radius of the ignored disk around columns of 1-2 atoms [Å].
IGNORE_RADIUS = 0.8


@dataclass(frozen=True)
class HardRegime:
    """Imaging conditions a network gets wrong, drawn more often in training.

    Attributes
    ----------
    zone_axis : str
        Zone axis of the particles drawn (as in the cache's particle info, e.g. ``"[100]"``), or
        ``"any"``: a particle drawn as for any other training image (each zone axis equally
        often when zones are balanced).
    defocus : (float, float)
        Defocus range [Å] (abTEM sign) drawn uniformly for them; the rest of the microscope
        comes from the envelope.
    fraction : float
        Share of the training images drawn from this regime, 0 … 1 (0 turns it off).
    """

    zone_axis: str = "[100]"
    defocus: tuple[float, float] = (-90.0, 40.0)
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.zone_axis, str):
            raise ValueError(f"hard regime: zone_axis must be a string, not {self.zone_axis!r}")
        if (isinstance(self.defocus, str) or len(self.defocus) != 2
                or not all(isinstance(d, int | float) for d in self.defocus)
                or self.defocus[0] > self.defocus[1]):
            raise ValueError(f"hard regime: defocus must be [low, high] in Å, "
                             f"not {self.defocus!r}")
        if not isinstance(self.fraction, int | float) or not 0 <= self.fraction <= 1:
            raise ValueError(f"hard regime: fraction must be a number in 0 … 1, "
                             f"not {self.fraction!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HardRegime:
        """A regime from a ``[[data.hard_regimes]]`` table of a training configuration.

        Parameters
        ----------
        values : dict
            ``zone_axis``, ``defocus`` and ``fraction``, all required.

        Returns
        -------
        HardRegime

        Raises
        ------
        ValueError
            A key missing, unknown or out of range.
        """
        keys = {"zone_axis", "defocus", "fraction"}
        if set(values) != keys:
            missing, unknown = keys - set(values), set(values) - keys
            raise ValueError("hard regime: " + "; ".join(
                f"{what} keys {', '.join(sorted(names))}"
                for what, names in (("missing", missing), ("unknown", unknown)) if names))
        regime = cls(**values)
        return replace(regime, defocus=tuple(float(d) for d in regime.defocus))


@dataclass(frozen=True)
class ConditionDraw:
    """What a network with condition inputs is told about each training image's microscope.

    Each value is known with its own probability, and then given with a uniform error of up
    to its tolerance (an operator's intended defocus is not the true one), so that the network
    learns to use a rough value and to work without one.

    Attributes
    ----------
    cs_known, defocus_known : float
        Chance, 0 … 1, that Cs (defocus) is given.
    cs_error, defocus_error : float
        Largest error [Å] of the given Cs (defocus).
    """

    cs_known: float = 0.7
    defocus_known: float = 0.6
    cs_error: float = 2e4
    defocus_error: float = 30.0

    def __post_init__(self) -> None:
        for name in ("cs_known", "defocus_known", "cs_error", "defocus_error"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name),
                                                                       int | float):
                raise ValueError(f"[conditions] {name} must be a number, not "
                                 f"{getattr(self, name)!r}")
        for name in ("cs_known", "defocus_known"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"[conditions] {name} must be in 0 … 1, not "
                                 f"{getattr(self, name)!r}")
        for name in ("cs_error", "defocus_error"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"[conditions] {name} must be ≥ 0, not {getattr(self, name)!r}")

    def draw(self, rng: np.random.Generator, settings: MicroscopeSettings) -> np.ndarray:
        """The condition vector of one image, from its true microscope."""
        cs = defocus = None
        if rng.random() < self.cs_known:
            cs = settings.cs + rng.uniform(-self.cs_error, self.cs_error)
        if rng.random() < self.defocus_known:
            defocus = settings.defocus + rng.uniform(-self.defocus_error, self.defocus_error)
        return condition_vector(cs, defocus)


def total_fraction(regimes: Sequence[HardRegime]) -> float:
    """Share of the training images the regimes take together (must not exceed 1)."""
    total = math.fsum(regime.fraction for regime in regimes)
    if total > 1 + 1e-9:  # 0.2 + 0.4 + 0.3 + 0.1 is 1.0000000000000002 in floating point
        raise ValueError(f"hard regimes: their fractions add up to {total:g}, more than 1")
    return total


@dataclass
class Sample:
    """One simulated image at the model's sampling, with its truth.

    Attributes
    ----------
    image : numpy.ndarray
        Normalised (H, W) float32 image.
    target : numpy.ndarray
        (H, W) column map: a Gaussian peak (height 1) per column of ≥ 3 atoms.
    mask : numpy.ndarray
        (H, W) 1 where the loss counts, 0 around columns of 1-2 atoms and in padding.
    columns : numpy.ndarray
        (N, 3) columns (y, x) in pixels of `image`, and their atom counts.
    settings : MicroscopeSettings
        The microscope drawn for it.
    recorded : numpy.ndarray
        The image as recorded (before rescaling), in counts.
    recorded_sampling : float
        Its pixel size [Å/px].
    conditions : numpy.ndarray or None
        What the network is told about the microscope (for a network with condition inputs).
    """

    image: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    columns: np.ndarray
    settings: MicroscopeSettings
    recorded: np.ndarray
    recorded_sampling: float
    conditions: np.ndarray | None = None
    count_target: np.ndarray | None = None
    count_weight: np.ndarray | None = None


def count_targets(shape: tuple[int, int], columns: np.ndarray, sampling: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """log(atoms) of each column within :data:`COUNT_RADIUS` of its centre, and where it counts.

    Returns
    -------
    target, weight : numpy.ndarray
        (H, W) float32: ``log n_atoms`` on each column's disc (the nearer column where two
        overlap), and 1 there, 0 elsewhere.
    """
    target = np.zeros(shape, dtype=np.float32)
    weight = np.zeros(shape, dtype=np.float32)
    radius = COUNT_RADIUS / sampling
    half = int(np.ceil(radius))
    offsets = np.arange(-half, half + 1)
    nearest = np.full(shape, np.inf, dtype=np.float32)
    for y, x, n_atoms in columns:
        rows, cols = round(y) + offsets, round(x) + offsets
        rows, cols = rows[(rows >= 0) & (rows < shape[0])], cols[(cols >= 0) & (cols < shape[1])]
        if not len(rows) or not len(cols):
            continue
        d2 = (rows[:, None] - y) ** 2 + (cols[None, :] - x) ** 2
        block = np.ix_(rows, cols)
        closer = (d2 <= radius**2) & (d2 < nearest[block])
        nearest[block] = np.where(closer, d2, nearest[block])
        target[block] = np.where(closer, np.log(max(n_atoms, 1.0)), target[block])
        weight[block] = np.where(closer, 1.0, weight[block])
    return target, weight


def column_targets(shape: tuple[int, int], columns: np.ndarray, sampling: float,
                   min_atoms: int = MIN_COLUMN_ATOMS) -> tuple[np.ndarray, np.ndarray]:
    """Target map and loss mask for columns (y, x [px], n_atoms) at `sampling` [Å/px].

    Columns of fewer than `min_atoms` atoms are masked out of the loss (neither targets nor
    errors); with ``min_atoms=1`` every column is a target.
    """
    target = np.zeros(shape, dtype=np.float32)
    mask = np.ones(shape, dtype=np.float32)
    sigma = TARGET_SIGMA / sampling
    half = int(np.ceil(3 * sigma))
    offsets = np.arange(-half, half + 1)
    for y, x, n_atoms in columns:
        r0, c0 = round(y), round(x)
        rows, cols = r0 + offsets, c0 + offsets
        keep_r = (rows >= 0) & (rows < shape[0])
        keep_c = (cols >= 0) & (cols < shape[1])
        if not keep_r.any() or not keep_c.any():
            continue
        rr, cc = rows[keep_r], cols[keep_c]
        d2 = (rr[:, None] - y) ** 2 + (cc[None, :] - x) ** 2
        if n_atoms >= min_atoms:
            block = np.exp(-0.5 * d2 / sigma**2)
            target[np.ix_(rr, cc)] = np.maximum(target[np.ix_(rr, cc)], block)
        else:
            ignore = d2 <= (IGNORE_RADIUS / sampling) ** 2
            mask[np.ix_(rr, cc)] = np.where(ignore, 0.0, mask[np.ix_(rr, cc)])
    return target, mask


class SampleMaker:
    """Make random training (or evaluation) samples from cached exit waves.

    Parameters
    ----------
    particles : list of dict
        Cached particle exit waves (``waves``, ``sampling``, ``columns``).
    carbons : list of dict
        Cached amorphous-carbon slabs (``waves``, ``sampling``).
    model_sampling : float
        Pixel size of the network's input [Å/px].
    envelope : MicroscopeEnvelope
        Where microscopes are drawn from.
    support_probability : float
        Chance that a particle sits on amorphous carbon.
    balance_zones : bool
        Draw a zone axis uniformly, then a particle of that zone axis, so that a zone axis with
        few particles is seen as often as the others.
    hard_regimes : sequence of HardRegime
        Zone axes and defocus ranges drawn more often than the envelope alone would (for
        training only: evaluation draws from the envelope); their fractions add up to ≤ 1, and
        regimes of fraction 0 are left out.
    conditions : ConditionDraw, optional
        For a network with condition inputs: how each sample's microscope is told to it.
    min_column_atoms : int, optional
        Columns with fewer atoms are masked out of the loss (see :func:`column_targets`).
    counts : bool, optional
        Also make atom-count targets (:func:`count_targets`) for a network with a count head:
        patches then have two target and two mask channels.

    Raises
    ------
    ValueError
        No particles, fractions adding up to more than 1, or no particle along a regime's
        zone axis.
    """

    def __init__(self, particles: list[dict], carbons: list[dict], model_sampling: float,
                 envelope: MicroscopeEnvelope | None = None,
                 support_probability: float = 0.5, balance_zones: bool = False,
                 hard_regimes: Sequence[HardRegime] = (),
                 conditions: ConditionDraw | None = None, min_column_atoms: int = MIN_COLUMN_ATOMS,
                 counts: bool = False) -> None:
        if not particles:
            raise ValueError("no particle exit waves: build the exit-wave cache first")
        self.particles = particles
        self.carbons = carbons
        self.model_sampling = model_sampling
        self.envelope = envelope or MicroscopeEnvelope()
        self.support_probability = support_probability
        self.conditions = conditions
        self.min_column_atoms = min_column_atoms
        self.counts = counts
        self.zone_groups: list[np.ndarray] = []
        total_fraction(hard_regimes)
        self.hard_regimes = [regime for regime in hard_regimes if regime.fraction > 0]
        if balance_zones or any(r.zone_axis != "any" for r in self.hard_regimes):
            zones = np.array([particle_info(p)["zone_axis"] for p in particles])
        if balance_zones:
            self.zone_groups = [np.flatnonzero(zones == zone) for zone in np.unique(zones)]
        # Particles of each regime; None: drawn as outside the regimes.
        self.hard_particles: list[np.ndarray | None] = []
        for regime in self.hard_regimes:
            if regime.zone_axis == "any":
                self.hard_particles.append(None)
                continue
            self.hard_particles.append(np.flatnonzero(zones == regime.zone_axis))
            if not len(self.hard_particles[-1]):
                raise ValueError(f"hard regime: no particle along {regime.zone_axis}")

    def _waves(self, rng: np.random.Generator, particle: dict) -> np.ndarray:
        waves = particle["waves"]
        if self.carbons and rng.random() < self.support_probability:
            slab = self.carbons[int(rng.integers(len(self.carbons)))]["waves"][0]
            if rng.random() < 0.5:
                slab = slab.T
            shift = rng.integers(0, slab.shape, size=2)
            slab = np.roll(slab, tuple(-shift), axis=(0, 1))[: waves.shape[-2], : waves.shape[-1]]
            if slab.shape != waves.shape[-2:]:  # slab smaller than the field: tile it
                reps = (int(np.ceil(waves.shape[-2] / slab.shape[0])),
                        int(np.ceil(waves.shape[-1] / slab.shape[1])))
                slab = np.tile(slab, reps)[: waves.shape[-2], : waves.shape[-1]]
            waves = waves * slab[None]
        return waves

    def draw_particle(self, rng: np.random.Generator) -> int:
        """Index of a random particle (zone axes equally likely when balanced)."""
        if self.zone_groups:
            group = self.zone_groups[int(rng.integers(len(self.zone_groups)))]
            return int(group[rng.integers(len(group))])
        return int(rng.integers(len(self.particles)))

    def make(self, rng: np.random.Generator, settings: MicroscopeSettings | None = None,
             particle_index: int | None = None) -> Sample:
        """Make one sample (a whole field of view, not yet cropped)."""
        # Only a training draw (no particle or microscope given) may come from a hard regime;
        # without one, the random stream is the same as before regimes existed.
        if self.hard_regimes and particle_index is None and settings is None:
            chance, start = rng.random(), 0.0
            for regime, members in zip(self.hard_regimes, self.hard_particles, strict=True):
                start += regime.fraction
                if chance < start:
                    particle_index = (self.draw_particle(rng) if members is None
                                      else int(members[rng.integers(len(members))]))
                    settings = replace(self.envelope.draw(rng),
                                       defocus=float(rng.uniform(*regime.defocus)))
                    break
        index = self.draw_particle(rng) if particle_index is None else particle_index
        particle = self.particles[index]
        settings = settings or self.envelope.draw(rng)
        recorded, sampling = form_image(self._waves(rng, particle), float(particle["sampling"]),
                                        settings, rng)
        rescaled, factor = rescale_to_sampling(recorded, sampling, self.model_sampling)
        image = normalise_image(rescaled)
        columns = np.array(particle["columns"], dtype=float)
        columns[:, :2] /= sampling * factor  # Å -> pixels at the model's sampling
        target, mask = column_targets(image.shape, columns, self.model_sampling,
                                      self.min_column_atoms)
        count_target = count_weight = None
        if self.counts:
            count_target, count_weight = count_targets(image.shape, columns,
                                                       self.model_sampling)
        # Drawn after the image, so that without conditions the random stream is the one from
        # before they existed, and with them a sample's image is the one drawn without.
        conditions = self.conditions.draw(rng, settings) if self.conditions else None
        return Sample(image=image, target=target, mask=mask, columns=columns,
                      settings=settings, recorded=recorded, recorded_sampling=sampling,
                      conditions=conditions, count_target=count_target,
                      count_weight=count_weight)

    def patch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
        """A random `size` × `size` crop of a new sample, randomly flipped and rotated.

        Returns
        -------
        image, target, mask : numpy.ndarray
            (1, size, size) float32 arrays.
        conditions : numpy.ndarray
            Only with condition draws: the sample's (4,) condition vector.
        """
        sample = self.make(rng)
        targets, masks = sample.target[None], sample.mask[None]
        if sample.count_target is not None:  # channel 1: log(atoms), and where it counts
            targets = np.stack([sample.target, sample.count_target])
            masks = np.stack([sample.mask, sample.count_weight])
        arrays = random_patch(rng, size, sample.image[None], targets, masks)
        return arrays if sample.conditions is None else (*arrays, sample.conditions)


def random_patch(rng: np.random.Generator, size: int, images: np.ndarray, targets: np.ndarray,
                 mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random `size` × `size` crop of (channels, H, W) arrays, randomly rotated and flipped.

    Fields smaller than `size` are padded (images by reflection, targets and mask with zeros, so
    the padding is out of the loss). Returns float32 copies.
    """
    arrays = [images, targets, mask]
    rows, cols = images.shape[-2:]
    if rows < size or cols < size:
        pad = ((0, 0), (0, max(0, size - rows)), (0, max(0, size - cols)))
        arrays = [np.pad(images, pad, mode="reflect"), np.pad(targets, pad), np.pad(mask, pad)]
        rows, cols = arrays[0].shape[-2:]
    top = int(rng.integers(0, rows - size + 1))
    left = int(rng.integers(0, cols - size + 1))
    turns = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for array in arrays:
        array = np.rot90(array[:, top:top + size, left:left + size], turns, axes=(1, 2))
        if flip:
            array = array[:, :, ::-1]
        out.append(np.ascontiguousarray(array, dtype=np.float32))
    return out[0], out[1], out[2]


def particle_info(particle: dict) -> dict[str, Any]:
    """The structure of a cached particle (shape, zone axis, diameter...), stored as JSON."""
    return json.loads(str(particle["info"]))


def describe_dataset(particles: list[dict]) -> dict[str, Any]:
    """Summary numbers of a set of cached particles (for the model card)."""
    infos = [particle_info(p) for p in particles]
    return {
        "particles": len(infos),
        "atoms_total": int(sum(i["n_atoms"] for i in infos)),
        "diameter_range_angstrom": [round(min(i["diameter"] for i in infos), 1),
                                    round(max(i["diameter"] for i in infos), 1)],
        "shapes": {s: sum(i["shape"] == s for i in infos)
                   for s in sorted({i["shape"] for i in infos})},
        "zone_axes": {z: sum(i["zone_axis"] == z for i in infos)
                      for z in sorted({i["zone_axis"] for i in infos})},
    }
