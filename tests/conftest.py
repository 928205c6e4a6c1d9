"""Shared fixtures: real-format files from HyperSpy's wheel, and files made on the fly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import fetch_hyperspy_files  # noqa: E402

IMAGE = (np.arange(40 * 50, dtype=np.float32).reshape(40, 50) % 97) + 10.0
STACK = np.stack([IMAGE + k for k in range(3)])


@pytest.fixture(scope="session")
def hyperspy_files() -> Path:
    """Folder of the HyperSpy 1.7.6 test files (fetched by `make test`)."""
    if not fetch_hyperspy_files.complete():
        pytest.fail(
            "the HyperSpy test files are missing: run `python tests/data/fetch_hyperspy_files.py`"
            " (make test does it)", pytrace=False,
        )
    return fetch_hyperspy_files.DESTINATION


@pytest.fixture(scope="session")
def made_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Calibrated files in formats HyperSpy's wheel lacks, written with their own libraries."""
    import mrcfile
    import tifffile
    from rsciio import emd, hspy

    folder = tmp_path_factory.mktemp("made")
    files: dict[str, Path] = {}

    files["ome_stack"] = folder / "stack.ome.tif"
    tifffile.imwrite(files["ome_stack"], STACK, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 0.0123, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.0123, "PhysicalSizeYUnit": "nm"})
    files["ome_default_unit"] = folder / "default_unit.ome.tif"
    tifffile.imwrite(files["ome_default_unit"], IMAGE, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.002, "PhysicalSizeY": 0.002})
    files["imagej_nm"] = folder / "imagej_nm.tif"
    tifffile.imwrite(files["imagej_nm"], STACK, imagej=True, resolution=(1 / 0.015, 1 / 0.015),
                     metadata={"unit": "nm", "axes": "TYX"})
    files["imagej_angstrom"] = folder / "imagej_angstrom.tif"
    tifffile.imwrite(files["imagej_angstrom"], IMAGE, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"unit": "\\u00C5", "axes": "YX"})
    files["plain_tiff"] = folder / "plain.tif"
    tifffile.imwrite(files["plain_tiff"], IMAGE)

    files["mrc"] = folder / "stack.mrc"
    with mrcfile.new(files["mrc"]) as mrc:
        mrc.set_data(STACK)
        mrc.voxel_size = (0.42, 0.42, 1.0)  # x, y, z in Å

    axes = [{"name": "y", "size": 40, "scale": 0.031, "offset": 0, "units": "nm",
             "navigate": False},
            {"name": "x", "size": 50, "scale": 0.031, "offset": 0, "units": "nm",
             "navigate": False}]
    metadata = {"General": {"title": "made"}, "Signal": {"signal_type": ""}}
    signal = {"data": IMAGE, "axes": axes, "metadata": metadata,
              "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False},
              "learning_results": {}, "models": {},
              "package_info": {"name": "napari-tem-atoms tests", "version": "0"}}
    files["berkeley_emd"] = folder / "berkeley.emd"
    emd.file_writer(str(files["berkeley_emd"]), signal)
    files["hspy_pm"] = folder / "image_pm.hspy"
    pm_axes = [dict(a, scale=25.0, units="pm") for a in axes]
    hspy.file_writer(str(files["hspy_pm"]), {**signal, "axes": pm_axes})

    files["npy_stack"] = folder / "stack.npy"
    np.save(files["npy_stack"], STACK)

    frames = folder / "frames"
    frames.mkdir()
    for k in (1, 2, 10, 3):  # natural order is 1, 2, 3, 10
        tifffile.imwrite(frames / f"frame_{k}.tif", IMAGE + k, imagej=True,
                         resolution=(1 / 0.02, 1 / 0.02), metadata={"unit": "nm"})
    (frames / "acquisition.log").write_text("not a frame")
    files["frames"] = frames
    return files


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory, hyperspy_files: Path) -> dict[str, Path]:
    """Files a reader claims by extension but that are damaged or not images."""
    import tifffile

    folder = tmp_path_factory.mktemp("bad")
    files: dict[str, Path] = {}
    files["empty_dm4"] = folder / "empty.dm4"
    files["empty_dm4"].write_bytes(b"")
    real_dm3 = (hyperspy_files / "dm3_2D_data/test_STEM_image.dm3").read_bytes()
    files["truncated_dm3"] = folder / "truncated.dm3"
    files["truncated_dm3"].write_bytes(real_dm3[: len(real_dm3) // 3])
    files["text_dm4"] = folder / "notes.dm4"
    files["text_dm4"].write_text("this is a text file with a .dm4 extension\n")
    files["text_tif"] = folder / "notes.tif"
    files["text_tif"].write_text("not a TIFF either\n")
    files["text_emd"] = folder / "notes.emd"
    files["text_emd"].write_text("not HDF5\n")
    buffer = folder / "whole.tif"
    tifffile.imwrite(buffer, STACK, photometric="minisblack")
    files["truncated_tif"] = folder / "truncated.tif"
    files["truncated_tif"].write_bytes(buffer.read_bytes()[:5000])
    files["rgb_tif"] = folder / "rgb.tif"
    tifffile.imwrite(files["rgb_tif"], np.zeros((20, 30, 3), np.uint8), photometric="rgb")
    for name, array in {
        "one_d": np.arange(10.0),
        "five_d": np.zeros((2, 2, 2, 4, 4)),
        "nan": np.where(IMAGE > 50, np.nan, IMAGE),
        "complex": IMAGE.astype(np.complex64),
        "tiny": np.zeros((1, 30)),
    }.items():
        files[name] = folder / f"{name}.npy"
        np.save(files[name], array)
    files["object_npy"] = folder / "objects.npy"
    np.save(files["object_npy"], np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    files["missing"] = folder / "does_not_exist.dm4"
    files["hyperspy_eels_si"] = hyperspy_files / "dm4_3D_data/EELS_SI.dm4"
    files["hyperspy_complex_fft"] = hyperspy_files / "emd_files/fei_example_complex_fft.emd"
    files["hyperspy_rgb_tif"] = hyperspy_files / "tiff_files/optical_Zeiss_AxioVision_RGB.tif"
    return files
