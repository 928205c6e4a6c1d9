"""Issue 25, the last gaps: outputs refused before any work, links and streams kept, the
temporary files of killed runs removed, and the remaining untested items."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import napari_tem_atoms
from napari_tem_atoms import cli
from napari_tem_atoms.cli import main
from napari_tem_atoms.errors import TEMFileError
from napari_tem_atoms.io import _atomic
from napari_tem_atoms.io._atomic import atomic_write, check_writable

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX files (links, pipes, devices)")


def _parts(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".part"))


def _rates(tmp_path: Path) -> list[str]:
    """Two sites tables for `tem-atoms compare` (no network: a fast command that writes -o)."""
    paths = []
    for name, offset in (("vacuum", 0.0), ("gas", 0.5)):
        paths.append(tmp_path / f"{name}.csv")
        pd.DataFrame({"layer": "surface", "transition_rate": np.linspace(0, 0.01, 20) + offset
                      }).to_csv(paths[-1], index=False)
    return [str(path) for path in paths]


# --- 1. outputs in a place that cannot be written: refused before any work ---------------

#: (command line with {input} and {out}, the function that would do the work, the option)
COMMANDS = [
    (["detect", "{input}", "-o", "{out}"], "_detect", "-o"),
    (["species", "{input}", "-o", "{out}"], "_species", "-o"),
    (["occupancy", "{input}", "-o", "{out}"], "_occupancy", "-o"),
    (["occupancy", "{input}", "-o", "{fine}", "--matrix", "{out}"], "_occupancy", "--matrix"),
    (["compare", "{input}", "{input}", "-o", "{out}"], "_compare", "-o"),
    (["evaluate", "--config", "{input}", "--table", "{out}"], "_evaluate", "--table"),
    (["evaluate", "--config", "{input}", "--card", "{out}"], "_evaluate", "--card"),
    (["view", "--screenshot", "{out}"], "_view", "--screenshot"),
]


def _read_only_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        pytest.skip("this user (root) may write into a read-only folder")
    return folder


def _read_only_disk(tmp_path, monkeypatch) -> Path:
    """A folder on a disk mounted read-only: creating a file fails with EROFS."""
    folder = tmp_path / "mounted"
    folder.mkdir()
    real = _atomic._temporary_file

    def refused(target):
        if target.parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(target)

    monkeypatch.setattr(_atomic, "_temporary_file", refused)
    return folder


def _sysfs(tmp_path, monkeypatch) -> Path:
    """/sys: no process may create a file there, root included (os.access says it may)."""
    folder = Path("/sys")
    if not folder.is_dir():
        pytest.skip("no /sys here")
    return folder


@pytest.mark.parametrize("place", [_read_only_folder, _read_only_disk, _sysfs],
                         ids=["read-only folder", "read-only disk", "/sys"])
@pytest.mark.parametrize(("command", "work", "option"), COMMANDS,
                         ids=[" ".join([*c[0][:1], c[2]]) for c in COMMANDS])
def test_an_output_in_a_read_only_place_is_refused_before_any_work(
        command, work, option, place, tmp_path, monkeypatch, capsys):
    folder = place(tmp_path, monkeypatch)
    done = []
    monkeypatch.setattr(cli, work, lambda args: done.append(args) or 0)
    given = tmp_path / "input.csv"
    given.write_text("frame,y,x\n0,1,2\n")
    output = folder / "results.csv"
    argv = [part.format(input=given, out=output, fine=tmp_path / "sites.csv") for part in command]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {option} {output}: cannot write in the folder {folder} (")
    assert "Traceback" not in error
    assert done == []  # refused before the command began its work
    assert not (tmp_path / "sites.csv").exists()


def test_a_writable_place_is_not_refused_and_the_check_leaves_no_file(tmp_path):
    assert check_writable(tmp_path / "atoms.csv") == tmp_path / "atoms.csv"
    assert list(tmp_path.iterdir()) == []


# --- 2. links, devices and pipes given as the output -------------------------------------

@posix_only
def test_a_symlink_output_writes_its_target_and_stays_a_link(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    target = results / "compare.csv"
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    assert main(["compare", *_rates(tmp_path), "-o", str(link)]) == 0, capsys.readouterr().err
    assert link.is_symlink() and link.readlink() == target
    assert target.read_text().startswith("layer,n_vacuum,n_gas,")
    assert _parts(tmp_path) == _parts(results) == []


@posix_only
def test_a_dangling_symlink_output_creates_its_target(tmp_path):
    link = tmp_path / "atoms.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    with atomic_write(link) as stream:
        stream.write("frame,y,x\n")
    assert link.is_symlink() and (tmp_path / "elsewhere.csv").read_text() == "frame,y,x\n"


@posix_only
def test_a_symlink_that_loops_or_points_into_no_folder_is_refused(tmp_path):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(TEMFileError, match=r"loop\.csv: is a symbolic link that loops"):
        check_writable(loop)
    lost = tmp_path / "lost.csv"
    lost.symlink_to(tmp_path / "gone" / "atoms.csv")
    with pytest.raises(TEMFileError, match=r"lost.csv: the folder .*gone does not exist "
                                           r"\(where the link points"):
        check_writable(lost)


@posix_only
def test_a_named_pipe_output_is_written_through_not_replaced(tmp_path):
    pipe = tmp_path / "atoms.pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    with atomic_write(pipe, newline="") as stream:
        stream.write("frame,y,x\n0,1,2\n")
    reader.join(timeout=10)
    assert received == ["frame,y,x\n0,1,2\n"]
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert _parts(tmp_path) == []


@posix_only
def test_a_character_device_output_is_written_through_not_replaced(tmp_path):
    null = tmp_path / "null"
    try:  # a copy of /dev/null: a failing test must not replace the system's own
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    with atomic_write(null) as stream:
        stream.write("frame,y,x\n")
    assert stat.S_ISCHR(null.stat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)
    assert _parts(tmp_path) == []
    assert check_writable("/dev/null") == Path("/dev/null")  # `-o /dev/null` is accepted


@posix_only
def test_a_socket_output_is_refused_in_words(tmp_path, capsys):
    path = tmp_path / "s"
    if len(str(path)) > 100:
        pytest.skip("a socket path must be short")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert main(["compare", *_rates(tmp_path), "-o", str(path)]) == 1
        assert capsys.readouterr().err == f"error: -o {path}: is a socket; give a file name\n"
        assert stat.S_ISSOCK(path.stat().st_mode)


# --- 3. temporary files left by killed runs ---------------------------------------------

def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@posix_only
def test_the_temporary_file_of_a_killed_run_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "atoms.csv"
    source = str(Path(napari_tem_atoms.__file__).parents[1])
    code = ("import sys, time\n"
            "from napari_tem_atoms.io._atomic import atomic_write\n"
            f"with atomic_write({str(target)!r}) as stream:\n"
            "    stream.write('frame,y'); stream.flush(); print('writing', flush=True)\n"
            "    time.sleep(60)\n")
    killed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": source})
    try:
        assert killed.stdout.readline() == "writing\n"
    finally:
        killed.kill()
        killed.wait()
    left = _parts(tmp_path)
    assert len(left) == 1 and f".{killed.pid}." in left[0]
    with atomic_write(target) as stream:
        stream.write("frame,y,x\n")
    assert [path.name for path in tmp_path.iterdir()] == ["atoms.csv"]


@posix_only
def test_only_stale_temporary_files_of_the_same_target_are_removed(tmp_path):
    host = _atomic._host()
    stale = [f".atoms.csv.{host}.{_dead_pid()}.abcd1234.part",
             ".atoms.csv.k2j3h4g5.part"]  # the old naming, an hour old
    kept = [f".atoms.csv.{host}.{os.getpid()}.abcd1234.part",  # a write of this process
            f".atoms.csv.{host}.{os.getppid()}.abcd1234.part",  # of a running process
            f".atoms.csv.other-computer.{_dead_pid()}.abcd1234.part",  # on a shared disk
            ".atoms.csv.a1b2c3d4.part",  # the old naming, new: maybe being written
            f".sites.csv.{host}.{_dead_pid()}.abcd1234.part"]  # another target's
    for name in stale + kept:
        (tmp_path / name).write_text("half")
    hour_ago = (tmp_path / stale[1]).stat().st_mtime - 3700
    os.utime(tmp_path / stale[1], (hour_ago, hour_ago))
    with atomic_write(tmp_path / "atoms.csv") as stream:
        stream.write("frame,y,x\n")
    assert _parts(tmp_path) == sorted(kept)


# --- 4. a bad atoms CSV through `occupancy --atoms`; the scale bar of `tem-atoms view` ----

def test_a_non_numeric_coordinate_in_occupancy_atoms_is_one_line_naming_it(tmp_path, capsys):
    video = tmp_path / "video.npy"
    np.save(video, np.random.default_rng(0).random((3, 32, 32)).astype(np.float32))
    atoms = tmp_path / "atoms.csv"
    atoms.write_text("frame,y,x,y_angstrom,x_angstrom\n0,1,2,0.1,0.2\n1,3,4,oops,0.4\n")
    output = tmp_path / "sites.csv"
    assert main(["occupancy", str(video), "--atoms", str(atoms), "--sampling", "0.1",
                 "-o", str(output)]) == 1
    assert capsys.readouterr().err == (f"error: {atoms}: the y_angstrom column must be numbers: "
                                       "line 3 has 'oops'\n")
    assert not output.exists()


@pytest.mark.gui
def test_view_puts_the_scale_bar_where_notifications_do_not_cover_it(make_napari_viewer,
                                                                       monkeypatch):
    import napari
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from napari.utils.notifications import Notification

    viewer = make_napari_viewer(show=True)
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda: None)
    assert main(["view"]) == 0
    scale_bar = viewer.canvas.overlays.scale_bar if hasattr(viewer, "canvas") else (
        viewer.scale_bar)
    assert scale_bar.visible
    vertical, side = str(getattr(scale_bar.position, "value", scale_bar.position)).split("_")
    # Where napari puts a notification: the bottom right corner of the canvas.
    canvas = viewer.window._qt_viewer.canvas.native
    toast = NapariQtNotification.from_notification(Notification("Detect: 1,174 atoms"), canvas)
    try:
        toast.move_to_bottom_right()
        centre = toast.geometry().center()
        toast_side = "left" if centre.x() < canvas.width() / 2 else "right"
        toast_vertical = "top" if centre.y() < canvas.height() / 2 else "bottom"
    finally:
        toast.close()
    assert (vertical, toast_vertical) == ("bottom", "bottom")  # the checks below mean something
    assert side != toast_side


# --- 5. Live mode: a folder of frames without a pixel size is refused at Start -----------

@pytest.mark.gui
def test_live_start_is_refused_when_the_folder_s_frames_have_no_pixel_size(
        make_napari_viewer, tmp_path, monkeypatch, qtbot):
    import napari_tem_atoms.napari._live_widget as module

    shown = []
    monkeypatch.setattr(module, "show_error", shown.append)
    for index in (10, 2):  # frame_2 comes first in natural order
        np.save(tmp_path / f"frame_{index}.npy", np.ones((64, 64), np.float32) * index)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-tem-atoms", "Live mode")
    widget.folder.value = tmp_path
    widget.start()
    assert widget.worker is None  # refused before the session (and the model) started
    assert len(shown) == 1 and shown[0].startswith(
        f"Live mode: frame_2.npy in {tmp_path} carries no pixel size (")
    assert "type it in 'Pixel size'" in shown[0]
    widget.sampling.value = 0.12  # typed: the same folder is watched
    widget.start()
    try:
        assert widget.worker is not None and len(shown) == 1
    finally:
        widget.stop()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)


@pytest.mark.gui
def test_live_start_is_not_refused_for_calibrated_or_no_frames(make_napari_viewer, tmp_path,
                                                                monkeypatch, qtbot):
    import tifffile

    import napari_tem_atoms.napari._live_widget as module

    assert module._pixel_size_refusal(tmp_path) is None  # empty: frames are checked as they come
    (tmp_path / "notes.txt").write_text("not a frame")
    tifffile.imwrite(tmp_path / "frame_0.tif", np.ones((64, 64), np.float32), imagej=True,
                     resolution=(1 / 0.012, 1 / 0.012), metadata={"unit": "nm"})
    assert module._pixel_size_refusal(tmp_path) is None
    np.save(tmp_path / "frame_1.npy", np.ones((64, 64), np.float32))  # later in order: not read
    assert module._pixel_size_refusal(tmp_path) is None


# --- 6. the Occupancy plots readable in a 1600 x 1000 window with every dock ------------

@pytest.mark.gui
def test_the_occupancy_plots_have_room_with_every_dock_open(make_napari_viewer, qtbot):
    # Docked under the plugin's tabbed widgets, the plots had their minimum height (380 px):
    # the two scatter panels 95 px each, the timeline 76 px.
    from napari_tem_atoms.analysis.occupancy import site_occupancy
    from napari_tem_atoms.cli import PLUGIN_NAME, _dock_plugin_widgets
    from napari_tem_atoms.samples import synthetic_gold_stack

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    occupancy = viewer.window.dock_widgets["Occupancy (napari-tem-atoms)"]
    stack = synthetic_gold_stack()
    occupancy.result = site_occupancy(stack.columns[["frame", "y", "x"]], len(stack.images),
                                      sampling=stack.sampling)
    tabs = occupancy.native.parent()  # its dock, in front as after a run
    tabs.raise_()
    occupancy._show_plot()
    plot = occupancy.plot
    qtbot.waitUntil(lambda: plot.height() >= 560, timeout=5000)
    qtbot.waitUntil(lambda: plot.canvas.height() == plot.height(), timeout=5000)
    plot.canvas.draw()
    heights = [axes.get_window_extent().height / plot.canvas.device_pixel_ratio
               for axes in (plot.occupancy_axes, plot.rate_axes, plot.timeline_axes)]
    assert min(heights[:2]) >= 150 and heights[2] >= 120, heights
    # The widgets above keep a usable strip (they scroll), and the image keeps its canvas.
    assert not tabs.visibleRegion().isEmpty() and tabs.height() >= 200, tabs.height()
    assert min(viewer.window._qt_viewer.canvas.size) >= 600
