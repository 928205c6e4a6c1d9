"""How close the incoherent STEM simulator (training data of stem-columns) is to multislice.

For a few structures, HAADF (70-200 mrad) and ABF (half the convergence angle to it) images
are simulated with abTEM's multislice (frozen phonons) and with
:func:`napari_tem_atoms.simulation.stem.render_stem_image` at the same probe, scan and columns.
Printed per structure and mode:

- the correlation of the two noise-free images (both normalised to zero mean, unit variance);
- the contrast of each column type relative to the brightest (multislice vs incoherent);
- F1 and RMSE of ``stem-columns`` on each (tiled to 40 Å, Poisson noise at ``--dose``).

Run (about 15 minutes on 2 CPU cores; abTEM's FFTW threads are kept at 1)::

    python benchmarks/stem_multislice.py --dose 1e5 --output build/stem_multislice
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_tem_atoms import detect_atoms
from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.simulation.columns import column_labels
from napari_tem_atoms.simulation.stem import (
    ProjectedStructure,
    StemSettings,
    StemStructureSpec,
    atom_weight,
    render_stem_image,
)
from napari_tem_atoms.training.metrics import match_columns

ENERGY, CONVERGENCE, SCAN_SAMPLING = 200e3, 25.0, 0.15
#: Unit cells along the beam (SrTiO3 and Au: 23-24 Å; Si [110]: 23 Å).
THICKNESS_REPEATS = 6


def _structures() -> dict[str, tuple]:
    """name -> (periodic orthogonal cell (ase.Atoms), scan repeats (ny, nx) of the cell)."""
    import abtem
    from ase.build import bulk, cut, mx2
    from ase.spacegroup import crystal

    srtio3 = crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                     spacegroup=221, cellpar=[3.905] * 3 + [90] * 3)
    srtio3 = srtio3.repeat((1, 1, THICKNESS_REPEATS))
    gold = bulk("Au", "fcc", a=4.078, cubic=True).repeat((1, 1, THICKNESS_REPEATS))
    mos2 = abtem.orthogonalize_cell(mx2("MoS2", kind="2H", a=3.18, thickness=3.19,
                                        vacuum=2.0))
    silicon = bulk("Si", "diamond", a=5.431, cubic=True)
    silicon.rotate((1, 1, 0), "z", rotate_cell=True)
    silicon = abtem.orthogonalize_cell(silicon)
    silicon = silicon.repeat((1, 1, max(1, round(23 / silicon.cell[2, 2]))))
    # Si [110]'s orthogonal cell is 7.7 × 5.4 Å: its scan at 0.15 Å holds 4 times the
    # positions of the others (25 min here), so it runs only when asked for (--all).
    # SrTiO3 [110] (5.5 × 3.9 Å, twice [001]'s positions): the view of the real HAADF image,
    # where the pure oxygen columns between the rows are barely visible.
    # The orthogonal cell [1-10] × [001] × [110] (5.5 × 3.9 × 5.5 Å; orthogonalising a rotated
    # cell instead gives 16 × 16 Å, nine times the scan).
    srtio3_110 = cut(crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                             spacegroup=221, cellpar=[3.905] * 3 + [90] * 3),
                     a=(1, -1, 0), b=(0, 0, 1), c=(1, 1, 0))
    fractional = srtio3_110.get_scaled_positions()  # the cut's axes onto x, y, z (beam)
    srtio3_110.set_cell(np.diag(srtio3_110.cell.lengths()))
    srtio3_110.set_scaled_positions(fractional)
    srtio3_110.wrap()
    srtio3_110 = srtio3_110.repeat((1, 1, max(1, round(23 / srtio3_110.cell[2, 2]))))
    return {"SrTiO3 [001]": (srtio3, 1), "SrTiO3 [110]": (srtio3_110, 1), "Au [001]": (gold, 1),
            "MoS2 [001]": (mos2, 1), "Si [110]": (silicon, 1)}


def _columns(cell) -> ProjectedStructure:
    """The cell's columns (one period), positions (y, x) [Å] from the cell's origin."""
    period = np.diag(cell.cell)[:2]
    xy = cell.positions[:, :2] % period
    xy = np.where(period - xy < 1e-3, 0.0, xy)  # an atom a hair below the cell's edge is at 0
    label = column_labels(np.column_stack([xy, cell.positions[:, 2]]))
    elements = np.unique(cell.numbers)
    counts = np.zeros((label.max() + 1, len(elements)), dtype=int)
    np.add.at(counts, (label, np.searchsorted(elements, cell.numbers)), 1)
    positions = np.array([xy[label == i].mean(axis=0)[::-1] for i in range(label.max() + 1)])
    return ProjectedStructure(StemStructureSpec("cell", "bulk", (0, 0, 1)), positions, counts,
                              elements, 0.0)


def multislice(cell, repeats: int, phonons: int) -> dict[str, np.ndarray]:
    """HAADF and ABF images over `repeats` × `repeats` cells, (row, col) = (y, x)."""
    import abtem
    import dask

    abtem.config.set({"fftw.threads": 1, "device": "cpu", "diagnostics.progress_bar": False})
    dask.config.set(scheduler="synchronous")
    # A potential ~12 Å wide holds the probe (25 mrad at 200 kV) without wrapping onto itself.
    tiled = cell.repeat((max(1, int(np.ceil(12 / cell.cell[0, 0]))),
                         max(1, int(np.ceil(12 / cell.cell[1, 1]))), 1))
    atoms = abtem.FrozenPhonons(tiled, num_configs=phonons, sigmas=0.08, seed=1)
    potential = abtem.Potential(atoms, sampling=0.05, slice_thickness=2.0)
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=CONVERGENCE)
    probe.grid.match(potential)
    extent = (cell.cell[0, 0] * repeats, cell.cell[1, 1] * repeats)
    scan = abtem.GridScan(start=(0, 0), end=extent, sampling=SCAN_SAMPLING)
    detectors = [abtem.AnnularDetector(inner=70, outer=200),
                 abtem.AnnularDetector(inner=CONVERGENCE / 2, outer=CONVERGENCE)]
    haadf, abf = probe.scan(potential, scan=scan, detectors=detectors, lazy=False,
                            max_batch=64)
    return {"HAADF": np.asarray(haadf.array).T, "ABF": np.asarray(abf.array).T}


#: Edge of the field every comparison is made on [Å] (the periodic images tiled onto it).
FIELD = 40.0


def on_grid(image: np.ndarray, period: np.ndarray) -> np.ndarray:
    """A periodic multislice scan of one `period` (y, x) [Å] resampled onto the FIELD grid.

    abTEM fits a whole number of positions into the period, so its pixels are a little off
    SCAN_SAMPLING, and differently along y and x: the image is resampled (cubic, periodic) to
    square pixels of exactly SCAN_SAMPLING.
    """
    from scipy.ndimage import map_coordinates

    n = round(FIELD / SCAN_SAMPLING)
    steps = period / np.array(image.shape)  # its pixel size along y and x
    rows, cols = np.mgrid[0:n, 0:n] * SCAN_SAMPLING
    return map_coordinates(image, [rows / steps[0], cols / steps[1]], order=3,
                           mode="grid-wrap").astype(np.float32)


def tiled_columns(structure: ProjectedStructure, period: np.ndarray) -> ProjectedStructure:
    """The columns of one period repeated over the FIELD (and a period around it)."""
    reps = int(np.ceil(FIELD / period.min())) + 1
    shifts = [period * (i, j) for i in range(-1, reps) for j in range(-1, reps)]
    return replace(structure,
                   positions=np.concatenate([structure.positions + s for s in shifts]),
                   counts=np.tile(structure.counts, (len(shifts), 1)))


def incoherent_settings(mode: str) -> StemSettings:
    """The simulator's microscope for `mode` at the multislice probe and scan, without noise."""
    return StemSettings(mode=mode, energy=ENERGY, convergence=CONVERGENCE, defocus=0.0,
                        source_size=0.02, column_width=0.08, z_exponent=1.7 if mode ==
                        "HAADF" else 0.5, length_exponent=0.8, sampling=SCAN_SAMPLING,
                        dose=1e14, signal=0.1, background=0.0, amorphous=0.0,
                        readout_noise=0.0, line_jitter=0.0, flyback=0.0, drift=(0.0, 0.0),
                        line_gain=0.0)


