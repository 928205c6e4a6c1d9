"""Why stem-columns misses held-out columns and makes false detections, and the physical bound.

The held-out images of ``benchmarks/stem_accuracy.py`` at one dose (the very images
:func:`~napari_tem_atoms.training.stem.evaluate_stem` scores: :class:`HeldOutSet`), each also
rendered without noise (the same scan, distortions and amorphous layer; no line gain, Poisson
or read-out noise). For every missed target column and every false detection of the network
it records the structure, microscope (mode, sampling, kV, convergence, probe FWHM), the
distance to the nearest other target column, the column's relative signal (as the labeller
computes it), the distance to the border and whether the noise-free image has a maximum of
its own within 0.5 Å (ABF negated). It then prints

- the network against two oracles that see the noise-free image (local maxima above a height
  in units of an isolated column of relative signal 1, the threshold of best F1): found by
  the network's own peak finder (1.2 Å square neighbourhood), and every 3 × 3 maximum (the
  physical bound: a column the probe does not resolve has no maximum of its own);
- the network scored only on resolved columns (``score(..., resolved_only=True)``), away from
  the border, on images whose probe is narrower than the closest target spacing, and with a
  round 1.2 Å neighbourhood in its peak finder in place of the square one;
- misses by cause, the first that applies: *unresolved* (no noise-free maximum within
  0.5 Å; how many of them where the ABF signal is at the detector's floor), *peak finder*
  (found with the round neighbourhood), *faint* (relative signal < 0.2), *border* (within
  1 Å of the edge), *other*; false detections likewise (unresolved, faint: of the nearest
  column, border, other);
- the RMSE of the found targets, resolved or not, faint or not.

Usage
-----
::

    OMP_NUM_THREADS=1 python benchmarks/stem_misses.py --images 24 --dose 1e5 --threads 1 \\
        --csv build/stem_misses.csv
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_tem_atoms import detect_atoms
from napari_tem_atoms.analysis import detect as detect_module
from napari_tem_atoms.analysis.detect import MIN_COLUMN_DISTANCE, find_peaks
from napari_tem_atoms.models import load_model
from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.simulation.stem import (
    ABF_FLOOR,
    HELD_OUT_STRUCTURES,
    IGNORED_FRACTION,
    column_height,
    probe_intensity_spectrum,
)
from napari_tem_atoms.training.metrics import MATCH_RADIUS, MatchCounts, match_pairs
from napari_tem_atoms.training.stem import (
    HeldOutImage,
    HeldOutSet,
    image_maxima,
    resolved_columns,
    score,
)

#: A column (or a detection's nearest column) below this relative signal is "faint".
FAINT = 0.2
#: Within this distance [Å] of the image's edge: "border".
BORDER = 1.0
MISS_CAUSES = ("unresolved", "peak finder", "faint", "border", "other")
FALSE_CAUSES = ("unresolved", "faint", "border", "other")
#: Oracle heights tried (units of an isolated column of relative signal 1).
ORACLE_THRESHOLDS = (0.01, 0.035, 0.05, 0.1, 0.15, 0.2, 0.3)


def probe_fwhm(settings: Any, grid: float = 0.02, size: int = 512) -> float:
    """Full width at half maximum [Å] of the probe intensity the simulator convolves with.

    The source size included; an aberrated probe's width is that of a disc of the same area
    as the region above half the maximum.
    """
    spectrum = probe_intensity_spectrum((size, size), grid, settings)
    probe = np.fft.ifft2(spectrum).real
    area = float((probe >= probe.max() / 2).sum()) * grid**2
    return 2.0 * float(np.sqrt(area / np.pi))


def round_local_maxima(heatmap: np.ndarray, threshold: float, distance: int) -> np.ndarray:
    """The peak finder's maxima with a round neighbourhood of radius `distance` [px].

    ``analysis.detect._local_maxima`` looks at a (2·distance+1)² square: a peak within
    1.2 Å of a higher one along an axis, but up to 1.7 Å along a diagonal, is dropped.
    """
    offsets = np.arange(-distance, distance + 1)
    footprint = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= distance**2
    is_max = heatmap == ndimage.maximum_filter(heatmap, footprint=footprint, mode="nearest")
    if heatmap.min() == heatmap.max():
        return np.zeros((0, 2), dtype=np.intp)
    rows, cols = np.nonzero(is_max & (heatmap > threshold))
    order = np.argsort(-heatmap[rows, cols], kind="stable")
    peaks = np.stack([rows[order], cols[order]], axis=1)
    if len(peaks) > 1:  # equal maxima closer than `distance` (a plateau): keep the first
        removed = np.zeros(len(peaks), dtype=bool)
        for index, near in enumerate(cKDTree(peaks).query_ball_point(peaks, distance - 0.5)):
            if not removed[index]:
                removed[[other for other in near if other > index]] = True
        peaks = peaks[~removed]
    return peaks


@contextmanager
def round_peak_finder():
    """Detection with :func:`round_local_maxima` in place of the square neighbourhood."""
    with mock.patch.object(detect_module, "_local_maxima", round_local_maxima):
        yield


def oracle_window(height: np.ndarray, sampling: float, threshold: float) -> np.ndarray:
    """Maxima of the noise-free image found as the network's peaks are (1.2 Å square)."""
    low = float(height.min())
    # find_peaks refines in log space: shift the image to positive values.
    positions, _ = find_peaks(height - low + 1.0, threshold - low + 1.0,
                              MIN_COLUMN_DISTANCE / sampling)
    return positions


