"""Dock widget "Calibration": an image layer's pixel size, where it came from, and how to set it.

Setting it matters when the file had none (NPY, plain TIFF) or a wrong one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import Container, FloatSpinBox, Label, PushButton, create_widget

from ._layers import pixel_size_of_layer
from ._layout import show_scale_bar, wrap_text

if TYPE_CHECKING:
    import napari


def describe_calibration(layer: napari.layers.Layer | None) -> str:
    """A few lines on the layer's origin and pixel size, for the widget and for tooltips."""
    if layer is None:
        return "No image layer selected."
    metadata = layer.metadata or {}
    lines = []
    if metadata.get("source"):
        lines.append(f"File: {metadata['source']}")
    if metadata.get("file_format"):
        lines.append(f"Format: {metadata['file_format']}")
    size = pixel_size_of_layer(layer.scale, layer.units, None)
    if size is not None:
        origin = metadata.get("calibration")
        origin_text = {"real": "(calibrated)", "user": "(set by hand)"}.get(origin, "")
        text = (f"{size[1]:.5g} Å/px" if size[0] == size[1]
                else f"{size[0]:.5g} × {size[1]:.5g} Å/px")
        lines.append(f"Pixel size: {text} {origin_text}".rstrip())
    else:
        note = metadata.get("calibration_note") or "no pixel size: coordinates are in pixels"
        lines.append(f"Pixel size: unknown ({note})")
    if metadata.get("frame_interval_s"):
        lines.append(f"Frame interval: {metadata['frame_interval_s']:.4g} s")
    return "\n".join(lines)


class CalibrationWidget(Container):
    """Show an image layer's calibration, and set its pixel size in Å/px.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget is docked in (napari passes it).

    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.image_layer = create_widget(annotation="napari.layers.Image", label="Image")
        self.summary = Label(value="")
        wrap_text(self.summary)  # a long file path on one line widened the dock to 630 px
        self.pixel_size = FloatSpinBox(label="Pixel size (Å/px)", min=0.0, max=1e7, step=0.0001,
                                       tooltip="Physical size of one pixel, in ångström")
        self.apply_button = PushButton(text="Set pixel size",
                                       tooltip="Use this pixel size for the selected image")
        self.extend([self.image_layer, self.summary, self.pixel_size, self.apply_button])
        self.image_layer.changed.connect(self._refresh)
        self.pixel_size.changed.connect(self._update_button)
        self.apply_button.changed.connect(self._apply)
        self._refresh()

    def _refresh(self) -> None:
        layer = self.image_layer.value
        self.summary.value = "\n".join(_breakable_path(line) for line in
                                       describe_calibration(layer).splitlines())
        size = None if layer is None else pixel_size_of_layer(layer.scale, layer.units, None)
        self.pixel_size.value = 0.0 if size is None else size[1]
        self._update_button()

    def _update_button(self) -> None:
        self.apply_button.enabled = self.image_layer.value is not None and self.pixel_size.value > 0

    def _apply(self) -> None:
        layer = self.image_layer.value
        size = float(self.pixel_size.value)
        if layer is None or size <= 0:
            return
        leading = layer.ndim - 2
        layer.scale = (*layer.scale[:leading], size, size)
        layer.units = (*[str(u) for u in layer.units[:leading]], "angstrom", "angstrom")
        layer.metadata["pixel_size_angstrom"] = (size, size)
        layer.metadata["calibration"] = "user"
        show_scale_bar(self._viewer)
        self._viewer.reset_view()
        self._refresh()


def _breakable_path(line: str) -> str:
    """`line`, with a zero-width space after each path separator if it is the "File:" line.

    A path has no spaces to wrap at: on one line, it set the width of the dock.
    """
    if not line.startswith("File: "):
        return line
    return line.replace("/", "/\u200b").replace("\\", "\\\u200b")
