"""napari-tem-atoms: atoms, species and per-column statistics from atomic-resolution TEM.

The core (this package without :mod:`napari_tem_atoms.napari`) imports neither Qt nor napari,
so it runs in scripts, on clusters and in the ``tem-atoms`` command-line tool.
"""

from importlib.metadata import PackageNotFoundError, version

from .analysis import detect_atoms, iter_detect_atoms
from .errors import (
    ConfigError,
    DomainWarning,
    FocalSeriesWarning,
    InputError,
    SamplingWarning,
    TEMAtomsError,
    TEMAtomsWarning,
    TEMFileError,
    TransferWarning,
)
from .io import (
    Calibration,
    TEMImage,
    atoms_table,
    read_atoms_csv,
    read_image,
    read_images,
    write_atoms_csv,
)
from .samples import fetch_sample, synthetic_gold_stack

try:
    __version__ = version("napari-tem-atoms")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "unknown"

__all__ = [
    "Calibration",
    "ConfigError",
    "DomainWarning",
    "FocalSeriesWarning",
    "InputError",
    "SamplingWarning",
    "TEMAtomsError",
    "TEMAtomsWarning",
    "TEMFileError",
    "TEMImage",
    "TransferWarning",
    "__version__",
    "atoms_table",
    "detect_atoms",
    "fetch_sample",
    "iter_detect_atoms",
    "read_atoms_csv",
    "read_image",
    "read_images",
    "synthetic_gold_stack",
    "write_atoms_csv",
]
