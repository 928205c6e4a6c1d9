"""Pixel calibration: convert the units microscopes write into ångström per pixel.

A real-space length unit (m, mm, µm, nm, Å, pm) becomes a pixel size in Å. A reciprocal-space
(``1/nm``), angular (``mrad``) or unknown unit is never passed off as a real-space pixel size:
the calibration is then reported as such and the pixel size stays unknown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Calibration", "angstrom_per_unit", "calibration_from_axes", "normalise_unit"]

CalibrationKind = Literal["real", "reciprocal", "angular", "none", "unknown"]

#: Length of one unit in Å, keyed by the normalised unit spelling.
_ANGSTROM_PER_UNIT = {
    "m": 1e10,
    "mm": 1e7,
    "µm": 1e4,
    "nm": 10.0,
    "Å": 1.0,
    "pm": 1e-2,
}

_UNIT_SPELLINGS = {
    "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "millimeter": "mm", "millimetre": "mm",
    "um": "µm", "μm": "µm", "micron": "µm", "microns": "µm", "micrometer": "µm",
    "micrometre": "µm", "micrometers": "µm",
    "nanometer": "nm", "nanometre": "nm", "nanometers": "nm",
    "a": "Å", "å": "Å", "Å": "Å", "ang": "Å", "angstrom": "Å", "angstroms": "Å",
    "ångström": "Å",
    "picometer": "pm", "picometre": "pm",
}

#: Spellings that mean "no calibration" rather than an unknown unit.
_NO_UNIT = {"", "[]", "<undefined>", "undefined", "none", "pixel", "pixels", "px", "pix", "t"}

_ANGULAR_UNITS = {"rad", "mrad", "µrad", "deg", "°"}

#: A real-space pixel larger than this (1 mm) is not a microscope image calibration.
_MAX_PLAUSIBLE_PIXEL_ANGSTROM = 1e7


def _decode_escapes(unit: str) -> str:
    # ImageJ writes non-ASCII units as literal "\u00C5" escapes.
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), unit)


def normalise_unit(unit: object) -> str:
    r"""Return a canonical spelling of a unit string (``"nm"``, ``"µm"``, ``"Å"``, ``"1/nm"``...).

    Parameters
    ----------
    unit : object
        The unit as a file wrote it (``None``, ``"nm"``, ``"\\u00B5m"``, ``"1 / µm"``,
        ``"n_m"``, ...).

    Returns
    -------
    str
        The unit with escapes decoded, spaces removed and common spellings unified;
        ``""`` for no unit.

    """
    if unit is None:
        return ""
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    text = _decode_escapes(str(unit)).strip().replace(" ", "")
    text = text.replace("μ", "µ").replace("\u212b", "Å")  # Greek mu, ångström sign
    # Berkeley EMD writes units as "[n_m]", and TEAM-microscope software as a bare "n_m" that
    # RosettaSciIO passes on: no unit has an underscore, so drop them with the brackets.
    text = re.sub(r"^\[(.+)\]$", r"\1", text).replace("_", "")
    if text.lower() in _NO_UNIT:
        return ""
    reciprocal = re.fullmatch(r"1/(.+)|(.+)\^-1|(.+)-1|(.+)⁻¹", text)
    if reciprocal:
        base = next(g for g in reciprocal.groups() if g)
        return "1/" + _UNIT_SPELLINGS.get(base.lower(), _UNIT_SPELLINGS.get(base, base))
    return _UNIT_SPELLINGS.get(text.lower(), _UNIT_SPELLINGS.get(text, text))


def angstrom_per_unit(unit: object) -> float | None:
    """Length of one `unit` in Å, or ``None`` when `unit` is not a real-space length.

    Examples
    --------
    >>> angstrom_per_unit("nm")
    10.0
    >>> angstrom_per_unit("1/nm") is None
    True

    """
    return _ANGSTROM_PER_UNIT.get(normalise_unit(unit))


@dataclass(frozen=True)
class Calibration:
    """How the pixels of an image map to physical space.

    Attributes
    ----------
    kind : {"real", "reciprocal", "angular", "none", "unknown"}
        ``"real"`` when the file gives a real-space pixel size; otherwise why it does not.
    pixel_size_angstrom : tuple of float or None
        (y, x) pixel size [Å/px] for a real-space calibration, else ``None``.
    unit : str
        The unit as the file gives it, normalised (``""`` when none).
    scale : tuple of float or None
        (y, x) pixel size in `unit`, as the file gives it.
    note : str or None
        A sentence for the user when the calibration is not a usable real-space one.

    """

    kind: CalibrationKind
    pixel_size_angstrom: tuple[float, float] | None = None
    unit: str = ""
    scale: tuple[float, float] | None = None
    note: str | None = None

    @property
    def is_real_space(self) -> bool:
        """True when a real-space pixel size in Å is known."""
        return self.pixel_size_angstrom is not None

    @classmethod
    def uncalibrated(cls, note: str | None = None) -> Calibration:
        """A calibration that says the file gives no pixel size."""
        note = note or "no pixel size in the file: coordinates stay in pixels"
        return cls(kind="none", note=note)

    @classmethod
    def from_pixel_size(cls, pixel_size_angstrom: float | Sequence[float]) -> Calibration:
        """A real-space calibration from a pixel size in Å (a number, or a (y, x) pair)."""
        size = _pair(pixel_size_angstrom)
        return cls(kind="real", pixel_size_angstrom=size, unit="Å", scale=size)


def _pair(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    y, x = value
    return (float(y), float(x))


def calibration_from_axes(scales: Sequence[float], units: Sequence[object]) -> Calibration:
    """Build the calibration of an image from the scale and unit of its y and x axes.

    Parameters
    ----------
    scales : sequence of float
        Pixel size along (y, x) in the file's unit.
    units : sequence of object
        The unit of each of the two axes, as written in the file.

    Returns
    -------
    Calibration
        ``kind="real"`` with the pixel size in Å when both axes carry a real-space length
        unit and a plausible positive scale; otherwise a calibration whose ``note`` says why
        no real-space pixel size is given.

    """
    scale = _pair(tuple(float(s) for s in scales))
    unit_y, unit_x = (normalise_unit(u) for u in units)
    if unit_y != unit_x and "" in (unit_y, unit_x):
        unit_y = unit_x = unit_y or unit_x  # one axis labelled: take it for both
    unit = unit_x
    if unit_y != unit_x:
        return Calibration(
            kind="unknown", unit=f"{unit_y}, {unit_x}", scale=scale,
            note=f"the y and x axes have different units ({unit_y!r}, {unit_x!r}): "
            "coordinates stay in pixels",
        )
    if unit == "":
        return Calibration.uncalibrated()
    if unit.startswith("1/"):
        return Calibration(
            kind="reciprocal", unit=unit, scale=scale,
            note=f"the pixel size is in reciprocal space ({scale[1]:.4g} {unit}): this is a "
            "diffraction pattern or FFT, not a real-space image; coordinates stay in pixels",
        )
    if unit in _ANGULAR_UNITS:
        return Calibration(
            kind="angular", unit=unit, scale=scale,
            note=f"the pixel size is an angle ({scale[1]:.4g} {unit}): this is a diffraction "
            "pattern, not a real-space image; coordinates stay in pixels",
        )
    factor = _ANGSTROM_PER_UNIT.get(unit)
    if factor is None:
        return Calibration(
            kind="unknown", unit=unit, scale=scale,
            note=f"unknown pixel-size unit {unit!r}: coordinates stay in pixels",
        )
    size = (scale[0] * factor, scale[1] * factor)
    if not all(math.isfinite(s) and 0 < s <= _MAX_PLAUSIBLE_PIXEL_ANGSTROM for s in size):
        return Calibration(
            kind="unknown", unit=unit, scale=scale,
            note=f"implausible pixel size {scale[1]:.4g} {unit} ({size[1]:.4g} Å): ignored; "
            "coordinates stay in pixels",
        )
    if scale == (1.0, 1.0) and unit in ("m", "mm", "µm"):
        # Many writers put scale 1 with a default unit when nothing was calibrated.
        return Calibration.uncalibrated(
            f"pixel size of exactly 1 {unit} looks like a default, not a calibration: "
            "coordinates stay in pixels"
        )
    return Calibration(kind="real", pixel_size_angstrom=size, unit=unit, scale=scale)
