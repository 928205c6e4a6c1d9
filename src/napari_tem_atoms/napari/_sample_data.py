"""npe2 sample data: a synthetic HRTEM stack and focal series of a gold particle, made offline."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..samples import synthetic_gold_stack as make_stack
from ._layers import points_layer_kwargs


def synthetic_gold_stack() -> list[tuple[Any, dict[str, Any], str]]:
    """The synthetic stack as an image layer, and its true columns as a hidden Points layer."""
    stack = make_stack()
    pixel_size = (stack.sampling, stack.sampling)
    name = "Synthetic Au stack"
    image = (stack.images, {
        "name": name, "scale": (1.0, *pixel_size), "units": ("pixel", "angstrom", "angstrom"),
        "axis_labels": ("frame", "y", "x"), "colormap": "gray",
        "metadata": {"pixel_size_angstrom": pixel_size, "calibration": "real",
                     "dose_per_frame": stack.dose, "source": "synthetic (napari-tem-atoms)",
                     "imaging_mode": "HRTEM", "imaging_mode_source": "simulated HRTEM"},
    }, "image")
    truth_kwargs = points_layer_kwargs(3, pixel_size)
    truth_kwargs.update(
        name=f"{name} true columns", visible=False, border_color="#2ec4b6",
        features=stack.columns[["site", "n_atoms"]],
        metadata={"pixel_size_angstrom": pixel_size},
    )
    truth = (stack.columns[["frame", "y", "x"]].to_numpy(float), truth_kwargs, "points")
    return [image, truth]


#: Misalignment of the synthetic focal series [px]: what the Align widget should find.
FOCAL_SERIES_SHIFTS = ((1.7, -2.2), (0.0, 0.0), (-2.4, 1.3))
FOCAL_SERIES_DEFOCI = (-80.0, 0.0, 80.0)


def synthetic_focal_series() -> list[tuple[Any, dict[str, Any], str]]:
    """A misaligned three-image focal series (contrast reverses between defoci)."""
    from ..samples import synthetic_focal_series as make_series

    series = make_series(np.array(FOCAL_SERIES_SHIFTS), defoci=FOCAL_SERIES_DEFOCI, dose=3000.0)
    return [(series, {
        "name": "Synthetic Au focal series", "scale": (1.0, 0.1, 0.1),
        "units": ("pixel", "angstrom", "angstrom"), "colormap": "gray",
        "axis_labels": ("image", "y", "x"),  # the images of a focal series, not time
        "metadata": {"pixel_size_angstrom": (0.1, 0.1), "calibration": "real",
                     "defocus_angstrom": FOCAL_SERIES_DEFOCI,
                     "true_shifts_px": FOCAL_SERIES_SHIFTS,
                     "source": "synthetic (napari-tem-atoms)",
                     "imaging_mode": "HRTEM", "imaging_mode_source": "simulated HRTEM"},
    }, "image")]
