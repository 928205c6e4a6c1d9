"""Which lattice reflections a microscope transfers, and so where the detector can be trusted.

In an HRTEM image a weak-phase reflection at spatial frequency k is transferred as sin χ(k)
(:func:`~napari_tem_atoms.simulation.microscope.phase_error`). The lowest-order reflections of
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

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..events import TransferWarning
from ..models import REGISTRY
from ..simulation.microscope import MicroscopeSettings, phase_error

__all__ = ["CRYSTAL_REFLECTIONS", "GOLD_REFLECTIONS", "MINIMUM_TRANSFER", "ModelOptics",
           "TransferWarning", "describe_span", "describe_windows", "is_transferred",
           "model_optics", "reflection_transfer", "transfer_warning", "transfer_windows"]

#: Lowest-order reflections of gold (fcc, a = 4.078 Å) by name: lattice spacing [Å].
GOLD_REFLECTIONS: dict[str, float] = {"{111}": float(4.078 / np.sqrt(3)), "{200}": 4.078 / 2}

#: Lowest-order reflections of the crystals a registered model may be for (its ``crystal``).
CRYSTAL_REFLECTIONS: dict[str, dict[str, float]] = {"gold": GOLD_REFLECTIONS}

#: The smallest |sin χ| at which a reflection counts as transferred. Where the evaluation split
#: is sharp: stage 5 at 1000 e/Å² scored F1 0.997 on [100] images whose {200} had |sin χ| ≥ 0.5
#: and 0.875 / 0.858 at 0.2–0.5 / below 0.2 ([110] with {111}: 0.996, 0.956, 0.902).
MINIMUM_TRANSFER = 0.5



_DIRECTIONS = np.linspace(0.0, np.pi, 73)  # every 2.5°: enough to find the worst 2-fold case


def reflection_transfer(cs: float, defocus: float, reflections: dict[str, float],
                        energy: float = 300e3, astigmatism: float = 0.0
                        ) -> dict[str, tuple[float, float]]:
    """The sin χ of each reflection: its lowest and highest over the directions in the image.

    Parameters
    ----------
    cs : float
        Spherical aberration C30 [Å].
    defocus : float
        Defocus [Å], abTEM's sign (``-C10``).
    reflections : dict
        Name → lattice spacing [Å] (e.g. :data:`GOLD_REFLECTIONS`).
    energy : float, optional
        Electron energy [eV].
    astigmatism : float, optional
        2-fold astigmatism magnitude |A1| = |C12| [Å] (as correctors report it; the two line
        foci lie 2|A1| apart). Its direction is not needed: every direction is tried, so this
        is the worst case for a lattice of unknown orientation.

    Returns
    -------
    dict
        Name → (lowest, highest) sin χ. With no astigmatism both are equal.
    """
    settings = MicroscopeSettings(defocus=float(defocus), cs=float(cs),
                                  astigmatism=float(astigmatism), energy=float(energy))
    result = {}
    for name, spacing in reflections.items():
        k = 1.0 / spacing
        transfer = np.sin(phase_error(k * np.sin(_DIRECTIONS), k * np.cos(_DIRECTIONS),
                                      settings))
        result[name] = (float(transfer.min()), float(transfer.max()))
    return result


def is_transferred(span: tuple[float, float], minimum: float = MINIMUM_TRANSFER) -> bool:
    """Whether a reflection's (lowest, highest) sin χ is strong and of one sign everywhere."""
    low, high = span
    return low >= minimum or high <= -minimum


def describe_span(span: tuple[float, float]) -> str:
    """``"+0.57"``, or ``"+0.27 … +0.81"`` over directions; rounded towards zero.

    Rounding towards zero keeps a value just below the minimum from reading as the minimum.
    """
    low, high = (math.trunc(value * 100) / 100 for value in span)
    said = f"{low:+.2f}" if low == high else f"{low:+.2f} … {high:+.2f}"
    return said + (" (signs differ by direction)" if span[0] < 0 < span[1] else "")


def transfer_windows(cs: float, reflections: dict[str, float], energy: float = 300e3,
                     defocus_range: tuple[float, float] = (-200.0, 200.0),
                     astigmatism: float = 0.0, minimum: float = MINIMUM_TRANSFER,
                     step: float = 1.0) -> list[tuple[float, float]]:
    """Defocus intervals [Å] in which every reflection is transferred (|sin χ| ≥ `minimum`).

    Parameters are those of :func:`reflection_transfer`; `defocus_range` bounds the search
    (a model's training envelope) and `step` [Å] is its resolution.

    Returns
    -------
    list of (float, float)
        ``(first, last)`` defocus of each interval, in increasing order.
    """
    return list(_windows(float(cs), tuple(reflections.items()), float(energy),
                         (float(defocus_range[0]), float(defocus_range[1])),
                         float(astigmatism), float(minimum), float(step)))


@functools.lru_cache(maxsize=64)
def _windows(cs: float, reflections: tuple[tuple[str, float], ...], energy: float,
             defocus_range: tuple[float, float], astigmatism: float, minimum: float,
             step: float) -> tuple[tuple[float, float], ...]:
    """:func:`transfer_windows`, remembered (hashable arguments).

    A scan costs ~20 ms, and callers that run one frame per call (Live mode, batch jobs) ask
    for the same Cs at every frame.
    """
    defoci = np.arange(defocus_range[0], defocus_range[1] + step / 2, step)
    good = [all(is_transferred(span, minimum) for span in reflection_transfer(
        cs, defocus, dict(reflections), energy, astigmatism).values()) for defocus in defoci]
    windows, start = [], None
    for defocus, ok in zip(defoci, good, strict=True):
        if ok and start is None:
            start = defocus
        if not ok and start is not None:
            windows.append((float(start), float(defocus - step)))
            start = None
    if start is not None:
        windows.append((float(start), float(defoci[-1])))
    return tuple(windows)


