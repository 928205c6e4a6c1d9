"""Focal-series alignment on held-out simulated MoS2 series (the species model's envelope).

The validation flakes of `configs/mos2-focal.toml` (never trained on), each imaged three times
as the species training does (80 kV, central defocus, focal step, Cs, focal spread, MTF, blur,
sampling drawn from its envelope; Poisson noise at the given dose per image), the outer two
images shifted by a known random amount (exact Fourier shifts of the exit waves, up to
`--shift` px along each axis). `align_focal_series` registers them to the middle image with its
defaults (search bound 0.9 Å). Error: length of the error vector of the worse outer image [px
of the recorded image]. Prints a table per dose (target: ≤ 0.2 px at 300 e/Å²).

Usage: python benchmarks/alignment_mos2.py [--series 48] [--doses 100,300,1000,3000,10000]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_tem_atoms.analysis.align import align_focal_series
from napari_tem_atoms.simulation.microscope import form_image, shift_waves
from napari_tem_atoms.simulation.mos2 import load_mos2
from napari_tem_atoms.training.species import ensure_mos2, load_species_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mos2-focal.toml"


def one_series(flake: dict, envelope, dose: float, largest_shift: float,
               rng: np.random.Generator) -> tuple[float, float, tuple[float, ...]]:
    """Error [px] of the worse outer image, the pixel size and the defoci of one series."""
    settings = replace(envelope.microscope.draw(rng), dose=dose)
    centre = float(rng.uniform(*envelope.central_defocus))
    step = float(rng.uniform(*envelope.focal_step))
    defoci = (centre - step, centre, centre + step)
    true = np.zeros((3, 2))
    true[[0, 2]] = rng.uniform(-largest_shift, largest_shift, (2, 2))
    wave_sampling = float(flake["sampling"])
    images = []
    for position, defocus in enumerate(defoci):
        waves = shift_waves(flake["waves"], true[position] * settings.sampling, wave_sampling)
        image, sampling = form_image(waves, wave_sampling, replace(settings, defocus=defocus),
                                     rng)
        images.append(image)
    found = align_focal_series(np.stack(images), reference=1, sampling=sampling)
    error = np.linalg.norm(found - true, axis=1)[[0, 2]].max()
    return float(error), sampling, defoci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--series", type=int, default=48, help="series per dose")
    parser.add_argument("--doses", default="100,300,1000,3000,10000", help="e/Å² per image")
    parser.add_argument("--shift", type=float, default=2.0,
                        help="largest true shift along each axis [px]")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run = load_species_config(args.config)
    ensure_mos2(run)
    flakes = load_mos2(run.data.folder, "validation")
    print(f"{len(flakes)} held-out flakes, {args.series} series per dose, true shifts up to "
          f"±{args.shift:g} px per axis, pixel size {run.envelope.microscope.sampling} Å/px")
    print("| Dose [e/Å² per image] | Median error [px] | 75th pct [px] | 95th pct [px] | "
          "Median [pm] | Within 0.2 px | Time per series [s] |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for dose in (float(d) for d in args.doses.split(",")):
        rng = np.random.default_rng([args.seed, int(dose)])
        errors, physical, start = [], [], time.perf_counter()
        for index in range(args.series):
            error, sampling, _ = one_series(flakes[index % len(flakes)], run.envelope, dose,
                                            args.shift, rng)
            errors.append(error)
            physical.append(error * sampling * 100)
        seconds = (time.perf_counter() - start) / args.series
        errors = np.array(errors)
        print(f"| {dose:g} | {np.median(errors):.3f} | {np.percentile(errors, 75):.3f} | "
              f"{np.percentile(errors, 95):.3f} | {np.median(physical):.1f} | "
              f"{np.mean(errors <= 0.2):.0%} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
