"""npe2 sample data: a synthetic HRTEM stack of a gold particle, made in a second, offline."""

from __future__ import annotations

from typing import Any

from ..samples import synthetic_gold_stack as make_stack
from ._layers import points_layer_kwargs


def synthetic_gold_stack() -> list[tuple[Any, dict[str, Any], str]]:
    """The synthetic stack as an image layer, and its true columns as a hidden Points layer."""
    stack = make_stack()
    pixel_size = (stack.sampling, stack.sampling)
    name = "Synthetic Au stack"
    image = (stack.images, {
        "name": name, "scale": (1.0, *pixel_size), "units": ("pixel", "angstrom", "angstrom"),
        "colormap": "gray",
        "metadata": {"pixel_size_angstrom": pixel_size, "calibration": "real",
                     "dose_per_frame": stack.dose, "source": "synthetic (napari-tem-atoms)"},
    }, "image")
    truth_kwargs = points_layer_kwargs(3, pixel_size)
    truth_kwargs.update(
        name=f"{name} true columns", visible=False, face_color="#2ec4b6",
        features=stack.columns[["site", "n_atoms"]],
        metadata={"pixel_size_angstrom": pixel_size},
    )
    truth = (stack.columns[["frame", "y", "x"]].to_numpy(float), truth_kwargs, "points")
    return [image, truth]