def describe_windows(windows: list[tuple[float, float]], joiner: str = "and") -> str:
    """``"-182 … -53 Å and 42 … 168 Å"``, or ``"none"``."""
    if not windows:
        return "none"
    return f" {joiner} ".join(f"{low:g} … {high:g} Å" for low, high in windows)


def transfer_warning(cs: float, defocus: float, reflections: dict[str, float],
                     energy: float = 300e3,
                     defocus_range: tuple[float, float] = (-200.0, 200.0)) -> str | None:
    """A sentence for the operator when a lowest-order reflection is barely transferred.

    Assumes no 2-fold astigmatism is left (the operator's values hold none); with some, the
    windows narrow (:func:`transfer_windows`). Returns None when every reflection has
    |sin χ| ≥ :data:`MINIMUM_TRANSFER`; otherwise the sentence names the weak reflections and
    the defoci that transfer all of them at this Cs.
    """
    spans = reflection_transfer(cs, defocus, reflections, energy)
    weak = [name for name, span in spans.items() if not is_transferred(span)]
    if not weak:
        return None
    said = ", ".join(f"{name} ({reflections[name]:.2f} Å) with sin χ = "
                     f"{describe_span(spans[name])}" for name in weak)
    windows = transfer_windows(cs, reflections, energy, defocus_range)
    prefer = (f"Defoci that transfer all of them at this Cs (no astigmatism left): "
              f"{describe_windows(windows)}." if windows else
              "No defocus in the model's training range transfers all of them at this Cs.")
    return (f"at Cs {cs / 1e4:g} µm and defocus {defocus:g} Å the lattice's lowest-order "
            f"reflections are barely transferred: {said} (|sin χ| ≥ {MINIMUM_TRANSFER:g} "
            f"counts as transferred). The lattice may then appear shifted by half a period "
            f"and columns be found between the true ones. {prefer}")


@dataclass(frozen=True)
class ModelOptics:
    """What the transfer checks need to know of a model: its crystal and its training."""

    crystal: str
    reflections: dict[str, float]
    energy: float
    defocus_range: tuple[float, float]

    def spans(self, cs: float, defocus: float, astigmatism: float = 0.0
              ) -> dict[str, tuple[float, float]]:
        """:func:`reflection_transfer` of the crystal's reflections at the model's energy."""
        return reflection_transfer(cs, defocus, self.reflections, self.energy, astigmatism)

    def transfers(self, cs: float, defocus: float, astigmatism: float = 0.0) -> bool:
        """Whether every lowest-order reflection has |sin χ| ≥ the minimum, in every direction."""
        return all(is_transferred(span) for span in self.spans(cs, defocus, astigmatism).values())

    def windows(self, cs: float, astigmatism: float = 0.0) -> list[tuple[float, float]]:
        """:func:`transfer_windows` within the model's training defocus range."""
        return transfer_windows(cs, self.reflections, self.energy, self.defocus_range,
                                astigmatism)

    def warning(self, cs: float | None, defocus: float | None) -> str | None:
        """:func:`transfer_warning` for this model; None unless both values are known."""
        if cs is None or defocus is None:
            return None
        return transfer_warning(cs, defocus, self.reflections, self.energy, self.defocus_range)

    def status(self, cs: float, defocus: float) -> tuple[bool, str]:
        """Whether every lowest-order reflection is transferred, and a short line saying so.

        The line (for a widget) gives sin χ of each reflection and, when one is weak, the
        defoci to prefer at this Cs (assuming no 2-fold astigmatism is left).
        """
        spans = self.spans(cs, defocus)
        values = ", ".join(f"{name} {describe_span(span)}" for name, span in spans.items())
        weak = [name for name, span in spans.items() if not is_transferred(span)]
        if not weak:
            return True, f"✓ sin χ {values}: the lattice is transferred"
        windows = self.windows(cs)
        prefer = (f"At this Cs prefer {describe_windows(windows, 'or')}." if windows
                  else "No defocus in the training range transfers it at this Cs.")
        return False, (f"⚠ sin χ {values}: {' and '.join(weak)} barely transferred,\n"
                       f"columns may be found between the true ones.\n{prefer}")


def model_optics(metadata: dict) -> ModelOptics | None:
    """The crystal, energy and defocus envelope of a model (from its metadata and registry).

    The crystal is the one the weights name (``[model] crystal`` of the training
    configuration), else the registered model's of the same name. A model of neither (such as
    ``mos2-focal``, of no crystal here) gives None: no transfer check.
    """
    entry = REGISTRY.get(str(metadata.get("name")))
    crystal = metadata.get("crystal") or (entry.crystal if entry else None)
    if crystal not in CRYSTAL_REFLECTIONS:
        return None
    envelope = metadata.get("training", {}).get("envelope", {})
    low, high = envelope.get("defocus", (-200.0, 200.0))
    return ModelOptics(crystal, CRYSTAL_REFLECTIONS[crystal],
                       float(envelope.get("energy", 300e3)), (float(low), float(high)))
