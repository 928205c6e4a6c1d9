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


def _hspy(path, stack, chunks):
    """A HyperSpy file holding `stack` in its own axis order, with `chunks` (gzip)."""
    import h5py
    from rsciio import emd, hspy

    _berkeley(path.with_suffix(".emd"), stack, True)  # a valid signal, its data replaced below
    signal = emd.file_reader(str(path.with_suffix(".emd")))[0]
    hspy.file_writer(str(path), {**signal, "tmp_parameters": {}, "attributes": {"_lazy": False},
                                 "learning_results": {}, "models": {},
                                 "package_info": {"name": "tests", "version": "0"}})
    with h5py.File(path, "r+") as stored:
        group = next(iter(stored["Experiments"].values()))
        del group["data"]
        group.create_dataset("data", data=stack, chunks=chunks, compression="gzip")
    return path


@pytest.fixture
def pixel_chunked(tmp_path, hyperspy_files):
    """The same stack as a Velox, a Berkeley EMD and a HSPY whose chunks are single pixels."""
    return {"velox": _velox(tmp_path / "velox.emd", STACK, (1, 1, 1), hyperspy_files),
            "berkeley": _berkeley(tmp_path / "berkeley.emd", STACK, (1, 1, 1)),
            "hspy": _hspy(tmp_path / "stack.hspy", STACK, (1, 1, 1))}


@pytest.mark.parametrize("layout", ["velox", "berkeley", "hspy"])
def test_pixel_chunked_emd_is_read_by_frames(pixel_chunked, layout):
    # RosettaSciIO made a dask task per HDF5 chunk: a 53 MB EMD with 1x1 chunks (655,360 of
    # them) took 7-10 minutes and 3.7 GB. Now a task per frame, each one HDF5 read.
    image = read_image(pixel_chunked[layout], lazy=True)
    assert image.data.chunksize == (1, 6, 5)
    assert len(image.data.__dask_graph__()) <= 2 * len(STACK)  # not 4 * 6 * 5 = 120
    np.testing.assert_array_equal(np.asarray(image.data[2]), STACK[2])
    np.testing.assert_array_equal(np.asarray(image.data), STACK)
    np.testing.assert_array_equal(read_image(pixel_chunked[layout]).data, STACK)


@pytest.mark.parametrize("chunks", [(1, 1, 1), (2, 3, 1), (4, 2, 3)])
def test_frames_are_read_in_blocks_of_chunk_rows(tmp_path, hyperspy_files, monkeypatch,
                                                  chunks):
    # HDF5 keeps a few kB per chunk of one read: a frame of 65,536 one-pixel chunks read at
    # once held 430 MB. Blocks of whole chunk rows, here of at most 7 chunks.
    monkeypatch.setattr(images_module, "_CHUNKS_PER_READ", 7)
    velox = _velox(tmp_path / "velox.emd", STACK, chunks, hyperspy_files)
    berkeley = _berkeley(tmp_path / "berkeley.emd", STACK, chunks)
    for path in (velox, berkeley):
        np.testing.assert_array_equal(np.asarray(read_image(path, lazy=True).data), STACK)
        np.testing.assert_array_equal(read_image(path).data, STACK)


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


# --- the docks ---------------------------------------------------------------------------------

PLUGIN = "napari-tem-atoms"


def _aligned_copy(viewer, layer):
    """What the Align dock adds: a copy named after the stack, the original hidden."""
    layer.visible = False
    return viewer.add_image(np.asarray(layer.data), name=f"{layer.name} aligned",
                            scale=layer.scale, units=layer.units,
                            metadata={"aligned_from": layer.name})


@pytest.mark.gui
@pytest.mark.parametrize(("widget_name", "choice"), [("Occupancy", "video_layer"),
                                                      ("Detect atoms", "image_layer")])
def test_docks_take_the_aligned_stack_and_go_back_on_undo(make_napari_viewer, widget_name,
                                                           choice):
    # Species took the aligned stack; Occupancy and Detect kept the hidden, misaligned one.
    viewer = make_napari_viewer()
    video = viewer.add_image(np.random.default_rng(0).random((4, 32, 32)), name="video",
                             scale=(1, 0.12, 0.12), units=("pixel", "angstrom", "angstrom"))
    other = viewer.add_image(np.zeros((4, 32, 32)), name="other")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, widget_name)
    getattr(widget, choice).value = video
    aligned = _aligned_copy(viewer, video)
    assert getattr(widget, choice).value is aligned
    assert widget.sampling.value == pytest.approx(0.12)  # the new layer's inputs follow
    viewer.layers.remove(aligned)  # Align's Undo
    assert getattr(widget, choice).value is video
    # An aligned copy of another stack leaves the choice alone.
    _aligned_copy(viewer, other)
    assert getattr(widget, choice).value is video


