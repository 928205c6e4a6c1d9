"""The column-detector task (``task = "columns"``, the default): au-hrtem and its family.

Images of cached abTEM exit waves of gold particles (on amorphous carbon), drawn through a new
random microscope each; the target is a Gaussian peak per atomic column and, with a count head,
log(atoms) at each column. :class:`ColumnTargetsTask` holds what every task with column targets
shares (the loss, the F1/RMSE validation, the network's keys); a task whose images come from
elsewhere (e.g. STEM images simulated on the fly) subclasses it with its own data and record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..analysis.conditions import CONDITION_INPUTS, CS_SCALE, DEFOCUS_SCALE
from ..analysis.detect import MIN_COLUMN_DISTANCE, find_peaks
from ..simulation.exit_waves import build_exit_wave_cache, load_exit_waves
from .card import model_card
from .config import ModelConfig, TrainingRun, columns_run
from .data import SampleMaker, describe_dataset
from .metrics import SCORED_MIN_ATOMS, MatchCounts, match_columns
from .pipeline import (
    Log,
    Trained,
    TrainingData,
    TrainingTask,
    Validation,
    optimisation_summary,
)

__all__ = ["COUNT_LOSS_WEIGHT", "ColumnTargetsTask", "ColumnsTask", "column_architecture",
           "column_counts", "column_input", "column_loss", "ensure_exit_waves"]

#: Weight of the atom-count loss (squared error of log n, per column pixel) against the BCE.
COUNT_LOSS_WEIGHT = 0.5


def column_loss(logits: Any, targets: Any, masks: Any) -> Any:
    """BCE of the column map; with a count head, plus its squared error on log(atoms).

    Channel 0 of `logits`, `targets` and `masks` is the column map; a channel 1 (a network
    with counts) is log(atoms) at column centres and where it counts.
    """
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits[:, :1], targets[:, :1], weight=masks[:, :1])
    if logits.shape[1] > 1 and targets.shape[1] > 1:
        weight = masks[:, 1:2]
        squared = (logits[:, 1:2] - targets[:, 1:2]) ** 2 * weight
        loss = loss + COUNT_LOSS_WEIGHT * squared.sum() / weight.sum().clamp_min(1.0)
    return loss


def column_counts(maps: Sequence[np.ndarray], samples: Sequence[Any], sampling: float,
                  threshold: float, min_atoms: int = SCORED_MIN_ATOMS) -> MatchCounts:
    """Detections matched to the truth: the peaks of channel 0 of `maps` above `threshold`.

    Each sample's ``columns`` (N, 3: y, x [px], atoms) are its truth; columns of fewer than
    `min_atoms` are neither rewarded nor errors.
    """
    counts = MatchCounts()
    for sample, heat in zip(samples, maps, strict=True):
        positions, _ = find_peaks(heat[0], threshold, MIN_COLUMN_DISTANCE / sampling)
        counts += match_columns(positions, sample.columns, sampling, min_atoms=min_atoms)
    return counts


def column_input(sample: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A sample's image as one input channel, and what it is told of its microscope."""
    return sample.image[None], sample.conditions


def column_architecture(model: ModelConfig) -> dict[str, Any]:
    """The U-Net of a column detector (keys only when in use: older weights carry none)."""
    architecture = {"in_channels": 1, "out_channels": 1, "base_channels": model.base_channels,
                    "depth": model.depth}
    if model.context:
        architecture["context"] = model.context
    if model.refine:
        architecture["refine"] = model.refine
    if model.conditions:
        architecture["conditions"] = CONDITION_INPUTS
    if model.counts:
        architecture["counts"] = int(model.counts)
    return architecture


