"""Random gold nanoparticles (ase) in zone-axis orientations, and amorphous-carbon supports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ParticleInfo", "add_adatoms", "amorphous_carbon", "random_gold_particle"]

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
    adatom_columns: int = 0


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


def _beam_direction(zone: str) -> np.ndarray:
    """The beam in the unrotated fcc lattice's axes: [110] or [001]."""
    return (np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0) if zone == "[110]"
            else np.array([0.0, 0.0, 1.0]))


def add_adatoms(positions: np.ndarray, beam: np.ndarray, rng: np.random.Generator,
                columns: int, lattice_constant: float = GOLD_LATTICE_CONSTANT) -> np.ndarray:
    """Add single atoms and pairs on surface hollow sites, as new columns beside the particle.

    A hollow site one layer outside the surface is an empty site of the particle's own fcc
    lattice with at least three occupied nearest neighbours (three on a {111} facet, four on a
    {100} facet). Only sites whose column along the beam holds no particle atom are used, so
    each adatom column is new: one atom, or two neighbouring ones along the beam (each drawn
    with probability 1/2), in `columns` columns drawn at random.

    Parameters
    ----------
    positions : numpy.ndarray
        (N, 3) atoms of an fcc particle on its lattice (unrotated) [Å].
    beam : numpy.ndarray
        (3,) unit vector of the viewing direction in the same axes.
    rng : numpy.random.Generator
        Source of randomness.
    columns : int
        Adatom columns to add (fewer when fewer hollow sites are free).
    lattice_constant : float, optional
        [Å].

    Returns
    -------
    numpy.ndarray
        (M, 3) the adatoms' positions (not the particle's).
    """
    from scipy.spatial import cKDTree

    if columns <= 0 or len(positions) == 0:
        return np.zeros((0, 3))
    half = lattice_constant / 2
    neighbours = np.array([(i, j, 0) for i in (-1, 1) for j in (-1, 1)]
                          + [(i, 0, k) for i in (-1, 1) for k in (-1, 1)]
                          + [(0, j, k) for j in (-1, 1) for k in (-1, 1)], float) * half
    nearest = lattice_constant / np.sqrt(2.0)
    atoms = cKDTree(positions)
    candidates = (positions[:, None, :] + neighbours[None]).reshape(-1, 3)
    candidates = np.unique(np.round(candidates / half).astype(int), axis=0) * half
    distance, _ = atoms.query(candidates)
    candidates = candidates[distance > 0.5]  # empty lattice sites
    counts = np.array([len(n) for n in atoms.query_ball_point(candidates, nearest + 0.3)])
    hollow = candidates[counts >= 3]
    if len(hollow) == 0:
        return np.zeros((0, 3))
    # Project along the beam; keep sites whose column holds no particle atom.
    basis = np.linalg.svd(np.eye(3) - np.outer(beam, beam))[0][:, :2]
    particle_xy = cKDTree(positions @ basis)
    hollow_xy = hollow @ basis
    free = np.isinf(particle_xy.query(hollow_xy, distance_upper_bound=0.5)[0])
    hollow, hollow_xy = hollow[free], hollow_xy[free]
    if len(hollow) == 0:
        return np.zeros((0, 3))
    # Group the free sites into columns (same projected position).
    from .columns import column_labels

    label = column_labels(np.column_stack([hollow_xy, np.zeros(len(hollow))]))
    chosen_columns = rng.permutation(np.unique(label))
    added: list[np.ndarray] = []
    used = np.zeros((0, 2))
    for column in chosen_columns:
        if len(added) >= columns:
            break
        sites = hollow[label == column]
        where = hollow_xy[label == column][0]
        # Adatom columns at least one nearest-neighbour spacing apart (resolvable).
        if len(used) and np.min(np.linalg.norm(used - where, axis=1)) < nearest:
            continue
        depth = sites @ beam
        order = np.argsort(depth)
        first = int(rng.integers(len(sites)))
        pick = [order[first]]
        if rng.random() < 0.5 and len(sites) > 1:  # a pair: its neighbour along the beam
            step = np.diff(depth[order])
            if first + 1 < len(sites) and step[first] < nearest + 0.3:
                pick.append(order[first + 1])
            elif first > 0 and step[first - 1] < nearest + 0.3:
                pick.append(order[first - 1])
        added.append(sites[pick])
        used = np.vstack([used, where])
    return np.vstack(added) if added else np.zeros((0, 3))


def random_gold_particle(rng: np.random.Generator, diameter: tuple[float, float] = (10.0, 50.0),
                         max_tilt_degrees: float = 1.0, attempts: int = 200,
                         adatom_columns: tuple[int, int] = (0, 0)):
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
    adatom_columns : (int, int), optional
        Range of adatom columns (one or two atoms on surface hollow sites, see
        :func:`add_adatoms`) added to an fcc particle, drawn uniformly; decahedra get none (their
        twinned segments are not one lattice). Default none: the same particles as before.

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

    # Decahedra along the five-fold axis: every segment is on a [110] zone axis (the classic
    # view); across it, most segments are off-axis and have no atomic columns to find.
    zone = ("five-fold" if shape == "decahedron"
            else "[110]" if rng.random() < 0.6 else "[100]")
    n_adatom_columns = 0
    if adatom_columns[1] > 0 and shape != "decahedron":
        from ase import Atoms

        wanted = int(rng.integers(adatom_columns[0], adatom_columns[1] + 1))
        adatoms = add_adatoms(atoms.positions, _beam_direction(zone), rng, wanted)
        if len(adatoms):
            atoms += Atoms(f"Au{len(adatoms)}", positions=adatoms)
            from .columns import project_columns

            before = len(project_columns(atoms.positions[: len(atoms) - len(adatoms)]
                                         @ _projection(zone)))
            n_adatom_columns = len(project_columns(atoms.positions @ _projection(zone))) - before
    atoms.positions -= atoms.positions.mean(axis=0)
    if zone == "[110]":
        atoms.rotate((1, 1, 0), (0, 0, 1), center=(0, 0, 0))
    tilt = float(rng.uniform(0, max_tilt_degrees))
    axis_angle = rng.uniform(0, 2 * np.pi)
    atoms.rotate(tilt, (np.cos(axis_angle), np.sin(axis_angle), 0.0), center=(0, 0, 0))
    rotation = float(rng.uniform(0, 360))
    atoms.rotate(rotation, "z", center=(0, 0, 0))
    info = ParticleInfo(shape=shape, parameters=parameters, zone_axis=zone,
                        tilt_degrees=tilt, rotation_degrees=rotation, n_atoms=len(atoms),
                        diameter=size, adatom_columns=n_adatom_columns)
    return atoms, info


def _projection(zone: str) -> np.ndarray:
    """(3, 3) rotation taking the unrotated lattice's beam direction to z."""
    beam = _beam_direction(zone)
    if np.allclose(beam, [0, 0, 1]):
        return np.eye(3)
    axis = np.cross(beam, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    angle = np.arccos(np.clip(beam @ [0.0, 0.0, 1.0], -1, 1))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return rotation.T  # row vectors: positions @ rotation.T


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
