"""Exit waves computed once with abTEM (multislice, frozen phonons) and cached on disk.

Each particle's exit waves are stored band-limited to |k| ≤ 2 Å⁻¹ on a 0.125 Å grid
(|ψ|² then fits the grid without aliasing), as (y, x) images normalised so that vacuum is 1,
with the projected columns of the ideal structure as truth. The temporal-coherence envelope of
every microscope in the training envelope (focal spread ≥ 20 Å at 300 kV) is below 0.2 % beyond
2 Å⁻¹, so nothing the microscope could transfer is lost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .columns import project_columns

__all__ = ["ExitWaveConfig", "build_exit_wave_cache", "load_exit_waves"]


@dataclass(frozen=True)
class ExitWaveConfig:
    """How the cached exit waves are made.

    Attributes
    ----------
    energy : float
        Beam energy [eV].
    simulation_sampling : float
        Multislice grid [Å/px].
    stored_sampling : float
        Grid of the stored, band-limited waves [Å/px].
    aperture : float
        Band limit of the stored waves [1/Å].
    slice_thickness : float
        Multislice slice thickness [Å].
    frozen_phonons : int
        Frozen-phonon configurations per particle.
    rms_displacement : float
        Thermal RMS displacement of gold [Å] (room temperature).
    min_field : float
        Smallest field of view [Å]; larger particles get 16 Å of vacuum around them.
    diameter : tuple of float
        Particle diameters [Å].
    carbon_size : float
        Lateral size of the carbon slabs [Å].
    carbon_thickness : tuple of float
        Carbon slab thicknesses [Å].
    adatom_columns : tuple of int
        Range of adatom columns (one or two atoms on surface hollow sites) per fcc particle;
        (0, 0): none, the particles of the caches made before adatoms existed.
    """

    energy: float = 300e3
    simulation_sampling: float = 0.0625
    stored_sampling: float = 0.125
    aperture: float = 2.0
    slice_thickness: float = 2.0
    frozen_phonons: int = 3
    rms_displacement: float = 0.087
    min_field: float = 56.0
    diameter: tuple[float, float] = (10.0, 50.0)
    carbon_size: float = 80.0
    carbon_thickness: tuple[float, float] = (20.0, 50.0)
    adatom_columns: tuple[int, int] = (0, 0)


def _configure_abtem() -> None:
    import abtem
    import dask

    # One FFTW thread: two threads ran 50x slower on the project's 2-core machines.
    # abTEM's own per-task progress bars would flood logs; callers report progress themselves.
    abtem.config.set({"fftw.threads": 1, "device": "cpu", "diagnostics.progress_bar": False})
    dask.config.set(scheduler="synchronous")


def _band_limit(waves: np.ndarray, sampling: float, config: ExitWaveConfig) -> np.ndarray:
    """(configs, n, n) waves on the simulation grid -> band-limited waves on the stored grid."""
    n = waves.shape[-1]
    m = round(n * sampling / config.stored_sampling)
    spectrum = np.fft.fftshift(np.fft.fft2(waves), axes=(-2, -1))
    start = n // 2 - m // 2
    cropped = spectrum[..., start:start + m, start:start + m]
    k = np.fft.fftshift(np.fft.fftfreq(m, config.stored_sampling))
    inside = (k[:, None] ** 2 + k[None, :] ** 2) <= config.aperture**2
    cropped = np.fft.ifftshift(cropped * inside, axes=(-2, -1))
    return (np.fft.ifft2(cropped) * (m * m) / (n * n)).astype(np.complex64)


def _multislice(atoms, field: float, config: ExitWaveConfig, frozen_phonons: int, seed: int,
                ) -> np.ndarray:
    import abtem

    gpts = round(field / config.simulation_sampling)
    sampling = field / gpts
    if frozen_phonons > 1:
        atoms = abtem.FrozenPhonons(atoms, num_configs=frozen_phonons,
                                    sigmas=config.rms_displacement, seed=seed)
    potential = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=config.slice_thickness,
                                projection="infinite")
    waves = abtem.PlaneWave(energy=config.energy).multislice(potential).compute().array
    waves = np.asarray(waves).reshape(-1, gpts, gpts)
    waves = np.swapaxes(waves, -1, -2)  # abTEM arrays are (x, y)-indexed; images are (y, x)
    stored = _band_limit(waves, sampling, config)
    border = np.concatenate([stored[:, :4].ravel(), stored[:, -4:].ravel()])
    return stored / np.sqrt(np.mean(np.abs(border) ** 2))


def simulate_particle(rng: np.random.Generator, config: ExitWaveConfig, seed: int) -> dict:
    """Simulate one random particle: band-limited exit waves and column truth."""
    from .structures import random_gold_particle

    atoms, info = random_gold_particle(rng, config.diameter,
                                       adatom_columns=tuple(config.adatom_columns))
    extent_xy = np.ptp(atoms.positions[:, :2], axis=0).max()
    field = max(config.min_field, 4.0 * math.ceil((extent_xy + 16.0) / 4.0))
    offset = rng.uniform(-1, 1, size=2) * max(0.0, (field - extent_xy - 16.0) / 2.0)
    thickness = np.ptp(atoms.positions[:, 2]) + 4.0
    atoms.positions += [field / 2 + offset[0], field / 2 + offset[1],
                        thickness / 2 - atoms.positions[:, 2].mean()]
    atoms.set_cell((field, field, thickness))
    atoms.pbc = True
    waves = _multislice(atoms, field, config, config.frozen_phonons, seed)
    return {
        "waves": waves,
        "sampling": np.float64(config.stored_sampling),
        "columns": project_columns(atoms.positions),  # (y, x, n_atoms) [Å]
        "info": np.array(json.dumps(asdict(info))),
    }


def simulate_carbon(rng: np.random.Generator, config: ExitWaveConfig, seed: int) -> dict:
    """Simulate one amorphous carbon slab (a single configuration: carbon barely vibrates)."""
    from .structures import amorphous_carbon

    thickness = float(rng.uniform(*config.carbon_thickness))
    slab = amorphous_carbon(rng, config.carbon_size, thickness)
    waves = _multislice(slab, config.carbon_size, config, 1, seed)
    return {"waves": waves, "sampling": np.float64(config.stored_sampling),
            "info": np.array(json.dumps({"thickness": thickness}))}


def build_exit_wave_cache(folder: str | Path, n_train: int, n_validation: int, n_carbon: int,
                          seed: int, config: ExitWaveConfig | None = None
                          ) -> Iterator[tuple[int, int, str]]:
    """Compute every missing exit wave of a training set; yield progress as (done, total, name).

    Training and validation particles and carbon slabs come from separate random streams
    (``seed``, split by role and index), so validation structures are never seen in training.
    Files already present are kept, so an interrupted build resumes.
    """
    config = config or ExitWaveConfig()
    folder = Path(folder)
    (folder / "particles").mkdir(parents=True, exist_ok=True)
    (folder / "carbon").mkdir(parents=True, exist_ok=True)
    manifest = folder / "exit_waves.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"config": asdict(config), "seed": seed}, indent=2))
    jobs = (
        [("particles", "train", i) for i in range(n_train)]
        + [("particles", "validation", i) for i in range(n_validation)]
        + [("carbon", "train", i) for i in range(max(1, n_carbon - 1))]
        + [("carbon", "validation", 0)]
    )
    _configure_abtem()
    roles = {"train": 0, "validation": 1}
    for done, (kind, role, index) in enumerate(jobs):
        path = folder / kind / f"{role}_{index:04d}.npz"
        if not path.exists():
            job_seed = [seed, roles[role], 0 if kind == "particles" else 1, index]
            rng = np.random.default_rng(job_seed)
            make = simulate_particle if kind == "particles" else simulate_carbon
            result = make(rng, config, int(np.random.SeedSequence(job_seed).generate_state(1)[0]))
            temporary = path.with_suffix(".part.npz")
            np.savez(temporary, **result)
            temporary.replace(path)
        yield done + 1, len(jobs), str(path)


def load_exit_waves(folder: str | Path, kind: str, role: str) -> list[dict]:
    """Load the cached exit waves of one kind (``particles``/``carbon``) and role."""
    files = sorted((Path(folder) / kind).glob(f"{role}_*.npz"))
    return [dict(np.load(f)) for f in files if not f.name.endswith(".part.npz")]
