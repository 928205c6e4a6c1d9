"""Batch detection over many files and frames, on this machine or on a Dask cluster.

Frames are read lazily (a chunk per frame), so a stack larger than memory is processed with
bounded memory. Locally, frames run one after another (PyTorch uses every core for each);
with a ``dask.distributed`` scheduler address, each frame is a task on the cluster. Both paths
run the same function on the same frames, so the results are identical.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .analysis.detect import iter_detect_atoms
from .analysis.modes import choose_model
from .errors import TEMAtomsError
from .events import Events, Progress, ignore, run, warn
from .io import TEMImage
from .models import load_cached_model

__all__ = ["SCHEDULER_TIMEOUT_S", "FrameJob", "detect_frame", "frame_jobs", "iter_jobs",
           "run_jobs"]

#: Seconds a Dask scheduler has to answer before the run is refused. Dask's own client waits
#: for ever on a port that accepts the connection and says nothing (a hung scheduler, a
#: firewall or tunnel that holds connections open). The environment variable
#: ``NAPARI_TEM_ATOMS_SCHEDULER_TIMEOUT`` (seconds) or ``run_jobs(scheduler_timeout=...)`` sets
#: another.
SCHEDULER_TIMEOUT_S = 10.0
_SCHEDULER_TIMEOUT_VARIABLE = "NAPARI_TEM_ATOMS_SCHEDULER_TIMEOUT"

def detect_frame(frame: np.ndarray, model: str, sampling: float, threshold: float | None,
                 device: str | None = None, average_mirrors: bool = False,
                 cs: float | None = None, defocus: float | None = None,
                 precision: str | None = "auto", engine: str | None = "auto",
                 imaging_mode: str = "unknown") -> pd.DataFrame:
    """Detect the columns of one 2-D frame: (y, x, confidence) in the frame's pixels.

    `model` ``"auto"`` takes the model for `imaging_mode` (see
    :func:`~.analysis.modes.choose_model`); the mode also decides whether a STEM model sees the
    frame negated (ABF/BF). The frame's notices (a pixel size outside the trained range, a
    defocus that barely transfers the lattice, a model out of its imaging mode) are dropped:
    they are its file's, said once per file by whoever makes the jobs (``tem-atoms detect``
    does, from :func:`~.analysis.detect.sampling_warning`,
    :func:`~.analysis.transfer.model_optics` and :func:`~.analysis.detect.domain_warning`),
    not once per frame, and a frame on a cluster worker has no one to say them to.
    """
    if model == "auto":
        model = choose_model(imaging_mode)[0]
    loaded = load_cached_model(model, device, precision, engine)
    atoms = run(iter_detect_atoms(np.asarray(frame), loaded, sampling=sampling,
                                  threshold=threshold, average_mirrors=average_mirrors, cs=cs,
                                  defocus=defocus, imaging_mode=imaging_mode), on_event=ignore)
    return atoms.drop(columns="frame")


@dataclass
class FrameJob:
    """One frame to analyse: which image it belongs to, its index, lazy data and sampling."""

    image: int
    frame: int
    data: Any
    sampling: float
    path: str = ""
    imaging_mode: str = "unknown"


def frame_jobs(images: Sequence[TEMImage], sampling: float | None = None) -> list[FrameJob]:
    """Split images into per-frame jobs; `sampling` overrides the files' pixel sizes."""
    jobs = []
    for number, image in enumerate(images):
        size = sampling or image.pixel_size_angstrom
        if size is None:
            raise TEMAtomsError(f"{image.path}: {image.calibration.note}; give the pixel size "
                                "with --sampling Å/px")
        if image.data.ndim not in (2, 3):
            raise TEMAtomsError(f"{image.path}: {image.data.ndim}-D data: an image or a stack "
                                "of images is needed")
        frames = [image.data] if image.data.ndim == 2 else _frames(image.data)
        jobs.extend(FrameJob(number, i, frame, float(size), str(image.path),
                             image.imaging_mode) for i, frame in enumerate(frames))
    return jobs


