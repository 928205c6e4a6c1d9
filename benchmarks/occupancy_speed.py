"""Time of the site and occupancy step (`site_occupancy`) for 1,000 frames × 1,000 sites.

Detections are made from a known occupancy matrix (70 % occupied, 0.3 px position noise, a
random-walk drift that is then undone), so the timing covers clustering, assignment,
statistics and edge distances; it also checks the sites and fractions came out right.

Usage: python benchmarks/occupancy_speed.py [--frames 1000] [--sites 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_tem_atoms.analysis.occupancy import site_occupancy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(args.sites)))
    rows, cols = np.mgrid[0:side, 0:side]
    sites = (np.stack([rows.ravel(), cols.ravel()], axis=1) * 14.4 + 40.0)[: args.sites]
    occupied = rng.random((args.frames, args.sites)) < 0.7
    drift = np.cumsum(rng.normal(0, 0.5, (args.frames, 2)), axis=0)
    drift -= drift[0]
    frames, index = np.nonzero(occupied)
    positions = sites[index] + drift[frames] + rng.normal(0, 0.3, (len(index), 2))
    detections = np.column_stack([frames, positions])
    shape = tuple(int(n) for n in np.ceil(sites.max(axis=0) + 80))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = site_occupancy(detections, n_frames=args.frames, drift=drift,
                                frame_shape=shape, sampling=0.1)
        times.append(time.perf_counter() - start)
    found = result.sites[["y", "x"]].to_numpy()
    distance = np.linalg.norm(found[:, None] - sites[None], axis=-1)
    match = distance.argmin(axis=0)
    error = np.abs(result.sites["occupancy"].to_numpy()[match] - occupied.mean(axis=0)).mean()
    print(f"{args.frames} frames × {args.sites} sites, {len(detections):,} detections")
    print(f"site_occupancy: best {min(times):.2f} s, median {np.median(times):.2f} s "
          f"over {args.repeats} runs")
    print(f"sites found: {len(result.sites)} (true {args.sites}); "
          f"mean |occupancy error| {error:.2g}")


if __name__ == "__main__":
    main()
