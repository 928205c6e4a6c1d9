"""Dock widget "Live mode": analyse frames as the microscope writes them.

Two sources: a folder the acquisition software writes frames into (each complete file is
appended to a stack layer and analysed), or an image layer that another plugin streams into
(new or changed frames are analysed). One worker thread runs the network; the GUI thread only
moves frames in and results out. Every frame is shown as soon as it arrives; its atoms are
overlaid when the network has found them. When frames come faster than they can be analysed,
the widget says so and, if asked, skips to the newest frame (the skipped ones stay in the
stack, without atoms) rather than falling ever further behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    create_widget,
)
from napari.utils.notifications import show_error

from ..analysis.modes import choose_model
from ..errors import TEMAtomsError
from ..events import Progress
from ..io import FRAME_EXTENSIONS, natural_sort_key, read_image
from ..io.imaging_mode import IMAGING_MODES
from ..live import FolderWatcher, FrameQueue, LiveStatistics, iter_live_analysis
from ..models import model_description, registered_models
from ._conditions import ImagingConditionsInputs
from ._detect_widget import AUTO_MODEL
from ._layers import axis_labels, pixel_size_of_layer, show_atoms
from ._layout import scroll_rows, wrap_text
from ._worker import WorkerRunner

if TYPE_CHECKING:
    import napari

WATCH_FOLDER, FOLLOW_LAYER = "watch a folder", "follow a layer"


def _pixel_size_refusal(folder: Path) -> str | None:
    """Why frames like those already in `folder` cannot be analysed with no pixel size typed.

    The first frame file (in natural order, as the watcher reads them) stands for the
    acquisition: when it carries no pixel size, later frames will not either. Only its header
    is read (lazily). None when the folder holds no readable frame yet (frames arriving later
    are checked one by one in the session) or the frame is calibrated.
    """
    try:
        frames = sorted((entry for entry in folder.iterdir()
                         if not entry.name.startswith(".")
                         and entry.suffix.lower() in FRAME_EXTENSIONS and entry.is_file()),
                        key=lambda entry: natural_sort_key(entry.name))
    except OSError:
        return None  # said by the watcher
    if not frames:
        return None
    try:
        image = read_image(frames[0], lazy=True)
    except TEMAtomsError:  # half-written, or not a frame: the session says so
        return None
    if image.pixel_size_angstrom is not None:
        return None
    return (f"{frames[0].name} in {folder} carries no pixel size ({image.calibration.note}), "
            "and none is typed: type it in 'Pixel size' (Å/px), or calibrate the files, then "
            "Start")


class _GrowingStack:
    """A frame stack that grows without copying everything at each frame (capacity doubles)."""

    def __init__(self, first: np.ndarray) -> None:
        self._buffer = np.empty((8, *first.shape), dtype=first.dtype)
        self.count = 0
        self.append(first)

    def append(self, frame: np.ndarray) -> None:
        if frame.shape != self._buffer.shape[1:]:
            raise TEMAtomsError(f"frame shape {frame.shape} differs from the stack's "
                                f"{self._buffer.shape[1:]}")
        if self.count == len(self._buffer):
            bigger = np.empty((2 * len(self._buffer), *frame.shape), self._buffer.dtype)
            bigger[: self.count] = self._buffer
            self._buffer = bigger
        self._buffer[self.count] = frame
        self.count += 1

    @property
    def data(self) -> np.ndarray:
        return self._buffer[: self.count]


class LiveWidget(WorkerRunner, Container):
    """Analyse frames on the fly from a watched folder or a streamed layer.

    The session is one :func:`~napari_tem_atoms.live.iter_live_analysis` stream in the shared
    worker (Start and Stop are its Run and Cancel; it has no progress bar: it has no end).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget is docked in (napari passes it).
    """

    title = "Live mode"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.source = RadioButtons(label="Source", choices=[WATCH_FOLDER, FOLLOW_LAYER],
                                   value=WATCH_FOLDER, orientation="horizontal")
        self.folder = FileEdit(label="Folder", mode="d",
                               tooltip="The folder the camera software writes frames into")
        self.followed_layer = create_widget(annotation="napari.layers.Image", label="Layer")
        self.imaging_mode = ComboBox(
            label="Imaging mode", choices=list(IMAGING_MODES), value="unknown",
            tooltip="How the frames are recorded (a followed layer's mode is taken from it): "
                    "it picks the model (auto) and whether STEM columns are dark (ABF, BF)")
        self.model = ComboBox(label="Model", choices=[AUTO_MODEL,
                                                      *registered_models("columns")],
                              value=AUTO_MODEL,
                              tooltip=f"{AUTO_MODEL}: the model for the imaging mode (HRTEM "
                                      "and unknown: au-hrtem, STEM: stem-columns)")
        self.sampling = FloatSpinBox(label="Pixel size (Å/px)", min=0.0, max=100.0,
                                     step=0.0001, tooltip="0: take it from the frames' files")
        # 0 shown in words (the label said it, and its width set the dock's).
        self.sampling.native.setSpecialValueText("from files")
        self.threshold = FloatSlider(label="Threshold", min=0.05, max=0.95, step=0.01,
                                     value=0.5)
        self.keep_up = CheckBox(text="Skip to the newest frame when behind", value=True)
        self.conditions = ImagingConditionsInputs()
        self.start_button = self.run_button = PushButton(text="Start")
        self.stop_button = self.cancel_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        wrap_text(self.status)
        self.extend([self.source, self.folder, self.followed_layer, self.imaging_mode,
                     self.model, self.sampling,
                     self.threshold, self.keep_up, self.conditions, self.start_button,
                     self.stop_button, self.status])
        scroll_rows(self)
        self.statistics = LiveStatistics()
        self.queue = FrameQueue(keep_up=True, statistics=self.statistics)
        self._stack: _GrowingStack | None = None
        self._image_layer: Any = None
        self._atoms: list[pd.DataFrame] = []
        self._seen_frames = 0
        self._session: dict[str, Any] = {}
        self.source.changed.connect(self._on_source_changed)
        self.followed_layer.changed.connect(self._prefill_sampling)
        self.model.changed.connect(self._on_model_changed)
        self.imaging_mode.changed.connect(self._on_model_changed)
        self.keep_up.changed.connect(lambda: setattr(self.queue, "keep_up", self.keep_up.value))
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self._on_source_changed()
        self._on_model_changed()

    def _on_source_changed(self) -> None:
        watching = self.source.value == WATCH_FOLDER
        self.folder.visible = watching
        self.followed_layer.visible = not watching
        self._prefill_sampling()

    def chosen_model(self) -> str:
        """The model a session will run (``auto``: the one for the imaging mode)."""
        if self.model.value != AUTO_MODEL:
            return self.model.value
        return choose_model(self.imaging_mode.value)[0]

    def _on_model_changed(self) -> None:
        name = self.chosen_model()
        try:
            self.threshold.value = model_description(name).threshold
        except TEMAtomsError as exc:
            self.status.value = f"⚠ {exc}"
        self.conditions.show_for(name)

    def _prefill_sampling(self) -> None:
        layer = self.followed_layer.value
        if self.source.value == FOLLOW_LAYER and layer is not None:
            size = pixel_size_of_layer(layer.scale, layer.units, layer.metadata)
            self.sampling.value = 0.0 if size is None else size[1]
            mode = layer.metadata.get("imaging_mode") or "unknown"
            self.imaging_mode.value = mode if mode in IMAGING_MODES else "unknown"

    # --- session ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (the Start button)."""
        refusal = self.conditions.refusal(self.chosen_model())
        if refusal:
            show_error(f"Live mode: {refusal}")
            return
        conditions = self.conditions.values()
        watching = self.source.value == WATCH_FOLDER
        if watching and not self.folder.line_edit.value.strip():
            # An empty box reads as Path("."): napari's start folder would be watched unasked.
            show_error("Live mode: choose the folder the camera writes frames into")
            return
        try:
            watcher = FolderWatcher(self.folder.value) if watching else None
        except TEMAtomsError as exc:
            show_error(f"Live mode: {exc}")
            return
        refusal = (_pixel_size_refusal(watcher.folder) if watching and not self.sampling.value
                   else None)
        if refusal:  # every frame would fail: said now rather than at the first frame
            show_error(f"Live mode: {refusal}")
            return
        if not watching and self.followed_layer.value is None:
            show_error("Live mode: choose the layer to follow")
            return
        if not watching and not self.sampling.value:
            show_error(f"Live mode: layer {self.followed_layer.value.name!r} has no pixel size: "
                       "type it in 'Pixel size' (Å/px) or set it with the Calibration widget")
            return
        self.statistics = LiveStatistics()
        self.queue = FrameQueue(keep_up=self.keep_up.value, statistics=self.statistics)
        self._atoms, self._stack, self._image_layer = [], None, None
        self._session = {"watching": watching}
        if not watching:
            layer = self.followed_layer.value
            self._image_layer = layer
            self._seen_frames = int(layer.data.shape[0]) if layer.ndim == 3 else 0
            layer.events.data.connect(self._on_followed_data)
        queue, model, threshold = self.queue, self.chosen_model(), float(self.threshold.value)
        sampling = float(self.sampling.value) or None
        mode = None if self.imaging_mode.value == "unknown" else self.imaging_mode.value

        def work():
            return iter_live_analysis(queue, model, threshold, sampling, watcher,
                                      imaging_mode=mode, **conditions)

        self._start_worker(work, None, "Live mode", "Loading the model...")

    def stop(self) -> None:
        """Stop the session (the Stop button); what was analysed stays."""
        self.cancel()

    def _after_run(self) -> None:
        if not self._session.get("watching", True) and self._image_layer is not None:
            self._image_layer.events.data.disconnect(self._on_followed_data)
        self.run_button.enabled = True
        reason = self._session.get("fatal")
        self.status.value = (f"Stopped: {reason}" if reason
                             else "Stopped: " + self.statistics.describe(len(self.queue)))

    def _on_followed_data(self, event: Any = None) -> None:
        """The followed layer grew or changed: queue its new frames (or the changed image)."""
        layer = self._image_layer
        if layer.ndim == 3:
            count = int(layer.data.shape[0])
            for index in range(self._seen_frames, count):
                self.statistics.frame_received()
                self.queue.put((index, np.asarray(layer.data[index]), None))
            self._seen_frames = max(self._seen_frames, count)
        else:
            self.statistics.frame_received()
            self.queue.put((self._seen_frames, np.array(layer.data), None))
            self._seen_frames += 1

    # --- GUI thread: the session's events (see iter_live_analysis) ------------------------

    def _on_progress(self, progress: Progress) -> None:
        if progress.stage == "model":
            self._session["runtime"] = progress.item
        elif progress.stage == "received":
            _index, frame, sampling = progress.item
            self._append_frame(frame, sampling)
        elif progress.stage == "detect":
            _index, atoms, sampling = progress.item
            self._atoms.append(atoms)
            self._update_points(sampling)
        self.status.value = self._describe()

    def _on_notice(self, notice: Any) -> None:
        self.status.value = self._describe()

    def _on_error(self, message: str) -> None:
        self._session["fatal"] = message  # the session stops: said in the status

    def _on_result(self, result: Any) -> None:  # pragma: no cover - a session has no end
        """A session ends only by Stop or an error."""

    def _describe(self) -> str:
        runtime = self._session.get("runtime")
        line = self.statistics.describe(len(self.queue))
        if self.statistics.received == 0 and self.statistics.analysed == 0:
            line = "Waiting for frames... " + line
        return f"{line} ({runtime})" if runtime else line

    def _append_frame(self, frame: np.ndarray, sampling: float) -> None:
        if self._stack is None:
            self._stack = _GrowingStack(frame)
            name = f"{Path(self.folder.value).name} live"
            scale = (1.0, sampling, sampling)
            self._image_layer = self._viewer.add_image(
                self._stack.data, name=name, scale=scale,
                units=("pixel", "angstrom", "angstrom"), colormap="gray",
                axis_labels=axis_labels(3),
                metadata={"source": str(self.folder.value), "pixel_size_angstrom":
                          (sampling, sampling), "calibration": "real"})
        else:
            self._stack.append(frame)
            self._image_layer.data = self._stack.data
        self._viewer.dims.set_current_step(0, self._stack.count - 1)

    def _update_points(self, sampling: float) -> None:
        image = self._image_layer
        # A 2-D layer updated in place shows the atoms of its latest content only.
        atoms = pd.concat(self._atoms if image.ndim == 3 else self._atoms[-1:],
                          ignore_index=True)
        show_atoms(self._viewer, image, atoms, (sampling, sampling))
