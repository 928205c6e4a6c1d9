"""Where does the column detector fail? Per-image scores against the microscope and the particle.

Scores the model on held-out particles (as ``tem-atoms evaluate`` does) but keeps one row per
image with its microscope settings and particle, then prints F1 grouped by each factor, recall by
column thickness, and where the false positives lie (on the particle or off it).

    python benchmarks/detector_failure_modes.py --config configs/au-hrtem.toml --dose 1000
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from napari_tem_atoms import events
from napari_tem_atoms.analysis.detect import iter_detect_atoms
from napari_tem_atoms.analysis.transfer import model_optics
from napari_tem_atoms.models import load_model
from napari_tem_atoms.simulation.exit_waves import load_exit_waves
from napari_tem_atoms.simulation.microscope import MicroscopeSettings, phase_error
from napari_tem_atoms.training import load_config
from napari_tem_atoms.training.data import SampleMaker, particle_info
from napari_tem_atoms.training.evaluate import told_conditions
from napari_tem_atoms.training.metrics import match_columns


def _column_recall(detected: np.ndarray, columns: np.ndarray, sampling: float) -> dict:
    """Found / present per thickness class (nearest detection within 0.5 Å)."""
    tree = cKDTree(detected) if len(detected) else None
    found = np.zeros(len(columns), bool)
    if tree is not None:
        distance, _ = tree.query(columns[:, :2])
        found = distance * sampling <= 0.5
    result = {}
    for name, low, high in (("3-5", 3, 5), ("6-10", 6, 10), ("11+", 11, 10**6)):
        chosen = (columns[:, 2] >= low) & (columns[:, 2] <= high)
        result[f"found_{name}"] = int(found[chosen].sum())
        result[f"present_{name}"] = int(chosen.sum())
    return result


def _false_positive_places(detected: np.ndarray, columns: np.ndarray, sampling: float) -> dict:
    """Unmatched detections on the particle (≤ 3 Å from any column) or off it."""
    if not len(detected):
        return {"fp_on_particle": 0, "fp_off_particle": 0}
    distance, _ = cKDTree(columns[:, :2]).query(detected)
    distance *= sampling
    unmatched = distance > 0.5
    return {"fp_on_particle": int((unmatched & (distance <= 3.0)).sum()),
            "fp_off_particle": int((unmatched & (distance > 3.0)).sum())}


def _lowest_reflections(columns: np.ndarray) -> np.ndarray:
    """(n, 2) spatial frequencies (ky, kx) [1/Å] of the particle's lowest-order strong reflections.

    The structure factor of the projected columns (weighted by their atoms) on a 0.01 1/Å grid;
    its peaks between 0.3 and 1 1/Å at ≥ 25 % of the strongest, and of those the shell within
    10 % of the smallest |k|: {200} for [100] particles, {111} for [110] ones.
    """
    from scipy import ndimage

    k = np.arange(-100, 101) * 0.01
    ky, kx = np.meshgrid(k, k, indexing="ij")
    factor = np.zeros(ky.shape, complex)
    for y, x, atoms in columns:  # one column at a time: a (k, k, columns) array is ~1 GB
        factor += atoms * np.exp(-2j * np.pi * (ky * y + kx * x))
    strength = np.abs(factor)
    radius = np.hypot(ky, kx)
    annulus = (radius >= 0.3) & (radius <= 1.0)
    peaks = (strength == ndimage.maximum_filter(strength, size=5)) & annulus
    peaks &= strength >= 0.25 * strength[annulus].max()
    shell = peaks & (radius <= 1.1 * radius[peaks].min())
    return np.stack([ky[shell], kx[shell]], axis=1)


def _lowest_order_transfer(reflections: np.ndarray, settings: MicroscopeSettings) -> dict:
    """sin χ at the lowest-order reflections: the weakest |sin χ| and whether signs differ.

    Where a reflection's sin χ is near zero, or the reflections of one shell are transferred with
    opposite signs (2-fold astigmatism near focus), the lattice seen in the image is shifted by
    half a period from the columns in at least one direction (kinematic, weak-phase picture).
    """
    transfer = np.sin(phase_error(reflections[:, 0], reflections[:, 1], settings))
    return {"transfer_min": float(np.abs(transfer).min()),
            "transfer_split": bool(transfer.min() < 0 < transfer.max())}


def _fixed_settings(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, float]:
    """``--fix`` values as MicroscopeSettings fields (the parser's error names a bad one)."""
    names = {field.name for field in fields(MicroscopeSettings)} - {"dose"}  # that is --dose
    fixed = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in names or not value:
            parser.error(f"--fix {pair}: expected SETTING=VALUE with SETTING one of "
                         f"{', '.join(sorted(names))}")
        try:
            fixed[name] = float(value)
        except ValueError:
            parser.error(f"--fix {pair}: {value!r} is not a number")
    return fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/au-hrtem.toml")
    parser.add_argument("--model", default="au-hrtem")
    parser.add_argument("--dose", type=float, nargs="+", default=[1000.0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--seed", type=int, default=20181000)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--table", default=None, help="write the per-image rows as CSV")
    parser.add_argument("--average-mirrors", action="store_true",
                        help="average the maps of each image and its mirror images")
    parser.add_argument("--paired", action="store_true",
                        help="the same particles and microscopes at every dose (each image "
                             "drawn from its own seed): only the shot noise differs")
    parser.add_argument("--told", action="store_true",
                        help="tell the model Cs and defocus, off by up to 2 µm and 30 Å as in "
                             "tem-atoms evaluate (a model with condition inputs only)")
    parser.add_argument("--fix", nargs="+", default=[], metavar="SETTING=VALUE",
                        help="set microscope settings instead of drawing them, e.g. "
                             "sampling=0.06 astigmatism=0 (Å, Å/px; with --paired: the same "
                             "images with only those settings changed)")
    args = parser.parse_args()

    run = load_config(args.config)
    fixed = _fixed_settings(args.fix, parser)
    particles = load_exit_waves(run.data.folder, "particles", "validation")
    carbons = load_exit_waves(run.data.folder, "carbon", "validation")
    loaded = load_model(args.model)
    optics = model_optics(loaded.metadata)
    maker = SampleMaker(particles, carbons, loaded.sampling, run.envelope,
                        run.data.support_probability)
    reflections: dict[int, np.ndarray] = {}
    rows = []
    for dose in args.dose:
        rng = np.random.default_rng([args.seed, int(dose)])
        for index in range(args.images):
            if args.paired:
                rng = np.random.default_rng([args.seed, index])
            settings = replace(run.envelope.draw(rng), dose=float(dose))
            settings = replace(settings, **fixed)
            particle_index = index % len(particles)
            sample = maker.make(rng, settings, particle_index=particle_index)
            particle = particles[particle_index]
            info = particle_info(particle)
            columns = np.array(particle["columns"], dtype=float)
            if particle_index not in reflections:
                reflections[particle_index] = _lowest_reflections(columns)
            columns[:, :2] /= sample.recorded_sampling
            told = dict(zip(("cs", "defocus"), told_conditions(settings, args.seed, index),
                            strict=True)) if args.told else {}
            atoms = events.run(iter_detect_atoms(sample.recorded, loaded,
                                                 sampling=sample.recorded_sampling,
                                                 threshold=args.threshold,
                                                 average_mirrors=args.average_mirrors, **told),
                               on_event=events.ignore)
            detected = atoms[["y", "x"]].to_numpy()
            counts = match_columns(detected, columns, sample.recorded_sampling)
            rows.append({
                "dose": dose, "image": index, "f1": counts.f1, "precision": counts.precision,
                "recall": counts.recall, "tp": counts.true_positives,
                "fp": counts.false_positives, "fn": counts.false_negatives,
                "defocus": settings.defocus, "cs_um": settings.cs / 1e4,
                "focal_spread": settings.focal_spread, "astigmatism": settings.astigmatism,
                "astigmatism_angle": settings.astigmatism_angle,
                **_lowest_order_transfer(reflections[particle_index], settings),
                # What tem-atoms transfer says of this microscope (its own astigmatism).
                "lattice_transferred": bool(optics and optics.transfers(
                    settings.cs, settings.defocus, settings.astigmatism)),
                "sampling": settings.sampling, "blur": settings.blur,
                "shape": info["shape"], "zone": info["zone_axis"], "diameter": info["diameter"],
                "tilt": info["tilt_degrees"],
                **_column_recall(detected, columns, sample.recorded_sampling),
                **_false_positive_places(detected, columns, sample.recorded_sampling),
            })
    table = pd.DataFrame(rows)
    if args.table:
        table.to_csv(args.table, index=False)

    def pooled(group: pd.DataFrame) -> pd.Series:
        tp, fp, fn = group.tp.sum(), group.fp.sum(), group.fn.sum()
        return pd.Series({"images": len(group), "F1": 2 * tp / max(2 * tp + fp + fn, 1),
                          "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1)})

    print(f"pooled over {len(table)} images:")
    print(pooled(table).round(3).to_string())
    if len(args.dose) > 1:
        paired = " (the same images at every dose)" if args.paired else ""
        print(f"\nby dose{paired}:\n" + table.groupby("dose").apply(pooled).round(3).to_string())
    bins = {
        "defocus": [-200, -120, -40, 40, 120, 200],
        "cs_um": [-30, -15, -5, 5, 15, 30],
        "sampling": [0.05, 0.08, 0.12, 0.18, 0.25],
        "diameter": [10, 20, 30, 40, 50],
        "focal_spread": [20, 30, 40, 50],
        "blur": [0, 0.1, 0.2, 0.3],
    }
    for factor, edges in bins.items():
        grouped = table.groupby(pd.cut(table[factor], edges, include_lowest=True), observed=True)
        print(f"\nby {factor}:\n" + grouped.apply(pooled).round(3).to_string())
    for factor in ("shape", "zone"):
        print(f"\nby {factor}:\n" + table.groupby(factor).apply(pooled).round(3).to_string())
    print("\nrecall by column thickness (atoms):")
    for name in ("3-5", "6-10", "11+"):
        found, present = table[f"found_{name}"].sum(), table[f"present_{name}"].sum()
        print(f"  {name:>5}: {found}/{present} = {found / max(present, 1):.3f}")
    print(f"\nfalse positives ≤ 3 Å from a column: {table.fp_on_particle.sum()}, "
          f"farther (off the particle): {table.fp_off_particle.sum()}")
    # Kinematic transfer of the lowest-order reflections: is the column lattice in the image?
    table["lowest_order"] = np.select(
        [table.transfer_split, table.transfer_min < 0.2, table.transfer_min < 0.5],
        ["signs split", "|sin χ| < 0.2", "|sin χ| 0.2-0.5"], "|sin χ| ≥ 0.5")
    print("\nby the transfer of the lowest-order reflections (sin χ, kinematic):\n"
          + table.groupby(["zone", "lowest_order"]).apply(pooled).round(3).to_string())
    # The rule tem-atoms transfer applies: the crystal's lowest-order reflections ({111} and
    # {200} for gold) at |sin χ| ≥ 0.5 in every direction (the image's own astigmatism).
    print("\nby whether the microscope transfers the lattice (tem-atoms transfer):\n"
          + table.groupby("lattice_transferred").apply(pooled).round(3).to_string())
    # Scherzer-like phase: Δf relative to sqrt(Cs λ); sign of Cs*defocus tells bright/dark.
    table["regime"] = np.where(np.sign(table.cs_um) == np.sign(table.defocus),
                               "Cs, Δf same sign", "Cs, Δf opposite")
    print("\nby regime:\n" + table.groupby("regime").apply(pooled).round(3).to_string())


if __name__ == "__main__":
    main()
