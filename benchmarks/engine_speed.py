"""Detection speed per engine x precision x sampling, with detections compared to PyTorch fp32.

For 1024² frames of the synthetic gold sample at each input sampling, every available engine
(PyTorch; OpenVINO when installed) runs at fp32 and bf16, end to end through ``detect_atoms``
(model loaded once, one warm-up frame; each engine at its default tile size). Each row gives
frames/s and, against the PyTorch fp32 detections of the same frames at the same tile size, F1
(matched within 0.5 Å) and the RMS position difference in pm: what the engine and precision
change. (The tile size itself moves detections a little: the network sees more of a column's
surroundings away from tile seams.)
Also: the classical Gaussian filter + ``peak_local_max`` detector on the same frames (the
issue's ratio), a tile-size sweep per engine, and optionally the time of an au-hrtem training
step per precision. The processor is printed first: name it next to every figure you quote.

To see what a CPU without native bfloat16 gives on a machine that has it, run with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (PyTorch only: OpenVINO ignores them).

Usage: python benchmarks/engine_speed.py [--frames 5] [--samplings 0.1 0.25] [--tiles]
       [--training] [--engines torch openvino] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max

from napari_tem_atoms.analysis.detect import default_tile_size, detect_atoms
from napari_tem_atoms.models import load_model
from napari_tem_atoms.models.engines import openvino_available
from napari_tem_atoms.models.runtime import processor, resolve_precision
from napari_tem_atoms.samples import synthetic_gold_stack
from napari_tem_atoms.training.metrics import MatchCounts, match_columns


def _frames(size: int, sampling: float, count: int, dose: float) -> np.ndarray:
    radius = min(25.0, size * sampling / 3)
    stack = synthetic_gold_stack(n_frames=count, shape=(size, size), sampling=sampling,
                                 particle_radius=radius, dose=dose, seed=3)
    return stack.images.astype(np.float32)


def _timed_detect(loaded, frames: np.ndarray, sampling: float, tile_size=None):
    detect_atoms(frames[:1], loaded, sampling=sampling, tile_size=tile_size)  # warm-up
    start = time.perf_counter()
    atoms = detect_atoms(frames[1:], loaded, sampling=sampling, tile_size=tile_size)
    return (len(frames) - 1) / (time.perf_counter() - start), atoms


def _agreement(atoms, reference, sampling: float) -> MatchCounts:
    counts = MatchCounts()
    for frame, group in reference.groupby("frame"):
        mine = atoms[atoms["frame"] == frame]
        # Every reference detection is scored (a large atom count: no column is left out).
        truth = np.column_stack([group[["y", "x"]].to_numpy(), np.full(len(group), 99)])
        counts += match_columns(mine[["y", "x"]].to_numpy(), truth, sampling)
    return counts


def _classical(frames: np.ndarray, sampling: float) -> float:
    """Frames/s of a Gaussian filter + peak_local_max detector (σ 0.5 Å, 1.2 Å apart)."""
    def detect(frame):
        smooth = ndimage.gaussian_filter(frame, 0.5 / sampling)
        return peak_local_max(-smooth if smooth.mean() > 0 else smooth,
                              min_distance=max(1, int(1.2 / sampling)), threshold_rel=0.2)
    detect(frames[0])
    start = time.perf_counter()
    for frame in frames[1:]:
        detect(frame)
    return (len(frames) - 1) / (time.perf_counter() - start)


def _training_step(precision: str, steps: int = 4) -> float:
    """Seconds per au-hrtem training step (batch 8 of 256², AdamW) at `precision`."""
    import torch
    import torch.nn.functional as F

    from napari_tem_atoms.models import model_metadata
    from napari_tem_atoms.models.unet import UNet

    torch.manual_seed(0)
    network = UNet(**model_metadata("au-hrtem")["architecture"]).to(
        memory_format=torch.channels_last).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-4)
    images = torch.randn(8, 1, 256, 256).contiguous(memory_format=torch.channels_last)
    targets = torch.rand(8, 1, 256, 256)
    bf16 = resolve_precision(precision, "cpu") == "bf16"
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = network(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--dose", type=float, default=1000.0)
    parser.add_argument("--samplings", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--engines", nargs="+", default=None)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--tiles", action="store_true", help="also sweep the tile size")
    parser.add_argument("--training", action="store_true", help="also time training steps")
    parser.add_argument("--coarser", action="store_true",
                        help="also time the network alone on smaller inputs: what a model at a "
                             "coarser sampling would cost for 1024² frames at 0.25 Å/px")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    engines = args.engines or (["torch", "openvino"] if openvino_available() else ["torch"])
    cpu = processor()
    print(f"processor: {cpu.describe()}; auto precision here: {resolve_precision('auto', 'cpu')}")
    print(f"{args.size}² frames of the synthetic gold sample at {args.dose:g} e/Å², "
          f"{args.frames} timed frames after one warm-up\n")
    print("| engine | precision | sampling (Å/px) | network sees | tile | frames/s | "
          "F1 vs torch fp32 | RMS diff (pm) |")
    print("|---|---|---|---|---|---|---|---|")
    classical = {}
    torch_fp32 = load_model("au-hrtem", device="cpu", precision="fp32", engine="torch")
    for sampling in args.samplings:
        frames = _frames(args.size, sampling, args.frames + 1, args.dose)
        references = {}  # PyTorch fp32 detections per tile size: engines compared alike
        for engine in engines:
            for precision in args.precisions:
                loaded = load_model("au-hrtem", device="cpu", precision=precision,
                                    engine=engine)
                rate, atoms = _timed_detect(loaded, frames, sampling)
                tile = default_tile_size(loaded)
                if tile not in references:
                    references[tile] = detect_atoms(frames[1:], torch_fp32, sampling=sampling,
                                                    tile_size=tile)
                counts = _agreement(atoms, references[tile], sampling)
                seen = round(args.size * sampling / loaded.sampling)
                print(f"| {engine} | {precision} | {sampling:g} | {seen}² | {tile} | {rate:.2f} | "
                      f"{counts.f1:.4f} | {counts.rmse_pm:.2f} |", flush=True)
        classical[sampling] = _classical(frames, sampling)
    print()
    for sampling, rate in classical.items():
        print(f"classical Gaussian + peak_local_max at {sampling:g} Å/px: {rate:.1f} frames/s")
    if args.tiles:
        print("\n| engine | precision | tile | frames/s (1024² at 0.25 Å/px) |")
        print("|---|---|---|---|")
        frames = _frames(args.size, 0.25, 3, args.dose)
        for engine in engines:
            for precision in args.precisions:
                loaded = load_model("au-hrtem", device="cpu", precision=precision,
                                    engine=engine)
                for tile in (512, 768, 1024, 1344):
                    rate, _ = _timed_detect(loaded, frames, 0.25, tile_size=tile)
                    print(f"| {engine} | {precision} | {tile} | {rate:.2f} |", flush=True)
    if args.coarser:
        from napari_tem_atoms.analysis.detect import predict_heatmap

        print("\n| engine | precision | network input | model sampling for 1024² at 0.25 Å/px "
              "| network alone, frames/s |")
        print("|---|---|---|---|---|")
        rng = np.random.default_rng(0)
        for engine in engines:
            for precision in args.precisions:
                loaded = load_model("au-hrtem", device="cpu", precision=precision,
                                    engine=engine)
                for size in (1280, 1024, 896, 768, 640):
                    image = rng.normal(size=(size, size)).astype(np.float32)
                    predict_heatmap(loaded, image)
                    start = time.perf_counter()
                    for _ in range(3):
                        predict_heatmap(loaded, image)
                    rate = 3 / (time.perf_counter() - start)
                    print(f"| {engine} | {precision} | {size}² | {0.25 * 1024 / size:.2f} Å/px "
                          f"| {rate:.2f} |", flush=True)
    if args.training:
        print()
        for precision in args.precisions:
            print(f"training step (8 x 256², au-hrtem) at {precision}: "
                  f"{_training_step(precision):.2f} s", flush=True)


if __name__ == "__main__":
    main()
