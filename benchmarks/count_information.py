"""How much a column's neighbourhood says about its atom count: the wave, then the image.

The issue on surface diffusion asks for atoms per column within one atom for >= 90 % of the
columns up to 10 atoms thick at 1000 e/Å², or a measurement of why HRTEM cannot. This script
measures what a simple estimator could read from each column's neighbourhood in the held-out
particles of a training configuration's exit-wave cache, learning from its training particles:

- **exit wave**: the complex wave (mean over frozen phonons) and the intensity in a disc of
  0.3 Å at the column and in a ring out to 0.6 Å;
- **noise-free image, known microscope**: the image of each particle at one fixed microscope
  (defocus, Cs; focal spread 35 Å, 0.1 Å/px, no noise), the mean intensity in rings of
  0.3/0.6/0.9/1.2 Å and the disc's extremes, learnt at that same microscope;
- **noise-free image, unknown microscope**: the same features, every image at a microscope
  drawn from the training envelope (sampling 0.1 Å/px), learnt from other such draws.

The estimator is the median count of the 15 (25) nearest training columns of the same zone
axis in standardised features. Printed: within one atom and exact for columns of <= 10 atoms,
and within one for 6-10 atoms. Compare with ``benchmarks/column_heights.py`` (the network).

Usage: python benchmarks/count_information.py [--config configs/au-hrtem-adatoms.toml]
       [--defoci -150 -90 -40 40 90 150] [--cs -15 10] [--draws 6]
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.simulation.exit_waves import load_exit_waves
from napari_tem_atoms.simulation.microscope import MicroscopeSettings, expected_image
from napari_tem_atoms.training import load_config

#: Radii [Å] of the image's rings around a column (the first is a disc).
RING_RADII = (0.3, 0.6, 0.9, 1.2)
#: Columns thicker than this are left out of the headline figures (the issue's range).
MAX_ATOMS = 10


def _zone(particle: dict) -> str:
    return json.loads(str(particle["info"]))["zone_axis"]


def _ring_masks(sampling: float, radii: tuple[float, ...]) -> tuple[int, list[np.ndarray]]:
    half = int(np.ceil(radii[-1] / sampling))
    rows, cols = np.mgrid[-half:half + 1, -half:half + 1]
    radius = np.hypot(rows, cols) * sampling
    masks = [radius <= radii[0]] + [(radius > low) & (radius <= high)
                                    for low, high in itertools.pairwise(radii)]
    return half, masks


def _patches(field: np.ndarray, particle: dict, sampling: float, half: int):
    """(patch, atoms) of each column of `particle` far enough from the field's edge."""
    for y, x, atoms in np.asarray(particle["columns"]):
        row, col = round(float(y) / sampling), round(float(x) / sampling)
        if half <= row < field.shape[-2] - half and half <= col < field.shape[-1] - half:
            yield field[..., row - half:row + half + 1, col - half:col + half + 1], atoms


def wave_features(particles: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exit-wave features of every column: (features, atoms, zone axis)."""
    features, atoms, zones = [], [], []
    for particle in particles:
        sampling = float(np.ravel(particle["sampling"])[0])
        half, (disc, ring) = _ring_masks(sampling, RING_RADII[:2])
        for patch, n_atoms in _patches(particle["waves"], particle, sampling, half):
            wave = patch.mean(axis=0)  # over frozen phonons
            intensity = (np.abs(patch) ** 2).mean(axis=0)
            features.append([wave[disc].real.mean(), wave[disc].imag.mean(),
                             intensity[disc].mean(), wave[ring].real.mean(),
                             wave[ring].imag.mean()])
            atoms.append(n_atoms)
            zones.append(_zone(particle))
    return np.array(features), np.array(atoms), np.array(zones)


def image_features(particles: list[dict], microscopes: list[MicroscopeSettings]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free image features of every column, particle i at microscopes[i]."""
    features, atoms, zones = [], [], []
    for particle, settings in zip(particles, microscopes, strict=True):
        image, sampling = expected_image(particle["waves"],
                                         float(np.ravel(particle["sampling"])[0]), settings)
        half, masks = _ring_masks(sampling, RING_RADII)
        for patch, n_atoms in _patches(image, particle, sampling, half):
            features.append([patch[mask].mean() for mask in masks]
                            + [patch[masks[0]].min(), patch[masks[0]].max()])
            atoms.append(n_atoms)
            zones.append(_zone(particle))
    return np.array(features), np.array(atoms), np.array(zones)


def nearest_count(train: tuple, test: tuple, neighbours: int) -> np.ndarray:
    """Median atom count of each test column's nearest training columns of its zone axis."""
    features, atoms, zones = train
    estimate = np.full(len(test[1]), np.nan)
    scale = features.std(axis=0) + 1e-12
    for zone in np.unique(test[2]):
        chosen, among = test[2] == zone, zones == zone
        _, index = cKDTree(features[among] / scale).query(test[0][chosen] / scale, neighbours)
        estimate[chosen] = np.round(np.median(atoms[among][index], axis=1))
    return estimate


def summary(estimate: np.ndarray, atoms: np.ndarray) -> str:
    scored = atoms <= MAX_ATOMS
    error = np.abs(estimate - atoms)
    thick = scored & (atoms >= 6)
    return (f"within one {np.mean(error[scored] <= 1):.3f}, exact {np.mean(error[scored] == 0):.3f}"
            f"; 6-10 atoms within one {np.mean(error[thick] <= 1):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/au-hrtem-adatoms.toml")
    parser.add_argument("--defoci", type=float, nargs="+",
                        default=[-150.0, -90.0, -40.0, 40.0, 90.0, 150.0], help="Å")
    parser.add_argument("--cs", type=float, nargs="+", default=[-15.0, 10.0], help="µm")
    parser.add_argument("--draws", type=int, default=6,
                        help="random microscopes per training particle")
    args = parser.parse_args()
    run = load_config(args.config)
    train = load_exit_waves(run.data.folder, "particles", "train")
    held_out = load_exit_waves(run.data.folder, "particles", "validation")
    print(f"processor: {processor().describe()}; {len(train)} training, {len(held_out)} held-out "
          f"particles; columns of <= {MAX_ATOMS} atoms")

    test = wave_features(held_out)
    print(f"exit wave: {summary(nearest_count(wave_features(train), test, 15), test[1])}")

    print("noise-free image at a known microscope (focal spread 35 Å, 0.1 Å/px):")
    for defocus in args.defoci:
        for cs in args.cs:
            settings = MicroscopeSettings(defocus=defocus, cs=cs * 1e4, focal_spread=35.0,
                                          sampling=0.1, dose=1e9)
            learnt = image_features(train, [settings] * len(train))
            test = image_features(held_out, [settings] * len(held_out))
            print(f"  defocus {defocus:6.0f} Å, Cs {cs:4.0f} µm: "
                  f"{summary(nearest_count(learnt, test, 15), test[1])}")

    rng = np.random.default_rng(2026)

    def draws(particles: list[dict], repeats: int) -> tuple[list, list]:
        microscopes = [replace(run.envelope.draw(rng), sampling=0.1, dose=1e9)
                       for _ in range(repeats * len(particles))]
        return particles * repeats, microscopes

    learnt = image_features(*draws(train, args.draws))
    test = image_features(*draws(held_out, 4))
    print(f"noise-free image, microscope unknown (drawn from the envelope): "
          f"{summary(nearest_count(learnt, test, 25), test[1])}")


if __name__ == "__main__":
    main()