def oracle_any(height: np.ndarray, sampling: float, threshold: float) -> np.ndarray:
    """Every 3 × 3 maximum of the noise-free image above `threshold`."""
    return image_maxima(height, threshold)


@dataclass
class Tally:
    """Match counts per structure and in all."""

    counts: dict[str, MatchCounts] = field(default_factory=lambda: defaultdict(MatchCounts))

    def add(self, structure: str, counts: MatchCounts) -> None:
        self.counts[structure] += counts
        self.counts["all"] += counts


def nearest(points: np.ndarray, targets: np.ndarray, exclude_self: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    """Distance [same units] and index of each point's nearest target (not itself)."""
    if len(targets) < 1 + exclude_self or len(points) == 0:
        return np.full(len(points), np.inf), np.zeros(len(points), dtype=int)
    distance, index = cKDTree(targets).query(points, k=2 if exclude_self else 1)
    if exclude_self:
        distance, index = distance[:, 1], index[:, 1]
    return distance, index


def border_distance(positions: np.ndarray, shape: tuple[int, int], sampling: float
                    ) -> np.ndarray:
    """Distance [Å] of each (row, col) [px] from the nearest edge pixel's centre."""
    last = np.array(shape) - 1
    return np.minimum(positions, last - positions).min(axis=1) * sampling


def saturated_near(clean: HeldOutImage, positions: np.ndarray, radius: float = 0.5
                   ) -> np.ndarray:
    """Whether the noise-free ABF signal is at the detector's floor within `radius` [Å].

    Heavy or overlapping ABF columns drive the simulated signal to the floor (a flat-bottomed
    dip), where two columns can share one flat maximum of the negated image.
    """
    settings = clean.settings
    if settings.mode == "HAADF" or len(positions) == 0:
        return np.zeros(len(positions), dtype=bool)
    floor = np.float32(ABF_FLOOR * settings.signal * settings.dose * settings.sampling**2)
    at_floor = clean.recorded <= floor * np.float32(1 + 1e-5)
    if not at_floor.any():
        return np.zeros(len(positions), dtype=bool)
    distance = ndimage.distance_transform_edt(~at_floor) * settings.sampling
    pixel = np.clip(np.round(positions).astype(int), 0, np.array(at_floor.shape) - 1)
    return distance[pixel[:, 0], pixel[:, 1]] <= radius


def score_away_from_border(detected: np.ndarray, truth: np.ndarray, sampling: float,
                           shape: tuple[int, int]) -> MatchCounts:
    """:func:`score` leaving out the columns within BORDER of the edge (neither target nor error).

    Detections within BORDER - 0.5 Å of the edge are dropped: whatever column they could be
    matched to is left out.
    """
    truth = truth.copy()
    truth[border_distance(truth[:, :2], shape, sampling) < BORDER, 2] = 0
    detected = np.asarray(detected, dtype=float).reshape(-1, 2)
    keep = border_distance(detected, shape, sampling) >= BORDER - MATCH_RADIUS
    return score(detected[keep], truth, sampling)


def miss_cause(resolved: bool, found_round: bool, faint: bool, border: bool) -> str:
    """The first cause of a miss that applies, in the order of :data:`MISS_CAUSES`."""
    for cause, applies in zip(MISS_CAUSES, (not resolved, found_round, faint, border, True),
                              strict=True):
        if applies:
            return cause
    raise AssertionError("unreachable")


def false_cause(resolved: bool, faint: bool, border: bool) -> str:
    """The first cause of a false detection that applies (:data:`FALSE_CAUSES`)."""
    for cause, applies in zip(FALSE_CAUSES, (not resolved, faint, border, True), strict=True):
        if applies:
            return cause
    raise AssertionError("unreachable")


def records_of_image(image: HeldOutImage, clean: HeldOutImage, height: np.ndarray,
                     detected: np.ndarray, detected_round: np.ndarray, fwhm: float
                     ) -> list[dict[str, Any]]:
    """A record per found and per missed target and per false detection in `image`."""
    s, truth, shape = image.settings.sampling, image.truth, image.recorded.shape
    visibility = image.visibility[image.visibility >= IGNORED_FRACTION]
    assert len(visibility) == len(truth)  # the truth keeps the columns in this order
    target = truth[:, 2] >= 1
    targets_a = truth[target, :2] * s
    common = {"structure": image.structure.spec.label, "mode": image.settings.mode,
              "sampling": s, "kV": image.settings.energy / 1e3,
              "convergence": image.settings.convergence, "probe_fwhm": fwhm}
    detected = np.asarray(detected, dtype=float).reshape(-1, 2)
    rows, cols, distance = match_pairs(detected, truth[:, :2], s)
    records = []
    hit = target[cols]
    where = truth[cols[hit], :2]
    resolved = resolved_columns(height, where, s)
    for k, column in enumerate(cols[hit]):
        records.append({**common, "error": "hit", "row": where[k, 0], "col": where[k, 1],
                        "distance": distance[hit][k], "relative_signal": visibility[column],
                        "resolved": bool(resolved[k]),
                        "border": border_distance(where[k:k + 1], shape, s)[0]})
    missed = np.setdiff1d(np.flatnonzero(target), cols[hit])
    _, round_cols, _ = match_pairs(detected_round, truth[:, :2], s)
    where = truth[missed, :2]
    resolved = resolved_columns(height, where, s)
    saturated = saturated_near(clean, where)
    spacing, _ = nearest(where * s, targets_a, exclude_self=True)
    edge = border_distance(where, shape, s)
    for k, column in enumerate(missed):
        found_round = bool(np.isin(column, round_cols))
        records.append({**common, "error": "miss", "row": where[k, 0], "col": where[k, 1],
                        "nearest_target": spacing[k], "relative_signal": visibility[column],
                        "border": edge[k], "resolved": bool(resolved[k]),
                        "saturated": bool(saturated[k]), "found_round": found_round,
                        "cause": miss_cause(resolved[k], found_round,
                                            visibility[column] < FAINT, edge[k] < BORDER)})
    false = np.setdiff1d(np.arange(len(detected)), rows)
    where = detected[false]
    resolved = resolved_columns(height, where, s)
    to_target, _ = nearest(where * s, targets_a)
    to_column, column = nearest(where * s, image.columns * s)
    signal = image.visibility[column] if len(image.columns) else np.zeros(len(where))
    edge = border_distance(where, shape, s)
    for k in range(len(false)):
        records.append({**common, "error": "false", "row": where[k, 0], "col": where[k, 1],
                        "nearest_target": to_target[k], "nearest_column": to_column[k],
                        "relative_signal": signal[k], "border": edge[k],
                        "resolved": bool(resolved[k]),
                        "cause": false_cause(resolved[k], signal[k] < FAINT, edge[k] < BORDER)})
    return records


def analyse_mode(mode: str, detect: Callable, detect_round: Callable, images: int, seed: int,
                 dose: float, model_sampling: float) -> dict[str, Any]:
    """Score the network and the oracles on the held-out images of `mode`; collect records."""
    held_out = HeldOutSet(images, seed, HELD_OUT_STRUCTURES, mode, model_sampling)
    tallies = defaultdict(Tally)
    oracle = {(name, t): Tally() for name in ("window", "any") for t in ORACLE_THRESHOLDS}
    records: list[dict[str, Any]] = []
    for index in range(images):
        image = held_out.image(index, dose)
        clean = held_out.image(index, dose, noise=False)
        assert np.array_equal(clean.truth, image.truth)
        s, truth = image.settings.sampling, image.truth
        label = image.structure.spec.label
        height = column_height(clean.recorded, clean.settings)  # columns bright
        fwhm = probe_fwhm(image.settings)
        detected = detect(image.recorded, s, mode)
        detected_round = detect_round(image.recorded, s, mode)
        tallies["network"].add(label, score(detected, truth, s))
        tallies["resolved only"].add(
            label, score(detected, truth, s, resolved_only=True, noise_free=height))
        tallies["round window"].add(label, score(detected_round, truth, s))
        tallies["away from border"].add(
            label, score_away_from_border(detected, truth, s, image.recorded.shape))
        targets = truth[truth[:, 2] >= 1, :2] * s
        spacing, _ = nearest(targets, targets, exclude_self=True)
        if len(spacing) and fwhm < spacing.min():
            tallies["FWHM < spacing"].add(label, score(detected, truth, s))
        for t in ORACLE_THRESHOLDS:
            oracle["window", t].add(label, score(oracle_window(height, s, t), truth, s))
            oracle["any", t].add(label, score(oracle_any(height, s, t), truth, s))
        records += records_of_image(image, clean, height, detected, detected_round, fwhm)
    thresholds = {}
    for name in ("window", "any"):
        best = max(ORACLE_THRESHOLDS, key=lambda t, n=name: oracle[n, t].counts["all"].f1)
        tallies[f"oracle {name}"], thresholds[name] = oracle[name, best], best
    # Recall of every 3 × 3 maximum, however low: what the probe resolves at all.
    tallies["oracle any, lowest"] = oracle["any", ORACLE_THRESHOLDS[0]]
    return {"tallies": tallies, "records": records, "oracle_scan": oracle,
            "thresholds": thresholds}


def _share(count: int, total: int) -> str:
    return f"{count} ({count / total:.0%})" if total else "0"


def print_tables(mode: str, result: dict[str, Any]) -> None:
    """The oracle, cause and position-error tables of one mode."""
    tallies, records = result["tallies"], result["records"]
    structures = [*sorted({k for k in tallies["network"].counts if k != "all"}), "all"]
    scan, thresholds = result["oracle_scan"], result["thresholds"]
    print(f"\n### {mode}\n")
    print("Oracle F1 (recall, precision) by height threshold t, in isolated-column units:")
    for t in ORACLE_THRESHOLDS:
        window, every = scan["window", t].counts["all"], scan["any", t].counts["all"]
        print(f"  t {t:g}: window {window.f1:.3f} ({window.recall:.3f}, {window.precision:.3f})"
              f"; 3×3 {every.f1:.3f} ({every.recall:.3f}, {every.precision:.3f})")
    print("\nResolved share: targets with a noise-free maximum of their own within 0.5 Å (the "
          "recall bound); F1 bound: 2R/(1+R) of it, with no false detection.")
    print("\n| Structure | Targets | F1 | R | P | RMSE pm | F1 resolved only | RMSE resolved "
          f"| Resolved share | F1 bound | Oracle F1 window t={thresholds['window']:g} | Oracle "
          f"F1 3×3 t={thresholds['any']:g} | F1 round window | F1 away from border | "
          "F1 FWHM < spacing |")
    print("|---" * 15 + "|")
    for name in structures:
        n, res = tallies["network"].counts[name], tallies["resolved only"].counts[name]
        targets = n.true_positives + n.false_negatives
        resolved = res.true_positives + res.false_negatives
        narrow = tallies["FWHM < spacing"].counts.get(name)
        print(f"| {name} | {targets} | {n.f1:.3f} | {n.recall:.3f} | {n.precision:.3f} | "
              f"{n.rmse_pm:.1f} | {res.f1:.3f} | {res.rmse_pm:.1f} | "
              f"{resolved / max(targets, 1):.3f} | "
              f"{2 * resolved / max(targets + resolved, 1):.3f} | "
              f"{tallies['oracle window'].counts[name].f1:.3f} | "
              f"{tallies['oracle any'].counts[name].f1:.3f} | "
              f"{tallies['round window'].counts[name].f1:.3f} | "
              f"{tallies['away from border'].counts[name].f1:.3f} | "
              f"{narrow.f1 if narrow else float('nan'):.3f} |")

    def by_structure(kind: str, causes: tuple[str, ...], extra: Callable) -> None:
        chosen = [r for r in records if r["error"] == kind]
        for name in structures:
            rows = [r for r in chosen if name in ("all", r["structure"])]
            if rows:
                cells = [_share(sum(r["cause"] == c for r in rows), len(rows)) for c in causes]
                print(f"| {name} | {len(rows)} | " + " | ".join(cells) + f" | {extra(rows)} |")

    print("\nMissed targets by cause (the first that applies: no noise-free maximum within "
          "0.5 Å; found with a round peak-finder neighbourhood; relative signal < 0.2; "
          "within 1 Å of the edge)\n")
    print("| Structure | Misses | " + " | ".join(MISS_CAUSES)
          + " | unresolved at ABF floor | median FWHM Å | median nearest target Å |")
    print("|---" * (len(MISS_CAUSES) + 5) + "|")
    by_structure("miss", MISS_CAUSES, lambda rows: (
        f"{sum(r['cause'] == 'unresolved' and r['saturated'] for r in rows)} | "
        f"{np.median([r['probe_fwhm'] for r in rows]):.2f} | "
        f"{np.median([r['nearest_target'] for r in rows]):.2f}"))
    print("\nFalse detections by cause (the first that applies: no noise-free maximum within "
          "0.5 Å; nearest column's relative signal < 0.2; within 1 Å of the edge); where "
          "they are (any cause)\n")
    print("| Structure | False | " + " | ".join(FALSE_CAUSES)
          + " | ≤ 0.1 Å from the edge | 0.5-1 Å from a target | > 1 Å from every column |")
    print("|---" * (len(FALSE_CAUSES) + 5) + "|")
    by_structure("false", FALSE_CAUSES, lambda rows: (
        f"{sum(r['border'] <= 0.1 for r in rows)} | "
        f"{sum(0.5 < r['nearest_target'] <= 1.0 for r in rows)} | "
        f"{sum(r['nearest_column'] > 1.0 for r in rows)}"))
    hits = [r for r in records if r["error"] == "hit"]
    print("\nPosition error of the found targets (RMSE pm, count)\n")
    print("| Targets | RMSE pm | N |")
    print("|---|---|---|")
    groups = {
        "all": lambda r: True,
        "resolved": lambda r: r["resolved"],
        "unresolved": lambda r: not r["resolved"],
        f"relative signal < {FAINT}": lambda r: r["relative_signal"] < FAINT,
        f"resolved, relative signal ≥ {FAINT}, ≥ {BORDER} Å from the edge": lambda r: (
            r["resolved"] and r["relative_signal"] >= FAINT and r["border"] >= BORDER),
    }
    for name, keep in groups.items():
        errors = np.array([r["distance"] for r in hits if keep(r)])
        rmse = 100 * np.sqrt(np.mean(errors**2)) if len(errors) else float("nan")
        print(f"| {name} | {rmse:.1f} | {len(errors)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="stem-columns")
    parser.add_argument("--images", type=int, default=24, help="held-out images per mode")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--dose", type=float, default=1e5, help="e/Å²")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--csv", default=None, help="write every miss and false detection")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    print(f"model {loaded.name}; {args.images} held-out images per mode at {args.dose:.0e} "
          f"e/Å², seed {args.seed}; processor: {processor().describe()}")

    def network(image: np.ndarray, sampling: float, mode: str) -> np.ndarray:
        atoms = detect_atoms(image, loaded, sampling=sampling, imaging_mode=f"STEM-{mode}")
        return atoms[["y", "x"]].to_numpy()

    def network_round(image: np.ndarray, sampling: float, mode: str) -> np.ndarray:
        with round_peak_finder():
            return network(image, sampling, mode)

    all_records = []
    for mode in ("HAADF", "ABF"):
        start = time.time()
        result = analyse_mode(mode, network, network_round, args.images, args.seed, args.dose,
                              loaded.sampling)
        print_tables(mode, result)
        print(f"\n({time.time() - start:.0f} s)")
        all_records += result["records"]
    if args.csv:
        import pandas as pd

        pd.DataFrame(all_records).to_csv(args.csv, index=False)
        print(f"records: {args.csv}")


if __name__ == "__main__":
    main()
