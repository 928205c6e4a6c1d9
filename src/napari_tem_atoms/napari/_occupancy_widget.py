"""Dock widget "Occupancy": a thin layer over :func:`~.analysis.video.iter_video_occupancy`.

The drift, detection and site analysis run in a napari thread worker (progress, Cancel); the
results come back as a drift-corrected view of the video, an occupancy heat map of the particle
(with a colour bar), a Points layer of the sites coloured by occupancy, and a plot dock.
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
    FloatSpinBox,
    Label,
    PushButton,
    create_widget,
)
from napari.utils.notifications import show_error, show_info, show_warning

from ..analysis.align import apply_shifts
from ..analysis.occupancy import SiteOccupancy, occupancy_map
from ..analysis.video import OCCUPANCY_MODEL, iter_video_occupancy
from ..io import write_atoms_csv
from ..models import registered_models
from ._aligned import follow_aligned_stack
from ._conditions import ImagingConditionsInputs
from ._layers import pixel_size_of_layer
from ._layout import scroll_into_view, scroll_rows, wrap_text
from ._worker import WorkerRunner, make_progress_bar

if TYPE_CHECKING:
    import napari

STAGE_NAMES = {"drift": "Correcting drift", "detect": "Detecting atoms", "sites": "Sites"}


class OccupancyWidget(WorkerRunner, Container):
    """Per-site occupancy of a video, as a heat map, coloured sites and plots.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget is docked in (napari passes it).
    """

    title = "Occupancy"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.video_layer = create_widget(annotation="napari.layers.Image", label="Video")
        self.atoms_layer = create_widget(
            annotation="napari.layers.Points", label="Atoms", options={"nullable": True})
        self.atoms_layer.tooltip = ("Detections of every frame (e.g. from Detect atoms); "
                                    "leave empty to detect them now")
        self.model = ComboBox(label="Model", choices=registered_models("columns"),
                              value=OCCUPANCY_MODEL)
        self.sampling = FloatSpinBox(label="Pixel size (Å/px)", min=0.0, max=100.0,
                                     step=0.0001)
        self.max_shift = FloatSpinBox(label="Max drift/frame (px)", min=0.0, max=10000.0,
                                      value=0.0, tooltip="0: 0.9 Å (below half a lattice "
                                      "period, so the drift cannot jump by a lattice vector)")
        self.max_shift.native.setSpecialValueText("auto")  # 0 is automatic, not no drift
        self.site_radius = FloatSpinBox(label="Site radius (Å)", min=0.05, max=5.0, step=0.05,
                                        value=0.6, tooltip="Detections closer than this to a "
                                        "site belong to it")
        self.method = ComboBox(
            label="Method", choices=[("whole video (HMM per site)", "evidence"),
                                     ("per-frame detections", "detections")],
            value="evidence",
            tooltip="Whole video: sites from the mean of the network's maps and the lattice "
                    "around the particle (a site occupied in a tenth of the frames still shows), "
                    "each frame judged by the image at every site, a hidden Markov model per "
                    "site: sees single adatoms. Per-frame detections: a frame is occupied where "
                    "a detection above the threshold was found (for comparison; used with given "
                    "atoms)")
        self.conditions = ImagingConditionsInputs()
        self.note = Label(value="")
        self.run_button = PushButton(text="Measure occupancy")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = make_progress_bar()
        self.status = Label(value="")
        self.output = FileEdit(label="Sites CSV", mode="w", filter="*.csv")
        wrap_text(self.note, self.status)
        self.with_matrix = CheckBox(text="also the per-frame occupancy matrix", value=False)
        self.save_button = PushButton(text="Save sites", enabled=False)
        self.extend([self.video_layer, self.atoms_layer, self.model, self.sampling,
                     self.max_shift, self.site_radius, self.method, self.conditions, self.note,
                     self.run_button,
                     self.cancel_button, self.progress_bar, self.status, self.output,
                     self.with_matrix, self.save_button])
        scroll_rows(self)

        self.result: SiteOccupancy | None = None
        self.plot: Any = None
        self._offsets: dict[str, int] = {}
        self._run_layer: Any = None
        self._hovered: int | None = None

        follow_aligned_stack(viewer, self.video_layer, lambda: self.worker is not None)
        self.video_layer.changed.connect(self._on_video_changed)
        self.atoms_layer.changed.connect(self._validate)
        self.model.changed.connect(self._show_conditions)
        self.sampling.changed.connect(self._validate)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.save_button.changed.connect(self.save)
        self._on_video_changed()

    # --- inputs ---------------------------------------------------------------------------

    def _on_video_changed(self) -> None:
        layer = self.video_layer.value
        size = None if layer is None else pixel_size_of_layer(layer.scale, layer.units,
                                                               layer.metadata)
        self.sampling.value = 0.0 if size is None else size[1]
        self._validate()

    def _show_conditions(self) -> None:
        # Only a detection made here uses them: given atoms were detected elsewhere.
        self.conditions.show_for(self.model.value)
        if self.atoms_layer.value is not None:
            self.conditions.visible = False

    def _validate(self) -> None:
        self._show_conditions()
        layer, atoms = self.video_layer.value, self.atoms_layer.value
        problem = ""
        if layer is None:
            problem = "Open a video (a stack of frames) first."
        elif layer.rgb or layer.ndim != 3:
            problem = "The video must be a grey-scale stack of frames (3-D)."
        elif layer.data.shape[0] < 2:
            problem = "The video has one frame: an occupancy needs at least two."
        elif atoms is not None and atoms.ndim != 3:
            problem = "These atoms are 2-D: pick atoms of every frame (frame, y, x)."
        elif atoms is None and self.sampling.value <= 0:
            problem = "⚠ No pixel size: enter it in Å/px to detect atoms."
        self.note.value = problem
        self.run_button.enabled = not problem and self.worker is None

    # --- running --------------------------------------------------------------------------

    def run(self) -> None:
        """Start the analysis in a worker thread (the button)."""
        self._validate()
        if not self.run_button.enabled:
            return
        layer, atoms_layer = self.video_layer.value, self.atoms_layer.value
        sampling = float(self.sampling.value) or None
        atoms = None
        if atoms_layer is not None:
            atoms = pd.DataFrame(np.asarray(atoms_layer.data, dtype=float)[:, -3:],
                                 columns=["frame", "y", "x"])
        radius = float(self.site_radius.value) / sampling if sampling else None
        max_shift = float(self.max_shift.value) or None
        model, data = self.model.value, layer.data
        method = self.method.value
        conditions = self.conditions.values() if atoms is None else {}
        refusal = self.conditions.refusal(model) if atoms is None else None
        if refusal:  # said before the drift is measured, not after it
            show_error(f"Occupancy: {refusal}")
            self.status.value = refusal
            return
        self._run_layer = layer

        def work():
            return iter_video_occupancy(data, model, sampling, atoms=atoms, max_shift=max_shift,
                                        site_radius=radius, method=method, **conditions)

        # One bar for the whole run: drift, detection (unless the atoms are given), sites.
        n_frames = int(data.shape[0])
        self.result = None
        self._offsets = {"drift": 0, "detect": n_frames,
                         "sites": n_frames + (n_frames if atoms is None else 0)}
        self._start_worker(work, self._offsets["sites"] + 1, "Occupancy: correcting drift",
                           "Starting...", stage_offsets=self._offsets)

    def _on_progress(self, progress: Any) -> None:
        if self.worker is not None and self.result is None:
            self.status.value = f"{STAGE_NAMES[progress.stage]}: {progress.done}/{progress.total}"
            super()._on_progress(progress)

    def _on_result(self, result: Any) -> None:
        self.result = result
        self._show_result()

    def _after_run(self) -> None:
        self._validate()
        if self.cancelled and self.result is None:
            self.status.value = "Cancelled."

    # --- results --------------------------------------------------------------------------

    def _show_result(self) -> None:
        result, video = self.result, self._run_layer
        sites = result.sites
        viewer = self._viewer
        scale2, units2 = tuple(video.scale[-2:]), tuple(video.units[-2:])
        shape = video.data.shape[-2:]

        if np.abs(result.drift).max() > 0.05:
            name = f"{video.name} drift-corrected"
            corrected = _lazily_shifted(video.data, result.drift)
            if name in viewer.layers:
                viewer.layers[name].data = corrected
            else:
                viewer.add_image(corrected, name=name, scale=video.scale, units=video.units,
                                 axis_labels=video.axis_labels,
                                 colormap="gray", contrast_limits=video.contrast_limits)
            video.visible = False

        heat = occupancy_map(sites[["y", "x"]].to_numpy(), sites["occupancy"].to_numpy(),
                             shape)
        name = f"{video.name} occupancy map"
        if name in viewer.layers:
            viewer.layers[name].data = heat
        else:
            heat_layer = viewer.add_image(heat, name=name, scale=scale2, units=units2,
                                          axis_labels=video.axis_labels[-2:],
                                          colormap="viridis", contrast_limits=(0.0, 1.0),
                                          opacity=0.65, blending="translucent")
            heat_layer.colorbar.visible = True
            # A colour bar has no title of its own: the layer's name, tiled beside it, is one.
            heat_layer.name_overlay.position = heat_layer.colorbar.position
            heat_layer.name_overlay.visible = True

        name = f"{video.name} sites"
        coordinates = sites[["y", "x"]].to_numpy()
        # Discs of 0.6 Å: large enough to read the colour, small enough to see the cell behind.
        marker = 0.6 / result.sampling if result.sampling else 4.0
        if name in viewer.layers:
            points = viewer.layers[name]
            points.data, points.features = coordinates, sites
            points.refresh_colors()
        else:
            points = viewer.add_points(coordinates, name=name, features=sites, scale=scale2,
                                       axis_labels=video.axis_labels[-2:],
                                       units=units2, size=marker, face_color="occupancy",
                                       face_colormap="viridis",
                                       face_contrast_limits=(0.0, 1.0), border_width=0.1,
                                       border_color="white")
            points.selected_data.events.items_changed.connect(self._on_selection)
        points.metadata.update(source=video.metadata.get("source"), kind="sites",
                               pixel_size_angstrom=result.sampling and (result.sampling,) * 2)
        self._sites_layer = points
        self._show_plot()
        layers = sites.groupby("layer")["occupancy"].median()
        summary = ", ".join(f"{k} {v:.2f}" for k, v in layers.items())
        self.status.value = (f"{len(sites)} sites over {result.occupied.shape[0]} frames; "
                             f"median occupancy {summary}"
                             + "".join(f". Note: {note}" for note in result.notes))
        self.save_button.enabled = True
        scroll_into_view(self.status, self.save_button)  # not below the dock's foot
        for note in result.notes:  # e.g. no particle edge in the field: no surface sites
            show_warning(f"Occupancy: {note}")
        show_info(f"Occupancy: {self.status.value}")

    def _show_plot(self) -> None:
        from ._occupancy_plot import OccupancyPlot, give_plots_room

        if self.plot is None:
            self.plot = OccupancyPlot()
            self._viewer.window.add_dock_widget(self.plot, name="Occupancy plots",
                                                area="right")
            give_plots_room(self.plot)
            self._viewer.mouse_move_callbacks.append(self._on_mouse_move)
            self._viewer.dims.events.current_step.connect(self._on_frame)
        self.plot.set_result(self.result)
        self._on_frame()

    def _on_frame(self, event: Any = None) -> None:
        if self.plot is not None and self._viewer.dims.ndim >= 3:
            # The video's frame axis is the third from last (napari lines up trailing axes).
            self.plot.set_frame(int(self._viewer.dims.current_step[-3]))

    def _site_at(self, world: Any) -> int | None:
        layer = getattr(self, "_sites_layer", None)
        if layer is None or self.result is None or layer not in self._viewer.layers:
            return None
        position = np.asarray(layer.world_to_data(world))[-2:]
        sites = self.result.sites[["y", "x"]].to_numpy()
        if not len(sites):
            return None
        distance = np.hypot(*(sites - position).T)
        nearest = int(np.argmin(distance))
        return nearest if distance[nearest] <= layer.size.max() else None

    def _on_mouse_move(self, viewer: Any, event: Any) -> None:
        site = self._site_at(viewer.cursor.position)
        if site is not None and site != self._hovered:
            self._hovered = site
            self.plot.show_site(site)

    def _on_selection(self, event: Any = None) -> None:
        selected = sorted(self._sites_layer.selected_data)
        if selected and self.plot is not None:
            self.plot.show_site(int(selected[-1]))

    def save(self) -> None:
        """Write the sites CSV (and the occupancy matrix beside it, on request)."""
        if self.result is None:
            return
        path = Path(self.output.value)
        if path.suffix.lower() != ".csv" or path.is_dir():
            show_error(f"Occupancy: choose a .csv file to save the sites to (not {path})")
            return
        try:
            write_atoms_csv(path, self.result.sites)
            written = [path]
            if self.with_matrix.value:
                matrix = path.with_name(f"{path.stem}_matrix.csv")
                write_atoms_csv(matrix, self.result.occupancy_matrix())
                written.append(matrix)
        except OSError as exc:
            show_error(f"Occupancy: could not write {path}: {exc.strerror or exc}")
            return
        self.status.value = "Saved " + ", ".join(str(p) for p in written)
        show_info(f"Occupancy: {self.status.value}")


def _lazily_shifted(data: Any, drift: np.ndarray) -> Any:
    """The video with its drift undone, frame by frame as napari asks for them (Dask)."""
    import dask.array as da

    frames = da.from_array(data, chunks=(1, *data.shape[1:])) if not isinstance(
        data, da.Array) else data.rechunk((1, *data.shape[1:]))

    def shift_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        index = block_info[0]["chunk-location"][0]
        return apply_shifts(np.asarray(block, dtype=np.float32), drift[index:index + 1])

    return frames.map_blocks(shift_block, dtype=np.float32)