def _frames(stack: Any) -> list[Any]:
    """The frames of a (frame, y, x) stack; of a lazy (dask) stack, each reading its own chunk.

    A slice of a dask stack keeps the whole stack's task graph, and computing it optimises all
    of that graph again: 0.21 s per frame of a 2000-frame TIFF, growing with the stack. Here the
    graph is optimised once and each frame keeps only the tasks of its own chunk (stacks of
    one frame per chunk, as the TIFF, NPY and folder readers make them).
    """
    import dask.array as da

    one_frame_per_chunk = isinstance(stack, da.Array) and set(stack.chunks[0]) == {1}
    if not one_frame_per_chunk or np.isnan(stack.shape).any():
        # Numpy arrays; chunks of several frames (a frame cut from its chunk's copy would read
        # the whole chunk per frame); unknown chunk sizes.
        return [stack[i] for i in range(int(stack.shape[0]))]
    from dask.delayed import Delayed
    from dask.optimization import cull

    blocks = stack.to_delayed(optimize_graph=True)
    graph = dict(blocks.flat[0].__dask_graph__())  # the stack's one optimised graph

    def chunk(index: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
        key = blocks[index].key
        return da.from_delayed(Delayed(key, cull(graph, [key])[0]), shape, stack.dtype)

    return [da.block([[chunk((c, j, k), (1, rows, cols)) for k, cols in enumerate(stack.chunks[2])]
                      for j, rows in enumerate(stack.chunks[1])])[0]
            for c in range(len(stack.chunks[0]))]


def run_jobs(jobs: Sequence[FrameJob], model: str, threshold: float | None,
             scheduler: str | None = None, device: str | None = None,
             on_done: Callable[[FrameJob], None] | None = None,
             average_mirrors: bool = False, cs: float | None = None,
             defocus: float | None = None, precision: str | None = "auto",
             engine: str | None = "auto", errors: str = "raise",
             scheduler_timeout: float | None = None,
             ) -> list[pd.DataFrame | TEMAtomsError]:
    """Run every job; return one table per job (same order), each with its frame index.

    The plain form of :func:`iter_jobs` (same parameters); `on_done` is called with each
    finished job (in completion order).
    """
    def on_event(event: Any) -> None:
        if isinstance(event, Progress):
            if on_done is not None and event.item is not None:
                on_done(event.item)
        else:
            warn(event)

    return run(iter_jobs(jobs, model, threshold, scheduler, device, average_mirrors, cs,
                         defocus, precision, engine, errors, scheduler_timeout), on_event)


def iter_jobs(jobs: Sequence[FrameJob], model: str, threshold: float | None,
              scheduler: str | None = None, device: str | None = None,
              average_mirrors: bool = False, cs: float | None = None,
              defocus: float | None = None, precision: str | None = "auto",
              engine: str | None = "auto", errors: str = "raise",
              scheduler_timeout: float | None = None
              ) -> Events[list[pd.DataFrame | TEMAtomsError]]:
    """Run every job: yield a ``Progress("detect", jobs done, jobs, job)`` as each finishes.

    A ``Progress("detect", 0, jobs)`` comes first, before the first frame (which on a cluster
    may wait for the workers to load the model). Returns one table per job (same order), each
    with its frame index.

    Parameters
    ----------
    jobs : sequence of FrameJob
        From :func:`frame_jobs`.
    model : str
        Registered model name or weights path (each cluster worker loads it once); ``"auto"``:
        each job's model from its imaging mode.
    threshold : float or None
        Confidence threshold (None: the model's own).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler (``tcp://host:8786``); default: here.
    device : str, optional
        ``cpu`` or ``cuda``.
    average_mirrors : bool, optional
        Average the maps of each frame and its mirror images (see ``detect_atoms``).
    cs, defocus : float, optional
        Imaging conditions [Å] for a model that takes them (see ``detect_atoms``; whether
        they transfer the lattice is not checked here: see :mod:`.analysis.transfer`).
    precision, engine : str, optional
        How each worker runs the network (``auto``: chosen by each worker's own processor,
        see ``detect_atoms``).
    errors : {"raise", "collect"}, optional
        ``"raise"``: the first frame that fails stops the run (TEMAtomsError naming it);
        ``"collect"``: the other frames go on, and a failed frame's entry in the list is the
        TEMAtomsError that says why, naming its file and frame.
    scheduler_timeout : float, optional
        Seconds the scheduler has to answer (default :data:`SCHEDULER_TIMEOUT_S`, or the
        environment variable ``NAPARI_TEM_ATOMS_SCHEDULER_TIMEOUT``).

    Raises
    ------
    TEMAtomsError
        A frame failed (with ``errors="raise"``), or `scheduler` is not a scheduler's address
        or cannot be reached.
    """
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', not {errors!r}")

    def where(job: FrameJob) -> str:
        return f"{job.path}, frame {job.frame}" if job.path else f"frame {job.frame}"

    def finish(job: FrameJob, table: pd.DataFrame | TEMAtomsError
               ) -> pd.DataFrame | TEMAtomsError:
        return table if isinstance(table, TEMAtomsError) else table.assign(frame=job.frame)

    def failure(job: FrameJob, exc: BaseException) -> TEMAtomsError:
        if isinstance(exc, TEMAtomsError):
            return TEMAtomsError(f"{where(job)}: {exc}")
        # Not one of ours (a frame the reader cannot decode, ...): said with its type.
        return TEMAtomsError(f"{where(job)}: {type(exc).__name__}: {exc}")

    def local(job: FrameJob) -> pd.DataFrame | TEMAtomsError:
        try:
            return detect_frame(np.asarray(job.data), model, job.sampling, threshold, device,
                                average_mirrors, cs, defocus, precision, engine,
                                job.imaging_mode)
        except TEMAtomsError as exc:
            if errors == "raise":
                raise failure(job, exc) from None
            return failure(job, exc)
        except Exception as exc:
            if errors == "raise":
                raise
            return failure(job, exc)

    yield Progress("detect", 0, len(jobs))
    if scheduler is None:
        finished = []
        for job in jobs:
            finished.append(finish(job, local(job)))
            yield Progress("detect", len(finished), len(jobs), job)
        return finished

    import dask
    from dask.distributed import as_completed

    client = _connect(scheduler, scheduler_timeout)
    with client:
        tasks = [dask.delayed(detect_frame)(job.data, model, job.sampling, threshold, device,
                                            average_mirrors, cs, defocus, precision, engine,
                                            job.imaging_mode)
                 for job in jobs]
        futures = client.compute(tasks)
        index = {future.key: i for i, future in enumerate(futures)}
        results: list[pd.DataFrame | TEMAtomsError | None] = [None] * len(jobs)
        for done, future in enumerate(as_completed(futures), start=1):
            i = index[future.key]
            if future.status == "error":  # as the local run: ours named, others as they are
                exc = future.exception()
                if errors == "raise" and isinstance(exc, TEMAtomsError):
                    raise failure(jobs[i], exc) from None
                if errors == "collect":
                    results[i] = finish(jobs[i], failure(jobs[i], exc))
                    future.release()
                    yield Progress("detect", done, len(jobs), jobs[i])
                    continue
            results[i] = finish(jobs[i], future.result())
            future.release()
            yield Progress("detect", done, len(jobs), jobs[i])
    return results  # type: ignore[return-value]


#: A scheduler's address as ``dask scheduler`` prints it: tcp://host:port, tls://..., or
#: host:port (tcp); an IPv6 host in brackets.
_SCHEDULER_ADDRESS = re.compile(
    r"(?:(?:tcp|tls|ucx|ws|wss)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*)"
    r":(?P<port>[0-9]{1,5})")


def _scheduler_timeout(timeout: float | None) -> float:
    """`timeout`, else the environment variable, else :data:`SCHEDULER_TIMEOUT_S` [s]."""
    if timeout is None:
        value = os.environ.get(_SCHEDULER_TIMEOUT_VARIABLE, "").strip()
        try:
            timeout = float(value) if value else SCHEDULER_TIMEOUT_S
        except ValueError:
            raise TEMAtomsError(f"{_SCHEDULER_TIMEOUT_VARIABLE}={value!r} is not a number of "
                                "seconds (e.g. 30)") from None
    if not timeout > 0:  # also NaN
        raise TEMAtomsError(f"the scheduler timeout must be above 0 s, not {timeout}")
    return float(timeout)


def _scheduler_answers(address: str, timeout: float) -> None:
    """Open one connection to `address` and wait for its handshake, at most `timeout` s.

    Dask's client connects with a timeout, but then reads the scheduler's handshake without
    one: a port that accepts and never answers held ``Client(address)`` for ever (its own
    ``timeout`` included). Run in a thread of its own: the caller may be in a running event
    loop (Jupyter).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect
    from distributed.security import Security

    async def probe() -> None:
        arguments = Security().get_connection_args("client")
        # Dask's connect gives up on a closed port after `timeout` (OSError, said as such);
        # the margin leaves it that case, and ends a handshake that never comes.
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **arguments),
                                      timeout + 2.0)
        await comm.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, probe()).result()


def _connect(scheduler: str, timeout: float | None = None) -> Any:
    """A dask.distributed client of the scheduler at `scheduler`, or TEMAtomsError in words.

    The address is checked first: ``Client`` given something else fails with errors that do
    not name it (``ValueError``, ``TypeError``...). A port answered by another kind of server
    (a web server) gives a ``MemoryError``: its reply is read as the length of a message of
    exabytes. A port that never answers is given up after `timeout` seconds (see
    :data:`SCHEDULER_TIMEOUT_S`).
    """
    expected = ("give the address the scheduler prints when it starts: tcp://host:port (or "
                "tls://host:port, or host:port)")
    address = scheduler.strip()
    match = _SCHEDULER_ADDRESS.fullmatch(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise TEMAtomsError(f"scheduler {scheduler!r} is not a Dask scheduler's address; "
                            f"{expected}")
    timeout = _scheduler_timeout(timeout)
    import dask
    from dask.distributed import Client

    # A Client that fails half-way through connecting (a web server on that port) has already
    # made itself dask's default scheduler: every later dask computation in the process then
    # asked for a client that did not exist. The setting is put back on failure.
    previous = dask.config.get("scheduler", None)
    try:
        _scheduler_answers(address, timeout)
        return Client(address, timeout=timeout)
    except Exception as exc:  # OSError, TimeoutError, ValueError, TypeError, MemoryError...
        if previous is None:
            dask.config.config.pop("scheduler", None)
        else:
            dask.config.set(scheduler=previous)
        if isinstance(exc, TimeoutError):
            raise TEMAtomsError(
                f"the Dask scheduler at {address} did not answer within {timeout:g} s (the "
                f"port accepts connections but nothing answers on it: is the scheduler hung, "
                f"or does something else, a tunnel or a firewall, hold the port?); "
                f"{expected}. On a slow network, set {_SCHEDULER_TIMEOUT_VARIABLE} to more "
                f"seconds") from None
        if isinstance(exc, MemoryError):
            raise TEMAtomsError(
                f"{address} answered, but not as a Dask scheduler (another kind of server uses "
                f"that port?); {expected}") from None
        raise TEMAtomsError(
            f"cannot connect to a Dask scheduler at {address} ({type(exc).__name__}: {exc}): "
            f"is the scheduler running, and reachable from here? {expected}") from None
