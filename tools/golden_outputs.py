"""Write every kind of output the shipped models give through ``tem-atoms``, into one folder.

Run it before and after a change that should not change results, then compare::

    python tools/golden_outputs.py /tmp/golden_before
    ... change ...
    python tools/golden_outputs.py /tmp/golden_after
    diff -r /tmp/golden_before /tmp/golden_after   # empty: the same bytes came out

Inputs are the bundled sample data (``tests/data/hyperspy``) and small synthetic stacks made
with fixed seeds. Every command runs in this process through ``cli.main``; what it prints on
stdout is kept, and stderr without progress bars. The model card's speed section is made from a
fixed table (a measured speed changes from run to run). Takes about a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "hyperspy"


def run(out: Path, name: str, *argv: str) -> None:
    """``tem-atoms argv``; its exit status, stdout and filtered stderr into ``out/name.log``."""
    from napari_tem_atoms import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(list(argv))
    # tqdm bars: carriage-return updates and timings, not results.
    lines = [line.split("\r")[-1] for line in stderr.getvalue().splitlines()]
    lines = [line for line in lines if line and not re.search(r"\d+%\|", line)]
    text = " ".join(argv).replace(str(out), "OUT").replace(str(ROOT), "ROOT")
    log = stdout.getvalue().replace(str(out), "OUT").replace(str(ROOT), "ROOT")
    err = "\n".join(lines).replace(str(out), "OUT").replace(str(ROOT), "ROOT")
    (out / f"{name}.log").write_text(f"$ tem-atoms {text}\nexit {status}\n--- stdout\n{log}"
                                     f"--- stderr\n{err}\n", encoding="utf-8")


def fixed_speed(*args: object, **kwargs: object) -> pd.DataFrame:
    """A speed table as :func:`measure_speed` gives, with fixed figures."""
    rows = [{"size": size, "sampling": sampling, "model_pixels": round(size * sampling / 0.2),
             "frames_per_second": fps, "device": "cpu", "engine": "torch",
             "precision": "fp32", "threads": 2}
            for size, sampling, fps in ((512, 0.1, 9.5), (1024, 0.1, 2.5), (1024, 0.25, 1.5))]
    speed = pd.DataFrame(rows)
    speed.attrs["processor"] = "a fixed processor"
    return speed


def column_scores() -> pd.DataFrame:
    """A scores table in the layout of :func:`training.evaluate.evaluate`."""
    rows = []
    for dose, f1 in ((100, 0.93), (1000, 0.991), (10000, 0.995)):
        for method, shift in (("network", 0.0), ("classical peer", -0.2),
                              ("told Cs and defocus", 0.002),
                              ("lattice transferred", 0.004)):
            rows.append({"method": method, "dose": float(dose), "precision": f1 + shift,
                         "recall": f1 + shift / 2, "f1": f1 + shift, "rmse_pm": 12.5 - shift,
                         "columns": 4000, "images": 96 if method != "lattice transferred"
                         else 40})
    return pd.DataFrame(rows)


def species_scores() -> pd.DataFrame:
    """A scores table in the layout of :func:`training.species.evaluate_species`."""
    rows = []
    for dose in (100.0, 1000.0, 10000.0):
        for model in ("focal series", "single image"):
            f1 = 0.8 if model == "focal series" else 0.6
            rows.append({"dose": dose, "model": model, "f1": f1, "precision": f1 + 0.01,
                         "recall": f1 - 0.01, "f1_Mo": f1 + 0.1, "f1_S2": f1, "f1_S1": f1 / 2,
                         "recall_S1": f1 / 3, "rmse_pm": 10.25})
    return pd.DataFrame(rows)


def main(out: Path) -> None:
    """Make the inputs in `out`/inputs and write every output into `out`."""
    from napari_tem_atoms.samples import synthetic_focal_series, synthetic_gold_stack

    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # inputs by relative path: the atoms CSV's file column names them
    inputs = Path("inputs")
    inputs.mkdir(exist_ok=True)
    stack = synthetic_gold_stack(n_frames=6, shape=(192, 192), sampling=0.12,
                                 particle_radius=7.0, seed=3)
    tifffile.imwrite(inputs / "stack.tif", stack.images)
    tifffile.imwrite(inputs / "frame.tif", stack.images[0])
    series = synthetic_focal_series()
    tifffile.imwrite(inputs / "series.tif", np.asarray(series, dtype=np.float32))
    files = [DATA / "dm3_2D_data" / "test_STEM_image.dm3",
             DATA / "FEI_new" / "128x128-TEM_search.emi",
             DATA / "dm4_2D_data" / "test-MonarcCL_mono-image.dm4",
             inputs / "stack.tif"]
    run(out, "info", "info", *map(str, files))

    # detect: one stack, two inputs (a file column), the adatom model, conditions, a STEM file
    run(out, "detect_stack", "detect", str(inputs / "stack.tif"), "--sampling", "0.12",
        "--device", "cpu", "--engine", "torch", "-o", str(out / "detect_stack.csv"))
    run(out, "detect_two", "detect", str(inputs / "frame.tif"), str(inputs / "stack.tif"),
        "--sampling", "0.12", "--model", "au-hrtem-adatoms", "--device", "cpu", "--engine",
        "torch", "--cs-um", "-15", "--defocus", "-60", "-o", str(out / "detect_two.csv"))
    run(out, "detect_stem", "detect", str(files[0]), "--device", "cpu", "--engine", "torch",
        "-o", str(out / "detect_stem.csv"))
    run(out, "detect_far", "detect", str(inputs / "frame.tif"), "--sampling", "0.6",
        "--device", "cpu", "--engine", "torch", "-o", str(out / "detect_far.csv"))
    run(out, "detect_bad", "detect", str(inputs / "frame.tif"), "--device", "cpu",
        "-o", str(out / "detect_bad.csv"))

    # species on a focal series (gold: the model answers something, always the same)
    run(out, "species", "species", str(inputs / "series.tif"), "--sampling", "0.1",
        "--defoci", "-80,0,80", "--device", "cpu", "--engine", "torch",
        "-o", str(out / "species.csv"))

    # occupancy: from a detection CSV and with the detector; sites, matrix; then compare
    run(out, "occupancy_atoms", "occupancy", str(inputs / "stack.tif"), "--sampling", "0.12",
        "--atoms", str(out / "detect_stack.csv"), "--matrix", str(out / "matrix_atoms.csv"),
        "-o", str(out / "sites_atoms.csv"))
    run(out, "occupancy_detect", "occupancy", str(inputs / "stack.tif"), "--sampling", "0.12",
        "--device", "cpu", "--engine", "torch", "--matrix", str(out / "matrix_detect.csv"),
        "-o", str(out / "sites_detect.csv"))
    run(out, "occupancy_evidence", "occupancy", str(inputs / "stack.tif"), "--sampling",
        "0.12", "--device", "cpu", "--engine", "torch", "--method", "evidence",
        "--matrix", str(out / "matrix_evidence.csv"), "-o", str(out / "sites_evidence.csv"))
    run(out, "compare", "compare", str(out / "sites_atoms.csv"), str(out / "sites_detect.csv"),
        "--names", "A", "B", "-o", str(out / "compare.csv"))
    run(out, "compare_bad", "compare", str(out / "sites_atoms.csv"), str(out / "nothing.csv"))

    # transfer verdicts, and refusals
    run(out, "transfer", "transfer", "--cs-um", "-15", "--defocus", "-60", "0", "90", "500",
        "--astigmatism", "5")
    run(out, "transfer_species", "transfer", "--cs-um", "-15", "--model", "mos2-focal")
    run(out, "transfer_cs", "transfer", "--cs-um", "90")

    # model cards from fixed scores (no simulation): columns (with a fixed speed) and species
    column_scores().to_csv(inputs / "scores.csv", index=False)
    species_scores().to_csv(inputs / "species_scores.csv", index=False)
    with mock.patch("napari_tem_atoms.training.speed.measure_speed", fixed_speed):
        run(out, "evaluate_card", "evaluate", "--config", str(ROOT / "configs" / "au-hrtem.toml"),
            "--model", "au-hrtem", "--scores", str(inputs / "scores.csv"),
            "--table", str(out / "scores_table.csv"), "--card", str(out / "card_au-hrtem.md"))
    run(out, "evaluate_species", "evaluate", "--config",
        str(ROOT / "configs" / "mos2-focal.toml"), "--model", "mos2-focal",
        "--scores", str(inputs / "species_scores.csv"),
        "--table", str(out / "species_scores_table.csv"),
        "--card", str(out / "card_mos2-focal.md"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/golden_outputs.py FOLDER")
    main(Path(sys.argv[1]).resolve())
