"""Detection on real STEM images, scored against Atomap's columns, and its speed against Atomap's.

Usage: python benchmarks/stem_real.py [--refs /work/stem_real_refs] [--model NAME|auto]
       [--out /tmp/stem_real_out] [--only NAME ...] [--no-peer]

The reference folders come from ``benchmarks/stem_real_reference.py`` (run in a separate
environment with Atomap; the images are public, from PyPI packages, and are not committed): each
holds ``image.npy``, ``columns.csv`` (row, col [px], sublattice) and ``meta.json`` (pixel size,
imaging mode, the sublattices to score, Atomap's time).

Per image: ``detect_atoms`` with the model (``auto``: ``stem-columns`` for a STEM image when it is
registered, else ``au-hrtem``) given the pixel size and the imaging mode; its detections are
matched one to one to Atomap's columns within 0.5 Å (Hungarian assignment). Printed:

- **found**: the share of Atomap's columns (of the scored sublattices) matched;
- **extra**: the share of the detections that match no Atomap column, counted inside the field
  Atomap analysed (the convex hull of its columns: Atomap's peak finding leaves a band along the
  border as wide as its feature separation, and the sublattices placed between others stop at
  the outermost columns); detections outside that field are listed apart, neither right nor wrong;
- **RMSE** [pm] of the matched detections to Atomap's positions;
- the detection's time (the model loaded; median of ``--repeats`` runs; the first run, with the
  loading, apart), Atomap's time from ``meta.json`` and their ratio, with the processor. Both were
  measured on this machine; say whether it was under load.

The classical peer (Gaussian-filtered local maxima, ``training.evaluate.ClassicalPeer``) is
scored on the same images with the polarity of the mode (HAADF bright, ABF dark); its smoothing
and threshold are the best of its grid **on the Atomap reference itself** (an oracle choice: an
upper bound of what the hand-made finder does).

Overlays (``OUT/<name>_<model>.png``): Atomap's columns (circles: green matched, yellow missed),
the detections (crosses: green matched, red extra, grey outside Atomap's field).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import Delaunay, cKDTree

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from napari_tem_atoms.analysis.detect import detect_atoms
from napari_tem_atoms.models.registry import registered_models
from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.training.evaluate import (
    PEER_SIGMAS,
    PEER_THRESHOLDS,
    ClassicalPeer,
)

MATCH_RADIUS = 0.5  # Å


def load_reference(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The image, Atomap's columns (row, col) [px], their sublattice labels and the metadata."""
    image = np.load(folder / "image.npy")
    with open(folder / "columns.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = np.array([[float(r["row"]), float(r["col"])] for r in rows]).reshape(-1, 2)
    labels = np.array([r["sublattice"] for r in rows])
    meta = json.loads((folder / "meta.json").read_text())
    return image, columns, labels, meta


def match(detected: np.ndarray, reference: np.ndarray, pixel_size: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches within MATCH_RADIUS by the Hungarian assignment.

    Returns
    -------
    detected_index, reference_index : numpy.ndarray
        The matched pairs.
    distance : numpy.ndarray
        Their distances [Å].
    """
    empty = np.zeros(0, dtype=int)
    if len(detected) == 0 or len(reference) == 0:
        return empty, empty, np.zeros(0)
    radius_px = MATCH_RADIUS / pixel_size
    # Only pairs within the radius can match: a sparse cost matrix keeps 4000² images cheap.
    pairs = cKDTree(detected).sparse_distance_matrix(cKDTree(reference), radius_px,
                                                     output_type="coo_matrix")
    if pairs.nnz == 0:
        return empty, empty, np.zeros(0)
    cost = np.full((len(detected), len(reference)), 1e6)
    cost[pairs.row, pairs.col] = pairs.data
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] <= radius_px
    rows, cols = rows[keep], cols[keep]
    return rows, cols, cost[rows, cols] * pixel_size


def score(detected: np.ndarray, reference: np.ndarray, scored: np.ndarray, pixel_size: float
          ) -> dict:
    """Found, extra and RMSE of `detected` against the `scored` reference columns."""
    rows, cols, distance = match(detected, reference, pixel_size)
    matched = np.zeros(len(detected), dtype=bool)
    matched[rows] = True
    inside = Delaunay(reference).find_simplex(detected) >= 0 if len(reference) > 2 else matched
    unmatched_inside = ~matched & inside
    counted = matched | inside
    on_scored = scored[cols]
    found = int(on_scored.sum())
    return {
        "atomap": int(scored.sum()),
        "found": found,
        "found_pct": 100.0 * found / max(int(scored.sum()), 1),
        "detections": len(detected),
        "extra": int(unmatched_inside.sum()),
        "extra_pct": 100.0 * unmatched_inside.sum() / max(int(counted.sum()), 1),
        "outside": int((~counted).sum()),
        "rmse_pm": (100.0 * float(np.sqrt(np.mean(distance[on_scored] ** 2)))
                    if found else float("nan")),
        "matched_detection": matched,
        "inside": inside,
        "matched_reference": np.isin(np.arange(len(reference)), cols),
    }


def per_sublattice(detected: np.ndarray, reference: np.ndarray, labels: np.ndarray,
                   pixel_size: float) -> str:
    """'Sr 100.0%, Ti 98.1%': the share of each sublattice found."""
    _, cols, _ = match(detected, reference, pixel_size)
    hit = np.isin(np.arange(len(reference)), cols)
    return ", ".join(f"{label} {100.0 * hit[labels == label].mean():.1f}%"
                     for label in dict.fromkeys(labels))


def greedy_f1(detected: np.ndarray, reference: np.ndarray, hull: Delaunay,
              pixel_size: float) -> float:
    """F1 against `reference` with closest-first one-to-one matching (for the peer's grid)."""
    if len(detected) == 0:
        return 0.0
    pairs = cKDTree(detected).sparse_distance_matrix(
        cKDTree(reference), MATCH_RADIUS / pixel_size, output_type="coo_matrix")
    used_d, used_r = set(), set()
    for k in np.argsort(pairs.data):
        d, r = pairs.row[k], pairs.col[k]
        if d not in used_d and r not in used_r:
            used_d.add(d)
            used_r.add(r)
    matched = np.zeros(len(detected), dtype=bool)
    matched[list(used_d)] = True
    counted = matched | (hull.find_simplex(detected) >= 0)
    precision = len(used_d) / max(int(counted.sum()), 1)
    recall = len(used_r) / len(reference)
    return 2 * precision * recall / max(precision + recall, 1e-12)


def peer_detections(image: np.ndarray, pixel_size: float, mode: str, reference: np.ndarray,
                    scored: np.ndarray) -> tuple[np.ndarray, ClassicalPeer]:
    """The classical peer's detections at its best (sigma, threshold) on this reference."""
    polarity = -1.0 if mode in ("STEM-ABF", "STEM-BF") else 1.0
    best, best_f1, best_peaks = None, -1.0, np.zeros((0, 2))
    hull = Delaunay(reference)
    for sigma in PEER_SIGMAS:
        peaks, values = ClassicalPeer(sigma, PEER_THRESHOLDS[0]).maxima(image, pixel_size,
                                                                          polarity)
        for threshold in PEER_THRESHOLDS:
            kept = peaks[values > threshold]
            f1 = greedy_f1(kept, reference[scored], hull, pixel_size)
            if f1 > best_f1:
                best, best_f1, best_peaks = ClassicalPeer(sigma, float(threshold)), f1, kept
    return best_peaks, best


def choose_model(requested: str, mode: str) -> str:
    """The model to run: `requested`, or for ``auto`` the one made for the imaging mode."""
    if requested != "auto":
        return requested
    if mode.startswith("STEM") and "stem-columns" in registered_models("columns"):
        return "stem-columns"
    return "au-hrtem"


def overlay(image: np.ndarray, reference: np.ndarray, detected: np.ndarray, result: dict,
            title: str, path: Path, zoom: list[int]) -> None:
    """Atomap's columns and the detections on the image and on a zoom."""
    fig, axes = plt.subplots(1, 2, figsize=(16, 8))
    r0, r1, c0, c1 = zoom
    for ax, (top, bottom, left, right) in zip(axes, [(0, image.shape[0], 0, image.shape[1]),
                                                     (r0, r1, c0, c1)], strict=True):
        ax.imshow(image[top:bottom, left:right], cmap="gray")
        big = ax is axes[1]

        def draw(points: np.ndarray, marker: str, colour: str, label: str,
                 ax: plt.Axes = ax, top: int = top, left: int = left, big: bool = big,
                 bottom: int = bottom, right: int = right) -> None:
            keep = ((points[:, 0] >= top) & (points[:, 0] < bottom)
                    & (points[:, 1] >= left) & (points[:, 1] < right))
            style = {"mfc": "none"} if marker == "o" else {}
            ax.plot(points[keep, 1] - left, points[keep, 0] - top, marker, color=colour,
                    ms=9 if big else 4, mew=1, ls="none", label=f"{label} ({len(points)})",
                    **style)

        hit = result["matched_reference"]
        draw(reference[hit], "o", "lime", "Atomap, matched")
        draw(reference[~hit], "o", "yellow", "Atomap, missed")
        matched, inside = result["matched_detection"], result["inside"]
        draw(detected[matched], "+", "lime", "detected, matched")
        draw(detected[~matched & inside], "x", "red", "detected, extra")
        draw(detected[~matched & ~inside], "x", "grey", "detected, outside Atomap's field")
        ax.set_xlim(-0.5, right - left - 0.5)
        ax.set_ylim(bottom - top - 0.5, -0.5)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(title, fontsize=10)
    axes[1].set_title("zoom")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def timed_detection(image: np.ndarray, model: str, pixel_size: float, mode: str,
                    repeats: int) -> tuple[np.ndarray, float, float, dict]:
    """Detections (row, col) [px], the first run's time, the median of the next ones, attrs."""
    times, atoms = [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the domain warning of an HRTEM model is expected here
        for _ in range(repeats + 1):
            start = time.perf_counter()
            atoms = detect_atoms(image, model=model, sampling=pixel_size, imaging_mode=mode)
            times.append(time.perf_counter() - start)
    return (atoms[["y", "x"]].to_numpy(), times[0], float(np.median(times[1:])),
            dict(atoms.attrs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, default=Path("/work/stem_real_refs"))
    parser.add_argument("--model", default="auto",
                        help="registered name or .safetensors file; auto: the mode's model")
    parser.add_argument("--out", type=Path, default=Path("/tmp/stem_real_out"))
    parser.add_argument("--only", nargs="*", help="reference folder names to run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the first")
    parser.add_argument("--no-peer", action="store_true", help="skip the classical peer")
    args = parser.parse_args()
    folders = sorted(p.parent for p in args.refs.glob("*/meta.json"))
    if args.only:
        folders = [f for f in folders if f.name in args.only]
    if not folders:
        raise SystemExit(f"no reference folder (with meta.json) under {args.refs}: run "
                         "benchmarks/stem_real_reference.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"processor: {processor().describe()}")
    header = (f"{'image':14s} {'mode':10s} {'method':22s} {'Atomap':>6s} {'found':>7s} "
              f"{'extra':>7s} {'outside':>7s} {'RMSE pm':>8s} {'ours s':>8s} {'Atomap s':>8s} "
              f"{'x faster':>8s}")
    lines = [header]
    for folder in folders:
        image, reference, labels, meta = load_reference(folder)
        pixel_size, mode = float(meta["pixel_size_A"]), meta["mode"]
        scored = np.isin(labels, meta["scored_sublattices"])
        model = choose_model(args.model, mode)
        detected, first, warm, attrs = timed_detection(image, model, pixel_size, mode,
                                                       args.repeats)
        result = score(detected, reference, scored, pixel_size)
        atomap_s = float(meta["atomap_seconds"])
        lines.append(
            f"{meta['name']:14s} {mode:10s} {Path(str(model)).stem[:22]:22s} "
            f"{result['atomap']:6d} {result['found_pct']:6.1f}% {result['extra_pct']:6.1f}% "
            f"{result['outside']:7d} {result['rmse_pm']:8.1f} {warm:8.2f} {atomap_s:8.1f} "
            f"{atomap_s / warm:8.1f}")
        print(lines[-1])
        print(f"    {model}: {len(detected)} detections, first run {first:.2f} s with loading; "
              f"engine {attrs.get('engine')}, precision {attrs.get('precision')}, "
              f"device {attrs.get('device')}; per sublattice: "
              f"{per_sublattice(detected, reference, labels, pixel_size)}; Atomap timed on "
              f"{meta.get('processor')}")
        overlay(image, reference, detected, result,
                f"{meta['name']} ({meta['material']}, {mode}, {pixel_size:.4f} Å/px): {model} "
                f"vs Atomap: found {result['found_pct']:.1f}%, extra {result['extra_pct']:.1f}%, "
                f"RMSE {result['rmse_pm']:.1f} pm",
                args.out / f"{meta['name']}_{Path(str(model)).stem}.png", meta["zoom"])
        if not args.no_peer:
            start = time.perf_counter()
            peaks, peer = peer_detections(image, pixel_size, mode, reference, scored)
            peer_result = score(peaks, reference, scored, pixel_size)
            peer_s = time.perf_counter() - start
            lines.append(
                f"{meta['name']:14s} {mode:10s} {'classical peer (oracle)':22s} "
                f"{peer_result['atomap']:6d} {peer_result['found_pct']:6.1f}% "
                f"{peer_result['extra_pct']:6.1f}% {peer_result['outside']:7d} "
                f"{peer_result['rmse_pm']:8.1f} {'':>8s} {atomap_s:8.1f} {'':>8s}")
            print(lines[-1])
            print(f"    peer: sigma {peer.sigma} Å, threshold {peer.threshold} (grid search "
                  f"{peer_s:.1f} s)")
            overlay(image, reference, peaks, peer_result,
                    f"{meta['name']}: classical peer (sigma {peer.sigma} Å, threshold "
                    f"{peer.threshold}) vs Atomap", args.out / f"{meta['name']}_peer.png",
                    meta["zoom"])
    (args.out / "table.txt").write_text("\n".join(lines) + "\n")
    print(f"table and overlays in {args.out}/")


if __name__ == "__main__":
    main()
