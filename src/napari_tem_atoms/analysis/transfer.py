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

from collections.abc import Mapping
from typing import Any

from ..errors import TransferWarning
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
           "model_optics", "reflection_transfer", "transfer_warning", "transfer_windows"]

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
