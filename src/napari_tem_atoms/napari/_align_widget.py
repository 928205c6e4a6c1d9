"""Dock widget "Align": register a focal series or undo the drift of a video.

A thin layer over :mod:`napari_tem_atoms.analysis.align`: the registration runs in a napari thread
worker; the aligned stack comes back as a new layer (the original is hidden, not changed), the
shifts as a table, and Undo removes the aligned layer and shows the original again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
    Table,
    create_widget,
)
from napari.utils.notifications import show_error, show_info

from ..analysis.align import (
    WINDOWS,
    apply_shifts,
    common_area,
    iter_align_focal_series,
    iter_estimate_drift,
)
from ..errors import TEMAtomsError
from ._layers import pixel_size_of_layer
from ._layout import scroll_rows, wrap_text
from ._worker import WorkerRunner, make_progress_bar

if TYPE_CHECKING:
    import napari

FOCAL_SERIES, DRIFT = "focal series", "drift (video)"
#: A stack of more frames than this is taken for a video (a focal series has a few defoci).
MAX_FOCAL_FRAMES = 4
_EMPTY_TABLE = {"data": [], "index": [], "columns": ["dy (px)", "dx (px)", "dy (Å)", "dx (Å)"]}


class AlignWidget(WorkerRunner, Container):
    """Align the frames of a stack layer: a focal series (any contrast) or a drifting video.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget is docked in (napari passes it).
    """

    title = "Align"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.stack_layer = create_widget(annotation="napari.layers.Image", label="Stack")
        self.kind = RadioButtons(label="Frames are", choices=[FOCAL_SERIES, DRIFT],
                                 value=FOCAL_SERIES, orientation="horizontal",
                                 tooltip="A focal series is aligned whatever the contrast of "
                                 "each defocus; a video frame by frame from the reference")
        self.reference = SpinBox(label="Reference frame", min=0, max=0, value=0)
        self.max_shift = FloatSpinBox(label="Max shift (px)", min=0.0, max=10000.0, value=0.0,
                                      tooltip="0: 0.9 Å (below half a lattice period), "
                                      "or 1/8 of the frame when the pixel size is unknown.")
        # 0 is not a shift of nothing: it says "automatic", in words.
        self.max_shift.native.setSpecialValueText("auto")
        self.window = ComboBox(label="Window", choices=list(WINDOWS), value="auto",
                               tooltip="hann: a particle or flake in vacuum; tukey: crystal "
                               "filling the frame; auto: the more significant of the two "
                               "(for a video, chosen once on the first pair of frames)")
        self.crop = CheckBox(text="Crop to the area every frame covers", value=True)
        self.note = Label(value="")
        self.run_button = PushButton(text="Align")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = make_progress_bar()
        self.undo_button = PushButton(text="Undo", enabled=False)
        self.status = Label(value="")
        wrap_text(self.note, self.status)
        self.table = Table(value=_EMPTY_TABLE)
        self.table.read_only = True
        self.extend([self.stack_layer, self.kind, self.reference, self.max_shift, self.window,
                     self.crop,
                     self.note, self.run_button, self.cancel_button, self.progress_bar,
                     self.undo_button, self.status, self.table])
        scroll_rows(self)
        self.shifts: np.ndarray | None = None
        self._aligned: Any = None
        self._original: Any = None
        self._defaults_for: Any = None  # the layer the mode and reference were chosen for
        self.stack_layer.changed.connect(self._on_stack_changed)
        self.kind.changed.connect(self._on_kind_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.undo_button.changed.connect(self.undo)
        self._on_stack_changed()

    def _on_stack_changed(self) -> None:
        """A new stack: the mode and reference its number of frames suggests."""
        layer = self.stack_layer.value
        if layer is not self._defaults_for and layer is not None and layer.ndim == 3:
            self._defaults_for = layer
            # A 12-frame video was taken for a focal series, aligned to its frame 6.
            video = int(layer.data.shape[0]) > MAX_FOCAL_FRAMES
            with self.kind.changed.blocked():
                self.kind.value = DRIFT if video else FOCAL_SERIES
            self._on_kind_changed()
        else:
            self._validate()

    def _on_kind_changed(self) -> None:
        """The reference a mode starts from: a video's first frame, a series' middle defocus."""
        layer = self.stack_layer.value
        self._validate()
        if self.run_button.enabled:
            middle = int(layer.data.shape[0]) // 2
            self.reference.value = middle if self.kind.value == FOCAL_SERIES else 0

    def _validate(self) -> None:
        layer = self.stack_layer.value
        problem = ""
        if layer is None:
            problem = "Open a stack (a focal series or a video) first."
        elif layer.rgb or layer.ndim != 3:
            problem = "Pick a grey-scale stack of frames (3-D)."
        elif layer.data.shape[0] < 2:
            problem = "The stack has one frame: nothing to align."
        else:
            self.reference.max = int(layer.data.shape[0]) - 1
        self.note.value = problem
        self.run_button.enabled = not problem and self.worker is None

    def run(self) -> None:
        """Register the frames in a worker thread (the Align button)."""
        self._validate()
        if not self.run_button.enabled:
            return
        layer = self.stack_layer.value
        data, reference = layer.data, int(self.reference.value)
        size = pixel_size_of_layer(layer.scale, layer.units, layer.metadata)
        sampling = size[1] if size else None
        max_shift = float(self.max_shift.value) or None
        focal = self.kind.value == FOCAL_SERIES
        window = str(self.window.value)

        def work():
            if focal:
                return iter_align_focal_series(np.asarray(data), reference, max_shift,
                                               sampling=sampling, window=window)
            return iter_estimate_drift(data, reference, max_shift, sampling=sampling,
                                       window=window)

        self.shifts = None
        self._original = layer
        # The bar follows the stream's own total: frames of a video, pairs of a focal series.
        self._start_worker(work, None, "Aligning", "Aligning...")

    def _on_progress(self, progress: Any) -> None:
        what = "frames" if progress.stage == "drift" else "image pairs"
        self.status.value = f"Aligning: {progress.done}/{progress.total} {what}"
        super()._on_progress(progress)

    def _on_result(self, shifts: np.ndarray) -> None:
        self._advance(self.progress_bar.max)
        self._show(shifts)

    def _after_run(self) -> None:
        if self.cancelled and self.shifts is None:
            self.status.value = "Cancelled: nothing was changed."
        self._validate()

    def _show(self, shifts: np.ndarray) -> None:
        layer = self._original
        self.shifts = shifts
        aligned = apply_shifts(np.asarray(layer.data), shifts)
        translate = np.array(layer.translate, dtype=float)
        if self.crop.value:
            try:
                rows, cols = common_area(aligned.shape[1:], shifts)
            except TEMAtomsError as exc:
                show_error(f"Align: {exc}")
                return
            aligned = aligned[:, rows, cols]
            # Keep the cropped frames where they were: shift the layer by the cut-off margin.
            translate[-2:] += np.array([rows.start, cols.start]) * np.array(layer.scale[-2:])
        name = f"{layer.name} aligned"
        if self._aligned is not None and self._aligned in self._viewer.layers:
            self._viewer.layers.remove(self._aligned)
        self._aligned = self._viewer.add_image(
            aligned, name=name, scale=layer.scale, units=layer.units, translate=translate,
            axis_labels=layer.axis_labels,
            colormap=layer.colormap.name, contrast_limits=layer.contrast_limits,
            metadata={**layer.metadata, "aligned_from": layer.name,
                      "shifts_px": shifts.tolist(), "reference_frame": int(self.reference.value)})
        layer.visible = False
        size = pixel_size_of_layer(layer.scale, layer.units, layer.metadata)
        rows_out = [[round(float(dy), 3), round(float(dx), 3),
                     round(float(dy * size[0]), 4) if size else "",
                     round(float(dx * size[1]), 4) if size else ""] for dy, dx in shifts]
        self.table.value = {"data": rows_out, "index": [str(i) for i in range(len(shifts))],
                            "columns": ["dy (px)", "dx (px)", "dy (Å)", "dx (Å)"]}
        self.undo_button.enabled = True
        largest = float(np.hypot(*shifts.T).max())
        self.status.value = (f"Aligned {len(shifts)} frames to frame {self.reference.value}; "
                             f"largest shift {largest:.2f} px")
        show_info(f"Align: {self.status.value}")

    def undo(self) -> None:
        """Remove the aligned layer and show the original again (the Undo button)."""
        if self._aligned is not None and self._aligned in self._viewer.layers:
            self._viewer.layers.remove(self._aligned)
        if self._original is not None:
            self._original.visible = True
        self._aligned, self.shifts = None, None
        self.table.value = _EMPTY_TABLE
        self.undo_button.enabled = False
        self.status.value = "Undone: the original stack is shown."
