"""Reading every supported format with its calibration, and refusing bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import IMAGE, STACK
from napari_tem_atoms import TEMFileError, read_image, read_images
from napari_tem_atoms.io import frame_files, natural_sort_key

# (file in HyperSpy's test data, shape, pixel size [Å/px] or None, calibration kind, format)
HYPERSPY_CASES = [
    ("dm3_2D_data/test_STEM_image.dm3", (68, 68), 2.4853801727294922, "real", "DM3"),
    ("dm3_2D_data/multi_signal.dm3", (512, 512), 0.17751578241586685, "real", "DM3"),
    ("dm3_2D_data/test_diffraction_pattern.dm3", (87, 87), None, "reciprocal", "DM3"),
    ("dm4_2D_data/test-MonarcCL_mono-image.dm4", (2, 2), 183253.49807739258, "real", "DM4"),
    ("dm4_3D_data/test-1.dm4", (2, 2, 2), None, "none", "DM4"),
    ("FEI_new/128x128-TEM_search_1.ser", (128, 128), 52.61214205047081, "real", "SER"),
    ("FEI_new/128x128-TEM_search.emi", (128, 128), 52.61214205047081, "real", "EMI"),
    ("FEI_old/64x64x5_TEM_preview.emi", (5, 64, 64), 62.81833616298531, "real", "EMI"),
    ("FEI_old/64x64_diffraction_acquire_1.ser", (64, 64), None, "unknown", "SER"),
    ("emd_files/fei_example_tem_stack.emd", (2, 3, 3), 0.08172883192297851, "real", "EMD"),
    ("emd_files/example_image.emd", (3, 3), None, "none", "EMD"),
    ("tiff_files/test_loading_image_saved_with_imageJ.tif", (68, 68), 1686.7471098853332,
     "real", "TIFF (ImageJ)"),
    ("tiff_files/test_loading_image_saved_with_imageJ_stack.tif", (2, 68, 68),
     1686.7471098853332, "real", "TIFF (ImageJ)"),
    ("tiff_files/test_loading_image_saved_with_DM.tif", (68, 68), 1686.7469251155853, "real",
     "TIFF (vendor tags)"),
    ("hdf5_files/example2_v3.1.hspy", (16, 16), None, "reciprocal", "HSPY"),
]

# (file made in conftest, shape, pixel size [Å/px] or None, format)
MADE_CASES = [
    ("ome_stack", (3, 40, 50), 0.123, "TIFF (OME)"),
    ("ome_default_unit", (40, 50), 20.0, "TIFF (OME)"),
    ("imagej_nm", (3, 40, 50), 0.15, "TIFF (ImageJ)"),
    ("imagej_angstrom", (40, 50), 0.2, "TIFF (ImageJ)"),
    ("plain_tiff", (40, 50), None, "TIFF"),
    ("mrc", (3, 40, 50), 0.42, "MRC"),
    ("berkeley_emd", (40, 50), 0.31, "EMD"),
    ("hspy_pm", (40, 50), 0.25, "HSPY"),
    ("npy_stack", (3, 40, 50), None, "NPY"),
]


@pytest.mark.parametrize(("name", "shape", "pixel_size", "kind", "file_format"), HYPERSPY_CASES)
def test_reads_real_files_with_calibration(hyperspy_files, name, shape, pixel_size, kind,
                                           file_format):
    image = read_image(hyperspy_files / name)
    assert image.data.shape == shape
    assert image.calibration.kind == kind
    assert image.file_format == file_format
    if pixel_size is None:
        assert image.pixel_size_angstrom is None
        assert image.calibration.note  # the user is told why
    else:
        assert image.calibration.pixel_size_angstrom == pytest.approx((pixel_size, pixel_size),
                                                                      rel=1e-9)


@pytest.mark.parametrize(("name", "shape", "pixel_size", "file_format"), MADE_CASES)
def test_reads_made_files_with_calibration(made_files, name, shape, pixel_size, file_format):
    image = read_image(made_files[name])
    assert image.data.shape == shape
    assert image.file_format == file_format
    expected = STACK if len(shape) == 3 else IMAGE
    np.testing.assert_allclose(np.asarray(image.data, dtype=float), expected)
    if pixel_size is None:
        assert image.pixel_size_angstrom is None
    else:
        assert image.pixel_size_angstrom == pytest.approx(pixel_size, rel=1e-6)


def test_berkeley_emd_with_bare_underscore_unit_is_calibrated(made_files, tmp_path):
    # TEAM-microscope software writes "n_m" without the brackets RosettaSciIO looks for; a
    # SrTiO3 image lost its 0.1225 Å/px.
    import shutil

    import h5py

    path = tmp_path / "team.emd"
    shutil.copy(made_files["berkeley_emd"], path)
    with h5py.File(path, "r+") as emd:
        for dim in ("dim1", "dim2"):
            emd[f"signals/made/{dim}"].attrs["units"] = "n_m"
    assert read_image(path).pixel_size_angstrom == pytest.approx(0.31)


def test_reciprocal_unit_is_reported_not_used(hyperspy_files):
    image = read_image(hyperspy_files / "dm3_2D_data/test_diffraction_pattern.dm3")
    assert image.calibration.unit == "1/nm"
    assert image.calibration.scale == pytest.approx((0.17443285882472992,) * 2)
    assert "reciprocal" in image.calibration.note


def test_velox_stack_keeps_frame_interval(hyperspy_files):
    image = read_image(hyperspy_files / "emd_files/fei_example_tem_stack.emd")
    assert image.frame_interval_s == pytest.approx(0.8)


def test_multi_signal_file_skips_non_images(hyperspy_files):
    images = read_images(hyperspy_files / "dm3_2D_data/multi_signal.dm3")
    assert [i.data.shape for i in images] == [(512, 512)]


def test_folder_of_frames_is_one_stack_in_natural_order(made_files):
    image = read_image(made_files["frames"])
    assert image.data.shape == (4, 40, 50)
    assert [f.name for f in frame_files(made_files["frames"])] == [
        "frame_1.tif", "frame_2.tif", "frame_3.tif", "frame_10.tif"]
    np.testing.assert_allclose(image.data[:, 0, 0], IMAGE[0, 0] + np.array([1, 2, 3, 10]))
    assert image.pixel_size_angstrom == pytest.approx(0.2)


def test_lazy_folder_reads_frames_on_demand(made_files):
    image = read_image(made_files["frames"], lazy=True)
    assert hasattr(image.data, "dask")
    np.testing.assert_allclose(np.asarray(image.data[3]), IMAGE + 10)


def test_lazy_npy_is_chunked_per_frame(made_files):
    image = read_image(made_files["npy_stack"], lazy=True)
    assert image.data.chunks[0] == (1, 1, 1)
    np.testing.assert_allclose(np.asarray(image.data), STACK)


def test_natural_sort_key_orders_numbers_numerically():
    names = ["img_10.dm4", "img_9.dm4", "IMG_100.dm4", "img_1.dm4"]
    assert sorted(names, key=natural_sort_key) == [
        "img_1.dm4", "img_9.dm4", "img_10.dm4", "IMG_100.dm4"]


# (bad file, words the message must contain)
BAD_CASES = [
    ("empty_dm4", "empty (0 bytes)"),
    ("truncated_dm3", "not a readable DM3 file"),
    ("text_dm4", "not a readable DM4 file"),
    ("text_tif", "not a readable TIFF file"),
    ("text_emd", "not a readable EMD file"),
    ("truncated_tif", "not a readable TIFF file"),
    ("rgb_tif", "RGB colour image"),
    ("one_d", "1-D"),
    ("five_d", "5-D"),
    ("nan", "NaN"),
    ("complex", "complex-valued"),
    ("tiny", "too small"),
    ("object_npy", "Python objects"),
    ("missing", "no such file"),
    ("hyperspy_eels_si", "spectrum image"),
    ("hyperspy_complex_fft", "complex-valued"),
    ("hyperspy_rgb_tif", "RGB colour image"),
]


@pytest.mark.parametrize(("name", "words"), BAD_CASES)
def test_bad_input_gives_a_clear_error_naming_the_file(bad_files, name, words):
    path = bad_files[name]
    with pytest.raises(TEMFileError) as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(str(path))
    assert words in message
    assert "Traceback" not in message


def test_folder_with_mismatched_frames_names_the_odd_frame(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a1.tif", IMAGE)
    tifffile.imwrite(tmp_path / "a2.tif", IMAGE[:-1])
    with pytest.raises(TEMFileError, match=r"a2\.tif: frame shape \(39, 50\)"):
        read_image(tmp_path)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(TEMFileError, match="holds no frames"):
        read_image(tmp_path)


def test_unsupported_extension_is_refused(tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(TEMFileError, match=r"unsupported file type '\.jpg'"):
        read_image(path)


def test_lazy_tiff_stack_reads_pages_on_demand(tmp_path, monkeypatch):
    """A large plain TIFF stack is neither loaded to read it lazily nor to look for tags."""
    import tifffile
    from rsciio import tiff as rsciio_tiff

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data=(IMAGE + k for k in range(6)), shape=(6, 40, 50),
                     dtype=np.float32, photometric="minisblack")
    calls = []
    real = rsciio_tiff.file_reader
    monkeypatch.setattr(rsciio_tiff, "file_reader",
                        lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    image = read_image(path, lazy=True)
    assert hasattr(image.data, "dask") and image.data.chunks[0] == (1,) * 6
    assert calls == [{"lazy": True}]
    np.testing.assert_allclose(np.asarray(image.data[4]), IMAGE + 4)


@pytest.mark.parametrize("layout", ["planar", "contiguous"])
def test_a_focal_series_saved_by_a_plain_imwrite_is_three_frames(tmp_path, layout):
    # tifffile stores a (3, rows, cols) array as RGB unless told otherwise; measured
    # intensities (not 8-bit) are frames, not colours.
    import tifffile

    series = np.random.default_rng(0).random((3, 24, 32)).astype(np.float32)
    path = tmp_path / "series.tif"
    if layout == "planar":
        tifffile.imwrite(path, series, photometric="rgb", planarconfig="separate")
    else:
        tifffile.imwrite(path, np.moveaxis(series, 0, -1), photometric="rgb")
    image = read_image(path)
    assert image.data.shape == (3, 24, 32)
    np.testing.assert_array_equal(np.asarray(image.data), series)


def test_lazy_npy_maps_the_file_instead_of_copying_it(tmp_path):
    # dask's from_array copied the memory map: RAM grew with the file, and a later change to
    # the file was not seen.
    path = tmp_path / "stack.npy"
    np.save(path, STACK)
    image = read_image(path, lazy=True)
    on_disk = np.load(path, mmap_mode="r+")
    on_disk[2] += 1000
    on_disk.flush()
    del on_disk
    frame = image.data[2].compute()
    assert isinstance(frame.base, np.memmap) or isinstance(frame, np.memmap)
    np.testing.assert_allclose(frame, STACK[2] + 1000)
    np.testing.assert_allclose(np.asarray(image.data[:2]), STACK[:2])


def _npy_with_header(path, shape, data=b"\0" * 16):
    from numpy.lib import format as npy_format

    with open(path, "wb") as stream:
        npy_format.write_array_header_1_0(
            stream, {"descr": "<f4", "fortran_order": False, "shape": shape})
        stream.write(data)
    return path


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(("shape", "words"), [
    ((100000, 100000), r"declares shape \(100000, 100000\) of float32 \(40000000000 bytes\)"),
    ((-4, 4), r"negative shape \(-4, 4\)"),
    ((2**62, 2**62), "truncated or damaged"),
])
def test_npy_declaring_more_than_it_holds_is_refused_in_words(tmp_path, shape, words, lazy):
    path = _npy_with_header(tmp_path / "bad.npy", shape)
    with pytest.raises(TEMFileError, match=words) as error:
        read_image(path, lazy=lazy)
    assert str(error.value).startswith(str(path))


def test_data_beyond_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    import tifffile

    # A deflate TIFF of 288 bytes declaring a 100000 x 100000 float32 image (40 GB).
    tiff = tmp_path / "huge.tif"
    tifffile.imwrite(tiff, np.zeros((16, 16), np.float32), compression="zlib")
    with tifffile.TiffFile(tiff, mode="r+") as tif:
        for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tif.pages[0].tags[tag].overwrite(100000)
    with pytest.raises(TEMFileError, match=r"shape \(100000, 100000\) of float32.*40 GB") as error:
        read_image(tiff)
    assert str(error.value).startswith(str(tiff))
    assert "NAPARI_TEM_ATOMS_MAX_BYTES" in str(error.value)

    npy = tmp_path / "stack.npy"
    np.save(npy, STACK)  # 24 kB, 8 kB a frame
    monkeypatch.setenv("NAPARI_TEM_ATOMS_MAX_BYTES", "10000")
    with pytest.raises(TEMFileError, match=r"shape \(3, 40, 50\).*NAPARI_TEM_ATOMS_MAX_BYTES"):
        read_image(npy)
    assert read_image(npy, lazy=True).data.shape == (3, 40, 50)  # a frame at a time fits
    monkeypatch.setenv("NAPARI_TEM_ATOMS_MAX_BYTES", "1e6")
    np.testing.assert_array_equal(read_image(npy).data, STACK)


def test_hdf5_dataset_beyond_the_size_limit_is_refused(tmp_path):
    import h5py

    path = tmp_path / "huge.emd"
    with h5py.File(path, "w") as emd:  # unallocated: a file of a few kB
        emd.create_dataset("signals/huge/data", shape=(100000, 100000), dtype="f4")
    for lazy in (False, True):
        with pytest.raises(TEMFileError, match=r"/signals/huge/data is declared as shape "
                           r"\(100000, 100000\).*NAPARI_TEM_ATOMS_MAX_BYTES"):
            read_image(path, lazy=lazy)


@pytest.mark.parametrize("kind", ["external_raw", "virtual", "external_link"])
def test_hdf5_data_from_other_files_is_refused_unless_allowed(made_files, tmp_path,
                                                              monkeypatch, kind):
    import shutil

    import h5py

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(40 * 50, dtype="<f4").tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as source:
        source["data"] = IMAGE
    path = tmp_path / "image.emd"
    shutil.copy(made_files["berkeley_emd"], path)
    with h5py.File(path, "r+") as emd:
        del emd["signals/made/data"]
        if kind == "external_raw":
            emd.create_dataset("signals/made/data", shape=(50, 40), dtype="<f4",
                               external=[(str(secret), 0, secret.stat().st_size)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(40, 50), dtype="f4")
            layout[:] = h5py.VirtualSource(str(other), "data", shape=(40, 50))
            emd.create_virtual_dataset("signals/made/data", layout)
        else:
            emd["signals/made/data"] = h5py.ExternalLink(str(other), "/data")
    with pytest.raises(TEMFileError, match=r"/signals/made/data .*"
                       "NAPARI_TEM_ATOMS_ALLOW_EXTERNAL_HDF5=1") as error:
        read_image(path)
    assert str(error.value).startswith(str(path))
    monkeypatch.setenv("NAPARI_TEM_ATOMS_ALLOW_EXTERNAL_HDF5", "1")
    if kind != "external_link":  # RosettaSciIO itself does not follow links to data
        assert read_image(path).data.size == 40 * 50


def test_lazy_folder_refuses_a_frame_its_type_cannot_hold(tmp_path):
    # The first frame fixes a lazy stack's type: a later float32 frame was cut to uint16.
    import tifffile

    tifffile.imwrite(tmp_path / "f1.tif", IMAGE.astype(np.uint16))
    tifffile.imwrite(tmp_path / "f2.tif", IMAGE.astype(np.uint8))  # fits: read as uint16
    tifffile.imwrite(tmp_path / "f3.tif", IMAGE + 0.5)
    image = read_image(tmp_path, lazy=True)
    np.testing.assert_array_equal(np.asarray(image.data[1]), IMAGE.astype(np.uint8))
    with pytest.raises(TEMFileError, match=r"f3\.tif: the frame's values are float32.*uint16"):
        np.asarray(image.data[2])
    eager = read_image(tmp_path)  # reads every frame: one type holds them all
    assert eager.data.dtype == np.float32
    np.testing.assert_array_equal(eager.data[2], IMAGE + 0.5)
