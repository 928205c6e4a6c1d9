"""Analysis on images and tables: atom detection (and, later, alignment, species, occupancy)."""

from .detect import DetectionStep, detect_atoms, find_peaks, iter_detect_atoms

__all__ = ["DetectionStep", "detect_atoms", "find_peaks", "iter_detect_atoms"]
