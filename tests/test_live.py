"""Live mode core: the folder watcher never reads a file half-way; the queue keeps up."""

from __future__ import annotations

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
