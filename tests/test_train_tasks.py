"""The training pipeline and its tasks: the task a configuration names, one calibration,
and a new task plugged in with one class (no abTEM: synthetic columns)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from napari_tem_atoms.training.stem import StemColumnsTask

pytest.importorskip("torch")

from napari_tem_atoms.training.columns import ColumnsTask, ColumnTargetsTask
from napari_tem_atoms.training.config import ModelConfig, TrainConfig
from napari_tem_atoms.training.data import column_targets
from napari_tem_atoms.training.pipeline import (
    THRESHOLDS,
    Trained,
    TrainingData,
    calibrate,
    run_training,
)
from napari_tem_atoms.training.species import SpeciesTask
from napari_tem_atoms.training.train import TASKS, load_task

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_every_shipped_configuration_names_its_task(path):
    task = load_task(path)
    expected = (SpeciesTask if path.stem.startswith("mos2")
                else StemColumnsTask if path.stem.startswith("stem") else ColumnsTask)
    assert type(task) is expected and TASKS[task.name] is expected
    assert task.output.is_absolute() and task.train.steps > 0


def test_the_task_key_picks_the_task_and_a_wrong_one_is_named(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('task = "columns"\n[model]\nname = "x"\n')
    assert load_task(config).model_name == "x"
    assert load_task(config, precision="fp32").train.precision == "fp32"
    config.write_text('task = "colums"\n')
    with pytest.raises(ValueError, match="task = 'colums' is not one of 'columns', 'species'"
                       ) as raised:
        load_task(config)
    assert str(config) in str(raised.value)
    from napari_tem_atoms.training import load_config

    config.write_text('task = "species"\n')
    with pytest.raises(ValueError, match="a 'species' configuration, not a column detector"):
        load_config(config)
    # A species configuration's bad key is named with its file, through the task table too.
    config.write_text('task = "species"\n[model]\nnmae = "x"\n')
    with pytest.raises(ValueError, match=r"run\.toml: \[model\] has unknown keys: nmae"):
        load_task(config)


def test_a_configuration_already_read_trains_as_its_own_task():
    from napari_tem_atoms.training.stem import load_stem_config
    from napari_tem_atoms.training.train import task_for

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert type(task_for(load_stem_config(configs / "stem-columns.toml"))) is StemColumnsTask


def test_calibration_keeps_the_best_threshold_of_the_one_grid_the_lowest_of_ties():
    f1 = {0.3: 0.5, 0.35: 0.9, 0.4: 0.9, 0.45: 0.2}
    threshold, scores = calibrate(
        lambda t: SimpleNamespace(f1=f1.get(round(float(t), 2), 0.0), at=t))
    assert threshold == 0.35 and scores.f1 == 0.9
    assert [round(float(t), 2) for t in THRESHOLDS][:3] == [0.1, 0.15, 0.2]
    assert round(float(THRESHOLDS[-1]), 2) == 0.9


# -- a new task in one class: bright discs on noise, column targets -----------------------

class Discs:
    """Images of six Gaussian columns on noise, 32 × 32 px at 0.2 Å/px."""

    def make(self, rng: np.random.Generator) -> SimpleNamespace:
        columns = np.column_stack([rng.uniform(4, 28, (6, 2)), np.full(6, 5.0)])
        target, mask = column_targets((32, 32), columns, 0.2)
        image = target + rng.normal(0, 0.1, target.shape)
        image = ((image - image.mean()) / image.std()).astype(np.float32)
        return SimpleNamespace(image=image, target=target, mask=mask, columns=columns,
                               conditions=None)

    def patch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
        sample = self.make(rng)
        return sample.image[None], sample.target[None], sample.mask[None]


@dataclass(frozen=True)
class DiscRun:
    output: str
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2, batch_size=2, patch_size=32, checkpoint_every=2, validate_every=2,
        validation_images=1, workers=0, precision="fp32"))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        name="discs", base_channels=4, depth=2))


class DiscTask(ColumnTargetsTask):
    """Loss, validation and network from the column targets; data and record its own."""

    name = "discs"

    @classmethod
    def from_config(cls, path: Path, raw: dict[str, Any]) -> DiscTask:
        return cls(DiscRun(output=str(path.parent / raw["output"])))

    def build_data(self, log) -> TrainingData:
        maker = Discs()
        return TrainingData(patches=maker, held_out=lambda rng, index: maker.make(rng),
                            summary="synthetic discs")

    def metadata(self, trained: Trained, data: TrainingData) -> dict[str, Any]:
        return {"name": self.model_name, "architecture": trained.architecture,
                "sampling": 0.2, "classes": ["column"], "threshold": trained.threshold}


def test_a_new_task_trains_resumes_and_records_through_the_one_pipeline(tmp_path):
    lines: list[str] = []
    task = DiscTask.from_config(tmp_path / "discs.toml", {"output": "run"})
    weights = run_training(task, log=lines.append)
    assert weights == tmp_path / "run" / "discs.safetensors" and weights.is_file()
    assert "training discs: " in lines[0] and "synthetic discs, 2 steps of 2×32²" in lines[0]
    metadata = json.loads((tmp_path / "run" / "discs.json").read_text())
    assert metadata["threshold"] in [round(float(t), 2) for t in THRESHOLDS]
    assert metadata["architecture"] == {"in_channels": 1, "out_channels": 1,
                                        "base_channels": 4, "depth": 2}
    assert len(metadata["sha256"]) == 64
    assert not (tmp_path / "run" / "discs.md").exists()  # this task writes no card
    log = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl")
           .read_text().splitlines()]
    assert log[-1]["step"] == 2 and {"validation_f1", "validation_rmse_pm"} <= set(log[-1])

    # The same run again makes the same weights; a longer one goes on from the checkpoint.
    again = run_training(DiscTask.from_config(tmp_path / "discs.toml", {"output": "again"}),
                         log=lambda line: None)
    assert again.read_bytes() == weights.read_bytes()
    longer = DiscTask(DiscRun(output=str(tmp_path / "run"),
                              train=TrainConfig(steps=3, batch_size=2, patch_size=32,
                                                validate_every=3, validation_images=1,
                                                workers=0, precision="fp32")))
    lines.clear()
    run_training(longer, log=lines.append)
    assert any("at step 2" in line for line in lines)
    assert "schedule re-laid over 3 steps (the checkpoint planned 2)" in lines
