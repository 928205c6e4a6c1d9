"""Reading TEM data with its calibration, and writing atom tables: no Qt, no napari."""

from .atoms_csv import (
    AtomsTable,
    atoms_table,
    combined_atoms_table,
    is_atoms_csv,
    read_atoms_csv,
    write_atoms_csv,
)
from .calibration import Calibration, angstrom_per_unit, calibration_from_axes
from .images import (
    FRAME_EXTENSIONS,
    IMAGE_EXTENSIONS,
    TEMImage,
    frame_files,
    natural_sort_key,
    read_folder,
    read_image,
    read_images,
)
from .tables import (
    write_comparison_csv,
    write_occupancy_matrix_csv,
    write_scores_csv,
    write_sites_csv,
    write_table,
)

__all__ = [
    "FRAME_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "AtomsTable",
    "Calibration",
    "TEMImage",
    "angstrom_per_unit",
    "atoms_table",
    "calibration_from_axes",
    "combined_atoms_table",
    "frame_files",
    "is_atoms_csv",
    "natural_sort_key",
    "read_atoms_csv",
    "read_folder",
    "read_image",
    "read_images",
    "write_atoms_csv",
    "write_comparison_csv",
    "write_occupancy_matrix_csv",
    "write_scores_csv",
    "write_sites_csv",
    "write_table",
]
