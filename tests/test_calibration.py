"""Units microscopes write, converted to Å; anything else reported, never passed off."""

from __future__ import annotations

import pytest

from napari_tem_atoms.io import Calibration, angstrom_per_unit, calibration_from_axes
from napari_tem_atoms.io.calibration import normalise_unit


@pytest.mark.parametrize(("unit", "angstrom"), [
    ("nm", 10.0), ("µm", 1e4), ("μm", 1e4), ("um", 1e4), ("micron", 1e4), ("\\u00B5m", 1e4),
    ("pm", 0.01), ("Å", 1.0), ("\u212b", 1.0), ("\\u00C5", 1.0), ("A", 1.0), ("angstrom", 1.0),
    ("m", 1e10), ("mm", 1e7), ("nanometer", 10.0), (b"nm", 10.0), (" nm ", 10.0),
    # Berkeley EMD spellings (TEAM-microscope software writes them bare, without brackets)
    ("n_m", 10.0), ("[n_m]", 10.0), ("u_m", 1e4), ("p_m", 0.01), ("A_ngstrom", 1.0),
])
def test_length_units_convert_to_angstrom(unit, angstrom):
    assert angstrom_per_unit(unit) == pytest.approx(angstrom)


@pytest.mark.parametrize("unit", ["1/nm", "1 / µm", "nm^-1", "1/Å", "nm⁻¹", "mrad", "eV", "",
                                  None, "px", "<undefined>", "[]"])
def test_non_lengths_have_no_angstrom_factor(unit):
    assert angstrom_per_unit(unit) is None


@pytest.mark.parametrize(("unit", "normalised"), [
    ("1 / µm", "1/µm"), ("nm^-1", "1/nm"), ("1/nm", "1/nm"), ("nm⁻¹", "1/nm"),
    ("<undefined>", ""), ("pixel", ""), ("\\u00C5", "Å"), ("n_m", "nm"), ("1/n_m", "1/nm"),
    ("[1/n_m]", "1/nm"),
])
def test_unit_spellings_are_unified(unit, normalised):
    assert normalise_unit(unit) == normalised


def test_real_space_calibration():
    calibration = calibration_from_axes([0.0125, 0.0125], ["nm", "nm"])
    assert calibration.kind == "real"
    assert calibration.pixel_size_angstrom == pytest.approx((0.125, 0.125))
    assert calibration.note is None


def test_non_square_pixels_keep_both_sizes():
    calibration = calibration_from_axes([0.02, 0.01], ["nm", "nm"])
    assert calibration.pixel_size_angstrom == pytest.approx((0.2, 0.1))


def test_one_labelled_axis_labels_both():
    assert calibration_from_axes([0.01, 0.01], ["", "nm"]).pixel_size_angstrom == pytest.approx(
        (0.1, 0.1))


@pytest.mark.parametrize(("units", "kind", "words"), [
    (["1/nm", "1/nm"], "reciprocal", "reciprocal space"),
    (["mrad", "mrad"], "angular", "an angle"),
    (["eV", "eV"], "unknown", "unknown pixel-size unit 'eV'"),
    (["nm", "1/nm"], "unknown", "different units"),
    (["", ""], "none", "no pixel size"),
])
def test_unusable_units_are_reported(units, kind, words):
    calibration = calibration_from_axes([0.1, 0.1], units)
    assert calibration.kind == kind
    assert calibration.pixel_size_angstrom is None
    assert words in calibration.note


def test_implausible_and_default_scales_are_not_used():
    assert calibration_from_axes([1e17, 1e17], ["nm", "nm"]).kind == "unknown"
    assert calibration_from_axes([-0.1, -0.1], ["nm", "nm"]).kind == "unknown"
    assert calibration_from_axes([1.0, 1.0], ["µm", "µm"]).kind == "none"
    assert calibration_from_axes([1.0, 1.0], ["Å", "Å"]).kind == "real"


def test_calibration_from_pixel_size():
    calibration = Calibration.from_pixel_size(0.1)
    assert calibration.is_real_space
    assert calibration.pixel_size_angstrom == (0.1, 0.1)
