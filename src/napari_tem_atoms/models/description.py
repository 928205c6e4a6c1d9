"""What a weights file says about its network: a typed, versioned model description.

The metadata of a weights file (a JSON table stored in the safetensors header under
``napari_tem_atoms``) is read once, checked, and turned into a :class:`ModelDescription`;
the rest of the package reads its attributes, never the table's keys.

Versions
--------
1
    Every weights file written before the version was recorded (``au-hrtem``,
    ``au-hrtem-adatoms``, ``mos2-focal``): no ``format_version`` key. A missing ``task`` is
    ``"columns"``, missing ``imaging_modes`` are ``["HRTEM"]``, a missing ``threshold`` is 0.5.
2
    The same keys, with ``format_version = 2`` written by :func:`~.registry.save_model`.

A newer version than :data:`FORMAT_VERSION` is refused with a message saying so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TEMAtomsError

__all__ = ["FORMAT_VERSION", "ModelDescription", "describe"]

#: The metadata version this package writes and the newest it reads.
FORMAT_VERSION = 2

#: The defocus range [Å] assumed for a model whose training envelope does not give one.
DEFAULT_DEFOCUS_RANGE = (-200.0, 200.0)


@dataclass(frozen=True)
class ModelDescription:
    """A trained model as its weights describe it.

    Attributes
    ----------
    name : str
        The model's name when it was trained (``"au-hrtem"``).
    description : str
        One line: what it finds, in which images.
    architecture : dict
        The network's layer settings: the arguments of :class:`~.unet.UNet`.
    sampling : float
        Pixel size [Å/px] the network expects its input at.
    classes : tuple of str
        Names of its output maps (``("column",)``, ``("Mo", "S2", "S1")``).
    threshold : float
        Default confidence threshold (best validation F1).
    task : str
        ``"columns"`` (one image in, atomic columns out) or ``"species"`` (a three-image focal
        series in, columns and their species out).
    crystal : str or None
        The crystal whose columns it finds (``"gold"``), when the weights name one.
    imaging_modes : tuple of str
        The imaging modes it was trained on (``("HRTEM",)``).
    dark_columns : tuple of str
        Modes whose columns are dark: the network (which finds bright ones) sees such images
        negated (``("STEM-ABF", "STEM-BF")`` for ``stem-columns``; empty for HRTEM models).
    normalisation : str
        How each input image is normalised, in words (for the model card).
    inputs : str or None
        What a species model takes, in words.
    conditions : dict or None
        How imaging conditions (Cs, defocus) are encoded for a network that takes them.
    training : dict
        The training summary (steps, data, exit waves, microscope envelope), for model cards.
    version : int
        The metadata's format version (see the module's notes).
    metadata : dict
        The table as read from the file (for model cards and round trips).
    """

    name: str
    description: str
    architecture: dict[str, int]
    sampling: float
    classes: tuple[str, ...] = ("column",)
    threshold: float = 0.5
    task: str = "columns"
    crystal: str | None = None
    imaging_modes: tuple[str, ...] = ("HRTEM",)
    dark_columns: tuple[str, ...] = ()
    normalisation: str = ""
    inputs: str | None = None
    conditions: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_metadata(cls, metadata: Any, source: str | None = None) -> ModelDescription:
        """Check a weights file's metadata table and describe it.

        Parameters
        ----------
        metadata : dict
            The ``napari_tem_atoms`` table of the weights file.
        source : str, optional
            The file, named in error messages.

        Raises
        ------
        TEMAtomsError
            Naming the file and what is missing or wrong: a version newer than this package
            reads, the ``architecture`` (absent, not a table, unknown keys, values that are not
            whole numbers), ``sampling`` (not a number above 0), ``classes`` (not a list of
            names) or ``threshold`` (not between 0 and 1).
        """
        _check(metadata, source or "these weights")
        return _described(metadata)

    @property
    def takes_conditions(self) -> bool:
        """True when the network takes imaging conditions (Cs, defocus) besides the image."""
        return bool(self.architecture.get("conditions", 0))

    @property
    def n_conditions(self) -> int:
        """How many condition values the network takes (0: none)."""
        return int(self.architecture.get("conditions", 0))

    @property
    def counts(self) -> bool:
        """True when the network also estimates the atoms along the beam of each column."""
        return bool(self.architecture.get("counts", 0))

    @property
    def in_channels(self) -> int:
        """Images the network takes at once (1; 3 for a focal-series species model)."""
        return int(self.architecture.get("in_channels", 1))

    @property
    def is_species(self) -> bool:
        """True for a focal-series species model (``task == "species"``)."""
        return self.task == "species"

    @property
    def envelope(self) -> dict[str, Any]:
        """The microscope envelope it was trained on (empty when the weights give none)."""
        return dict(self.training.get("envelope", {}))

    @property
    def energy(self) -> float:
        """Beam energy [eV] of its training images (300 kV when the weights do not say)."""
        return float(self.envelope.get("energy", 300e3))

    @property
    def defocus_range(self) -> tuple[float, float]:
        """Defocus range [Å] (abTEM's sign) it was trained on."""
        low, high = self.envelope.get("defocus", DEFAULT_DEFOCUS_RANGE)
        return float(low), float(high)

    @property
    def cs_range(self) -> tuple[float, float] | None:
        """Cs range [Å] it was trained on, or None when the weights do not give one."""
        cs = self.envelope.get("cs")
        return (float(cs[0]), float(cs[1])) if cs else None

    def to_metadata(self) -> dict[str, Any]:
        """The metadata table to store in a weights file (with the current format version)."""
        return {**self.metadata, "format_version": FORMAT_VERSION}


def describe(model: ModelDescription | Mapping[str, Any]) -> ModelDescription:
    """A :class:`ModelDescription` of `model`: itself, or a metadata table read leniently.

    A partial table (as tests and scripts build) gets the defaults of version 1 for what it
    lacks; weights files are checked strictly by :meth:`ModelDescription.from_metadata`.
    """
    if isinstance(model, ModelDescription):
        return model
    return _described(dict(model))


def _described(metadata: Mapping[str, Any]) -> ModelDescription:
    modes = metadata.get("imaging_modes")
    return ModelDescription(
        name=str(metadata.get("name", "")),
        description=str(metadata.get("description", "")),
        architecture=dict(metadata.get("architecture") or {}),
        sampling=float(metadata.get("sampling", math.nan)),
        classes=tuple(metadata.get("classes", ["column"])),
        threshold=float(metadata.get("threshold", 0.5)),
        task=str(metadata.get("task") or "columns"),
        crystal=metadata.get("crystal") or None,
        imaging_modes=(tuple(str(mode) for mode in modes)
                       if isinstance(modes, (list, tuple)) and modes else ("HRTEM",)),
        dark_columns=(tuple(str(mode) for mode in metadata.get("dark_columns") or ())),
        normalisation=str(metadata.get("normalisation", "")),
        inputs=metadata.get("inputs"),
        conditions=metadata.get("conditions") or None,
        training=dict(metadata.get("training") or {}),
        version=int(metadata.get("format_version", 1)),
        metadata=dict(metadata),
    )


def _architecture_keys() -> set[str]:
    """The keys an ``architecture`` may have: the arguments of :class:`~.unet.UNet`."""
    import inspect

    from .unet import UNet

    return set(inspect.signature(UNet.__init__).parameters) - {"self"}


def _check(metadata: Any, source: str) -> None:
    """Refuse, in words, metadata a network cannot be built from (see ``from_metadata``)."""
    def refuse(problem: str) -> TEMAtomsError:
        return TEMAtomsError(f"{source}: {problem}; these weights cannot be used")

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(metadata, dict):
        raise refuse("its napari_tem_atoms metadata is not a table of settings")
    version = metadata.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise refuse(f"its metadata's 'format_version' is {version!r}, not a whole number "
                     "of 1 or more")
    if version > FORMAT_VERSION:
        raise refuse(f"its metadata is of format version {version}; this napari-tem-atoms "
                     f"reads up to version {FORMAT_VERSION}: a newer one may read it")
    architecture = metadata.get("architecture")
    if not isinstance(architecture, dict):
        raise refuse("its metadata has no 'architecture' (the network's layer settings)"
                     if architecture is None else "its metadata's 'architecture' is not a table")
    known = _architecture_keys()
    unknown = sorted(set(architecture) - known)
    if unknown:
        raise refuse(f"its architecture has settings this version does not know: "
                     f"{', '.join(unknown)} (known: {', '.join(sorted(known))}); a newer "
                     "napari-tem-atoms may read it")
    wrong = sorted(key for key, value in architecture.items()
                   if not isinstance(value, int) or isinstance(value, bool) or value < 0)
    if wrong:
        said = ", ".join(f"{key} = {architecture[key]!r}" for key in wrong)
        raise refuse(f"in its architecture, {said}: not a whole number of 0 or more")
    sampling = metadata.get("sampling")
    if sampling is None:
        raise refuse("its metadata has no 'sampling' (the pixel size the network expects, Å/px)")
    if not is_number(sampling) or not math.isfinite(sampling) or sampling <= 0:
        raise refuse(f"its metadata's 'sampling' (the pixel size the network expects, Å/px) is "
                     f"{sampling!r}, not a number above 0")
    classes = metadata.get("classes", ["column"])
    if not isinstance(classes, list) or not classes or not all(
            isinstance(name, str) for name in classes):
        raise refuse(f"its metadata's 'classes' is {classes!r}, not a list of names")
    threshold = metadata.get("threshold", 0.5)
    if not is_number(threshold) or not 0 <= threshold <= 1:
        raise refuse(f"its metadata's 'threshold' is {threshold!r}, not a confidence between "
                     "0 and 1")
