"""Batch jobs: the frames of a lazy stack, one job each."""

from __future__ import annotations

from dataclasses import replace

import dask
import dask.array as da
import numpy as np
import tifffile

from conftest import IMAGE
from napari_tem_atoms import read_image
from napari_tem_atoms.batch import frame_jobs


def _tiff_stack(path, frames: int):
    tifffile.imwrite(path, data=(IMAGE + k for k in range(frames)),
                     shape=(frames, *IMAGE.shape), dtype=np.float32, photometric="minisblack")
    return read_image(path, lazy=True)


def test_a_frame_of_a_lazy_stack_carries_only_its_own_tasks(tmp_path):
    short, long = _tiff_stack(tmp_path / "short.tif", 4), _tiff_stack(tmp_path / "long.tif", 40)
    short_jobs, long_jobs = frame_jobs([short], 0.1), frame_jobs([long], 0.1)
    assert len(long_jobs) == 40
    tasks = {len(dict(job.data.__dask_graph__())) for job in short_jobs + long_jobs}
    assert len(tasks) == 1 and tasks.pop() < 10  # the same few tasks, however long the stack
    for job in long_jobs[::7]:
        np.testing.assert_allclose(np.asarray(job.data), IMAGE + job.frame)


def test_frames_of_a_stack_chunked_across_frames_and_pixels(tmp_path):
    stack = np.arange(7 * 6 * 10, dtype=np.float32).reshape(7, 6, 10)
    lazy = replace(_tiff_stack(tmp_path / "stack.tif", 2), data=da.from_array(stack, (3, 4, 5)))
    jobs = frame_jobs([lazy], 0.1)
    assert [job.frame for job in jobs] == list(range(7))
    for job in jobs:
        np.testing.assert_array_equal(np.asarray(job.data), stack[job.frame])


def test_lazy_tiff_pages_read_by_many_threads_at_once(tmp_path):
    image = _tiff_stack(tmp_path / "stack.tif", 64)
    with dask.config.set(scheduler="threads", num_workers=8):
        pages = np.asarray(image.data)
    np.testing.assert_allclose(pages, IMAGE[None] + np.arange(64)[:, None, None])


def test_a_tiff_written_again_under_its_name_is_read_anew(tmp_path):
    first = _tiff_stack(tmp_path / "run.tif", 3)
    np.testing.assert_allclose(np.asarray(first.data[2]), IMAGE + 2)
    tifffile.imwrite(tmp_path / "run.tif", data=(IMAGE * 2 + k for k in range(5)),
                     shape=(5, *IMAGE.shape), dtype=np.float32, photometric="minisblack")
    again = read_image(tmp_path / "run.tif", lazy=True)
    np.testing.assert_allclose(np.asarray(again.data[4]), IMAGE * 2 + 4)
