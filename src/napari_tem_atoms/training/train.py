"""``tem-atoms train``: the task a configuration names, trained by the one pipeline.

A configuration's ``task`` key picks the task (``"columns"`` when it has none, so the column
detectors' configurations read as they always did); :data:`TASKS` says which class each name
is. The pipeline itself is :func:`~napari_tem_atoms.training.pipeline.run_training`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError
from .columns import (  # noqa: F401  (kept importable from here)
    COUNT_LOSS_WEIGHT,
    ColumnsTask,
    column_loss,
    ensure_exit_waves,
)
from .config import DEFAULT_TASK, TrainingRun, read_config
from .pipeline import (  # noqa: F401  (kept importable from here)
    CHECKPOINT_FILE,
    LOG_FILE,
    Log,
    TrainingTask,
    _freeze_all_but,
    initialise_from,
    network_maps,
    optimise,
    resume,
    run_training,
    save_checkpoint,
    training_runtime,
)
from .species import SpeciesRun, SpeciesTask
from .stem import StemColumnsTask, StemRun

__all__ = ["TASKS", "load_task", "task_for", "train"]

#: Every training task by the name a configuration's ``task`` key gives it.
TASKS: dict[str, type[TrainingTask]] = {task.name: task for task in (ColumnsTask, SpeciesTask,
                                                                      StemColumnsTask)}


def load_task(path: str | Path, precision: str | None = None) -> TrainingTask:
    """The training task a configuration file describes.

    Parameters
    ----------
    path : str or pathlib.Path
        A TOML training configuration; its ``task`` key (default ``"columns"``) picks the task,
        the rest is that task's configuration (folders relative to the file).
    precision : str, optional
        Over the configuration's ``[train] precision`` (``tem-atoms train --precision``).

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        Not TOML, an unknown task, or a setting the task does not have; the message names the
        file.
    """
    path = Path(path)
    raw = read_config(path)
    name = raw.pop("task", DEFAULT_TASK)
    if name not in TASKS:
        raise ConfigError(f"{path}: task = {name!r} is not one of "
                         f"{', '.join(map(repr, TASKS))}")
    task = TASKS[name].from_config(path, raw)
    if precision:
        task = replace(task, run=replace(task.run, train=replace(task.train,
                                                                 precision=precision)))
    return task


#: The task of each kind of configuration already read (a loader's result).
RUN_TASKS: dict[type, type[TrainingTask]] = {TrainingRun: ColumnsTask, SpeciesRun: SpeciesTask,
                                             StemRun: StemColumnsTask}


def task_for(run: TrainingRun | SpeciesRun | StemRun) -> TrainingTask:
    """The task of a configuration already read.

    From :func:`~.config.load_config`, :func:`~.species.load_species_config` or
    :func:`~.stem.load_stem_config` (a STEM run used to be taken for a column detector's).
    """
    return RUN_TASKS[type(run)](run)


def train(task: TrainingTask | TrainingRun | SpeciesRun | StemRun, log: Log = print) -> Path:
    """Train a task (or the task of a configuration already read); return the weights' path.

    See :func:`~napari_tem_atoms.training.pipeline.run_training` for what it writes.
    """
    return run_training(task if isinstance(task, TrainingTask) else task_for(task), log)
