"""Is a detector failure a limit of the physics? The half-period twin test.

In a [100] projection the gold columns form a 2.04 Å square lattice, and the same lattice shifted
by half a lattice vector (or half a diagonal) sits on the empty sites. In linear imaging theory,
a defocus that flips the sign of the contrast transfer at some of the lattice's reflections and
not at others turns the image of one lattice into that of the other. If that happens inside the
training envelope, no detector can tell where the columns are, and a target of F1 ≥ 0.99 cannot
be met.

For images of the paired evaluation draws (the same as ``tem-atoms evaluate``), this script
shifts the particle by half a lattice vector and fits the microscope (defocus, Cs, focal spread,
astigmatism, blur, contrast, all kept inside the envelope) whose noise-free image of the shifted
particle is closest to the noise-free image of the true one. It prints how well the best test
between the two hypotheses could tell them apart at each dose: the Hellinger distance
H = Σ (√λ₀ − √λ₁)² of the two Poisson images (λ: expected electrons per pixel) and the upper
bound on that test's error rate, P_e ≤ ½ e^(−H/2) (the Bhattacharyya bound: the likelihood-ratio
test does at least this well). The "interior" columns use the
pixels more than 5 Å inside the particle only, where the particle's edge gives nothing away.

An error rate near zero at a dose where the network fails the image says that the image holds
the information, and the failure is the network's, not the physics'.

    python benchmarks/detector_twin_test.py --config configs/au-hrtem.toml --images 42 24 26
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import cKDTree

from napari_tem_atoms.simulation.exit_waves import load_exit_waves
from napari_tem_atoms.simulation.microscope import (
    MicroscopeEnvelope,
    MicroscopeSettings,
    expected_image,
    shift_waves,
)
from napari_tem_atoms.training import load_config
from napari_tem_atoms.training.data import SampleMaker, particle_info

#: Parameters fitted for the shifted particle, in the order of the optimiser's vector.
FITTED = ("defocus", "cs", "focal_spread", "astigmatism", "astigmatism_angle", "blur", "gamma")


def lattice_vectors(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two shortest non-parallel column-to-column vectors at the particle's centre [Å]."""
    thick = columns[columns[:, 2] >= 3, :2]
    centre = thick[np.argmin(((thick - thick.mean(0)) ** 2).sum(1))]
    _, neighbours = cKDTree(columns[:, :2]).query(centre, k=9)
    vectors = columns[neighbours[1:], :2] - centre
    lengths = np.linalg.norm(vectors, axis=1)
    first = vectors[np.argmin(lengths)]
    cosine = np.abs(vectors @ first) / (lengths * np.linalg.norm(first))
    others = vectors[cosine < 0.3]
    second = (others[np.argmin(np.linalg.norm(others, axis=1))] if len(others)
              else np.array([-first[1], first[0]]))
    return first, second


def particle_interior(columns: np.ndarray, shape: tuple[int, int], sampling: float,
                      depth: float = 5.0) -> np.ndarray:
    """Pixels more than `depth` [Å] inside the particle's outline."""
    rows, cols = np.indices(shape) * sampling
    distance, _ = cKDTree(columns[:, :2]).query(np.c_[rows.ravel(), cols.ravel()])
    near = (distance < 1.5).reshape(shape)
    body = ndimage.binary_fill_holes(ndimage.binary_closing(near, iterations=int(2 / sampling)))
    return ndimage.binary_erosion(body, iterations=int(depth / sampling))


