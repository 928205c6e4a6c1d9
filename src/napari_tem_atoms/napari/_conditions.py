"""The "Imaging conditions (optional)" inputs of the Detect, Live and Occupancy widgets."""

from __future__ import annotations

from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label

from ..analysis.conditions import model_condition_vector
from ..analysis.transfer import ModelOptics, model_optics
from ..errors import TEMAtomsError
from ..models import model_description
from ._layout import wrap_text


class ImagingConditionsInputs(Container):
    """Cs and defocus as the operator knows them, each optional; shown for models that take them.

    Cs is entered in µm (as correctors report it) and the defocus in Å, abTEM's sign;
    :meth:`values` gives both in Å, None where not known.
    """

    def __init__(self) -> None:
        super().__init__(labels=True)
        self.title = Label(value="Imaging conditions (optional)")
        wrap_text(self.title)  # beside the long Defocus label, it set the widgets' width
        self.cs_known = CheckBox(text="Cs known", value=False)
        self.cs = FloatSpinBox(label="Cs (µm)", min=-5000.0, max=5000.0, step=0.5, value=0.0,
                               enabled=False, tooltip="Spherical aberration as the corrector "
                               "reports it; negative for negative-Cs imaging")
        self.defocus_known = CheckBox(text="Defocus known", value=False)
        # The sign convention in the label: in the tooltip only, it went unread.
        self.defocus = FloatSpinBox(label="Defocus (Å, + = underfocus)", min=-5000.0,
                                    max=5000.0, step=5.0, value=0.0, enabled=False,
                                    tooltip="Defocus set, abTEM's sign (−C10: positive is "
                                    "underfocus, negative-Cs imaging uses a negative one); "
                                    "tens of Å off is fine")
        # With both known: are the crystal's lowest-order reflections transferred?
        self.transfer_note = Label(value="", tooltip="sin χ of the lattice's lowest-order "
                                   "reflections (kinematic); where one has |sin χ| below 0.5 the "
                                   "detector is less reliable: see tem-atoms transfer")
        self.extend([self.title, self.cs_known, self.cs, self.defocus_known, self.defocus,
                     self.transfer_note])
        self.cs_known.changed.connect(lambda known: setattr(self.cs, "enabled", known))
        self.defocus_known.changed.connect(lambda known: setattr(self.defocus, "enabled", known))
        for widget in (self.cs_known, self.cs, self.defocus_known, self.defocus):
            widget.changed.connect(self._update_transfer_note)
        self.takes_conditions = False
        self.optics: ModelOptics | None = None
        self.transfer_note.visible = False
        self.visible = False

    def show_for(self, model: str) -> None:
        """Show the inputs when `model` takes imaging conditions, hide them otherwise."""
        try:
            described = model_description(model)
            self.takes_conditions = described.takes_conditions
            self.optics = model_optics(described)
        except TEMAtomsError:  # missing or damaged weights: the widget says so elsewhere
            self.takes_conditions, self.optics = False, None
        self.visible = self.takes_conditions
        self._update_transfer_note()

    def _update_transfer_note(self) -> None:
        values = self.values()
        known = self.optics is not None and None not in values.values()
        if known:
            _, self.transfer_note.value = self.optics.status(values["cs"], values["defocus"])
        self.transfer_note.visible = known

    def values(self) -> dict[str, float | None]:
        """``cs`` and ``defocus`` [Å] for the model (None where not known, or not taken)."""
        if not self.takes_conditions:
            return {"cs": None, "defocus": None}
        return {"cs": float(self.cs.value) * 1e4 if self.cs_known.value else None,
                "defocus": float(self.defocus.value) if self.defocus_known.value else None}

    def refusal(self, model: str) -> str | None:
        """Why the values cannot go to `model` (outside what it was trained on), else None.

        Asked before a run starts, so that a wrong value is said once rather than per frame.
        """
        conditions = self.values()
        if all(value is None for value in conditions.values()):
            return None
        try:
            model_condition_vector(model_description(model), **conditions)
        except TEMAtomsError as exc:
            return str(exc)
        return None
