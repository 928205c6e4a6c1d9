"""Dock widget "Detect atoms": a thin layer over :func:`~napari_tem_atoms.iter_detect_atoms`.

The network runs in a napari thread worker (progress bar, Cancel); layers are only touched in
the GUI thread, from the worker's ``yielded``/``finished`` signals. The network's maps are
kept, so moving the threshold afterwards re-finds the peaks without running the network again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    create_widget,
)
from napari.utils.notifications import show_info

from ..analysis.detect import (
    atoms_from_heatmap,
    domain_warning,
    iter_detect_atoms,
    sampling_warning,
)
from ..analysis.modes import choose_model
from ..errors import TEMAtomsError
from ..events import Progress, batch_progress
from ..io.imaging_mode import IMAGING_MODES
from ..models import REGISTRY, load_cached_model, model_description, registered_models
from ._aligned import follow_aligned_stack
from ._conditions import ImagingConditionsInputs
from ._layers import pixel_size_of_layer, show_atoms
from ._layout import scroll_rows, wrap_text
from ._worker import WorkerRunner, make_progress_bar

if TYPE_CHECKING:
    import napari

ALL_FRAMES, CURRENT_FRAME = "all frames", "current frame"
#: Shortest time between two hand-overs of finished frames from the worker [s].
YIELD_INTERVAL = 0.25
#: The Model choice that picks the model for the image's imaging mode.
AUTO_MODEL = "auto"
#: The Imaging mode choices ("unknown": the file does not say).
IMAGING_MODE_CHOICES = list(IMAGING_MODES)
#: Shortest time between two refreshes of the status line and progress bar [s]: any widget
#: refresh re-composites the whole window, a cost on a display without a GPU.
STATUS_INTERVAL = 1.0
#: Runs at least this long [s] end with a napari notification as well as the status line.
NOTIFY_AFTER = 10.0


class DetectWidget(WorkerRunner, Container):
    """Find atomic columns in an image layer and show them as a Points layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget is docked in (napari passes it).
    """

    title = "Detect atoms"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.image_layer = create_widget(annotation="napari.layers.Image", label="Image")
        column_models = registered_models("columns")
        self.imaging_mode = ComboBox(
            label="Imaging mode", choices=IMAGING_MODE_CHOICES, value="unknown",
            tooltip="How the image was recorded, as its file says; change it when the file "
                    "does not say or is wrong. It picks the model (auto) and whether STEM "
                    "columns are dark (ABF, BF: negated for the STEM model).")
        self.model = ComboBox(label="Model", choices=[AUTO_MODEL, *column_models],
                              value=AUTO_MODEL,
                              tooltip="\n".join([f"{AUTO_MODEL}: the model for the image's "
                                                 "imaging mode (HRTEM: au-hrtem, STEM: "
                                                 "stem-columns)"]
                                                + [f"{name}: {REGISTRY[name].description}"
                                                   for name in column_models]))
        self.model_description = Label(value="")
        self.sampling = FloatSpinBox(label="Pixel size (Å/px)", min=0.0, max=100.0,
                                     step=0.0001, tooltip="Pixel size of the image, in ångström")
        self.sampling_note = Label(value="")
        self.threshold = FloatSlider(label="Threshold", min=0.05, max=0.95, step=0.01,
                                     value=0.5, tooltip="Smallest network confidence kept")
        self.frames = RadioButtons(label="Frames", choices=[CURRENT_FRAME, ALL_FRAMES],
                                   value=ALL_FRAMES, orientation="horizontal")
        self.mirrors = CheckBox(text="Average mirror images (4× slower)", value=False,
                                tooltip="The network also sees each frame flipped three ways "
                                "and the maps are averaged: a little more accurate at low dose")
        self.show_map = CheckBox(text="Show the network's map", value=False)
        # What the microscope was set to, for a model that takes it: near Gaussian focus it
        # tells a lattice from the same lattice shifted by half a period.
        self.conditions = ImagingConditionsInputs()
        self.run_button = PushButton(text="Detect atoms")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = make_progress_bar()
        self.status = Label(value="")
        wrap_text(self.model_description, self.sampling_note, self.status)
        self.extend([self.image_layer, self.imaging_mode, self.model, self.model_description,
                     self.sampling,
                     self.sampling_note, self.threshold, self.frames, self.mirrors,
                     self.show_map, self.conditions,
                     self.run_button, self.cancel_button, self.progress_bar, self.status])
        scroll_rows(self)

        self._results: dict[int, tuple[pd.DataFrame, np.ndarray]] = {}
        # A model with counts: each frame's log(atoms) map, for n_atoms at a new threshold.
        self._log_counts: dict[int, np.ndarray] = {}
        self._run_info: dict[str, Any] = {}
        self._watched_layer: Any = None  # whose pixel size (scale, units) is followed
        self._shown_model: str | None = None  # whose threshold the slider was set to

        follow_aligned_stack(viewer, self.image_layer, lambda: self.worker is not None)
        self.image_layer.changed.connect(self._on_image_changed)
        self.model.changed.connect(self._on_model_changed)
        self.model.changed.connect(self._validate)  # a STEM image warns for HRTEM models
        self.imaging_mode.changed.connect(self._on_mode_changed)
        self.sampling.changed.connect(self._validate)
        self.threshold.changed.connect(self._on_threshold_changed)
        self.show_map.changed.connect(self._update_layers)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._on_model_changed()
        self._on_image_changed()

    # --- inputs ---------------------------------------------------------------------------

    def chosen_model(self) -> tuple[str, str | None]:
        """The model that will run, and why when it was picked for the imaging mode."""
        if self.model.value != AUTO_MODEL:
            return self.model.value, None
        layer = self.image_layer.value
        metadata = {} if layer is None else layer.metadata
        return choose_model(metadata.get("imaging_mode") or "unknown",
                            metadata.get("imaging_mode_source"))

    def _on_model_changed(self) -> None:
        name, reason = self.chosen_model()
        entry = REGISTRY.get(name)
        description = entry.description if entry else ""
        self.model_description.value = (f"{name}: {reason}. {description}" if reason
                                        else description)
        try:
            if name != self._shown_model:  # the same model: the user's threshold stays
                self.threshold.value = model_description(name).threshold
                self._shown_model = name
        except TEMAtomsError as exc:  # missing or damaged weights: say so, keep the widget
            self.model_description.value = f"⚠ {exc}"
        self.conditions.show_for(name)

    def _on_mode_changed(self) -> None:
        """The user says how the image was recorded: kept in the layer, for every widget."""
        layer = self.image_layer.value
        if layer is None or self.imaging_mode.value == layer.metadata.get("imaging_mode",
                                                                          "unknown"):
            return
        layer.metadata["imaging_mode"] = self.imaging_mode.value
        layer.metadata["imaging_mode_source"] = "set by the user (Detect widget)"
        self._on_model_changed()
        self._validate()

    def _on_image_changed(self) -> None:
        layer = self.image_layer.value
        mode = "unknown" if layer is None else layer.metadata.get("imaging_mode") or "unknown"
        with self.imaging_mode.changed.blocked():  # the file's mode, not a user's choice
            self.imaging_mode.value = mode if mode in IMAGING_MODE_CHOICES else "unknown"
        self._on_model_changed()  # auto: the model follows the image's mode
        if layer is not self._watched_layer and self.worker is None:
            # Another image: the last run's status described the one before.
            self.status.value = self._points_summary() if layer is self._run_info.get(
                "layer") else ""
            if not self.status.value:
                self.progress_bar.value = 0
        self._follow_pixel_size(layer)
        size = None if layer is None else pixel_size_of_layer(layer.scale, layer.units,
                                                               layer.metadata)
        self.sampling.value = 0.0 if size is None else size[1]
        self.frames.enabled = layer is not None and layer.ndim >= 3
        self._validate()

    def _follow_pixel_size(self, layer: Any) -> None:
        """Follow `layer`'s pixel size, which the Calibration widget changes on the layer."""
        if layer is self._watched_layer:
            return
        for event in _pixel_size_events(self._watched_layer):
            event.disconnect(self._on_pixel_size_changed)
        for event in _pixel_size_events(layer):
            event.connect(self._on_pixel_size_changed)
        self._watched_layer = layer

    def _on_pixel_size_changed(self) -> None:
        self._on_image_changed()
        info = self._run_info
        if self._results and info.get("layer") is self._watched_layer:
            self._update_layers()  # the points follow the image's new scale
            if abs(self.sampling.value - info["sampling"]) > 1e-9:
                self.status.value = (f"The pixel size changed since the atoms were found at "
                                     f"{info['sampling']:.4g} Å/px: detect again.")

    def _validate(self) -> None:
        layer = self.image_layer.value
        problem = ""
        if layer is None:
            problem = "Open an image first."
        elif layer.rgb:
            problem = "This layer is RGB; atom detection needs grey-scale intensities."
        elif layer.ndim not in (2, 3):
            problem = f"This layer is {layer.ndim}-D; an image or a stack is needed."
        elif self.sampling.value <= 0:
            problem = ("⚠ No pixel size: enter it in Å/px (the file had none), or set it in "
                       "the Calibration widget.")
        self.run_button.enabled = not problem and self.worker is None
        if not problem:  # a warning, not a refusal: the run stays possible
            warning = sampling_warning(float(self.sampling.value))
            problem = f"⚠ {warning[0].upper()}{warning[1:]}." if warning else ""
            domain = _domain_note(layer, self.chosen_model()[0])
            if domain:  # a STEM image for an HRTEM model: said, the run stays possible
                problem = f"{problem} ⚠ {domain[0].upper()}{domain[1:]}.".strip()
        self.sampling_note.value = problem

    # --- running --------------------------------------------------------------------------

    def _frame_indices(self, layer: Any) -> list[int]:
        if layer.ndim == 2:
            return [0]
        if self.frames.value == CURRENT_FRAME:
            # The stack's frame axis is the third from last: napari lines up trailing axes.
            return [int(self._viewer.dims.current_step[-3])]
        return list(range(int(layer.data.shape[0])))

    def run(self) -> None:
        """Start detection in a worker thread (the Run button)."""
        layer = self.image_layer.value
        self._validate()
        if not self.run_button.enabled:
            return
        indices = self._frame_indices(layer)
        data, sampling = layer.data, float(self.sampling.value)
        model_name, threshold = self.chosen_model()[0], float(self.threshold.value)
        mode = layer.metadata.get("imaging_mode") or "unknown"
        average_mirrors = bool(self.mirrors.value)
        conditions = self.conditions.values()
        # A run with the same image and settings adds to what earlier runs found (one frame
        # after another, or a cancelled run over the rest): only its own frames are replaced.
        settings = (model_name, mode, sampling, average_mirrors,
                    tuple(sorted(conditions.items())))
        previous = self._run_info
        if previous.get("layer") is not layer or previous.get("settings") != settings:
            self._results, self._log_counts = {}, {}
        self._run_info = {"layer": layer, "sampling": sampling, "n_frames": len(indices),
                          "indices": indices,
                          "settings": settings, "done": 0,
                          "start": time.perf_counter(), "stack": layer.ndim == 3,
                          "conditions": {f"{key}_angstrom": value
                                         for key, value in conditions.items()}}

        stack = layer.ndim == 3

        def work():
            loaded = load_cached_model(model_name)
            yield Progress("model", 0, len(indices), loaded)
            # One generator over every chosen frame: a call per frame cost 5 % of the run. A
            # single frame goes in as a 2-D image, so its messages are named here, by its index.
            whole_stack = stack and len(indices) > 1
            frames = data if whole_stack else np.asarray(data[indices[0]] if stack else data)
            # Frames go to the main thread in batches, at most every YIELD_INTERVAL: each
            # yield wakes the event loop, which on two cores takes time from the network.
            # Cancel is honoured at the next batch; what came before a bad frame is kept.
            try:
                return (yield from batch_progress(
                    _steps(frames, loaded, sampling, threshold, average_mirrors,
                           imaging_mode=mode, **conditions),
                    YIELD_INTERVAL))
            except TEMAtomsError as exc:
                if stack and not whole_stack:
                    raise TEMAtomsError(f"frame {indices[0]}: {exc}") from None
                raise

        # The progress bar moves with the status, at most every STATUS_INTERVAL.
        self._start_worker(work, len(indices), "Detecting atoms",
                           f"Detecting atoms in {len(indices)} frame(s)...")

    def _on_progress(self, progress: Progress) -> None:
        if progress.stage == "model":
            loaded = progress.item
            self._run_info["device"] = loaded.device
            # Device, engine and precision: the speed a user sees depends on all three.
            self._run_info["runtime"] = loaded.describe_runtime()
            self._run_info["model_sampling"] = loaded.sampling
        else:  # a batch of frames (see run)
            indices = self._run_info["indices"]
            for step in progress.item:
                index = indices[step.frame]
                if step.log_counts is not None:
                    self._log_counts[index] = step.log_counts
                atoms = step.atoms
                if atoms["frame"].ne(index).any():  # a single frame of a stack comes as 0
                    atoms = atoms.assign(frame=index)
                self._results[index] = (atoms, step.heatmap)
            self._run_info["done"] += len(progress.item)
            # Redrawing after every frame would cost as much as the network on a
            # software-rendered display: the status refreshes every STATUS_INTERVAL, the points
            # as the run goes but at most 5 % of the time (each redraw waits 20 times as long
            # as the last one took, and at least two seconds), and both once more at the end.
            info = self._run_info
            now = time.perf_counter()
            if now - info.get("status_shown", 0.0) > STATUS_INTERVAL:
                info["status_shown"] = now
                done = info["done"]
                self.status.value = f"{done}/{info['n_frames']} frame(s) analysed..."
                self._advance(done)
            wait = max(2.0, 20.0 * info.get("redraw_seconds", 0.0))
            if now - info.get("points_shown", info["start"]) > wait:
                self._update_layers()
                info["points_shown"] = time.perf_counter()
                info["redraw_seconds"] = info["points_shown"] - now

    def _on_error(self, message: str) -> None:
        self.status.value = message
        self._run_info["error"] = message

    def _on_result(self, atoms: pd.DataFrame) -> None:
        """Nothing more to do: the frames came with the progress, shown by `_after_run`."""

    def _after_run(self) -> None:
        """Show what was found (all of it, or what came before Cancel or an error)."""
        self._validate()
        if not self._results:
            return
        self._update_layers()
        elapsed = time.perf_counter() - self._run_info["start"]
        n_atoms = sum(len(table) for table, _ in self._results.values())
        done, total = self._run_info["done"], self._run_info["n_frames"]
        self._advance(done)
        error = self._run_info.get("error")
        stopped = "" if done == total else (
            f" (stopped at an error after {done} of {total}: {error})" if error
            else f" (cancelled after {done} of {total})")
        earlier = len(self._results) - done
        kept = (f"; the layer keeps {earlier} frame(s) of earlier runs with these settings"
                if earlier > 0 else "")
        self.status.value = (f"{n_atoms} atoms in {len(self._results)} frame(s){stopped}, "
                             f"{elapsed:.1f} s on {self._run_info.get('runtime', '?')}{kept}")
        if elapsed >= NOTIFY_AFTER:  # the user may have turned to something else meanwhile
            show_info(f"Detect atoms: {self.status.value}")

    # --- results --------------------------------------------------------------------------

    def _on_threshold_changed(self) -> None:
        """Re-find peaks in the kept maps: no need to run the network again."""
        if not self._results or self.worker is not None:
            return
        info, threshold = self._run_info, float(self.threshold.value)
        factor = info["model_sampling"] / info["sampling"]
        for index, (_, heatmap) in list(self._results.items()):
            atoms = atoms_from_heatmap(heatmap, threshold, info["model_sampling"], factor, index,
                                       self._log_counts.get(index))
            self._results[index] = (atoms, heatmap)
        self._update_layers()
        self.status.value = self._points_summary()  # the count of the run said the old points

    def _points_summary(self) -> str:
        """What the atoms layer of the last run holds now ("" before any run)."""
        if not self._results:
            return ""
        n_atoms = sum(len(table) for table, _ in self._results.values())
        return (f"{n_atoms} atoms in {len(self._results)} frame(s) at threshold "
                f"{float(self.threshold.value):.2f}")

    def _points_table(self) -> pd.DataFrame:
        tables = [self._results[i][0] for i in sorted(self._results)]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
            columns=["frame", "y", "x", "confidence"])

    def _update_layers(self) -> None:
        info = self._run_info
        if not self._results or "layer" not in info:
            return
        image = info["layer"]
        pixel_size = pixel_size_of_layer(image.scale, image.units, image.metadata)
        points = show_atoms(self._viewer, image, self._points_table(),
                            pixel_size or (info["sampling"],) * 2)
        points.metadata.update(source=image.metadata.get("source"), model=self.model.value,
                               threshold=float(self.threshold.value),
                               average_mirrors=bool(self.mirrors.value),
                               **info.get("conditions", {}),
                               pixel_size_angstrom=pixel_size,
                               device=info.get("device"), runtime=info.get("runtime"))
        self._update_heatmap(image)

    def _update_heatmap(self, image: Any) -> None:
        name = f"{image.name} network map"
        if not self.show_map.value:
            if name in self._viewer.layers:
                self._viewer.layers.remove(name)
            return
        info = self._run_info
        factor = info["model_sampling"] / info["sampling"]
        maps = {i: heatmap for i, (_, heatmap) in self._results.items()}
        first = next(iter(maps.values()))
        if info["stack"]:
            data = np.zeros((int(image.data.shape[0]), *first.shape), np.float32)
            for index, heatmap in maps.items():
                data[index] = heatmap
        else:
            data = first
        scale = (*image.scale[:-2], image.scale[-2] * factor, image.scale[-1] * factor)
        if name in self._viewer.layers:
            self._viewer.layers[name].data = data
        else:
            self._viewer.add_image(data, name=name, scale=scale, units=image.units,
                                   axis_labels=image.axis_labels[-data.ndim:],
                                   colormap="magma", blending="additive", opacity=0.6,
                                   contrast_limits=(0, 1))