def hellinger(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Σ (√a − √b)² over the (masked) pixels, for images of mean 1 (× dose × pixel area: H)."""
    terms = (np.sqrt(np.clip(first, 0, None)) - np.sqrt(np.clip(second, 0, None))) ** 2
    return float(terms.sum() if mask is None else terms[mask].sum())


def error_bound(distance: float) -> float:
    """Upper bound on the error of the best test between two equally likely Poisson images.

    The Bhattacharyya coefficient of the two images is e^(−H/2); the best test errs at most half
    of it. (The lower bound, ½ (1 − √(1 − e^(−H))), says nothing about whether a test succeeds.)
    """
    return 0.5 * float(np.exp(-distance / 2))


def fit_twin(waves: np.ndarray, wave_sampling: float, settings: MicroscopeSettings,
             envelope: MicroscopeEnvelope, target: np.ndarray) -> MicroscopeSettings:
    """The microscope of the envelope whose image of `waves` is closest to `target`."""
    bounds = {"defocus": envelope.defocus, "cs": envelope.cs,
              "focal_spread": envelope.focal_spread, "astigmatism": envelope.astigmatism,
              "astigmatism_angle": (-np.inf, np.inf), "blur": envelope.blur,
              "gamma": envelope.gamma}

    def settings_of(vector: np.ndarray) -> MicroscopeSettings:
        return replace(settings, **{name: float(np.clip(value, *bounds[name]))
                                    for name, value in zip(FITTED, vector, strict=True)})

    def distance(vector: np.ndarray) -> float:
        return hellinger(expected_image(waves, wave_sampling, settings_of(vector))[0], target)

    start = np.array([getattr(settings, name) for name in FITTED])
    best, best_distance = start, np.inf
    for defocus in np.arange(envelope.defocus[0], envelope.defocus[1] + 1, 10.0):
        for cs in np.linspace(*envelope.cs, 7):
            trial = start.copy()
            trial[:2] = defocus, cs
            value = distance(trial)
            if value < best_distance:
                best, best_distance = trial, value
    scale = np.array([5.0, 2e4, 3.0, 5.0, 0.3, 0.03, 0.03])  # a sensible first step per parameter
    result = optimize.minimize(lambda x: distance(x * scale), best / scale, method="Powell",
                               options={"maxfev": 600, "xtol": 1e-2})
    return settings_of(result.x * scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/au-hrtem.toml")
    parser.add_argument("--images", type=int, nargs="+", default=[42],
                        help="indices of the paired evaluation draws (image 42: the [100] "
                             "particle the shipped model fails whole)")
    parser.add_argument("--seed", type=int, default=20181000)
    parser.add_argument("--dose", type=float, nargs="+", default=[100.0, 1000.0, 10000.0])
    args = parser.parse_args()

    run = load_config(args.config)
    particles = load_exit_waves(run.data.folder, "particles", "validation")
    carbons = load_exit_waves(run.data.folder, "carbon", "validation")
    maker = SampleMaker(particles, carbons, run.model.sampling, run.envelope,
                        run.data.support_probability)
    for index in args.images:
        # The draws of tem-atoms evaluate: microscope first, then the support, then the noise.
        rng = np.random.default_rng([args.seed, index])
        settings = run.envelope.draw(rng)
        particle = particles[index % len(particles)]
        waves = maker._waves(rng, particle)
        wave_sampling = float(particle["sampling"])
        truth, sampling = expected_image(waves, wave_sampling, settings)
        columns = np.array(particle["columns"], dtype=float)
        interior = particle_interior(columns, truth.shape, sampling)
        first, second = lattice_vectors(columns)
        print(f"\nimage {index}: {particle_info(particle)['zone_axis']}, defocus "
              f"{settings.defocus:.0f} Å, Cs {settings.cs / 1e4:.1f} µm, focal spread "
              f"{settings.focal_spread:.0f} Å, {sampling:.3f} Å/px; lattice vectors "
              f"{np.linalg.norm(first):.2f} Å, {np.linalg.norm(second):.2f} Å")
        print("  shift        fitted defocus, Cs    rel. residual (whole / interior)   "
              + "   ".join(f"H, P_e ≤ at {dose:g} (whole / interior)" for dose in args.dose))
        for name, shift in (("(a1+a2)/2", (first + second) / 2), ("a1/2", first / 2),
                            ("a2/2", second / 2)):
            started = time.perf_counter()
            # An image of the particle moved by `shift` is the image of the unmoved particle
            # moved by `shift`: compare the unmoved particle's images with the truth moved back.
            target = shift_waves(truth, -shift, sampling).real
            twin = fit_twin(waves, wave_sampling, settings, run.envelope, target)
            image = expected_image(waves, wave_sampling, twin)[0]
            # Residuals in units of the true image's contrast there (the particle's is stronger).
            residual = np.sqrt(np.mean((image - target) ** 2)) / float(truth.std())
            residual_inside = (np.sqrt(np.mean((image - target)[interior] ** 2))
                               / float(truth[interior].std()))
            whole, inside = hellinger(image, target), hellinger(image, target, interior)
            per_dose = []
            for dose in args.dose:
                pixels = dose * sampling**2
                per_dose.append(f"{pixels * whole:8.1f} {error_bound(pixels * whole):.1e} / "
                                f"{pixels * inside:7.1f} {error_bound(pixels * inside):.1e}")
            print(f"  {name:10s} {twin.defocus:7.1f} Å {twin.cs / 1e4:6.1f} µm     "
                  f"{residual:.3f} / {residual_inside:.3f}              " + "   ".join(per_dose)
                  + f"   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
