"""The ``tem-atoms`` command-line tool.

Sub-commands
------------
``tem-atoms info FILE...``
    What each file holds: shape, type, pixel size in Å (or why there is none).
``tem-atoms view [FILE...]``
    Open napari with the files (or the synthetic sample) and the plugin's widgets docked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import TEMAtomsError
from .io import read_images

PLUGIN_NAME = "napari-tem-atoms"


def _info(args: argparse.Namespace) -> int:
    failures = 0
    for path in args.paths:
        try:
            images = read_images(path, lazy=True)
        except TEMAtomsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        for image in images:
            calibration = image.calibration
            if calibration.is_real_space:
                size_y, size_x = calibration.pixel_size_angstrom
                pixel = (f"{size_x:.6g} Å/px" if size_y == size_x
                         else f"{size_y:.6g} × {size_x:.6g} Å/px")
                pixel += f"  (file: {calibration.scale[1]:.6g} {calibration.unit})"
            else:
                pixel = f"none ({calibration.note})"
            shape = " × ".join(str(n) for n in image.data.shape)
            print(f"{image.path}  [{image.name}]")
            print(f"  format: {image.file_format}")
            print(f"  shape: {shape}  dtype: {image.data.dtype}")
            print(f"  pixel size: {pixel}")
            if image.frame_interval_s:
                print(f"  frame interval: {image.frame_interval_s:.6g} s")
    return 1 if failures else 0


def _view(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="napari-tem-atoms")
    viewer.window.resize(1400, 900)
    if args.paths:
        for path in args.paths:
            viewer.open(path, plugin=PLUGIN_NAME)
    else:
        viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    viewer.scale_bar.visible = True
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        viewer.window.screenshot(str(args.screenshot), canvas_only=False)
        print(f"screenshot written to {args.screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0


def _dock_plugin_widgets(viewer: object) -> None:
    """Dock every widget this plugin contributes (none until the widgets land)."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN_NAME)
    for widget in manifest.contributions.widgets or []:
        viewer.window.add_plugin_dock_widget(PLUGIN_NAME, widget.display_name)  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tem-atoms`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="tem-atoms",
        description="Atoms, species and per-column statistics from atomic-resolution TEM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="show what files hold and their pixel size in Å")
    info.add_argument("paths", nargs="+", type=Path, metavar="FILE",
                      help="images, stacks or folders of frames")
    info.set_defaults(run=_info)

    view = commands.add_parser("view", help="open napari with the plugin's widgets docked")
    view.add_argument("paths", nargs="*", type=Path, metavar="FILE",
                      help="files to open (default: the synthetic sample stack)")
    view.add_argument("--screenshot", type=Path, metavar="PNG",
                      help="save a screenshot of the window and exit (needs a display)")
    view.set_defaults(run=_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tem-atoms``."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
