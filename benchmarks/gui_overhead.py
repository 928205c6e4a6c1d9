"""GUI overhead: the Detect atoms widget against the core on a 50-frame 512² stack.

Run under a display (xvfb-run -a python benchmarks/gui_overhead.py). Prints both times and the
overhead in percent (target ≤ 10 %).
"""

from __future__ import annotations

import statistics
import time

import napari
from qtpy.QtCore import QEventLoop

from napari_tem_atoms.analysis import detect_atoms
from napari_tem_atoms.models import load_cached_model
from napari_tem_atoms.samples import synthetic_gold_stack


def main(frames: int = 50, repeats: int = 5) -> None:
    stack = synthetic_gold_stack(n_frames=frames, shape=(512, 512), sampling=0.1, seed=1)
    loaded = load_cached_model("au-hrtem")  # the widget reuses it: time the work only
    detect_atoms(stack.images[:1], loaded, sampling=0.1)  # warm-up

    viewer = napari.Viewer()
    viewer.add_image(stack.images, name="stack", scale=(1, 0.1, 0.1),
                     units=("pixel", "angstrom", "angstrom"))
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Detect atoms")
    # Core and widget runs alternate, so that a slow spell of the machine hits both.
    core_runs, widget_runs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        core = detect_atoms(stack.images, loaded, sampling=0.1)
        core_runs.append(time.perf_counter() - start)
        loop = QEventLoop()
        start = time.perf_counter()
        widget.run()
        widget.worker.finished.connect(loop.quit)
        loop.exec()
        widget_runs.append(time.perf_counter() - start)
    found = len(viewer.layers["stack atoms"].data)
    core_seconds = statistics.median(core_runs)
    later = statistics.median(widget_runs[1:])  # the first also creates the Points visual
    print(f"core:   median {core_seconds:.2f} s for {frames} frames of 512² ({len(core)} atoms); "
          f"runs {', '.join(f'{t:.2f}' for t in core_runs)}")
    print(f"widget: first run {widget_runs[0]:.2f} s, later runs median {later:.2f} s "
          f"({found} atoms shown); runs {', '.join(f'{t:.2f}' for t in widget_runs)}")
    print(f"overhead: first run {100 * (widget_runs[0] / core_seconds - 1):.1f} %, later runs "
          f"{100 * (later / core_seconds - 1):.1f} %")
    viewer.close()


if __name__ == "__main__":
    main()
