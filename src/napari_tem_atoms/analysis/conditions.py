"""Imaging conditions a detector can be told: the spherical aberration and the defocus.

Near Gaussian focus, a detector trained over the whole envelope can mistake a [100] gold lattice
for the same lattice shifted by half a period: under another microscope that lattice gives a
similar image (the ``au-hrtem`` model card measures how similar). The operator knows which
microscope it was: the corrector reports Cs, and the defocus is set on purpose (negative-Cs
imaging, Scherzer). A network built with conditions takes them as a short
vector; an unknown value is a zero with its "known" flag at zero, so the same network also
works without them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import TEMAtomsError
from ..models import ModelDescription, describe

__all__ = ["CONDITION_INPUTS", "CS_SCALE", "DEFOCUS_SCALE", "condition_vector",
           "model_condition_vector"]

#: Length of the vector: Cs, Cs known, defocus, defocus known.
CONDITION_INPUTS = 4
#: Cs [Å] (30 µm) and defocus [Å] that map to 1 in the vector (the training envelope's edges).
CS_SCALE, DEFOCUS_SCALE = 30e4, 200.0


def condition_vector(cs: float | None = None, defocus: float | None = None,
                     cs_scale: float = CS_SCALE, defocus_scale: float = DEFOCUS_SCALE
                     ) -> np.ndarray:
    """The network's condition input for a microscope.

    Parameters
    ----------
    cs : float, optional
        Spherical aberration C30 [Å] (1 µm = 10⁴ Å); None when not known.
    defocus : float, optional
        Defocus [Å] in abTEM's sign (``-C10``: positive is underfocus); None when not known.
    cs_scale, defocus_scale : float, optional
        The values [Å] that map to 1 (a model's own, from its metadata).

    Returns
    -------
    numpy.ndarray
        (4,) float32: Cs / `cs_scale`, Cs known (0 or 1), defocus / `defocus_scale`, defocus
        known.

    Raises
    ------
    TEMAtomsError
        A value that is not a finite number.
    """
    values = []
    for name, value, scale in (("Cs", cs, cs_scale), ("defocus", defocus, defocus_scale)):
        if value is None:
            values += [0.0, 0.0]
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TEMAtomsError(f"{name} must be a number, not {value!r}") from None
        if not math.isfinite(value):
            raise TEMAtomsError(f"{name} must be a finite number, not {value}")
        values += [value / scale, 1.0]
    return np.array(values, dtype=np.float32)


def model_condition_vector(model: ModelDescription | Mapping[str, Any], cs: float | None = None,
                           defocus: float | None = None) -> np.ndarray:
    """:func:`condition_vector` for a model, refusing values outside what it was trained on.

    Parameters
    ----------
    model : ModelDescription or dict
        The model (or its metadata table): its ``conditions`` (scales and the errors drawn in
        training) and its training envelope.
    cs, defocus : float, optional
        As for :func:`condition_vector` [Å].

    Raises
    ------
    TEMAtomsError
        The model takes no conditions, or a value lies outside its training envelope widened by
        the error it was trained to tolerate.
    """
    model = describe(model)
    conditions = model.conditions
    if not conditions or not model.takes_conditions:
        raise TEMAtomsError("this model does not take imaging conditions (Cs, defocus): leave "
                            "them out, or choose a model whose card lists them as an input")
    vector = condition_vector(cs, defocus, conditions.get("cs_scale_angstrom", CS_SCALE),
                              conditions.get("defocus_scale_angstrom", DEFOCUS_SCALE))
    envelope = model.envelope
    drawn = conditions.get("training", {})
    for name, value, key, error, unit, per_unit in (
            ("Cs", cs, "cs", drawn.get("cs_error", 0.0), "µm", 1e4),
            ("defocus", defocus, "defocus", drawn.get("defocus_error", 0.0), "Å", 1.0)):
        if value is None or key not in envelope:
            continue
        low, high = envelope[key][0] - error, envelope[key][1] + error
        if not low <= float(value) <= high:
            raise TEMAtomsError(
                f"{name} {float(value) / per_unit:g} {unit} is outside what the model was "
                f"trained on ({low / per_unit:g} … {high / per_unit:g} {unit}): leave it out "
                "(the model then works without it), or check the value and its unit")
    return vector