@pytest.mark.gui
def test_align_dock_output_reaches_occupancy(qtbot, make_napari_viewer):
    from napari_tem_atoms.samples import synthetic_gold_stack

    viewer = make_napari_viewer()
    stack = synthetic_gold_stack(n_frames=4, shape=(96, 96), particle_radius=5.0, seed=1,
                                 drift_per_frame=1.5)
    viewer.add_image(stack.images, name="video", scale=(1, 0.12, 0.12))
    _, occupancy = viewer.window.add_plugin_dock_widget(PLUGIN, "Occupancy")
    _, align = viewer.window.add_plugin_dock_widget(PLUGIN, "Align (focal series, drift)")
    align.kind.value = "drift (video)"
    align.run()
    qtbot.waitUntil(lambda: align.worker is None and "video aligned" in viewer.layers,
                    timeout=60_000)
    assert occupancy.video_layer.value is viewer.layers["video aligned"]


@pytest.mark.gui
def test_occupancy_results_are_in_view_after_a_run(make_napari_viewer, qtbot, monkeypatch):
    # The status line and Save button sat below the dock's foot: after a run the user had to
    # scroll to find that anything had happened.
    from napari_tem_atoms.analysis.occupancy import site_occupancy
    from napari_tem_atoms.cli import PLUGIN_NAME, _dock_plugin_widgets
    from napari_tem_atoms.napari import _occupancy_widget as occupancy_module
    from napari_tem_atoms.samples import synthetic_gold_stack

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 800)
    viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    occupancy = viewer.window.dock_widgets["Occupancy (napari-tem-atoms)"]
    occupancy.native.parent().raise_()  # its tab chosen, as when the user ran it

    def in_view(widget):
        native = widget.native
        viewport = native.parentWidget().parentWidget()  # rows -> the scroll area's viewport
        top = native.mapTo(viewport, native.rect().topLeft()).y()
        return native.isVisible() and top >= 0 and top + native.height() <= viewport.height()

    stack = synthetic_gold_stack()
    occupancy.result = site_occupancy(stack.columns[["frame", "y", "x"]], len(stack.images),
                                      sampling=stack.sampling)
    occupancy._run_layer = viewer.layers["Synthetic Au stack"]
    # As before: the first result adds the plots dock under Occupancy, which leaves it
    # shorter than its rows, and nothing scrolls.
    with monkeypatch.context() as patch:
        patch.setattr(occupancy_module, "scroll_into_view", lambda *widgets: None)
        occupancy._show_result()
        qtbot.wait(300)
        assert not in_view(occupancy.save_button)
    occupancy._show_result()
    qtbot.waitUntil(lambda: in_view(occupancy.status) and in_view(occupancy.save_button),
                    timeout=3000)


# --- a scheduler that never answers ----------------------------------------------------------


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections (the system's backlog) and never answers."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_scheduler_that_never_answers_is_given_up_in_words(silent_port, monkeypatch):
    # Dask's client read the handshake with no timeout: `detect --scheduler` hung for ever.
    import time

    import dask

    from napari_tem_atoms import TEMAtomsError
    from napari_tem_atoms.batch import FrameJob, run_jobs

    monkeypatch.setenv("NAPARI_TEM_ATOMS_SCHEDULER_TIMEOUT", "0.5")
    job = FrameJob(0, 0, np.zeros((8, 8), np.float32), 0.1, "frame.npy")
    start = time.perf_counter()
    with pytest.raises(TEMAtomsError, match=r"did not answer within 0.5 s .*NAPARI_TEM_ATOMS_"
                                            r"SCHEDULER_TIMEOUT"):
        run_jobs([job], "au-hrtem", None, scheduler=silent_port)
    assert time.perf_counter() - start < 30  # 2.5 s, with room for a loaded machine
    assert dask.config.get("scheduler", None) is None  # no half-made client left as default
    with pytest.raises(TEMAtomsError, match=r"did not answer within 0\.25 s"):
        run_jobs([job], "au-hrtem", None, scheduler=silent_port, scheduler_timeout=0.25)


@pytest.mark.parametrize(("value", "words"), [("soon", "is not a number of seconds"),
                                              ("0", "must be above 0 s")])
def test_a_bad_scheduler_timeout_is_said_in_words(silent_port, monkeypatch, value, words):
    from napari_tem_atoms import TEMAtomsError
    from napari_tem_atoms.batch import FrameJob, run_jobs

    monkeypatch.setenv("NAPARI_TEM_ATOMS_SCHEDULER_TIMEOUT", value)
    with pytest.raises(TEMAtomsError, match=words):
        run_jobs([FrameJob(0, 0, np.zeros((8, 8)), 0.1)], "au-hrtem", None,
                 scheduler=silent_port)
