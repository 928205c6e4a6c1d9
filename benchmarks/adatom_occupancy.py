"""Occupancy of adatom sites on simulated videos, against the truth, per method and dose.

Videos: a ~3 nm gold particle along [110] at 300 kV whose single adatoms and two-atom columns
(hollow sites one layer outside the surface) come and go as Markov chains, edges and corners
twice as fast as facets, in a slow and a fast regime (`simulate_adatom_video`); drift, defocus
jitter of ±5 Å per frame, Poisson noise at the dose per frame. Each video is analysed by
`video_occupancy` with the evidence method (sites from the mean map and the lattice, the image
as evidence, an HMM per site) and the detections method (thresholded detections per frame),
and scored:

- site recall: adatom sites occupied in at least one frame found within 0.6 Å; false sites per
  20 true sites (measured sites matching neither an adatom site nor a particle column);
- occupancy MAE and bias over the found adatom sites, by kind (facet, edge);
- transition-count MAE per found adatom site (expected transitions against the true count);
- per-frame recall of occupied single-atom sites: a detection within 0.6 Å (detections), the
  more probable HMM state (evidence);
- `compare_transition_rates` of the slow and the fast video of each seed (p of the row of the
  sites that switch).

Needs the `simulate` extra (abTEM). Usage:
    python benchmarks/adatom_occupancy.py [--models au-hrtem OTHER.safetensors]
        [--doses 200 500] [--videos 2] [--first-seed 0] [--frames 40]
        [--methods evidence detections] [--cache build/adatom-videos]
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from napari_tem_atoms.analysis.occupancy import compare_transition_rates
from napari_tem_atoms.analysis.video import video_occupancy
from napari_tem_atoms.models import load_model
from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.simulation.diffusion import DiffusionVideo, simulate_adatom_video

RADIUS = 0.6  # [Å]


def _match(true_yx: np.ndarray, measured_yx: np.ndarray, sampling: float):
    if not len(true_yx) or not len(measured_yx):
        return np.zeros(0, int), np.zeros(0, int)
    distance = cdist(true_yx, measured_yx) * sampling
    cost = np.where(distance <= RADIUS, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] <= RADIUS
    return rows[keep], cols[keep]


def score(result, video) -> dict:
    truth = video.sites
    sampling = video.sampling
    # Reference frames: the analysis's first frame is the video's (drift zero there).
    offset = video.drift[0] - result.drift[0]
    measured = result.sites[["y", "x"]].to_numpy() + offset
    adatom = truth[truth["surface"] & (truth["occupancy"] > 0)].reset_index()
    rows, cols = _match(adatom[["y", "x"]].to_numpy(), measured, sampling)
    others, other_cols = _match(truth[~truth["surface"]][["y", "x"]].to_numpy(), measured,
                                sampling)
    matched = set(cols) | set(other_cols)
    false_sites = len(measured) - len(matched)
    true_occupancy = adatom["occupancy"].to_numpy()[rows]
    measured_occupancy = result.sites["occupancy"].to_numpy()[cols]
    error = measured_occupancy - true_occupancy
    present = video.present[:, adatom["site"].to_numpy()]
    true_flips = (present[1:] != present[:-1]).sum(axis=0)[rows]
    flips = (result.sites["transitions_off"] + result.sites["transitions_on"]).to_numpy()[cols]
    kind = adatom["kind"].to_numpy()[rows]
    single = adatom["n_atoms"].to_numpy()[rows] == 1
    states = result.occupied[:, cols]
    truth_states = present[:, rows]
    occupied_single = truth_states[:, single]
    per_frame_recall = (float((states[:, single] & occupied_single).sum()
                              / max(occupied_single.sum(), 1)) if single.any() else np.nan)
    out = {
        "adatom_sites": len(adatom), "site_recall": len(rows) / max(len(adatom), 1),
        "false_per_20": 20 * false_sites / max(len(adatom) + len(others), 1),
        "occ_mae": float(np.abs(error).mean()) if len(error) else np.nan,
        "occ_bias": float(error.mean()) if len(error) else np.nan,
        "transition_mae": float(np.abs(flips - true_flips).mean()) if len(rows) else np.nan,
        "single_frame_recall": per_frame_recall,
    }
    for name in ("facet", "edge"):
        chosen = kind == name
        out[f"occ_mae_{name}"] = float(np.abs(error[chosen]).mean()) if chosen.any() else np.nan
    return out


def cached_video(cache: Path | None, **parameters) -> DiffusionVideo:
    """`simulate_adatom_video(**parameters)`, read from `cache` when it was made before."""
    if cache is None:
        return simulate_adatom_video(**parameters)
    name = "_".join(f"{key}-{value:g}" if isinstance(value, float) else f"{key}-{value}"
                    for key, value in sorted(parameters.items()))
    arrays, table = cache / f"{name}.npz", cache / f"{name}.csv"
    if arrays.exists() and table.exists():
        with np.load(arrays) as stored:
            return DiffusionVideo(frames=stored["frames"], sampling=float(stored["sampling"]),
                                  sites=pd.read_csv(table), present=stored["present"],
                                  drift=stored["drift"], dose=float(stored["dose"]))
    video = simulate_adatom_video(**parameters)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(arrays, frames=video.frames, sampling=video.sampling, present=video.present,
             drift=video.drift, dose=video.dose)
    video.sites.to_csv(table, index=False)
    return video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["au-hrtem-adatoms"],
                        help="each analyses the same videos")
    parser.add_argument("--doses", type=float, nargs="+", default=[200.0, 500.0])
    parser.add_argument("--videos", type=int, default=2, help="seeds per dose and regime")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--methods", nargs="+", default=["evidence", "detections"])
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed ... first-seed + videos - 1")
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="keep the simulated videos here and reuse them (abTEM is slow)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    models = {name: load_model(name) for name in args.models}
    print(f"processor: {processor().describe()}; "
          + "; ".join(f"{name} ({m.describe_runtime()})" for name, m in models.items()))
    rows, comparisons = [], []
    for dose in args.doses:
        for seed in range(args.first_seed, args.first_seed + args.videos):
            sites_by_regime: dict[tuple[str, str], pd.DataFrame] = {}
            for regime in ("slow", "fast"):
                start = time.perf_counter()
                video = cached_video(args.cache, n_frames=args.frames, dose=dose,
                                     regime=regime, seed=seed)
                simulated = time.perf_counter() - start
                for (name, loaded), method in itertools.product(models.items(), args.methods):
                    start = time.perf_counter()
                    result = video_occupancy(video.frames, loaded, sampling=video.sampling,
                                             method=method)
                    rows.append({"dose": dose, "seed": seed, "regime": regime,
                                 "model": name, "method": method, **score(result, video),
                                 "simulate_s": simulated,
                                 "analyse_s": time.perf_counter() - start})
                    sites_by_regime[(regime, name, method)] = result.sites
                    print(rows[-1], flush=True)
            for name, method in itertools.product(models, args.methods):
                table = compare_transition_rates(sites_by_regime[("slow", name, method)],
                                                 sites_by_regime[("fast", name, method)],
                                                 names=("slow", "fast"))
                surface = table[table["layer"] == "switching"].iloc[0]
                comparisons.append({"dose": dose, "seed": seed, "model": name,
                                    "method": method,
                                    "median_slow": surface["median_slow"],
                                    "median_fast": surface["median_fast"],
                                    "p_value": surface["p_value"]})
    table = pd.DataFrame(rows)
    print(f"\n{args.frames} frames per video")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    summary = table.groupby(["dose", "model", "method"]).mean(numeric_only=True).drop(
        columns="seed")
    print("\nmean over videos and regimes:")
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))
    print("\nslow vs fast (switching sites' transition rates, Mann-Whitney):")
    print(pd.DataFrame(comparisons).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