class ColumnTargetsTask(TrainingTask):
    """A task with column targets: loss, validation and network of every column detector.

    Its samples have one ``image`` (and ``conditions``), a column map (and counts) as targets
    and ``columns`` (N, 3: y, x [px], atoms) as truth; its run has a ``model``
    :class:`~napari_tem_atoms.training.config.ModelConfig`.
    """

    def network_input(self, sample: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """:func:`column_input`."""
        return column_input(sample)

    def architecture(self) -> dict[str, Any]:
        """The U-Net of :func:`column_architecture`."""
        return column_architecture(self.run.model)

    def loss(self, logits: Any, targets: Any, masks: Any) -> Any:
        """:func:`column_loss`."""
        return column_loss(logits, targets, masks)

    #: Truth columns of fewer atoms are neither rewarded nor errors.
    scored_min_atoms: ClassVar[int] = SCORED_MIN_ATOMS

    def score(self, maps: Sequence[np.ndarray], samples: Sequence[Any],
              threshold: float) -> Validation:
        """F1, precision, recall and RMSE of the detected columns."""
        counts = column_counts(maps, samples, self.run.model.sampling, threshold,
                               self.scored_min_atoms)
        return Validation(
            f1=counts.f1,
            fields={"validation_f1": counts.f1, "validation_rmse_pm": counts.rmse_pm},
            line=(f"F1 {counts.f1:.3f}  precision {counts.precision:.3f}  "
                  f"recall {counts.recall:.3f}  RMSE {counts.rmse_pm:.1f} pm"),
            summary=f"F1 {counts.f1:.3f}, RMSE {counts.rmse_pm:.1f} pm")


@dataclass
class ExitWaveData(TrainingData):
    """The cached exit waves a column detector trains on, and its sample maker."""

    particles: list[dict]
    carbons: list[dict]
    maker: SampleMaker


class ColumnsTask(ColumnTargetsTask):
    """Column detectors of gold particles in HRTEM images (au-hrtem and its stages)."""

    name = "columns"
    run: TrainingRun

    @classmethod
    def from_config(cls, path: Path, raw: dict[str, Any]) -> ColumnsTask:
        """See :func:`~napari_tem_atoms.training.config.load_config`."""
        return cls(columns_run(path, raw))

    def build_data(self, log: Log) -> ExitWaveData:
        """The exit waves (computed with abTEM when not cached) and the sample makers."""
        run, model = self.run, self.run.model
        ensure_exit_waves(run, log)
        particles = load_exit_waves(run.data.folder, "particles", "train")
        carbons = load_exit_waves(run.data.folder, "carbon", "train")
        validation = load_exit_waves(run.data.folder, "particles", "validation")
        validation_carbons = load_exit_waves(run.data.folder, "carbon", "validation")
        conditions = run.conditions if model.conditions else None
        maker = SampleMaker(particles, carbons, model.sampling, run.envelope,
                            run.data.support_probability, run.data.balance_zones,
                            run.data.hard_regimes, conditions, run.data.min_column_atoms,
                            model.counts)
        # Validation images are told their microscope as training images are (a mixture).
        validation_maker = SampleMaker(validation, validation_carbons, model.sampling,
                                       run.envelope, run.data.support_probability,
                                       conditions=conditions,
                                       min_column_atoms=run.data.min_column_atoms)
        return ExitWaveData(
            patches=maker,
            held_out=lambda rng, index: validation_maker.make(
                rng, particle_index=index % len(validation_maker.particles)),
            summary=f"{len(particles)} particles, {len(carbons)} carbon slabs",
            particles=particles, carbons=carbons, maker=maker)

    def metadata(self, trained: Trained, data: ExitWaveData) -> dict[str, Any]:
        """Network, input, threshold, conditions and how it was trained (the card's source)."""
        run, cfg, model = self.run, self.run.train, self.run.model
        return {
            "name": model.name,
            "description": model.description,
            "architecture": trained.architecture,
            "sampling": model.sampling,
            "classes": ["column"],
            **({"crystal": model.crystal} if model.crystal else {}),
            "threshold": trained.threshold,
            "normalisation": "per frame: zero mean, unit standard deviation at the model "
                             "sampling",
            **({"conditions": {"inputs": ["cs", "cs_known", "defocus", "defocus_known"],
                               "cs_scale_angstrom": CS_SCALE,
                               "defocus_scale_angstrom": DEFOCUS_SCALE,
                               "training": asdict(run.conditions)}}
               if model.conditions else {}),
            "training": {
                **optimisation_summary(cfg),
                "init_from": Path(cfg.init_from).name if cfg.init_from else None,
                # Which layers trained: a stage that trained one branch alone says so.
                **({"train_only": cfg.train_only} if cfg.train_only else {}),
                **({"counts_train_encoder": True} if cfg.counts_train_encoder else {}),
                **({"condition_learning_rate_factor": cfg.condition_learning_rate_factor}
                   if model.conditions and cfg.condition_learning_rate_factor != 1 else {}),
                "balance_zones": run.data.balance_zones,
                **({"hard_regimes": [asdict(regime) for regime in data.maker.hard_regimes]}
                   if data.maker.hard_regimes else {}),  # those in use (fraction > 0)
                "parameters": trained.parameters, "samples_seen": cfg.steps * cfg.batch_size,
                "data": {**describe_dataset(data.particles), "carbon_slabs": len(data.carbons),
                         "support_probability": run.data.support_probability,
                         "data_seed": run.data.seed},
                "exit_waves": asdict(run.exit_waves),
                "envelope": run.envelope.as_dict(),
            },
        }

    def card(self, metadata: dict[str, Any], sha256: str,
             last_validation: dict[str, Any] | None) -> str:
        """:func:`~napari_tem_atoms.training.card.model_card` with the last validation."""
        return model_card(metadata, sha256, validation=last_validation)


def ensure_exit_waves(run: TrainingRun, log: Log = print) -> None:
    """Compute the exit waves the run needs, unless they are already cached."""
    data = run.data
    expected = data.train_particles + data.validation_particles + max(1, data.carbon_slabs - 1) + 1
    folder = Path(data.folder)
    present = len(list(folder.glob("particles/*_[0-9]*.npz"))) + len(
        list(folder.glob("carbon/*_[0-9]*.npz")))
    if present >= expected:
        return
    log(f"computing {expected - present} exit waves with abTEM into {folder} ...")
    start = time.time()
    for done, total, name in build_exit_wave_cache(folder, data.train_particles,
                                                   data.validation_particles, data.carbon_slabs,
                                                   data.seed, run.exit_waves):
        log(f"  exit waves {done}/{total} ({time.time() - start:.0f} s) {Path(name).name}")
