"""Which model suits an image's imaging mode, and whether its columns are bright or dark.

HRTEM images go to ``au-hrtem``; STEM images (HAADF/ADF, ABF, BF, or a scan whose detector is
not named) to ``stem-columns``. A STEM model finds bright columns: an ABF or BF image is
negated before the network. Where the file does not name the detector, the image itself says
which way its columns point (:func:`column_polarity`), and an image whose contrast
contradicts its stated mode is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from ..models.description import ModelDescription, describe

__all__ = ["DEFAULT_MODELS", "choose_model", "column_polarity", "contrast_for_model",
           "dark_column_modes", "polarity_by_network"]

#: The model each imaging mode gets when none is asked for ("unknown": the HRTEM model, as
#: before modes were read; a note says so).
DEFAULT_MODELS = {"HRTEM": "au-hrtem", "STEM-HAADF": "stem-columns",
                  "STEM-ABF": "stem-columns", "STEM-BF": "stem-columns",
                  "STEM": "stem-columns", "unknown": "au-hrtem"}
#: |skewness| of the band-passed image beyond which its columns are called bright or dark.
POLARITY_SKEW = 0.25
#: Difference of the network's mean confidence (as recorded, negated) below which the image
#: does not say which way its columns point.
POLARITY_MARGIN = 0.03


def choose_model(mode: str, source: str | None = None) -> tuple[str, str]:
    """The default model for an image of `mode`, and a sentence saying why.

    Parameters
    ----------
    mode : str
        The image's imaging mode (``HRTEM``, ``STEM-HAADF``, …, ``unknown``).
    source : str, optional
        Where the mode was read (named in the sentence).
    """
    name = DEFAULT_MODELS.get(mode, "au-hrtem")
    where = "" if not source else (f" ({source})" if source.startswith("set by")
                                   else f" (from {source})")
    # The HRTEM default does not count atoms or see single adatoms: say what does.
    counting = ("; for single adatoms and atoms per column (n_atoms) choose au-hrtem-adatoms"
                if name == "au-hrtem" else "")
    if mode == "unknown":
        return name, ("the imaging mode is not recorded in the file: the HRTEM model is used; "
                      "for a STEM image say so (--mode stem-haadf / stem-abf, or the Detect "
                      f"widget's Imaging mode){counting}")
    return name, f"{mode} image{where}{counting}"


def dark_column_modes(model: ModelDescription | Mapping[str, Any]) -> list[str]:
    """Imaging modes whose columns a (bright-column) model sees only after negation."""
    return list(describe(model).dark_columns)


def column_polarity(image: np.ndarray, sampling: float) -> tuple[str, float]:
    """Whether an image's atomic columns are bright or dark, from the image alone.

    The image is band-passed to the scale of columns (0.3-2 Å); sparse bright peaks on a dark
    background (HAADF) skew its histogram positive, dark dips (ABF) negative.

    Returns
    -------
    polarity : str
        ``"bright"``, ``"dark"`` or ``"unclear"`` (|skewness| < :data:`POLARITY_SKEW`).
    skewness : float
        The band-passed image's skewness.
    """
    image = np.asarray(image, dtype=np.float32)
    fine = ndimage.gaussian_filter(image, max(0.3 / sampling, 0.5))
    band = fine - ndimage.gaussian_filter(image, 2.0 / sampling)
    band = band[band.shape[0] // 10: -max(1, band.shape[0] // 10),
                band.shape[1] // 10: -max(1, band.shape[1] // 10)]
    std = float(band.std())
    if not std > 0:
        return "unclear", 0.0
    skew = float(np.mean(((band - band.mean()) / std) ** 3))
    if skew >= POLARITY_SKEW:
        return "bright", skew
    if skew <= -POLARITY_SKEW:
        return "dark", skew
    return "unclear", skew


def polarity_by_network(image: np.ndarray, confidence: Callable[[np.ndarray], float]
                        ) -> tuple[str, str]:
    """Bright or dark columns, as the network sees them: the way it is more confident.

    Parameters
    ----------
    image : numpy.ndarray
        The image as recorded.
    confidence : callable
        The network's mean confidence at the columns it finds in an image (see
        :func:`~napari_tem_atoms.analysis.detect.mean_peak_confidence`).

    Returns
    -------
    polarity : str
        ``"bright"``, ``"dark"`` or ``"unclear"`` (the two differ by less than
        :data:`POLARITY_MARGIN`).
    said : str
        The two confidences, for the note.
    """
    as_recorded, negated = confidence(image), confidence(-np.asarray(image))
    said = f"mean confidence {as_recorded:.2f} as recorded, {negated:.2f} negated"
    if abs(as_recorded - negated) < POLARITY_MARGIN:
        return "unclear", said
    return ("bright" if as_recorded > negated else "dark"), said


def contrast_for_model(image: np.ndarray, sampling: float, mode: str,
                       metadata: ModelDescription | Mapping[str, Any], model_name: str,
                       confidence: Callable[[np.ndarray], float] | None = None
                       ) -> tuple[bool, str | None]:
    """Whether to negate an image for a model, and a sentence when the user should know.

    Only models whose metadata list ``dark_columns`` (bright-column STEM models) are
    concerned. Their mode's polarity decides: ABF/BF negated, HAADF not; a plain ``STEM`` or
    ``unknown`` mode takes the image's own polarity. A HAADF image that looks dark-column (or
    an ABF one bright-column) keeps the stated mode's choice, and the sentence says so.

    Where the mode does not say, the image's polarity comes from the network when
    `confidence` is given (the way it finds columns more confidently: on 64 simulated HAADF and
    ABF images of 32 structures, 61 right, none wrong, 3 unclear; the skewness of
    :func:`column_polarity`: 44 right, 7 wrong, 13 unclear), else from the skewness.

    Returns
    -------
    negate : bool
        Negate the image before the network.
    note : str or None
        What was decided from the image, or the contradiction found.
    """
    dark_modes = dark_column_modes(metadata)
    if not dark_modes:
        return False, None
    if mode in dark_modes or mode.startswith("STEM-"):
        # The mode says it; a contradiction is looked for cheaply (the skewness: every frame of
        # a batch comes here), and confirmed by the network (when given) before it is said:
        # the skewness alone also flags dense HAADF lattices and amorphous films.
        polarity, skew = column_polarity(image, sampling)
        said = f"skewness {skew:+.2f}"
        expected = "dark" if mode in dark_modes else "bright"
        if polarity not in (expected, "unclear") and confidence is not None:
            polarity, said = polarity_by_network(image, confidence)
        if mode in dark_modes:
            if polarity == "bright":
                return True, (f"the image's columns look bright ({said}) but it is marked "
                              f"{mode} (dark columns): if it is HAADF/ADF, say so "
                              "(--mode stem-haadf)")
            return True, None
        if polarity == "dark":
            return False, (f"the image's columns look dark ({said}) but it is marked {mode} "
                           "(bright columns): if it is ABF or BF, say so (--mode stem-abf)")
        return False, None
    if confidence is not None:
        polarity, said = polarity_by_network(image, confidence)
    else:
        polarity, skew = column_polarity(image, sampling)
        said = f"skewness {skew:+.2f}"
    # STEM with no detector named, or unknown: the image decides.
    if polarity == "dark":
        return True, (f"{model_name}: the columns look dark ({said}): the image "
                      "was taken as ABF/BF and negated; set the mode if that is wrong")
    if polarity == "unclear":
        return False, (f"{model_name}: the image does not say whether its columns are bright "
                       f"or dark ({said}): taken as bright (HAADF/ADF); set the "
                       "mode (--mode stem-haadf / stem-abf) if that is wrong")
    return False, None
