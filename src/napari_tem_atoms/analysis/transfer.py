"""Which lattice reflections a microscope transfers, and so where the detector can be trusted.

In an HRTEM image a weak-phase reflection at spatial frequency k is transferred as sin χ(k)
(:func:`~napari_tem_atoms.optics.phase_error`). The lowest-order reflections of
a particle ({111} and {200} for gold) set where its lattice appears: where one of them is
transferred weakly (|sin χ| small) or with opposite signs in different directions (2-fold
astigmatism near focus), the image holds, in this kinematic picture, a lattice shifted by half a
period from the columns, and the detector can put the columns between the true ones. On the
96 paired evaluation images of `au-hrtem` (stage 6, told nothing), F1 was 0.989 at 100 e/Å² and
0.997 at 1000 e/Å² on the 39 images whose {111} and {200} both had |sin χ| ≥ 0.5 in every
direction, and 0.764 and 0.900 on the other 57 (docs/detection.md). The functions here tell an
operator, from Cs and the defocus, which case an image is in and which defoci to prefer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TEMAtomsError, TransferWarning
from ..models import REGISTRY, ModelDescription, describe
from ..optics import (
    CRYSTAL_REFLECTIONS,
    GOLD_REFLECTIONS,
    MINIMUM_TRANSFER,
    ModelOptics,
    describe_span,
    describe_windows,
    is_transferred,
    reflection_transfer,
    transfer_warning,
    transfer_windows,
)

__all__ = ["CRYSTAL_REFLECTIONS", "GOLD_REFLECTIONS", "MINIMUM_TRANSFER", "ModelOptics",
           "TransferWarning", "describe_span", "describe_windows", "is_transferred",
           "model_optics", "reflection_transfer", "transfer_report", "transfer_warning",
           "transfer_windows"]


def model_optics(model: ModelDescription | Mapping[str, Any]) -> ModelOptics | None:
    """The crystal, energy and defocus envelope of a model (from its metadata and registry).

    The crystal is the one the weights name (``[model] crystal`` of the training
    configuration), else the registered model's of the same name. A model of neither (such as
    ``mos2-focal``, of no crystal here) gives None: no transfer check.
    """
    model = describe(model)
    entry = REGISTRY.get(model.name)
    crystal = model.crystal or (entry.crystal if entry else None)
    if crystal not in CRYSTAL_REFLECTIONS:
        return None
    return ModelOptics(crystal, CRYSTAL_REFLECTIONS[crystal], model.energy, model.defocus_range)



def transfer_report(model: ModelDescription | Mapping[str, Any], name: str, cs: float,
                    defoci: Sequence[float] = (), astigmatism: float = 0.0) -> list[str]:
    """What ``tem-atoms transfer`` says: the defoci that transfer a model's lattice, and a verdict.

    Parameters
    ----------
    model : ModelDescription or dict
        The model (or its metadata).
    name : str
        The model as the user named it.
    cs : float
        Spherical aberration C30 [Å].
    defoci : sequence of float, optional
        Defoci [Å] (abTEM's sign) to give a verdict on: transferred, barely transferred, or
        outside the model's training range.
    astigmatism : float, optional
        2-fold astigmatism |A1| [Å] left after correction; its worst direction is assumed.

    Returns
    -------
    list of str
        Lines: the crystal and microscope, the defocus windows, then one line per defocus.

    Raises
    ------
    TEMAtomsError
        The model names no crystal whose reflections are known, or `cs` lies outside what it
        was trained on.
    """
    model = describe(model)
    optics = model_optics(model)
    if optics is None:
        raise TEMAtomsError(f"model {name} names no crystal whose reflections are known "
                            "(au-hrtem does; weights trained with crystal = \"gold\" in [model] "
                            "of their configuration do too)")
    cs_range = model.cs_range
    if cs_range and not cs_range[0] <= cs <= cs_range[1]:
        raise TEMAtomsError(f"Cs {cs / 1e4:g} µm is outside what model {name} was trained on "
                            f"({cs_range[0] / 1e4:g} … {cs_range[1] / 1e4:g} µm): its "
                            "detections there are not characterised")
    names = ", ".join(f"{reflection} {spacing:.2f} Å"
                      for reflection, spacing in optics.reflections.items())
    low, high = optics.defocus_range
    astigmatic = (f", 2-fold astigmatism |A1| {astigmatism:g} Å in its worst direction"
                  if astigmatism else "")
    windows = optics.windows(cs, astigmatism)
    lines = [f"{name}: {optics.crystal} ({names}) at {optics.energy / 1e3:g} kV, Cs "
             f"{cs / 1e4:g} µm{astigmatic}",
             f"defoci in {low:g} … {high:g} Å (the model's training range; abTEM's sign, -C10) "
             f"that transfer every one with |sin χ| ≥ {MINIMUM_TRANSFER:g}: "
             f"{describe_windows(windows)}"]
    for defocus in defoci:
        spans = optics.spans(cs, defocus, astigmatism)
        said = ", ".join(f"{reflection} {describe_span(span)}"
                         for reflection, span in spans.items())
        if not low <= defocus <= high:
            verdict = "outside the model's training range"
        elif all(is_transferred(span) for span in spans.values()):
            verdict = "transferred"
        else:
            verdict = "barely transferred" + (
                ": prefer a defocus in the ranges above" if windows else "")
        lines.append(f"at {defocus:g} Å: sin χ {said} ({verdict})")
    return lines
