"""Batch jobs: the frames of a lazy stack, one job each."""

from __future__ import annotations

import http.server
import threading
from dataclasses import replace

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import IMAGE
from napari_tem_atoms import TEMAtomsError, batch, read_image
from napari_tem_atoms.batch import FrameJob, frame_jobs, run_jobs


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


def _jobs(frames: int = 1) -> list[FrameJob]:
    return [FrameJob(0, k, IMAGE + k, 0.2, "stack.npy") for k in range(frames)]


@pytest.mark.parametrize("address", ["not a url", "http://127.0.0.1:8786", "tcp://host",
                                     "tcp://host:99999", "host:port", ""])
def test_a_scheduler_address_of_another_form_is_refused_in_words(address):
    with pytest.raises(TEMAtomsError, match="is not a Dask scheduler's address; give the "
                       "address the scheduler prints when it starts: tcp://host:port"):
        run_jobs(_jobs(), "au-hrtem", None, scheduler=address)


class _BadRequest(http.server.BaseHTTPRequestHandler):
    """Answers anything with 400 Bad Request at once, as web servers answer a Dask handshake.

    (http.server's own handler waits for a line end, which a Dask handshake has none of: the
    client would wait for ever.)
    """

    def handle_one_request(self):
        self.rfile.read1(65536)
        self.requestline, self.request_version, self.command = "", "HTTP/1.0", None
        self.send_error(400, "Bad request")
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def web_server():
    """A web server on a free port of this computer: not a Dask scheduler."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadRequest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_scheduler_port_answered_by_a_web_server_is_said_in_words(web_server):
    address = f"tcp://127.0.0.1:{web_server}"
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}), pytest.raises(
            TEMAtomsError) as caught:
        run_jobs(_jobs(), "au-hrtem", None, scheduler=address)
    assert str(caught.value).startswith(  # not "MemoryError: Unable to allocate 3.01 EiB"
        f"{address} answered, but not as a Dask scheduler (another kind of server uses that "
        "port?); give the address the scheduler prints when it starts: tcp://host:port")


def _fake_detect(frame, *args):
    """detect_frame's stand-in: frame 1 has a hole, frame 2 cannot be decoded."""
    offset = float(np.asarray(frame)[0, 0] - IMAGE[0, 0])
    if offset == 1:
        raise TEMAtomsError("the image holds NaN")
    if offset == 2:
        raise ValueError("buffer is smaller than requested size")
    return pd.DataFrame({"y": [offset], "x": [2.0], "confidence": [0.9]})


def test_collected_failures_leave_the_other_frames_done(monkeypatch):
    monkeypatch.setattr(batch, "detect_frame", _fake_detect)
    done = []
    results = run_jobs(_jobs(4), "au-hrtem", None, on_done=done.append, errors="collect")
    assert len(done) == 4  # failed frames count as finished for a progress bar
    assert [type(result).__name__ for result in results] == [
        "DataFrame", "TEMAtomsError", "TEMAtomsError", "DataFrame"]
    assert str(results[1]) == "stack.npy, frame 1: the image holds NaN"
    assert str(results[2]) == ("stack.npy, frame 2: ValueError: buffer is smaller than "
                               "requested size")
    assert results[3].frame.tolist() == [3] and results[3].y.tolist() == [3.0]
    with pytest.raises(TEMAtomsError, match=r"stack\.npy, frame 1: the image holds NaN"):
        run_jobs(_jobs(4), "au-hrtem", None, errors="raise")


def test_collected_failures_on_a_cluster(monkeypatch):
    from dask.distributed import LocalCluster

    monkeypatch.setattr(batch, "detect_frame", _fake_detect)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      protocol="tcp://", dashboard_address=None) as cluster:
        results = run_jobs(_jobs(4), "au-hrtem", None, scheduler=cluster.scheduler_address,
                           errors="collect")
        with pytest.raises(TEMAtomsError, match=r"stack\.npy, frame 1: the image holds NaN"):
            run_jobs(_jobs(2), "au-hrtem", None, scheduler=cluster.scheduler_address)
    assert str(results[1]) == "stack.npy, frame 1: the image holds NaN"
    assert str(results[2]).startswith("stack.npy, frame 2: ValueError: ")
    assert [results[k].frame.tolist() for k in (0, 3)] == [[0], [3]]


def test_the_jobs_report_progress_from_zero(monkeypatch):
    from napari_tem_atoms.batch import iter_jobs
    from napari_tem_atoms.events import run

    monkeypatch.setattr(batch, "detect_frame", _fake_detect)
    progress = []
    results = run(iter_jobs(_jobs(4), "au-hrtem", None, errors="collect"), progress.append)
    assert [(event.stage, event.done, event.total) for event in progress] == [
        ("detect", done, 4) for done in range(5)]  # a bar at 0 % while the first frame runs
    assert [event.item.frame for event in progress[1:]] == [0, 1, 2, 3]
    assert len(results) == 4
