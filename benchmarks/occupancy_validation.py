"""Occupancy measured on simulated diffusion videos against the known truth.

A gold particle along [110] whose surface columns come and go as Markov chains with known rates,
drifting, imaged frame by frame (abTEM multislice of the atoms present, the detector's
microscope model, Poisson noise at the dose per frame): `video_occupancy` (drift, detection with
the shipped model, sites) is compared with the truth. Also prints the same analysis on the true
column positions (perfect detections), which isolates the detector's share of the error.

Needs the `simulate` extra (abTEM). Usage:
    python benchmarks/occupancy_validation.py [--frames 100] [--dose 500] [--videos 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from napari_tem_atoms.analysis.occupancy import site_occupancy
from napari_tem_atoms.analysis.video import video_occupancy
from napari_tem_atoms.simulation.diffusion import simulate_diffusion_video


def compare(result, truth: pd.DataFrame, sampling: float, radius: float = 0.6) -> dict:
    """Match measured sites to true ones within `radius` Å; score fractions and occupancies.

    Only sites occupied in at least one frame can be found (a never-occupied site leaves no
    trace in the video), so they are the truth here.
    """
    truth = truth[truth["occupancy"] > 0].reset_index(drop=True)
    measured = result.sites
    distance = cdist(truth[["y", "x"]].to_numpy(), measured[["y", "x"]].to_numpy()) * sampling
    cost = np.where(distance <= radius, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] <= radius
    rows, cols = rows[keep], cols[keep]
    error = np.abs(measured["occupancy"].to_numpy()[cols] - truth["occupancy"].to_numpy()[rows])
    surface = truth["surface"].to_numpy()[rows]
    return {
        "true_sites": len(truth), "found": len(rows) / len(truth),
        "false_sites": len(measured) - len(rows),
        "occupancy_mae": float(error.mean()),
        "occupancy_mae_surface": float(error[surface].mean()) if surface.any() else np.nan,
        "occupancy_mae_inner": float(error[~surface].mean()) if (~surface).any() else np.nan,
        "position_error_pm": 100 * float(np.sqrt(np.mean(distance[rows, cols] ** 2))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--dose", type=float, default=500.0)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--model", default="au-hrtem")
    args = parser.parse_args()
    rows = []
    for seed in range(args.videos):
        start = time.perf_counter()
        video = simulate_diffusion_video(n_frames=args.frames, dose=args.dose, seed=seed)
        simulated = time.perf_counter() - start
        truth = video.sites
        start = time.perf_counter()
        result = video_occupancy(video.frames, args.model, sampling=video.sampling)
        analysed = time.perf_counter() - start
        drift_error = float(np.sqrt(np.mean((result.drift - video.drift) ** 2)))
        rows.append({"video": seed, "input": f"{args.model} detections", **compare(
            result, truth, video.sampling), "drift_rms_px": drift_error,
            "simulate_s": simulated, "analyse_s": analysed})
        # The same analysis on perfect detections (the true columns of every frame).
        frames, sites = np.nonzero(video.present)
        positions = truth[["y", "x"]].to_numpy()[sites] + video.drift[frames]
        perfect = site_occupancy(np.column_stack([frames, positions]), n_frames=args.frames,
                                 drift=video.drift, frame_shape=video.frames.shape[1:],
                                 sampling=video.sampling)
        rows.append({"video": seed, "input": "true columns", **compare(perfect, truth,
                                                                         video.sampling)})
    table = pd.DataFrame(rows)
    print(f"{args.frames} frames at {args.dose:g} e/Å² per frame, {video.frames.shape[1]}² px "
          f"at {video.sampling:g} Å/px; surface sites switch (occupancy 0.3-0.9)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