def incoherent(structure: ProjectedStructure, period: np.ndarray, mode: str) -> np.ndarray:
    """The simulator's noise-free image of the same columns, probe and scan, on the grid."""
    n = round(FIELD / SCAN_SAMPLING)
    tiled = tiled_columns(structure, period)
    centre = (n - 1) * SCAN_SAMPLING / 2
    tiled = replace(tiled, positions=tiled.positions - centre)
    image, _, _ = render_stem_image(tiled, incoherent_settings(mode), (n, n),
                                    np.random.default_rng(0))
    return image


def _normalised(image: np.ndarray) -> np.ndarray:
    return (image - image.mean()) / image.std()


def _column_contrast(image: np.ndarray, structure: ProjectedStructure) -> str:
    """Image value at each column of one period (bilinear), relative to the strongest."""
    from scipy.ndimage import map_coordinates

    pixels = structure.positions / SCAN_SAMPLING
    values = map_coordinates(image - np.median(image), pixels.T, order=1)
    return ", ".join(f"{v:+.2f}" for v in values / np.abs(values).max())


def score(image: np.ndarray, structure: ProjectedStructure, period: np.ndarray, dose: float,
          mode: str, rng: np.random.Generator) -> tuple[float, float]:
    """F1 and RMSE [pm] of stem-columns on a FIELD image with Poisson noise at `dose`."""
    scale = dose * SCAN_SAMPLING**2 / image.mean()
    noisy = rng.poisson(np.maximum(image, 0) * scale).astype(np.float32)
    atoms = detect_atoms(noisy, sampling=SCAN_SAMPLING,
                         imaging_mode="STEM-HAADF" if mode == "HAADF" else "STEM-ABF")
    visible = structure
    if mode == "HAADF":  # light columns (oxygen) are not scored in HAADF
        weight = structure.counts @ atom_weight(structure.elements, incoherent_settings(mode))
        keep = weight >= 0.1 * weight.max()
        visible = replace(structure, positions=structure.positions[keep],
                          counts=structure.counts[keep])
    truth = tiled_columns(visible, period).positions / SCAN_SAMPLING
    n = image.shape[0]
    truth = truth[((truth > -0.5) & (truth < n - 0.5)).all(axis=1)]
    truth = np.column_stack([truth, np.full(len(truth), 3)])
    counts = match_columns(atoms[["y", "x"]].to_numpy(), truth, SCAN_SAMPLING)
    return counts.f1, counts.rmse_pm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dose", type=float, default=1e5, help="e/Å² for the F1 column")
    parser.add_argument("--phonons", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="folder for the images")
    parser.add_argument("--from-saved", action="store_true",
                        help="take the multislice images saved in --output by an earlier run")
    parser.add_argument("--all", action="store_true", help="also Si [110] (slow)")
    parser.add_argument("--only", nargs="*", help="these structures (e.g. 'SrTiO3 [110]')")
    args = parser.parse_args()
    print(f"processor: {processor().describe()}")
    rng = np.random.default_rng(0)
    rows = []
    for name, (cell, repeats) in _structures().items():
        if (name.startswith("Si") and not args.all) or (args.only and name not in args.only):
            continue
        start = time.time()
        stem = name.replace(" ", "").replace("[", "_").replace("]", "")
        if args.from_saved:
            reference = {mode: np.load(args.output / f"{stem}_{mode}_multislice.npy")
                         for mode in ("HAADF", "ABF")}
        else:
            reference = multislice(cell, repeats, args.phonons)
        seconds = time.time() - start
        structure = _columns(cell)
        period = np.array([cell.cell[1, 1], cell.cell[0, 0]]) * repeats
        for mode, scan in reference.items():
            image = on_grid(scan, period)
            mine = incoherent(structure, period, mode)
            correlation = float(np.mean(_normalised(image) * _normalised(mine)))
            f1_ms, rmse_ms = score(image, structure, period, args.dose, mode, rng)
            f1_inc, rmse_inc = score(mine, structure, period, args.dose, mode, rng)
            rows.append((name, mode, correlation, _column_contrast(image, structure),
                         _column_contrast(mine, structure), f1_ms, rmse_ms, f1_inc, rmse_inc,
                         seconds))
            if args.output and not args.from_saved:
                args.output.mkdir(parents=True, exist_ok=True)
                np.save(args.output / f"{stem}_{mode}_multislice.npy", scan)
                np.save(args.output / f"{stem}_{mode}_incoherent.npy", mine)
        print(f"  {name}: multislice {seconds:.0f} s", flush=True)
    print("\n| Structure | Mode | Correlation | F1 / RMSE multislice | F1 / RMSE incoherent "
          "| Column contrast multislice / incoherent |\n|---|---|---|---|---|---|")
    for name, mode, corr, c_ms, c_inc, f1_ms, r_ms, f1_inc, r_inc, _ in rows:
        print(f"| {name} | {mode} | {corr:.2f} | {f1_ms:.3f} / {r_ms:.1f} pm | "
              f"{f1_inc:.3f} / {r_inc:.1f} pm | {c_ms} / {c_inc} |")
    print(f"\nstem-columns at {args.dose:g} e/Å², scan {SCAN_SAMPLING} Å/px, {ENERGY / 1e3:g} kV, "
          f"{CONVERGENCE:g} mrad, {args.phonons} frozen phonons (σ 0.08 Å)")


if __name__ == "__main__":
    main()
