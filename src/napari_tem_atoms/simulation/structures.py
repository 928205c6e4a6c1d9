"""Random gold nanoparticles (ase) in zone-axis orientations, and amorphous-carbon supports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ParticleInfo", "amorphous_carbon", "random_gold_particle"]

GOLD_LATTICE_CONSTANT = 4.078  # [Å]
#: Number density of amorphous carbon at 2.0 g/cm³ [atoms/Å³].
CARBON_DENSITY = 2.0 / 12.011 * 0.602214


@dataclass(frozen=True)
class ParticleInfo:
    """How a random particle was made (kept with its exit waves)."""

    shape: str
    parameters: tuple[int, ...]
    zone_axis: str
    tilt_degrees: float
    rotation_degrees: float
    n_atoms: int
    diameter: float


def _extent(positions: np.ndarray) -> float:
    centred = positions - positions.mean(axis=0)
    return 2.0 * float(np.sqrt((centred**2).sum(axis=1)).max())


def _build(shape: str, parameters: tuple[int, ...]):
    from ase.cluster import Decahedron, FaceCenteredCubic, Octahedron

    a = GOLD_LATTICE_CONSTANT
    if shape in ("octahedron", "truncated octahedron"):
        length, cutoff = parameters
        return Octahedron("Au", length, cutoff=cutoff, latticeconstant=a)
    if shape == "decahedron":
        p, q, r = parameters
        return Decahedron("Au", p, q, r, latticeconstant=a)
    layers = list(parameters)
    return FaceCenteredCubic("Au", [(1, 0, 0), (1, 1, 0), (1, 1, 1)], layers,
                             latticeconstant=a)


def _random_parameters(shape: str, rng: np.random.Generator) -> tuple[int, ...]:
    if shape == "octahedron":
        return (int(rng.integers(3, 15)), 0)
    if shape == "truncated octahedron":
        length = int(rng.integers(4, 19))
        return (length, int(rng.integers(1, max(2, (length - 1) // 2))))
    if shape == "decahedron":
        return (int(rng.integers(2, 8)), int(rng.integers(1, 7)), int(rng.integers(0, 3)))
    return tuple(int(n) for n in rng.integers(2, 9, size=3))


def random_gold_particle(rng: np.random.Generator, diameter: tuple[float, float] = (10.0, 50.0),
                         max_tilt_degrees: float = 1.0, attempts: int = 200):
    """Make a random gold nanoparticle, oriented along a zone axis with a small tilt.

    Shapes: octahedra with and without truncation, Marks/Ino decahedra, and fcc clusters with
    (100), (110) and (111) facets. fcc particles are seen along [100] or [110], decahedra along
    their five-fold axis; then tilted by at most `max_tilt_degrees` about a random
    in-plane axis and rotated by any angle about the beam (z).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    diameter : (float, float), optional
        Accepted range of the particle's diameter [Å].
    max_tilt_degrees : float, optional
        Largest tilt away from the zone axis [degrees].
    attempts : int, optional
        Random draws tried before giving up on the diameter range.

    Returns
    -------
    atoms : ase.Atoms
        The particle, centred at the origin, beam along z.
    info : ParticleInfo
        How it was made.
    """
    shapes = ("octahedron", "truncated octahedron", "decahedron", "fcc cluster")
    for _ in range(attempts):
        shape = shapes[int(rng.integers(len(shapes)))]
        parameters = _random_parameters(shape, rng)
        atoms = _build(shape, parameters)
        size = _extent(atoms.positions)
        if diameter[0] <= size <= diameter[1] and len(atoms) >= 13:
            break
    else:  # pragma: no cover - the ranges above always reach 1-5 nm
        raise RuntimeError(f"no particle with a diameter in {diameter} Å")

    atoms.positions -= atoms.positions.mean(axis=0)
    if shape == "decahedron":
        # Along the five-fold axis every segment is on a [110] zone axis (the classic view);
        # across it, most segments are off-axis and have no atomic columns to find.
        zone = "five-fold"
    else:
        zone = "[110]" if rng.random() < 0.6 else "[100]"
        if zone == "[110]":
            atoms.rotate((1, 1, 0), (0, 0, 1), center=(0, 0, 0))
    tilt = float(rng.uniform(0, max_tilt_degrees))
    axis_angle = rng.uniform(0, 2 * np.pi)
    atoms.rotate(tilt, (np.cos(axis_angle), np.sin(axis_angle), 0.0), center=(0, 0, 0))
    rotation = float(rng.uniform(0, 360))
    atoms.rotate(rotation, "z", center=(0, 0, 0))
    info = ParticleInfo(shape=shape, parameters=parameters, zone_axis=zone,
                        tilt_degrees=tilt, rotation_degrees=rotation, n_atoms=len(atoms),
                        diameter=size)
    return atoms, info


def amorphous_carbon(rng: np.random.Generator, size: float, thickness: float):
    """An amorphous carbon slab (2.0 g/cm³): a jittered cubic grid, nearest atoms ≥ 1.15 Å apart.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    size : float
        Lateral size of the square slab [Å].
    thickness : float
        Thickness along the beam [Å].

    Returns
    -------
    ase.Atoms
        The slab in an orthogonal cell (size, size, thickness).
    """
    from ase import Atoms

    spacing = CARBON_DENSITY ** (-1.0 / 3.0)
    counts = [max(1, round(extent / spacing)) for extent in (size, size, thickness)]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in counts], indexing="ij"), -1)
    positions = (grid.reshape(-1, 3) + 0.5) * [size / counts[0], size / counts[1],
                                               thickness / counts[2]]
    positions += rng.uniform(-0.5, 0.5, size=positions.shape)
    return Atoms(f"C{len(positions)}", positions=positions, cell=(size, size, thickness),
                 pbc=True)
