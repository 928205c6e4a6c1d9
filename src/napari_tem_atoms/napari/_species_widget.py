"""Dock widget "Species": columns and their species from a three-image focal series.

A thin layer over :func:`~napari_tem_atoms.analysis.species.iter_detect_species`: the series (a
three-frame stack, a (time, 3, rows, cols) time series of them, or three single-image layers) is
optionally aligned, the network runs in a worker (progress bar, Cancel), and the columns come
back as one Points layer with a ``species`` feature and a fixed colour per species, with the
legend in the widget. For a time series the points are (time, image, y, x): they lie on the
middle-defocus image of each series (whose frame their coordinates are in; image 1 unless the
defoci say otherwise) and follow the time slider (napari lines layers up by their trailing
axes, so (time, y, x) points would follow the image slider instead).
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
    LineEdit,
    PushButton,
    RadioButtons,
    create_widget,
)
from napari.utils.notifications import show_error, show_info

from ..analysis.detect import normalise_image
from ..analysis.species import iter_detect_species, middle_defocus_image
from ..errors import TEMAtomsError
from ..models import registered_models
from ._layers import pixel_size_of_layer, points_layer_kwargs
from ._layout import scroll_rows, wrap_text
from ._worker import WorkerRunner, make_progress_bar

if TYPE_CHECKING:
    import napari

#: One colour per species, told apart at a glance, also by colour-blind readers (Okabe-Ito).
SPECIES_COLOURS = {"Mo": "#d55e00", "S2": "#f0e442", "S1": "#56b4e9"}  # Okabe-Ito
STACK, LAYERS = "a stack", "three layers"
#: Diameter of a species marker [Å].
SPECIES_MARKER_ANGSTROM = 0.7


def _legend() -> str:
    return "  ".join(f'<span style="color:{colour}">&#9679;</span> {name}'
                     for name, colour in SPECIES_COLOURS.items())


class SpeciesWidget(WorkerRunner, Container):
    """Find columns and their species (Mo, S2, S1) in a focal series.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget is docked in (napari passes it).
    """

    title = "Species"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.source = RadioButtons(label="Series from", choices=[STACK, LAYERS], value=STACK,
                                   orientation="horizontal")
        self.stack_layer = create_widget(
            annotation="napari.layers.Image", label="Stack",
            options={"tooltip": "3 images (3, rows, cols), or a time series of focal series "
                                "(time, 3, rows, cols)"})
        self.layer_1 = create_widget(annotation="napari.layers.Image", label="Image 1")
        self.layer_2 = create_widget(annotation="napari.layers.Image", label="Image 2")
        self.layer_3 = create_widget(annotation="napari.layers.Image", label="Image 3")
        self.model = ComboBox(label="Model", choices=registered_models("species"))
        self.sampling = FloatSpinBox(label="Pixel size (Å/px)", min=0.0, max=100.0,
                                     step=0.0001)
        self.defoci = LineEdit(label="Defoci (Å, + = underfocus)", value="",
                               tooltip="Defocus of each image, e.g. -60, 0, 60 (abTEM sign, "
                               "defocus = -C10). Empty: the images are in increasing defocus.")
        self.align = CheckBox(text="Align the images first", value=True)
        self.note = Label(value="")
        self.run_button = PushButton(text="Find species")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = make_progress_bar()
        self.status = Label(value="")
        self.legend = Label(value=_legend())
        wrap_text(self.note, self.status)
        self.extend([self.source, self.stack_layer, self.layer_1, self.layer_2, self.layer_3,
                     self.model, self.sampling, self.defoci, self.align, self.note,
                     self.run_button, self.cancel_button, self.progress_bar, self.status,
                     self.legend])
        scroll_rows(self)
        self._partial: list[Any] = []
        self._done = False
        self._time_series = False
        self._middle_image = 1
        self._n_series = 0
        self.atoms: Any = None
        self._reference: Any = None
        for widget in (self.source, self.stack_layer, self.layer_1, self.layer_2, self.layer_3):
            widget.changed.connect(self._on_input_changed)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.sampling.changed.connect(self._validate)
        self.defoci.changed.connect(self._validate)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._on_input_changed()

    # --- inputs ---------------------------------------------------------------------------

    def _layers(self) -> list[Any]:
        if self.source.value == STACK:
            return [self.stack_layer.value]
        return [self.layer_1.value, self.layer_2.value, self.layer_3.value]

    def _on_input_changed(self) -> None:
        from_stack = self.source.value == STACK
        self.stack_layer.visible = from_stack
        for widget in (self.layer_1, self.layer_2, self.layer_3):
            widget.visible = not from_stack
        first = self._layers()[0]
        size = None if first is None else pixel_size_of_layer(first.scale, first.units,
                                                               first.metadata)
        self.sampling.value = 0.0 if size is None else size[1]
        self._validate()

    def _on_layer_inserted(self, event: Any) -> None:
        """Take the aligned copy of the chosen stack: Align hides the misaligned original."""
        layer, chosen = event.value, self.stack_layer.value
        if (chosen is not None and getattr(layer, "metadata", {}).get("aligned_from") == chosen.name
                and _holds_focal_series(layer)):
            self.stack_layer.reset_choices()  # napari adds the new layer after this handler
            self.stack_layer.value = layer

    def _parsed_defoci(self) -> list[float] | None:
        text = self.defoci.value.strip()
        if not text:
            return None
        return [float(part) for part in text.replace(";", ",").split(",")]

    def _validate(self) -> None:
        layers = self._layers()
        problem = ""
        if any(layer is None for layer in layers):
            problem = "Open the focal series first."
        elif self.source.value == STACK and not _holds_focal_series(layers[0]):
            problem = (f"The stack must hold 3 images, (3, rows, cols), or a time series of "
                       f"them, (time, 3, rows, cols); it has shape "
                       f"{tuple(layers[0].data.shape)}. Or choose three layers.")
        elif self.source.value == LAYERS and (
                any(layer.ndim != 2 for layer in layers)
                or len({tuple(layer.data.shape) for layer in layers}) != 1):
            problem = "The three layers must be single images of the same size."
        elif len({id(layer) for layer in layers}) != len(layers):
            problem = "Choose three different layers."
        elif self.sampling.value <= 0:
            problem = "⚠ No pixel size: enter it in Å/px."
        else:
            try:
                defoci = self._parsed_defoci()
            except ValueError:
                problem = "Defoci: three numbers in Å separated by commas (or leave it empty)."
            else:
                if defoci is not None and (len(defoci) != 3 or len(set(defoci)) != 3):
                    problem = "Defoci: three different values, one per image."
        self.note.value = problem
        self.run_button.enabled = not problem and self.worker is None

    # --- running --------------------------------------------------------------------------

    def run(self) -> None:
        """Find the species in a worker thread (the button)."""
        self._validate()
        if not self.run_button.enabled:
            return
        layers = self._layers()
        if self.source.value == STACK:
            # A (T, 3, H, W) series is read one time point at a time, in the worker.
            series = layers[0].data
            self._reference = layers[0]
        else:
            series = np.stack([np.asarray(layer.data, dtype=np.float32) for layer in layers])
            self._reference = layers[1]
        refusal = _refusal(series)
        if refusal:  # said before the progress bar starts, not after the model is loaded
            show_error(f"Species: {refusal}")
            self.status.value = refusal
            return
        model, sampling = self.model.value, float(self.sampling.value)
        defoci, align = self._parsed_defoci(), bool(self.align.value)

        n_series = int(series.shape[0]) if np.ndim(series) == 4 else 1
        self._time_series = np.ndim(series) == 4
        # The positions are in the frame of the middle defocus; with defoci given, which
        # image of the layer that is follows from their order.
        self._middle_image = middle_defocus_image(defoci)

        def work():  # one event per focal series: Cancel stops between them
            return iter_detect_species(series, model, sampling, defoci, align)

        self._partial = []
        self._done = False
        self._n_series = n_series
        self._start_worker(work, n_series, "Finding species",
                           "Aligning and finding species..." if align
                           else "Finding species...")

    def _on_progress(self, progress: Any) -> None:
        self._partial.append(progress.item.atoms)  # the series just done, kept if cancelled
        super()._on_progress(progress)

    def _on_error(self, message: str) -> None:
        self._show_partial()  # the series done before the bad one are kept
        self.status.value = message

    def _on_result(self, atoms: Any) -> None:
        # Its notes (focal series unlike the trained ones) came as notices, shown already.
        self._done = True
        self.atoms = atoms
        self._show(atoms)

    def _show_partial(self) -> None:
        if self._partial:
            import pandas as pd

            self.atoms = pd.concat(self._partial, ignore_index=True)
            self._show(self.atoms)

    def _after_run(self) -> None:
        if self.cancelled and not self._done:
            if self._partial:  # show the series done before Cancel: never lose work
                self._show_partial()
                self.status.value = (f"Cancelled after {len(self._partial)} of "
                                     f"{self._n_series} series: {self.status.value}")
            else:
                self.status.value = "Cancelled."
        self._validate()

    def _show(self, atoms: Any) -> None:
        reference = self._reference
        pixel_size = pixel_size_of_layer(reference.scale, reference.units, reference.metadata)
        pixel_size = pixel_size or (float(self.sampling.value),) * 2
        time_series = self._time_series
        if time_series:  # on the middle-defocus image: the frame of the coordinates
            atoms = atoms.assign(image=self._middle_image)
        columns = ["frame", "image", "y", "x"] if time_series else ["y", "x"]
        coordinates = atoms[columns].to_numpy(float).reshape(-1, len(columns))
        features = atoms[["frame", "species", "confidence"] if time_series
                         else ["species", "confidence"]].reset_index(drop=True)
        colours = [SPECIES_COLOURS.get(name, "white") for name in features["species"]]
        name = f"{reference.name} species"
        if name in self._viewer.layers:
            layer = self._viewer.layers[name]
            layer.data, layer.features, layer.face_color = coordinates, features, colours
        else:
            kwargs = points_layer_kwargs(len(columns), pixel_size)
            axes = [0, 1, 2, 3] if time_series else [-2, -1]
            # Discs of 0.7 Å: MoS2 columns are 1.84 Å apart, so the image stays visible.
            kwargs.update(scale=tuple(reference.scale[axes]),
                          units=tuple(reference.units[a] for a in axes),
                          symbol="disc", face_color=colours, border_color="black",
                          border_width=0.1, features=features,
                          size=SPECIES_MARKER_ANGSTROM / pixel_size[1])
            layer = self._viewer.add_points(coordinates, name=name, **kwargs)
        if time_series:  # show the middle-defocus image, where the points are
            step = list(self._viewer.dims.current_step)
            step[-3] = self._middle_image
            self._viewer.dims.current_step = tuple(step)
        layer.metadata.update(source=reference.metadata.get("source"), model=self.model.value,
                              pixel_size_angstrom=pixel_size, species_colours=SPECIES_COLOURS)
        counts = features["species"].value_counts()
        summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in SPECIES_COLOURS)
        series_note = f" in {atoms['frame'].nunique()} series" if time_series else ""
        runtime = ", ".join(str(atoms.attrs[k]) for k in ("device", "engine", "precision")
                            if atoms.attrs.get(k))
        self.status.value = (f"{len(features)} columns{series_note}: {summary}"
                             + (f" ({runtime})" if runtime else ""))
        show_info(f"Species: {self.status.value}")


def _refusal(series: Any) -> str | None:
    """Why the network would refuse an image of a single focal series, else None.

    Checked here with the core's own tests, before a worker starts. A time series is left to
    the core, which reads it one series at a time and keeps the series done before a bad one.
    """
    if np.ndim(series) != 3:
        return None
    for index, image in enumerate(np.asarray(series)):
        if not np.all(np.isfinite(image)):
            return f"image {index + 1} contains NaN or infinite values"
        try:
            normalise_image(image)
        except TEMAtomsError as exc:
            return f"image {index + 1}: {exc}"
    return None


def _holds_focal_series(layer: Any) -> bool:
    """True for a (3, rows, cols) focal series or a (time, 3, rows, cols) series of them."""
    shape = layer.data.shape
    return (layer.ndim == 3 and shape[0] == 3) or (layer.ndim == 4 and shape[1] == 3)

