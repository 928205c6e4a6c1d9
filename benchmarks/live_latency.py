"""Live mode latency: from a new 512² file in the watched folder to its points on screen.

Run under a display (xvfb-run -a python benchmarks/live_latency.py). Prints the latency of
each frame and the median and maximum (target ≤ 1 s).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from qtpy.QtWidgets import QApplication

from napari_tem_atoms.samples import synthetic_gold_stack


def main(frames: int = 10) -> None:
    images = synthetic_gold_stack(n_frames=frames, shape=(512, 512), sampling=0.1,
                                  seed=2).images
    viewer = napari.Viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Live mode")
    latencies = []
    with tempfile.TemporaryDirectory() as folder:
        widget.folder.value = folder
        widget.start()
        while not widget.status.value.startswith("0 frames"):  # model loaded, watching
            QApplication.processEvents()
            time.sleep(0.01)
        layer_name = f"{Path(folder).name} live atoms"
        for index, image in enumerate(images):
            start = time.perf_counter()
            tifffile.imwrite(Path(folder) / f"frame_{index:03d}.tif", image, imagej=True,
                             resolution=(1 / 0.01, 1 / 0.01), metadata={"unit": "nm"})
            while True:
                QApplication.processEvents()
                layer = viewer.layers[layer_name] if layer_name in viewer.layers else None  # noqa: SIM401
                if layer is not None and np.any(layer.data[:, 0] == index):
                    break
                time.sleep(0.005)
            latencies.append(time.perf_counter() - start)
            print(f"frame {index}: {latencies[-1]:.3f} s")
            time.sleep(0.5)
        widget.stop()
        while widget.worker is not None:
            QApplication.processEvents()
            time.sleep(0.01)
    print(f"median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s "
          f"(settle time {0.2} s included)")
    viewer.close()


if __name__ == "__main__":
    main()
