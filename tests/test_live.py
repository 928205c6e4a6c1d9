"""Live mode core: the folder watcher never reads a file half-way; the queue keeps up."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from napari_tem_atoms import TEMFileError
from napari_tem_atoms.live import FolderWatcher, FrameQueue, LiveStatistics


def _write(path, value=1.0):
    tifffile.imwrite(path, np.full((32, 32), value, np.float32))


def test_existing_files_are_skipped_and_new_ones_reported_once(tmp_path):
    _write(tmp_path / "old.tif")
    watcher = FolderWatcher(tmp_path, settle_seconds=0.2)
    _write(tmp_path / "frame_2.tif", 2)
    _write(tmp_path / "frame_10.tif", 10)
    (tmp_path / "notes.txt").write_text("ignored")
    assert watcher.poll(now=0.0) == []  # first sight: size recorded, not yet settled
    assert watcher.poll(now=0.1) == []
    ready = watcher.poll(now=0.3)
    assert [p.name for p in ready] == ["frame_2.tif", "frame_10.tif"]
    assert watcher.poll(now=1.0) == []


def test_a_file_written_slowly_is_read_only_when_complete(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.2)
    whole = tmp_path / "whole.tif"
    _write(whole, 5)
    content = whole.read_bytes()
    whole.unlink()
    growing = tmp_path / "growing.tif"
    clock = 0.0
    for end in range(0, len(content), len(content) // 4):  # written in four pieces
        growing.write_bytes(content[: end + len(content) // 4])
        assert watcher.poll(now=clock) == []
        clock += 0.15  # each piece lands before the file can settle
    assert watcher.poll(now=clock + 0.3) == [growing]


def test_complete_files_are_read_and_damaged_ones_reported(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.0)
    _write(tmp_path / "good.tif", 3)
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    watcher.poll(now=0.0)
    images = watcher.read_ready(now=1.0)
    assert [p.name for p, _ in images] == ["good.tif"]
    assert float(images[0][1].data.mean()) == 3.0
    [error] = watcher.failed
    assert "bad.tif: not a readable TIFF file" in str(error)


def test_empty_files_wait(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.0)
    (tmp_path / "empty.tif").write_bytes(b"")
    watcher.poll(now=0.0)
    assert watcher.poll(now=5.0) == []


def test_watching_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(TEMFileError, match="no such folder to watch"):
        FolderWatcher(tmp_path / "absent")


def test_queue_keeps_up_by_skipping_to_the_newest():
    statistics = LiveStatistics()
    queue = FrameQueue(keep_up=True, statistics=statistics)
    for frame in range(5):
        queue.put(frame)
    assert queue.take() == 4
    assert statistics.skipped == 4
    assert queue.take() is None
    assert "skipped 4" in statistics.describe(backlog=0)


def test_queue_without_keep_up_analyses_everything_in_order():
    queue = FrameQueue(keep_up=False, statistics=LiveStatistics())
    for frame in range(3):
        queue.put(frame)
    assert [queue.take() for _ in range(3)] == [0, 1, 2]
    assert len(queue) == 0


def test_statistics_rate():
    statistics = LiveStatistics()
    for second in range(5):
        statistics.frame_done(now=float(second) / 2)
    assert statistics.frames_per_second == pytest.approx(2.0)
    assert statistics.describe(backlog=3).startswith("5 frames analysed, 2.0 frames/s, backlog 3")


def _tiff_bytes(tmp_path, value=5.0, shape=(64, 64)):
    scratch = tmp_path / ".scratch.tif"  # hidden: never a candidate
    image = np.full(shape, value, np.float32)
    image[0, 0] = 0  # not blank: see test_a_memory_mapped_npy_is_not_taken_for_a_blank_frame
    tifffile.imwrite(scratch, image)
    content = scratch.read_bytes()
    scratch.unlink()
    return content


def _written_later(path, seconds=1):
    status = path.stat()  # as a camera writing the next frame would leave it
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + seconds * 10**9))


def test_a_file_whose_writer_paused_is_read_once_complete(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.2)
    content = _tiff_bytes(tmp_path)
    frame = tmp_path / "frame.tif"
    frame.write_bytes(content[: len(content) // 2])  # the writer pauses 0.6 s here
    assert watcher.read_ready(now=0.0) == []
    assert watcher.read_ready(now=0.3) == []  # settled but unreadable: given more time
    assert watcher.failed == []
    frame.write_bytes(content)  # the rest lands after the pause
    assert watcher.read_ready(now=0.6) == []  # changed: settles again
    [(path, image)] = watcher.read_ready(now=0.85)
    assert path == frame and float(image.data[-1, -1]) == 5.0
    assert watcher.failed == []
    assert watcher.read_ready(now=5.0) == []


def test_an_unreadable_file_is_given_up_once_and_read_again_when_it_changes(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.2)  # gives up after 5 × 0.2 s
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    assert watcher.read_ready(now=0.0) == []
    assert watcher.read_ready(now=0.3) == []
    assert watcher.read_ready(now=0.9) == [] and watcher.failed == []
    assert watcher.read_ready(now=1.1) == []
    [error] = watcher.failed
    assert "bad.tif: not a readable TIFF file" in str(error)
    assert watcher.read_ready(now=9.0) == [] and len(watcher.failed) == 1  # said once
    bad.write_bytes(_tiff_bytes(tmp_path, 7.0))  # written again, whole this time
    assert watcher.read_ready(now=10.0) == []
    [(path, image)] = watcher.read_ready(now=10.3)
    assert path == bad and float(image.data[-1, -1]) == 7.0


def test_a_memory_mapped_npy_is_not_taken_for_a_blank_frame(tmp_path):
    from numpy.lib.format import open_memmap

    watcher = FolderWatcher(tmp_path, settle_seconds=0.2)
    frame = tmp_path / "frame.npy"
    mapped = open_memmap(frame, mode="w+", dtype=np.float32, shape=(32, 32))  # header, zeros
    mapped.flush()
    assert watcher.read_ready(now=0.0) == []
    assert watcher.read_ready(now=0.3) == []  # settled, but every pixel is 0: maybe not written
    mapped[:] = np.arange(32 * 32).reshape(32, 32) + 4.0  # the pixels, 0.1 s later
    mapped.flush()
    del mapped
    _written_later(frame)  # as writing through the map does, at a clock's resolution
    assert watcher.read_ready(now=0.4) == []  # changed: settles again
    [(path, image)] = watcher.read_ready(now=0.65)
    assert path == frame and float(image.data.min()) == 4.0
    # A frame that is blank for good is reported once it stayed unchanged for 3 × settle.
    np.save(tmp_path / "blank.npy", np.zeros((32, 32), np.float32))
    assert watcher.read_ready(now=1.0) == []
    assert watcher.read_ready(now=1.3) == []
    [(path, image)] = watcher.read_ready(now=1.7)
    assert path.name == "blank.npy" and not image.data.any()


def test_a_file_written_again_under_a_reported_name_is_a_new_frame(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.0)
    frame = tmp_path / "frame.tif"
    _write(frame, 1)
    watcher.poll(now=0.0)
    assert [p.name for p, _ in watcher.read_ready(now=1.0)] == ["frame.tif"]
    _write(frame, 2)  # overwritten in place, same size
    _written_later(frame)
    watcher.poll(now=2.0)
    [(_, image)] = watcher.read_ready(now=3.0)
    assert float(image.data.mean()) == 2.0
    frame.unlink()  # deleted, and a new file written under the name
    _write(frame, 3)
    _written_later(frame, 2)
    watcher.poll(now=4.0)
    [(_, image)] = watcher.read_ready(now=5.0)
    assert float(image.data.mean()) == 3.0
    assert watcher.read_ready(now=6.0) == []


def test_a_renamed_file_is_reported_once(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.0)
    temporary = tmp_path / "x.tmp"
    _write(temporary, 1)
    temporary.rename(tmp_path / "x.tif")  # written under a temporary name, then renamed
    watcher.poll(now=0.0)
    assert [p.name for p, _ in watcher.read_ready(now=1.0)] == ["x.tif"]
    (tmp_path / "x.tif").rename(tmp_path / "frame_2.tif")  # renamed to another frame name
    watcher.poll(now=2.0)
    assert watcher.read_ready(now=3.0) == []
    assert watcher.poll(now=4.0) == []


def test_links_that_cannot_be_followed_are_skipped(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.0)
    (tmp_path / "loop.tif").symlink_to(tmp_path / "loop.tif")
    (tmp_path / "broken.tif").symlink_to(tmp_path / "missing.tif")
    _write(tmp_path / "good.tif", 3)
    watcher.poll(now=0.0)
    assert [p.name for p, _ in watcher.read_ready(now=1.0)] == ["good.tif"]
    assert watcher.read_ready(now=2.0) == []
    assert sorted(os.path.basename(error.path) for error in watcher.failed) == [
        "broken.tif", "loop.tif"]  # said once each
    assert all("a link that cannot be followed" in str(error) for error in watcher.failed)


def test_a_burst_of_files_is_read_a_few_at_a_time_in_natural_order(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_seconds=0.0)
    for k in range(1, 21):
        _write(tmp_path / f"frame_{k}.tif", k)
    watcher.poll(now=0.0)
    batches = [watcher.read_ready(now=1.0 + i, max_files=8) for i in range(4)]
    assert [len(batch) for batch in batches] == [8, 8, 4, 0]
    names = [path.name for batch in batches for path, _ in batch]
    assert names == [f"frame_{k}.tif" for k in range(1, 21)]
    assert [float(image.data.mean()) for batch in batches for _, image in batch] == list(
        range(1, 21))