def _pixel_size_events(layer: Any) -> list[Any]:
    """The events of `layer` (None: none) that change its pixel size."""
    if layer is None:
        return []
    return [event for event in (getattr(layer.events, name, None) for name in ("scale", "units"))
            if event is not None]


def _steps(frame: np.ndarray, loaded: Any, sampling: float, threshold: float,
           average_mirrors: bool = False, cs: float | None = None,
           defocus: float | None = None, imaging_mode: str = "unknown"):
    # The mode decides whether a STEM model sees the frame negated (ABF, BF), and what the
    # image's contrast says is a notice of the stream.
    return iter_detect_atoms(frame, loaded, sampling=sampling, threshold=threshold,
                             keep_heatmaps=True, average_mirrors=average_mirrors, cs=cs,
                             defocus=defocus, imaging_mode=imaging_mode)


def _domain_note(layer: Any, model_name: str) -> str | None:
    """The :func:`~..analysis.detect.domain_warning` for a layer read from a STEM file."""
    mode = layer.metadata.get("imaging_mode")
    if not mode or mode == "unknown":
        return None
    try:
        metadata = model_description(model_name)
    except TEMAtomsError:  # missing weights are said by the model's description
        return None
    return domain_warning(mode, layer.metadata.get("imaging_mode_source"), model_name,
                          metadata)
