"""Conversions between core objects and napari layer data (no Qt)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io import AtomsTable, TEMImage

#: Diameter of a drawn atom [Å] (about half a column spacing in gold).
ATOM_MARKER_ANGSTROM = 1.2
#: Diameter of a drawn atom [px] when the pixel size is unknown.
ATOM_MARKER_PIXELS = 6.0
#: Width of the circle drawn round an atom, as a fraction of its diameter.
ATOM_LINE_WIDTH = 0.1


#: Names of the leading axes of a stack, by number of leading axes (the slider labels).
LEADING_AXES = {0: (), 1: ("frame",), 2: ("time", "image")}


def axis_labels(ndim: int) -> tuple[str, ...]:
    """Axis names of an `ndim`-D image or points layer: frames first, then y, x."""
    leading = LEADING_AXES.get(ndim - 2, tuple(f"axis {i}" for i in range(ndim - 2)))
    return (*leading, "y", "x")


def _scale_and_units(ndim: int, pixel_size: tuple[float, float] | None) -> dict[str, Any]:
    leading = ndim - 2
    labels = {"axis_labels": axis_labels(ndim)}
    if pixel_size is None:
        return {"scale": (1.0,) * ndim, "units": ("pixel",) * ndim, **labels}
    return {"scale": (1.0,) * leading + tuple(pixel_size),
            "units": ("pixel",) * leading + ("angstrom", "angstrom"), **labels}


def _robust_contrast(data: Any) -> tuple[float, float] | None:
    """0.1-99.9 percentile contrast of the first frame, so hot pixels do not wash out."""
    if not isinstance(data, np.ndarray):
        return None
    frame = data.reshape(-1, *data.shape[-2:])[0]
    low, high = np.percentile(frame[:: max(1, frame.shape[0] // 512)], [0.1, 99.9])
    return (float(low), float(high)) if high > low else None


def image_layer_data(image: TEMImage) -> tuple[Any, dict[str, Any], str]:
    """Napari layer data for a :class:`~napari_tem_atoms.io.TEMImage`.

    The scale is the pixel size in Å (frames keep a scale of 1, so world frame = frame index);
    the calibration and the file's metadata go to the layer metadata.
    """
    calibration = image.calibration
    kwargs: dict[str, Any] = {
        "name": image.name,
        **_scale_and_units(image.data.ndim, calibration.pixel_size_angstrom),
        "colormap": "gray",
        "metadata": {
            "source": str(image.path),
            "file_format": image.file_format,
            "pixel_size_angstrom": calibration.pixel_size_angstrom,
            "calibration": calibration.kind,
            "calibration_note": calibration.note,
            "original_unit": calibration.unit,
            "original_scale": calibration.scale,
            "frame_interval_s": image.frame_interval_s,
            # HRTEM or STEM (and where that was read): the models are trained on HRTEM
            "imaging_mode": image.imaging_mode,
            "imaging_mode_source": image.imaging_mode_source,
            "original_metadata": image.original_metadata,
        },
    }
    contrast = _robust_contrast(image.data)
    if contrast:
        kwargs["contrast_limits"] = contrast
    return (image.data, kwargs, "image")


def points_layer_kwargs(ndim: int, pixel_size: tuple[float, float] | None) -> dict[str, Any]:
    """Scale, units and marker size for atoms drawn over an image of that calibration."""
    size = ATOM_MARKER_PIXELS if pixel_size is None else ATOM_MARKER_ANGSTROM / pixel_size[1]
    # Thin circles, so that the column inside each stays visible: napari's "ring" symbol is a
    # quarter of its diameter thick, and hid the columns it marked.
    return {**_scale_and_units(ndim, pixel_size), "size": size, "symbol": "disc",
            "face_color": "transparent", "border_color": "#ff9f1c",
            "border_width": ATOM_LINE_WIDTH, "opacity": 0.9}


#: Circles of atoms with a count (a model with counts: atoms along the beam per column).
N_ATOMS_COLOURS = {"border_color": "n_atoms", "border_colormap": "plasma",
                   "border_contrast_limits": (1.0, 10.0)}


def _counts_on_a_scale(features: Any) -> Any:
    """`features` with ``n_atoms`` as floats, which napari colours on a scale.

    A few integer values napari takes for categories, and cycles two colours over them. The
    atoms CSV writer writes whole counts back as integers.
    """
    if "n_atoms" not in features.columns:
        return features
    return features.astype({"n_atoms": float})


def show_atoms(viewer: Any, image: Any, atoms: Any, pixel_size: tuple[float, float]) -> Any:
    """Show an atoms table (frame, y, x, confidence) over `image` as ``"<image> atoms"``.

    The layer is created with the image's scale and units, or updated in place when it exists
    (a re-run replaces its points; the scale and units follow the image's). Returns the
    Points layer.
    """
    columns = ["frame", "y", "x"] if image.ndim == 3 else ["y", "x"]
    coordinates = atoms[columns].to_numpy(float).reshape(-1, len(columns))
    # n_atoms: a model with counts (atoms along the beam per column).
    kept = [c for c in ("frame", "confidence", "n_atoms") if c in atoms.columns]
    features = _counts_on_a_scale(atoms[kept].reset_index(drop=True))
    name = f"{image.name} atoms"
    if name in viewer.layers:
        points = viewer.layers[name]
        points.data, points.features = coordinates, features
        points.scale, points.units = image.scale, image.units  # the image may be recalibrated
        return points
    kwargs = points_layer_kwargs(image.ndim, pixel_size)
    kwargs.update(scale=image.scale, units=image.units)
    if "n_atoms" in features.columns:
        kwargs.update(N_ATOMS_COLOURS)
    return viewer.add_points(coordinates, name=name, features=features, **kwargs)


def atoms_layer_data(table: AtomsTable, name: str, source: str) -> tuple[Any, dict[str, Any], str]:
    """Napari Points layer data for an atoms table read from CSV."""
    kwargs = points_layer_kwargs(table.coordinates.shape[1], table.pixel_size_angstrom)
    kwargs.update(name=name, features=table.features,
                  metadata={"source": source, "pixel_size_angstrom": table.pixel_size_angstrom})
    if "species" in table.features.columns:
        kwargs["border_color"] = "species"
    elif "n_atoms" in table.features.columns:  # as Detect draws them
        kwargs.update(N_ATOMS_COLOURS, features=_counts_on_a_scale(table.features))
    return (table.coordinates, kwargs, "points")


def pixel_size_of_layer(
    scale: Any, units: Any, metadata: dict | None
) -> tuple[float, float] | None:
    """The (y, x) pixel size [Å/px] of a layer, from its units and scale or its metadata."""
    if units is not None and scale is not None and len(units) >= 2:
        try:
            factors = [(1.0 * unit).to("angstrom").magnitude for unit in _pint_units(units[-2:])]
        except Exception:  # units not lengths (pixel, s...): fall back to the metadata
            factors = None
        if factors:
            return (float(scale[-2]) * factors[0], float(scale[-1]) * factors[1])
    size = (metadata or {}).get("pixel_size_angstrom")
    if size is not None:
        return (float(size[0]), float(size[1]))
    return None


def _pint_units(units: Any) -> list[Any]:
    import pint

    registry = pint.get_application_registry()
    return [registry.Unit(str(u)) if not hasattr(u, "dimensionality") else u for u in units]
