"""Issue 25, what was left: HDF5 read by frames, docks that follow the aligned stack, results
in view after Occupancy, a scheduler that never answers, and their neighbours."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from napari_tem_atoms import read_image
from napari_tem_atoms.io import images as images_module

STACK = (np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5) % 23) + 1.0


def _velox(path, stack, chunks, hyperspy_files):
    """A Velox EMD holding `stack` (frame, y, x), stored as Velox does: (y, x, frame)."""
    import h5py

    shutil.copy(hyperspy_files / "emd_files/fei_example_tem_stack.emd", path)
    with h5py.File(path, "r+") as emd:
        group = next(iter(emd["Data/Image"].values()))
        del group["Data"]
        group.create_dataset("Data", data=np.moveaxis(stack, 0, -1), chunks=chunks)
    return path


def _berkeley(path, stack, chunks):
    """A Berkeley (NCEM) EMD holding `stack`, written by RosettaSciIO with `chunks`."""
    from rsciio import emd

    axes = [{"name": name, "size": size, "scale": 0.02, "offset": 0, "units": "nm",
             "navigate": name == "frame"}
            for name, size in zip(("frame", "y", "x"), stack.shape, strict=True)]
    emd.file_writer(str(path), {
        "data": stack, "axes": axes,
        "metadata": {"General": {"title": "stack"}, "Signal": {"signal_type": ""}},
        "original_metadata": {}, "tmp_parameters": {}, "attributes": {"_lazy": False},
        "learning_results": {}, "models": {},
        "package_info": {"name": "napari-tem-atoms tests", "version": "0"}}, chunks=chunks)
    return path


@pytest.fixture
def pixel_chunked(tmp_path, hyperspy_files):
    """The same stack as a Velox and a Berkeley EMD whose chunks are single pixels."""
    return {"velox": _velox(tmp_path / "velox.emd", STACK, (1, 1, 1), hyperspy_files),
            "berkeley": _berkeley(tmp_path / "berkeley.emd", STACK, (1, 1, 1))}


@pytest.mark.parametrize("layout", ["velox", "berkeley"])
def test_pixel_chunked_emd_is_read_by_frames(pixel_chunked, layout):
    # RosettaSciIO made a dask task per HDF5 chunk: a 53 MB EMD with 1x1 chunks (655,360 of
    # them) took 7-10 minutes and 3.7 GB. Now a task per frame, each one HDF5 read.
    image = read_image(pixel_chunked[layout], lazy=True)
    assert image.data.chunksize == (1, 6, 5)
    assert len(image.data.__dask_graph__()) <= 2 * len(STACK)  # not 4 * 6 * 5 = 120
    np.testing.assert_array_equal(np.asarray(image.data[2]), STACK[2])
    np.testing.assert_array_equal(np.asarray(image.data), STACK)
    np.testing.assert_array_equal(read_image(pixel_chunked[layout]).data, STACK)


def test_frames_sharing_chunks_are_read_once(tmp_path, hyperspy_files, monkeypatch):
    # Chunks spanning two frames: each frame on its own would decompress them twice.
    path = _velox(tmp_path / "pairs.emd", STACK, (3, 5, 2), hyperspy_files)
    reads = []
    original = images_module._Hdf5Frames._read
    monkeypatch.setattr(images_module._Hdf5Frames, "_read",
                        lambda self, dataset, frames: reads.append(frames)
                        or original(self, dataset, frames))
    image = read_image(path, lazy=True)
    np.testing.assert_array_equal(np.asarray(image.data), STACK)
    assert sorted(reads, key=lambda frames: frames.start) == [slice(0, 2), slice(2, 4)]


def test_lazy_emd_frames_travel_to_other_processes(pixel_chunked):
    # A Dask cluster sends each frame's task to a worker: the reader must pickle, without the
    # open file.
    image = read_image(pixel_chunked["berkeley"], lazy=True)
    frame = pickle.loads(pickle.dumps(image.data[1]))
    np.testing.assert_array_equal(np.asarray(frame), STACK[1])


def test_an_emd_read_at_once_is_closed_afterwards(pixel_chunked):
    import h5py

    read_image(pixel_chunked["velox"])
    with h5py.File(pixel_chunked["velox"], "r+"):  # "already open for read-only" if left open
        pass
