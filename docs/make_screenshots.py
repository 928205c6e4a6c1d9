"""Take the documentation's screenshots of a real napari window (run under Xvfb: `make docs`).

Each workflow page in docs/ shows one of these: the Detect atoms widget on the sample stack,
Live mode on a folder that frames are written into, the Calibration widget on a DM3 file, the
Occupancy widget on a simulated adatom video (abTEM), the Align widget on the misaligned
focal-series sample and the Species widget on a simulated MoS2 focal series (needs the MoS2
exit-wave cache). Name some of them to make only those:
``python docs/make_screenshots.py occupancy align``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
import tifffile
from qtpy.QtWidgets import QApplication

from napari_tem_atoms.napari._layout import show_scale_bar
from napari_tem_atoms.samples import synthetic_gold_stack

PLUGIN = "napari-tem-atoms"
IMAGES = Path(__file__).parent / "images"


def _settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _wait(condition, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        QApplication.processEvents()
        time.sleep(0.05)


def _viewer() -> napari.Viewer:
    viewer = napari.Viewer(title="napari-tem-atoms")
    viewer.window.resize(1500, 950)
    show_scale_bar(viewer)
    return viewer


def detect_screenshot() -> Path:
    viewer = _viewer()
    viewer.open_sample(PLUGIN, "synthetic_gold_stack")
    viewer.layers["Synthetic Au stack true columns"].visible = False
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Detect atoms")
    widget.show_map.value = False
    widget.run()
    _wait(lambda: widget.worker is None and "atoms in" in widget.status.value)
    viewer.dims.set_current_step(0, 0)
    viewer.camera.zoom *= 1.3
    _settle()
    path = IMAGES / "detect-widget.png"
    viewer.window.screenshot(str(path), canvas_only=False)
    viewer.close()
    return path


def live_screenshot() -> Path:
    viewer = _viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Live mode")
    frames = synthetic_gold_stack(n_frames=6, shape=(384, 384), seed=7).images
    with tempfile.TemporaryDirectory(prefix="camera-") as folder:
        widget.folder.value = folder
        widget.start()
        _settle(1.0)
        for index, frame in enumerate(frames):
            tifffile.imwrite(Path(folder) / f"frame_{index:04d}.tif", frame, imagej=True,
                             resolution=(1 / 0.012, 1 / 0.012), metadata={"unit": "nm"})
            _settle(0.6)
        _wait(lambda: widget.statistics.analysed >= len(frames))
        _settle()
        path = IMAGES / "live-mode.png"
        viewer.window.screenshot(str(path), canvas_only=False)
        widget.stop()
        _wait(lambda: widget.worker is None)
    viewer.close()
    return path


def calibration_screenshot(dm3: Path) -> Path:
    viewer = _viewer()
    viewer.open(dm3, plugin=PLUGIN)
    viewer.window.add_plugin_dock_widget(PLUGIN, "Calibration")
    _settle()
    path = IMAGES / "calibration-widget.png"
    viewer.window.screenshot(str(path), canvas_only=False)
    viewer.close()
    return path


def occupancy_screenshot() -> Path:
    from napari_tem_atoms.simulation.diffusion import simulate_adatom_video

    viewer = _viewer()
    # What the widget is for: adatoms (1-2 atom columns) coming and going at a particle's
    # surface, 40 frames at 500 e/Å² per frame (abTEM multislice, about a minute).
    video = simulate_adatom_video(n_frames=40, dose=500.0, regime="fast", seed=1)
    viewer.add_image(video.frames, name="adatom video",
                     scale=(1, video.sampling, video.sampling),
                     units=("pixel", "angstrom", "angstrom"), axis_labels=("frame", "y", "x"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Occupancy")
    widget.run()
    _wait(lambda: widget.worker is None and widget.result is not None)
    sites = widget.result.sites
    widget.plot.show_site(int(sites.query("layer == 'surface'")["transition_rate"].idxmax()))
    viewer.dims.set_current_step(0, 12)
    viewer.reset_view()
    _settle(1.0)
    path = IMAGES / "occupancy-widget.png"
    viewer.window.screenshot(str(path), canvas_only=False)
    viewer.close()
    return path


def align_screenshot() -> Path:
    viewer = _viewer()
    viewer.open_sample(PLUGIN, "synthetic_focal_series")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Align (focal series, drift)")
    widget.max_shift.value = 6
    widget.run()
    _wait(lambda: widget.worker is None and widget.shifts is not None)
    viewer.dims.set_current_step(0, 2)
    _settle()
    path = IMAGES / "align-widget.png"
    viewer.window.screenshot(str(path), canvas_only=False)
    viewer.close()
    return path


def species_screenshot() -> Path:
    from napari_tem_atoms.simulation.mos2 import load_mos2
    from napari_tem_atoms.training.species import FocalSeriesMaker, load_species_config

    root = Path(__file__).parents[1]
    run = load_species_config(root / "configs/mos2-focal.toml")
    flakes = load_mos2(run.data.folder, "validation")
    maker = FocalSeriesMaker(flakes, run.model.sampling, run.envelope)
    from dataclasses import replace

    import numpy as np

    from napari_tem_atoms.simulation.microscope import form_image

    rng = np.random.default_rng(4)
    flake = flakes[0]
    settings = replace(maker.envelope.microscope.draw(rng), dose=1000.0, sampling=0.1,
                       cs=-20e4, focal_spread=30.0, astigmatism=0.0, blur=0.0, mtf_floor=1.0)
    series = np.stack([form_image(flake["waves"], float(flake["sampling"]),
                                  replace(settings, defocus=d), rng)[0]
                       for d in (-60.0, 0.0, 60.0)])
    viewer = _viewer()
    viewer.add_image(series, name="MoS2 focal series", scale=(1, 0.1, 0.1),
                     units=("pixel", "angstrom", "angstrom"), axis_labels=("image", "y", "x"))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Species (focal series)")
    widget.defoci.value = "-60, 0, 60"
    widget.run()
    _wait(lambda: widget.worker is None and widget.atoms is not None)
    viewer.dims.set_current_step(0, 1)
    viewer.camera.zoom *= 1.3
    _settle()
    path = IMAGES / "species-widget.png"
    viewer.window.screenshot(str(path), canvas_only=False)
    viewer.close()
    return path


def main() -> int:
    IMAGES.mkdir(exist_ok=True)
    wanted = set(sys.argv[1:])  # e.g. `python docs/make_screenshots.py occupancy align`

    def chosen(name: str) -> bool:
        return not wanted or name in wanted

    paths = []
    for name, make in (("detect", detect_screenshot), ("live", live_screenshot),
                       ("occupancy", occupancy_screenshot), ("align", align_screenshot),
                       ("species", species_screenshot)):
        if chosen(name):
            paths.append(make())
    dm3 = Path(__file__).parents[1] / "tests/data/hyperspy/dm3_2D_data/multi_signal.dm3"
    if dm3.exists() and chosen("calibration"):
        paths.append(calibration_screenshot(dm3))
    for path in paths:
        print(f"wrote {path}")
    # Keep the repository lean: 8-bit palettes are plenty for screenshots of a dark UI.
    try:
        from PIL import Image

        for path in paths:
            Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
    except ImportError:  # pragma: no cover
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
