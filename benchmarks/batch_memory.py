"""Peak memory (and time) of reading and detecting stacks of growing size: NPY, TIFF, EMD.

For each format and each number of frames, a stack of synthetic gold frames is written frame
by frame into a temporary folder (never all in memory), then a fresh process either reads it
lazily, frame by frame (``--mode read``, what ``tem-atoms detect`` does before the network),
or runs ``tem-atoms detect`` on it (``--mode detect``). Each process prints its peak resident
memory and how much of it came after the imports: that part must not grow with the file.

Formats: ``npy``; ``tiff`` (one page per frame); ``emd`` (Berkeley/NCEM EMD, HDF5 chunks of
one frame); ``emd-pixel`` (the same with 1x1-pixel chunks, the pathological chunking of a
TEAM-microscope file: one HDF5 chunk per pixel).

Usage::

    python benchmarks/batch_memory.py --mode read --frames 16,64,256
    python benchmarks/batch_memory.py --mode detect --frames 8,32,96 --size 256
    python benchmarks/batch_memory.py --formats tiff --frames 2000 --size 1024 --mode detect \
        --folder /big/tmp   # the large run: 4 GB of TIFF, target < 2 GB of memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMATS = ("npy", "tiff", "emd", "emd-pixel")
SAMPLING = 0.1  # Å/px of the synthetic frames


def _frames(count: int, size: int) -> list[np.ndarray] | object:
    """`count` float32 frames of size² cycling over 8 synthetic ones (a generator)."""
    from napari_tem_atoms.samples import synthetic_gold_stack

    base = synthetic_gold_stack(n_frames=8, shape=(size, size), sampling=SAMPLING,
                                seed=3).images.astype(np.float32)
    return (base[index % len(base)] for index in range(count))


def write_stack(kind: str, path_stem: Path, count: int, size: int) -> Path:
    """Write `count` frames of size² as `kind`, frame by frame; return the file."""
    if kind == "npy":
        path = path_stem.with_suffix(".npy")
        stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                          shape=(count, size, size))
        for index, frame in enumerate(_frames(count, size)):
            stack[index] = frame
        stack.flush()
        del stack
        return path
    if kind == "tiff":
        import tifffile

        path = path_stem.with_suffix(".tif")
        tifffile.imwrite(path, data=_frames(count, size), shape=(count, size, size),
                         dtype="float32", bigtiff=True, photometric="minisblack")
        return path
    import h5py
    from rsciio import emd

    path = path_stem.with_suffix(".emd")
    axes = [{"name": name, "size": n, "scale": scale, "offset": 0, "units": unit,
             "navigate": name == "frame"}
            for name, n, scale, unit in (("frame", 2, 1.0, "s"), ("y", 2, SAMPLING / 10, "nm"),
                                         ("x", 2, SAMPLING / 10, "nm"))]
    # RosettaSciIO writes the Berkeley layout around a stand-in; the data is then replaced.
    emd.file_writer(str(path), {
        "data": np.zeros((2, 2, 2), np.float32), "axes": axes,
        "metadata": {"General": {"title": "stack"}, "Signal": {"signal_type": ""}},
        "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False},
        "learning_results": {}, "models": {},
        "package_info": {"name": "batch_memory benchmark", "version": "0"}})
    chunks = (1, 1, 1) if kind == "emd-pixel" else (size, size, 1)
    with h5py.File(path, "r+") as stored:
        group = stored["signals/stack"]
        del group["data"]
        # Berkeley EMD stores the axes reversed: (x, y, frame).
        data = group.create_dataset("data", shape=(size, size, count), dtype=np.float32,
                                    chunks=chunks)
        for index, frame in enumerate(_frames(count, size)):
            data[:, :, index] = frame.T
    return path


CHILD = r"""
import json, resource, sys, time
import numpy as np
import napari_tem_atoms.cli as cli
from napari_tem_atoms import read_image

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

mode, path, out = sys.argv[1:4]
start_rss = rss_mb()
start = time.perf_counter()
if mode == "read":
    image = read_image(path, lazy=True)
    total = 0.0
    for index in range(image.data.shape[0]):
        total += float(np.asarray(image.data[index], dtype=np.float64).sum())
    code = 0
else:
    code = cli.main(["detect", path, "--sampling", "0.1", "-o", out])
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"code": code, "seconds": elapsed, "peak_mb": peak,
                  "after_imports_mb": peak - start_rss}))
"""


def measure(mode: str, path: Path, out: Path) -> dict:
    """Run the read or detect in a fresh process; its time and memory."""
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("read", "detect"), default="read")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--frames", default="16,64,256", help="frame counts, comma-separated")
    parser.add_argument("--size", type=int, default=512, help="frame side [px]")
    parser.add_argument("--pixel-size", type=int, default=128,
                        help="frame side of the emd-pixel stacks (one HDF5 chunk per pixel)")
    parser.add_argument("--folder", default=None, help="where the stacks are written")
    args = parser.parse_args()
    counts = [int(n) for n in args.frames.split(",")]
    print(f"mode {args.mode}; peak = the process's peak RSS, above imports = peak minus the RSS "
          "after importing the package")
    print(f"{'format':10} {'frames':>6} {'frame':>9} {'file MB':>8} {'write s':>8} "
          f"{'run s':>7} {'peak MB':>8} {'above imports MB':>17}")
    for kind in args.formats.split(","):
        size = args.pixel_size if kind == "emd-pixel" else args.size
        for count in counts:
            with tempfile.TemporaryDirectory(dir=args.folder) as folder:
                start = time.perf_counter()
                path = write_stack(kind, Path(folder) / "stack", count, size)
                written = time.perf_counter() - start
                result = measure(args.mode, path, Path(folder) / "atoms.csv")
                print(f"{kind:10} {count:6d} {f'{size}²':>9} {path.stat().st_size / 1e6:8.1f} "
                      f"{written:8.1f} {result['seconds']:7.1f} {result['peak_mb']:8.0f} "
                      f"{result['after_imports_mb']:17.0f}", flush=True)


if __name__ == "__main__":
    main()
