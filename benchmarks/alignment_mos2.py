"""Focal-series alignment on held-out simulated MoS2 series (the species model's envelope).

The validation flakes of `configs/mos2-focal.toml` (never trained on), each imaged three times
as the species training does (80 kV, central defocus, focal step, Cs, focal spread, MTF, blur,
sampling drawn from its envelope; Poisson noise at the given dose per image), the outer two
images shifted by a known random amount (exact Fourier shifts of the exit waves, up to
`--shift` px along each axis). `align_focal_series` registers them to the middle image with its
defaults (search bound 0.9 Å, window chosen automatically). Error: length of the error vector
of the worse outer image [px of the recorded image], and of every outer image. Prints a table
per dose (target: ≤ 0.2 px at 300 e/Å²).

The Cramér–Rao column is the smallest error any unbiased registration can reach on the same
images: each image's Fisher information about its shift under Poisson noise,
J = Σ (∂μ/∂y)² / μ over the noiseless counts μ (the specimen treated as known), gives a variance
of at least 1/J_outer + 1/J_middle per axis for an outer image measured against the middle one,
the middle image's share common to both outer images; the column is the median of the worse
outer image's error drawn from those Gaussians.

`--tile N` repeats each flake N × N times (a field of view N times wider, as when the flakes
fill a camera frame): the information grows with the area of crystal in the field.

`--species MODEL` also asks what the residual costs the species network: each series is put
into the middle image's frame once with the estimated shifts and once with the true ones (the
same noisy images), and `detect_species` (alignment off) scores both against the truth
(species-aware F1, S1 recall; matching within 0.5 Å). Left unaligned (up to `--shift` px off),
the series is scored too.

Usage: python benchmarks/alignment_mos2.py [--series 48] [--doses 100,300,1000,3000,10000]
       [--tile 1] [--species mos2-focal]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_tem_atoms.analysis.align import align_focal_series
from napari_tem_atoms.analysis.species import detect_species, into_reference_frame
from napari_tem_atoms.simulation.microscope import form_image, shift_waves
from napari_tem_atoms.simulation.mos2 import SPECIES, load_mos2
from napari_tem_atoms.training.metrics import MatchCounts
from napari_tem_atoms.training.species import ensure_mos2, load_species_config, score_species

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mos2-focal.toml"


class _NoShotNoise:
    """Stands in for the random generator in `form_image`: the expected counts, no noise."""

    @staticmethod
    def poisson(expected: np.ndarray) -> np.ndarray:
        return np.asarray(expected, dtype=np.float64)


def shift_information(expected: np.ndarray) -> np.ndarray:
    """Fisher information about a shift along y and x [1/px²] of an image of Poisson counts."""
    spectrum = np.fft.fft2(expected)
    ky = np.fft.fftfreq(expected.shape[0])[:, None]
    kx = np.fft.fftfreq(expected.shape[1])[None, :]
    counts = np.maximum(expected, 1e-9)
    return np.array([float((np.fft.ifft2(2j * np.pi * k * spectrum).real ** 2 / counts).sum())
                     for k in (ky, kx)])


def tile_flake(flake: dict, tiles: int) -> dict:
    """The flake repeated `tiles` × `tiles` times, its columns too."""
    if tiles == 1:
        return flake
    field = np.array(flake["waves"].shape[-2:]) * float(flake["sampling"])  # Å
    offsets = [np.array([i, j]) * field for i in range(tiles) for j in range(tiles)]
    columns = np.concatenate([flake["columns"] + np.append(offset, 0) for offset in offsets])
    return {**flake, "waves": np.tile(flake["waves"], (1, tiles, tiles)), "columns": columns}


def species_scores(images: np.ndarray, shifts: np.ndarray | None, columns_px: np.ndarray,
                   sampling: float, model: str) -> dict[str, MatchCounts]:
    """Species-aware counts of `model` on the series put back by `shifts` (None: as it is)."""
    if shifts is not None:
        images = into_reference_frame(images, shifts)
    atoms = detect_species(images, model, sampling=sampling, align=False)
    classes = np.array([SPECIES.index(name) for name in atoms.species], dtype=int)
    return score_species(atoms[["y", "x"]].to_numpy(), classes, columns_px, sampling)


def one_series(flake: dict, envelope, dose: float, largest_shift: float,
               rng: np.random.Generator, model: str | None = None
               ) -> tuple[np.ndarray, float, tuple[np.ndarray, float], float, dict]:
    """Errors [px] of the two outer images, the pixel size, the Cramér–Rao σ per axis [px]
    of the outer images' (2, 2) and of the middle image's (2,) shot noise, the registration's
    time [s], and (with a species `model`) its counts on the series aligned as estimated,
    aligned by the true shifts, and not aligned."""
    settings = replace(envelope.microscope.draw(rng), dose=dose)
    centre = float(rng.uniform(*envelope.central_defocus))
    step = float(rng.uniform(*envelope.focal_step))
    defoci = (centre - step, centre, centre + step)
    true = np.zeros((3, 2))
    true[[0, 2]] = rng.uniform(-largest_shift, largest_shift, (2, 2))
    wave_sampling = float(flake["sampling"])
    images, information = [], []
    for position, defocus in enumerate(defoci):
        waves = shift_waves(flake["waves"], true[position] * settings.sampling, wave_sampling)
        image, sampling = form_image(waves, wave_sampling, replace(settings, defocus=defocus),
                                     rng)
        images.append(image)
        expected, _ = form_image(waves, wave_sampling, replace(settings, defocus=defocus),
                                 _NoShotNoise())
        information.append(shift_information(expected))
    start = time.perf_counter()
    found = align_focal_series(np.stack(images), reference=1, sampling=sampling)
    seconds = time.perf_counter() - start
    errors = np.linalg.norm(found - true, axis=1)[[0, 2]]
    # σ per axis [px] of the two outer images' own noise and of the middle image's.
    bound = (np.sqrt(1 / np.array([information[0], information[2]])),
             np.sqrt(1 / information[1]))
    scores = {}
    if model is not None:
        columns = np.array(flake["columns"], dtype=float)
        columns[:, :2] /= sampling  # Å -> pixels of the middle (unshifted) image
        stack = np.stack(images)
        scores = {name: species_scores(stack, shifts, columns, sampling, model)
                  for name, shifts in (("estimated", found), ("true", true), ("none", None))}
    return errors, sampling, bound, seconds, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--series", type=int, default=48, help="series per dose")
    parser.add_argument("--doses", default="100,300,1000,3000,10000", help="e/Å² per image")
    parser.add_argument("--shift", type=float, default=2.0,
                        help="largest true shift along each axis [px]")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tile", type=int, default=1,
                        help="repeat every flake N × N times (a wider field of view)")
    parser.add_argument("--species", metavar="MODEL", default=None,
                        help="also score this species model on the series aligned as "
                             "estimated, aligned by the true shifts, and not aligned")
    args = parser.parse_args()
    run = load_species_config(args.config)
    ensure_mos2(run)
    flakes = load_mos2(run.data.folder, "validation")
    flakes = [tile_flake(flake, args.tile) for flake in flakes]
    field = flakes[0]["waves"].shape[-1] * float(flakes[0]["sampling"])
    print(f"{len(flakes)} held-out flakes ({field:.0f} Å fields), {args.series} series per dose, "
          f"true shifts up to ±{args.shift:g} px per axis, pixel size "
          f"{run.envelope.microscope.sampling} Å/px")
    print("| Dose [e/Å² per image] | Median error, worse image [px] | 75th pct [px] | "
          "95th pct [px] | Median [pm] | Within 0.2 px | Median error, every image [px] | "
          "Cramér–Rao, worse image [px] | Time per series [s] |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    # Gaussian draws for the bound: each outer image's own noise and the middle image's, shared
    # by both outer images (their errors are correlated through it).
    own = np.random.default_rng(0).normal(size=(2000, 2, 2))
    shared = np.random.default_rng(1).normal(size=(2000, 1, 2))
    for dose in (float(d) for d in args.doses.split(",")):
        rng = np.random.default_rng([args.seed, int(dose)])
        worse, every, physical, bounds, seconds = [], [], [], [], 0.0
        species = {name: {k: MatchCounts() for k in (*SPECIES, "all")}
                   for name in ("estimated", "true", "none")}
        for index in range(args.series):
            errors, sampling, bound, took, scores = one_series(
                flakes[index % len(flakes)], run.envelope, dose, args.shift, rng, args.species)
            seconds += took
            for name, counts in scores.items():
                for k, value in counts.items():
                    species[name][k] += value
            worse.append(errors.max())
            every.extend(errors)
            physical.append(errors.max() * sampling * 100)
            outer_sigma, middle_sigma = bound
            errors_at_bound = own * outer_sigma - shared * middle_sigma
            bounds.extend(np.linalg.norm(errors_at_bound, axis=2).max(axis=1))
        worse = np.array(worse)
        print(f"| {dose:g} | {np.median(worse):.3f} | {np.percentile(worse, 75):.3f} | "
              f"{np.percentile(worse, 95):.3f} | {np.median(physical):.1f} | "
              f"{np.mean(worse <= 0.2):.0%} | {np.median(every):.3f} | "
              f"{np.median(bounds):.3f} | {seconds / args.series:.2f} |", flush=True)
        if args.species:
            print(f"  species ({args.species}) at {dose:g} e/Å²: " + "; ".join(
                f"{name}: F1 {totals['all'].f1:.3f}, S1 recall {totals['S1'].recall:.3f}"
                for name, totals in (("aligned as estimated", species["estimated"]),
                                     ("aligned by the true shifts", species["true"]),
                                     ("not aligned", species["none"]))), flush=True)

if __name__ == "__main__":
    main()
