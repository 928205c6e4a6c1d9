"""npe2 reader: TEM images with their pixel size, folders of frames, and atoms CSVs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_warning

from ..errors import TEMFileError
from ..io import IMAGE_EXTENSIONS, frame_files, is_atoms_csv, read_atoms_csv, read_images
from ._layers import atoms_layer_data, image_layer_data

LayerData = tuple


def _as_paths(path: str | Sequence[str]) -> list[Path]:
    return [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for `path` if this plugin handles it, else ``None``.

    Handled: the image formats of :data:`napari_tem_atoms.io.IMAGE_EXTENSIONS`, folders that
    hold frames, and CSV files with ``y`` and ``x`` columns (atoms). Other CSV files are left to
    other readers.
    """
    paths = _as_paths(path)
    if not paths:
        return None
    for item in paths:
        if item.is_dir():
            if not frame_files(item):
                return None
        elif item.suffix.lower() == ".csv":
            if not is_atoms_csv(item):
                return None
        elif item.suffix.lower() not in IMAGE_EXTENSIONS:
            return None
    return read_layers


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """Read every path into layer data; problems are shown as notifications, not tracebacks.

    A file that cannot be read is reported by name with the reason, and the others still open.
    When nothing could be read, napari's "nothing to add" sentinel ``[(None,)]`` is returned so
    that napari does not show its own traceback dialog on top of the message.
    """
    layers: list[LayerData] = []
    for item in _as_paths(path):
        try:
            if item.suffix.lower() == ".csv":
                layers.append(atoms_layer_data(read_atoms_csv(item), item.stem, str(item)))
                continue
            for image in read_images(item):
                layers.append(image_layer_data(image))
                if image.calibration.note:
                    show_warning(f"{image.path.name}: {image.calibration.note}")
        except TEMFileError as exc:
            show_error(f"Could not open {exc}")
    return layers or [(None,)]
