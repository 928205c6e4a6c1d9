"""Peak memory and speed of `tem-atoms detect` on a large stack on disk.

Writes an N-frame 1024² uint16 TIFF (default 2000 frames, 4 GB) into a temporary folder, runs
the command line on it, and prints frames per second and the peak resident memory of the run
(target < 2 GB).

Usage: python benchmarks/batch_memory.py [--frames 2000] [--folder /big/tmp]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile

from napari_tem_atoms.samples import synthetic_gold_stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--folder", default=None)
    args = parser.parse_args()
    base = synthetic_gold_stack(n_frames=8, shape=(1024, 1024), sampling=0.1, seed=3).images
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        stack = Path(folder) / "stack.tif"
        frames = (base[index % len(base)].astype("uint16") for index in range(args.frames))
        # One series of single-page frames, written frame by frame (never all in memory).
        tifffile.imwrite(stack, data=frames, shape=(args.frames, 1024, 1024), dtype="uint16",
                         bigtiff=True, photometric="minisblack")
        size = stack.stat().st_size / 1e9
        print(f"wrote {args.frames} frames of 1024² ({size:.1f} GB) to {stack}")
        tem_atoms = Path(sys.executable).with_name("tem-atoms")
        start = time.perf_counter()
        subprocess.run([str(tem_atoms), "detect", str(stack), "--sampling", "0.1", "-o",
                        str(Path(folder) / "atoms.csv")], check=True)
        elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # kB -> GB
    print(f"{args.frames / elapsed:.2f} frames/s, peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
