"""MoS2 flakes for the focal-series species network: structures, 80 kV exit waves, truth.

2H-MoS2 monolayer flakes (a few nm, any in-plane rotation) with sulfur vacancies (a column with
one S left: ``S1``; rarely both gone) and a few Mo vacancies, half of them on a graphene
support, simulated with abTEM (multislice, frozen phonons) and cached like the gold particles.
Seen along the c axis, Mo and S2 columns alternate on a honeycomb: the truth is one row per
column with its class (``Mo``, ``S2``, ``S1``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .exit_waves import ExitWaveConfig, _configure_abtem, _multislice

__all__ = ["SPECIES", "MoS2Config", "build_mos2_cache", "load_mos2", "random_mos2_flake"]

#: Classes of the species network, in the order of its output maps.
SPECIES = ("Mo", "S2", "S1")


@dataclass(frozen=True)
class MoS2Config:
    """How the MoS2 exit waves are made (sizes in Å, energy in eV)."""

    energy: float = 80e3
    field: float = 40.0
    flake_radius: tuple[float, float] = (9.0, 16.0)
    sulfur_vacancy_fraction: tuple[float, float] = (0.05, 0.25)
    double_sulfur_vacancy_fraction: float = 0.1
    molybdenum_vacancy_fraction: tuple[float, float] = (0.0, 0.03)
    graphene_probability: float = 0.5
    frozen_phonons: int = 2


def random_mos2_flake(rng: np.random.Generator, config: MoS2Config | None = None
                      ) -> tuple[object, np.ndarray, dict]:
    """A random 2H-MoS2 flake with vacancies, centred in its field, maybe on graphene.

    Returns
    -------
    atoms : ase.Atoms
        The structure in an orthogonal ``field × field`` cell, beam along z.
    columns : numpy.ndarray
        (N, 3) ``(y, x, class)`` [Å]: one row per Mo or S column left, class an index into
        :data:`SPECIES`.
    info : dict
        How it was made.
    """
    from ase import Atoms
    from ase.build import graphene, mx2

    config = config or MoS2Config()
    field = config.field
    repeats = math.ceil(2.5 * field / 3.18)
    sheet = mx2("MoS2", "2H", a=3.18, thickness=3.19, size=(repeats, repeats, 1), vacuum=0.0)
    positions = sheet.positions.copy()
    positions[:, :2] -= positions[:, :2].mean(axis=0)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    positions[:, :2] = positions[:, :2] @ rotation.T
    symbols = np.array(sheet.get_chemical_symbols())
    radius = float(rng.uniform(*config.flake_radius))
    # A hexagonal flake (the equilibrium shape of MoS2 nanocatalysts), slightly jittered.
    hexagon_angle = np.arctan2(positions[:, 1], positions[:, 0]) - angle
    sector = np.mod(hexagon_angle, np.pi / 3) - np.pi / 6
    extent = radius * np.cos(np.pi / 6) / np.cos(sector)
    inside = np.hypot(positions[:, 0], positions[:, 1]) <= extent
    positions, symbols = positions[inside], symbols[inside]

    # Columns: an Mo atom, or the two S atoms stacked above each other.
    z_mid = np.median(positions[positions[:, 2] > -1e9, 2])
    is_mo = symbols == "Mo"
    sulfur = np.flatnonzero(~is_mo)
    key = np.round(positions[sulfur, :2] / 0.05).astype(int)
    _, column_of_sulfur = np.unique(key, axis=0, return_inverse=True)
    column_of_sulfur = column_of_sulfur.ravel()
    n_sulfur_columns = int(column_of_sulfur.max()) + 1
    keep = np.ones(len(positions), dtype=bool)
    vacancy_fraction = float(rng.uniform(*config.sulfur_vacancy_fraction))
    removed_columns = np.flatnonzero(rng.random(n_sulfur_columns) < vacancy_fraction)
    for column in removed_columns:
        atoms_here = sulfur[column_of_sulfur == column]
        if rng.random() < config.double_sulfur_vacancy_fraction:
            keep[atoms_here] = False
        else:
            keep[atoms_here[int(rng.integers(len(atoms_here)))]] = False
    mo_vacancy = float(rng.uniform(*config.molybdenum_vacancy_fraction))
    keep[np.flatnonzero(is_mo)[rng.random(is_mo.sum()) < mo_vacancy]] = False

    columns = []
    for index in np.flatnonzero(is_mo & keep):
        columns.append((positions[index, 1], positions[index, 0], 0))
    for column in range(n_sulfur_columns):
        atoms_here = sulfur[column_of_sulfur == column]
        left = int(keep[atoms_here].sum())
        if left:
            y, x = positions[atoms_here[0], 1], positions[atoms_here[0], 0]
            columns.append((y, x, 1 if left == 2 else 2))
    positions, symbols = positions[keep], symbols[keep]

    thickness = 16.0
    offset = np.array([field / 2, field / 2, thickness / 2 - z_mid])
    atoms = Atoms(symbols=list(symbols), positions=positions + offset,
                  cell=(field, field, thickness), pbc=True)
    on_graphene = bool(rng.random() < config.graphene_probability)
    if on_graphene:
        support = graphene(size=(int(field / 2.46 * 1.6) + 2, int(field / 1.42) + 2, 1),
                           vacuum=0.0)
        carbon = support.positions.copy()
        carbon[:, :2] -= carbon[:, :2].mean(axis=0)
        turn = rng.uniform(0, 2 * np.pi)
        carbon[:, :2] = carbon[:, :2] @ np.array([[np.cos(turn), -np.sin(turn)],
                                                  [np.sin(turn), np.cos(turn)]]).T
        carbon[:, :2] += field / 2
        carbon[:, 2] = thickness / 2 - 1.6 - 3.35  # 3.35 Å below the bottom S layer
        inside = np.all((carbon[:, :2] >= 0) & (carbon[:, :2] < field), axis=1)
        atoms += Atoms("C" * int(inside.sum()), positions=carbon[inside])
    columns = np.array(columns, dtype=float)
    columns[:, :2] += field / 2
    info = {"flake_radius": radius, "rotation_degrees": math.degrees(angle),
            "sulfur_vacancy_fraction": vacancy_fraction, "graphene": on_graphene,
            "counts": {name: int((columns[:, 2] == i).sum()) for i, name in enumerate(SPECIES)}}
    return atoms, columns, info


def build_mos2_cache(folder: str | Path, n_train: int, n_validation: int, seed: int,
                     config: MoS2Config | None = None) -> Iterator[tuple[int, int, str]]:
    """Compute every missing MoS2 exit wave; yield progress as (done, total, path).

    Training and validation flakes come from separate random streams, so validation structures
    are never seen in training. An interrupted build resumes.
    """
    config = config or MoS2Config()
    waves_config = ExitWaveConfig(energy=config.energy, min_field=config.field)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "mos2.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"config": asdict(config), "seed": seed}, indent=2))
    jobs = [("train", i) for i in range(n_train)] + [("validation", i)
                                                      for i in range(n_validation)]
    _configure_abtem()
    for done, (role, index) in enumerate(jobs):
        path = folder / f"{role}_{index:04d}.npz"
        if not path.exists():
            job_seed = [seed, 0 if role == "train" else 1, index]
            rng = np.random.default_rng(job_seed)
            atoms, columns, info = random_mos2_flake(rng, config)
            phonon_seed = int(np.random.SeedSequence(job_seed).generate_state(1)[0])
            waves = _multislice(atoms, config.field, waves_config, config.frozen_phonons,
                                phonon_seed)
            temporary = path.with_suffix(".part.npz")
            np.savez(temporary, waves=waves, sampling=np.float64(waves_config.stored_sampling),
                     columns=columns, info=np.array(json.dumps(info)))
            temporary.replace(path)
        yield done + 1, len(jobs), str(path)


def load_mos2(folder: str | Path, role: str) -> list[dict]:
    """Load the cached MoS2 exit waves of one role (``train`` or ``validation``)."""
    paths = sorted(Path(folder).glob(f"{role}_[0-9]*.npz"))
    loaded = []
    for path in paths:
        with np.load(path) as data:
            loaded.append({key: data[key] for key in data.files})
    return loaded
