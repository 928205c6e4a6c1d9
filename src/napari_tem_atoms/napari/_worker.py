"""Run and Cancel around one napari thread worker, shared by the analysis dock widgets.

The core's generators (``iter_…``) run in the worker and report through tagged tuples, so that
the widget touches layers only in the main thread: ``("step", step)`` per step, then
``("done", result)``, or ``("error", message)`` for bad input (a :class:`TEMAtomsError`, in plain
words; anything else is a bug and reaches napari's own error handler with its traceback).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

from magicgui.widgets import ProgressBar

from ..errors import TEMAtomsError


def tagged_steps(steps: Iterator[Any]) -> Generator[tuple[str, Any], None, None]:
    """Run a core generator to its end, tagging what it yields and returns (see module doc)."""
    try:
        while True:
            yield ("step", next(steps))
    except StopIteration as stop:
        yield ("done", stop.value)
    except TEMAtomsError as exc:
        yield ("error", str(exc))


def make_progress_bar() -> ProgressBar:
    """The progress bar a `WorkerRunner` widget shows under its Run and Cancel buttons."""
    return ProgressBar(value=0, min=0, max=1, label="Progress",
                       tooltip="Steps done in the current run")


class WorkerRunner:
    """Run and Cancel for a magicgui ``Container``: one worker at a time, with progress.

    The container has ``run_button``, ``cancel_button``, ``status`` and ``progress_bar`` (from
    :func:`make_progress_bar`). Run is disabled and Cancel enabled while the worker runs.
    Progress shows in the widget's own bar, next to the buttons that started it, not in
    napari's activity dock: an open napari progress bar animates a spinner in the status bar,
    and under software OpenGL (virtual machines, remote desktops) every spinner frame
    re-composites the whole window. Measured here: 1.2 s of CPU in a 3-s detection run, which
    took 80 % longer than the same work without it. Subclasses implement ``_on_yielded`` and
    ``_after_run`` (re-validate the inputs, which re-enables Run).
    """

    worker: Any = None
    #: Set by Cancel, reset by the next run: a step that was under way when Cancel was clicked
    #: still arrives (and may update the status) before the worker stops.
    cancelled: bool = False
    run_button: Any
    cancel_button: Any
    status: Any
    progress_bar: Any

    def _start_worker(self, work: Callable[[], Generator], total: int, description: str,
                      status: str) -> None:
        from napari.qt.threading import create_worker

        self.cancelled = False
        self.progress_bar.max = max(1, int(total))
        self.progress_bar.value = 0
        self.progress_bar.tooltip = description
        self.worker = create_worker(work)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.finished.connect(self._on_worker_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = status
        self.worker.start()

    def _advance(self, done: int) -> None:
        """Move the progress bar to `done` steps."""
        self.progress_bar.value = min(int(done), self.progress_bar.max)

    def cancel(self) -> None:
        """Stop after the step in progress (the Cancel button)."""
        if self.worker is not None:
            self.worker.quit()
            self.cancelled = True
            self.status.value = "Cancelling..."

    def _on_worker_finished(self) -> None:
        self.worker = None
        self.cancel_button.enabled = False
        self._after_run()

    def _on_yielded(self, item: tuple) -> None:  # pragma: no cover - subclasses implement
        raise NotImplementedError

    def _after_run(self) -> None:  # pragma: no cover - subclasses implement
        raise NotImplementedError
