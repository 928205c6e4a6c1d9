"""Training and scoring the focal-series species network (``mos2-focal``).

Each sample is three images of one cached MoS2 exit wave at three defoci (in increasing abTEM
``defocus``), through one randomly drawn microscope, each with its own shot noise and a small
random misalignment (what is left after alignment), rescaled and normalised one by one like
:func:`~napari_tem_atoms.analysis.species.detect_species` does. The target is one Gaussian map
per class (Mo, S2, S1). A single-image model (the middle image only) trained the same way is the
ablation that shows what the focal series adds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.detect import normalise_image, rescale_to_sampling
from ..analysis.species import species_from_heatmaps
from ..errors import ConfigError
from ..models.description import ModelDescription, describe
from ..simulation.microscope import (
    MicroscopeEnvelope,
    MicroscopeSettings,
    form_image,
    shift_waves,
)
from ..simulation.mos2 import SPECIES, MoS2Config, build_mos2_cache, load_mos2
from .config import TrainConfig, read_config, update_section
from .data import column_targets, random_patch
from .metrics import MatchCounts, match_columns
from .pipeline import Log, Trained, TrainingData, TrainingTask, Validation, network_maps

__all__ = ["FocalEnvelope", "FocalSeriesMaker", "SpeciesRun", "SpeciesTask", "evaluate_species",
           "load_species_config", "score_species", "species_run"]


@dataclass(frozen=True)
class FocalEnvelope:
    """Where focal series are drawn from (documented in the model card)."""

    central_defocus: tuple[float, float] = (-100.0, 100.0)  # [Å], abTEM sign
    focal_step: tuple[float, float] = (30.0, 100.0)  # [Å]
    misalignment: float = 0.5  # largest residual shift between the images [px of the input]
    microscope: MicroscopeEnvelope = field(default_factory=lambda: MicroscopeEnvelope(
        energy=80e3, cs=(-30e4, 30e4), focal_spread=(20.0, 40.0), astigmatism=(0.0, 30.0),
        sampling=(0.08, 0.2), dose=(100.0, 1e4)))

    def as_dict(self) -> dict:
        """Plain dictionary (for the model card)."""
        return {"central_defocus": self.central_defocus, "focal_step": self.focal_step,
                "misalignment_px": self.misalignment,
                "microscope": {k: v for k, v in self.microscope.as_dict().items()
                               if k != "defocus"}}


@dataclass(frozen=True)
class SpeciesModelConfig:
    """The species network."""

    name: str = "mos2-focal"
    description: str = "Mo, S2 and S1 (sulfur vacancy) columns of MoS2 from a 3-image focal series"
    sampling: float = 0.2
    inputs: int = 3  # 3: the focal series; 1: the middle image only (the ablation)
    # Weight of the columns (positive pixels) of each class in the loss: S1 columns are rare
    # (a few % of the S columns), and unweighted the network never called one.
    positive_weights: tuple[float, float, float] = (1.0, 1.0, 4.0)
    base_channels: int = 16
    depth: int = 3


@dataclass(frozen=True)
class SpeciesData:
    """The MoS2 exit-wave cache."""

    folder: str = "build/mos2-focal/exit_waves"
    train_flakes: int = 100
    validation_flakes: int = 24
    seed: int = 2019


@dataclass(frozen=True)
class SpeciesRun:
    """A whole species training run."""

    output: str = "build/mos2-focal/run"
    data: SpeciesData = field(default_factory=SpeciesData)
    model: SpeciesModelConfig = field(default_factory=SpeciesModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(patch_size=128))
    mos2: MoS2Config = field(default_factory=MoS2Config)
    envelope: FocalEnvelope = field(default_factory=FocalEnvelope)


def load_species_config(path: str | Path) -> SpeciesRun:
    """Read a species training configuration (``task = "species"``); folders relative to it."""
    path = Path(path)
    raw = read_config(path)
    raw.pop("task", None)
    return species_run(path, raw)


def species_run(path: Path, raw: dict[str, Any]) -> SpeciesRun:
    """The :class:`SpeciesRun` of the TOML `raw` (less ``task``) read from `path`.

    Every error names the file (also on the way through ``tem-atoms train``'s task table).
    """
    run = SpeciesRun()
    try:
        microscope = update_section(run.envelope.microscope, raw.pop("microscope", {}),
                                    "microscope")
        envelope = update_section(replace(run.envelope, microscope=microscope),
                                  raw.pop("envelope", {}), "envelope")
        data = update_section(run.data, raw.pop("data", {}), "data")
        model = update_section(run.model, raw.pop("model", {}), "model")
        train = update_section(run.train, raw.pop("train", {}), "train")
        mos2 = update_section(run.mos2, raw.pop("mos2", {}), "mos2")
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if train.init_from:
        raise ConfigError(f"{path}: [train] init_from is for column detectors; species models "
                          "train from scratch")
    output = raw.pop("output", run.output)
    if raw:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(raw))}")
    data = replace(data, folder=str((path.parent / data.folder).resolve()))
    return SpeciesRun(output=str((path.parent / output).resolve()), data=data, model=model,
                      train=train, mos2=mos2, envelope=envelope)


@dataclass
class FocalSample:
    """One simulated series at the model's sampling and its truth."""

    images: np.ndarray  # (inputs, H, W) normalised
    targets: np.ndarray  # (3, H, W)
    columns: np.ndarray  # (N, 3) y, x [px], class
    defoci: tuple[float, ...]
    settings: MicroscopeSettings


class FocalSeriesMaker:
    """Random focal series of cached MoS2 exit waves (see the module docstring)."""

    def __init__(self, flakes: list[dict], model_sampling: float, envelope: FocalEnvelope,
                 inputs: int = 3) -> None:
        if not flakes:
            raise ValueError("no MoS2 exit waves: build the cache first")
        self.flakes, self.model_sampling = flakes, model_sampling
        self.envelope, self.inputs = envelope, inputs

    def make(self, rng: np.random.Generator, index: int | None = None,
             dose: float | None = None) -> FocalSample:
        """One sample: a whole field of view."""
        flake = self.flakes[int(rng.integers(len(self.flakes))) if index is None else index]
        settings = self.envelope.microscope.draw(rng)
        if dose is not None:
            settings = replace(settings, dose=dose)
        centre = float(rng.uniform(*self.envelope.central_defocus))
        step = float(rng.uniform(*self.envelope.focal_step))
        defoci = (centre - step, centre, centre + step)
        wave_sampling = float(flake["sampling"])
        images, factor = [], 1.0
        for position, defocus in enumerate(defoci):
            waves = flake["waves"]
            if position != 1:  # the outer images are a little off the middle one
                shift = rng.uniform(-1, 1, 2) * self.envelope.misalignment * settings.sampling
                waves = shift_waves(waves, shift, wave_sampling)
            recorded, sampling = form_image(waves, wave_sampling,
                                            replace(settings, defocus=defocus), rng)
            rescaled, factor = rescale_to_sampling(recorded, sampling, self.model_sampling)
            images.append(normalise_image(rescaled))
        images = np.stack(images) if self.inputs == 3 else np.stack(images[1:2])
        columns = np.array(flake["columns"], dtype=float)
        columns[:, :2] /= sampling * factor
        targets = np.stack([
            column_targets(images.shape[1:], np.column_stack(
                [columns[columns[:, 2] == k, :2], np.full((columns[:, 2] == k).sum(), 9)]),
                self.model_sampling)[0]
            for k in range(len(SPECIES))])
        return FocalSample(images.astype(np.float32), targets, columns, defoci, settings)

    def patch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
        """A random, randomly flipped and rotated `size` × `size` crop: images, targets, mask."""
        sample = self.make(rng)
        mask = np.ones((1, *sample.images.shape[1:]), dtype=np.float32)
        return random_patch(rng, size, sample.images, sample.targets, mask)


def score_species(positions: np.ndarray, classes: np.ndarray, columns: np.ndarray,
                  sampling: float) -> dict[str, MatchCounts]:
    """Species-aware counts: a detection counts only when it matches a column of its class.

    Detections and columns are matched within 0.5 Å (Hungarian) per class; the result holds
    one :class:`MatchCounts` per class and ``"all"``.
    """
    counts = {}
    total = MatchCounts()
    for k, name in enumerate(SPECIES):
        mine = columns[columns[:, 2] == k]
        truth = np.column_stack([mine[:, :2], np.full(len(mine), 9)])
        counts[name] = match_columns(positions[classes == k], truth, sampling)
        total += counts[name]
    counts["all"] = total
    return counts


def species_totals(maps: Sequence[np.ndarray], samples: Sequence[FocalSample],
                   threshold: float, sampling: float) -> dict[str, MatchCounts]:
    """:func:`score_species` of the species maps of `samples`, added over them."""
    totals = {name: MatchCounts() for name in (*SPECIES, "all")}
    for sample, sample_maps in zip(samples, maps, strict=True):
        positions, classes, _ = species_from_heatmaps(sample_maps, threshold, sampling)
        for name, counts in score_species(positions, classes, sample.columns, sampling).items():
            totals[name] += counts
    return totals


def ensure_mos2(run: SpeciesRun, log: Any = print) -> None:
    """Compute the MoS2 exit waves the run needs, unless cached."""
    folder = Path(run.data.folder)
    expected = run.data.train_flakes + run.data.validation_flakes
    if len(list(folder.glob("*_[0-9]*.npz"))) >= expected:
        return
    start = time.time()
    for done, total, name in build_mos2_cache(folder, run.data.train_flakes,
                                              run.data.validation_flakes, run.data.seed,
                                              run.mos2):
        if done % 10 == 0 or done == total:
            log(f"  MoS2 exit waves {done}/{total} ({time.time() - start:.0f} s) "
                f"{Path(name).name}")


@dataclass
class FlakeData(TrainingData):
    """The MoS2 flakes a species model trains on, and how many are held out."""

    flakes: list[dict]
    validation_flakes: int


class SpeciesTask(TrainingTask):
    """Species models of MoS2 (``task = "species"``): Mo, S2 and S1 maps from a focal series.

    With ``inputs = 1``, from its middle image only (the ablation).
    """

    name = "species"
    run: SpeciesRun

    @classmethod
    def from_config(cls, path: Path, raw: dict[str, Any]) -> SpeciesTask:
        """See :func:`load_species_config`."""
        return cls(species_run(path, raw))

    def build_data(self, log: Log) -> FlakeData:
        """The MoS2 exit waves (computed with abTEM when not cached) and the series makers."""
        run, model = self.run, self.run.model
        ensure_mos2(run, log)
        flakes = load_mos2(run.data.folder, "train")
        maker = FocalSeriesMaker(flakes, model.sampling, run.envelope, model.inputs)
        validation_maker = FocalSeriesMaker(load_mos2(run.data.folder, "validation"),
                                            model.sampling, run.envelope, model.inputs)
        return FlakeData(
            patches=maker,
            held_out=lambda rng, index: validation_maker.make(
                rng, index % len(validation_maker.flakes)),
            summary=f"{len(flakes)} flakes, {model.inputs} input image(s)",
            flakes=flakes, validation_flakes=len(validation_maker.flakes))

    def network_input(self, sample: FocalSample) -> tuple[np.ndarray, None]:
        """The series (or its middle image) as input channels; no conditions."""
        return sample.images, None

    def architecture(self) -> dict[str, Any]:
        """A U-Net with one input per image and one output map per species."""
        model = self.run.model
        return {"in_channels": model.inputs, "out_channels": len(SPECIES),
                "base_channels": model.base_channels, "depth": model.depth}

    def loss(self, logits: Any, targets: Any, masks: Any) -> Any:
        """BCE per map, the column pixels of each class weighted by ``positive_weights``."""
        import torch
        import torch.nn.functional as F

        positive_weights = torch.tensor(self.run.model.positive_weights,
                                        dtype=torch.float32).reshape(-1, 1, 1)
        return F.binary_cross_entropy_with_logits(logits, targets,
                                                  weight=masks.expand_as(targets),
                                                  pos_weight=positive_weights)

    def score(self, maps: Sequence[np.ndarray], samples: Sequence[FocalSample],
              threshold: float) -> Validation:
        """Species-aware F1 (all classes, and per class) and the recall of S1 columns."""
        scores = species_totals(maps, samples, threshold, self.run.model.sampling)
        return Validation(
            f1=scores["all"].f1,
            fields={"validation_f1": scores["all"].f1,
                    "validation_s1_recall": scores["S1"].recall},
            line=(f"species F1 {scores['all'].f1:.3f}  "
                  + "  ".join(f"{k} F1 {scores[k].f1:.2f}" for k in SPECIES)),
            summary=f"species F1 {scores['all'].f1:.3f}")

    def metadata(self, trained: Trained, data: FlakeData) -> dict[str, Any]:
        """Network, inputs, classes, threshold and how it was trained (the card's source)."""
        run, cfg, model = self.run, self.run.train, self.run.model
        return {
            "name": model.name, "description": model.description,
            "architecture": trained.architecture, "sampling": model.sampling,
            "classes": list(SPECIES), "threshold": trained.threshold, "task": "species",
            "inputs": ("3 images of one area at increasing defocus (abTEM sign, defocus = "
                       "-C10), aligned" if model.inputs == 3
                       else "1 image (the middle defocus)"),
            "normalisation": "per image: zero mean, unit standard deviation at the model "
                             "sampling",
            "training": {"steps": cfg.steps, "batch_size": cfg.batch_size,
                         "positive_weights": list(model.positive_weights),
                         "patch_size": cfg.patch_size, "learning_rate": cfg.learning_rate,
                         "seed": cfg.seed, "parameters": trained.parameters,
                         "samples_seen": cfg.steps * cfg.batch_size,
                         "data": {"train_flakes": len(data.flakes),
                                  "validation_flakes": data.validation_flakes,
                                  "seed": run.data.seed, "mos2": asdict(run.mos2)},
                         "envelope": run.envelope.as_dict()},
        }


def evaluate_species(run: SpeciesRun, model: Any, doses: list[float], images: int = 96,
                     single: Any = None) -> pd.DataFrame:
    """Score a species model (and optionally a single-image ablation) per dose.

    Uses the validation flakes of `run` (never trained on) with fresh microscopes (seeded).

    Parameters
    ----------
    run : SpeciesRun
        The species training configuration (its validation flakes, envelope and seed).
    model : str
        Registered model name or ``.safetensors`` path of the focal-series model.
    doses : list of float
        Electron doses [e/Å²].
    images : int
        Focal series scored per dose (the default of ``tem-atoms evaluate --images``).
    single : str, optional
        A single-image model scored on the same series (their middle image), for comparison.

    Returns
    -------
    pandas.DataFrame
        Per dose and model: species F1, precision, recall, per-class F1, S1 recall, RMSE [pm].
    """
    from ..models import load_cached_model

    flakes = load_mos2(run.data.folder, "validation")
    rows = []
    for dose in doses:
        rng = np.random.default_rng([run.train.seed, 7, int(dose)])
        maker = FocalSeriesMaker(flakes, run.model.sampling, run.envelope, 3)
        samples = [maker.make(rng, i % len(flakes), dose=dose) for i in range(images)]
        for label, name in (("focal series", model), ("single image", single)):
            if name is None:
                continue
            loaded = load_cached_model(name, "cpu")
            channels = loaded.description.in_channels
            maps = [network_maps(loaded.network,
                                 sample.images if channels == 3 else sample.images[1:2],
                                 loaded.precision == "bf16") for sample in samples]
            totals = species_totals(maps, samples, loaded.threshold, run.model.sampling)
            rows.append({"dose": dose, "model": label, "f1": totals["all"].f1,
                         "precision": totals["all"].precision, "recall": totals["all"].recall,
                         **{f"f1_{k}": totals[k].f1 for k in SPECIES},
                         "recall_S1": totals["S1"].recall,
                         "rmse_pm": totals["all"].rmse_pm})
    return pd.DataFrame(rows)


def species_card(model: ModelDescription | dict, sha256: str, scores: pd.DataFrame,
                 images: int) -> str:
    """The model card of a species model: how it was made, what it scores, the ablation."""
    model = describe(model)
    training = model.training
    envelope = training["envelope"]
    microscope = envelope["microscope"]
    mos2 = training["data"]["mos2"]

    def span(values: Any, scale: float = 1.0, unit: str = "") -> str:
        low, high = (float(v) * scale for v in values)
        return f"{low:g} to {high:g}{unit}"

    lines = [
        f"# Model card: `{model.name}`", "",
        model.description + ".", "",
        f"- Weights: `{model.name}.safetensors`, SHA-256 `{sha256}`, bundled with the "
        "package, loaded without pickle.",
        f"- Input: {model.inputs}; each image rescaled to {model.sampling} Å/px and "
        f"normalised on its own. Output: one map per class ({', '.join(model.classes)}); "
        "a column is a peak of their maximum, its species the highest map there.",
        f"- Network: U-Net, {training['parameters']:,} parameters "
        f"({model.architecture['in_channels']} input channels, "
        f"{model.architecture['base_channels']} base channels, depth "
        f"{model.architecture['depth']}); default threshold {model.threshold} (best "
        "species F1 on the validation series).",
        "- Reproduce: `tem-atoms train configs/mos2-focal.toml` (and "
        "`configs/mos2-single.toml` for the ablation), then `tem-atoms evaluate --config "
        "configs/mos2-focal.toml --model mos2-focal --single <single>.safetensors "
        "--card docs/models/mos2-focal.md`. How the shipped weights were made exactly (a run "
        "lengthened from its checkpoint) is written at the top of `configs/mos2-focal.toml`.",
        "",
        "## Training data", "",
        f"- {training['data']['train_flakes']} 2H-MoS2 monolayer flakes (hexagonal, radius "
        f"{span(mos2['flake_radius'], unit=' Å')}, any in-plane rotation), sulfur vacancies on "
        f"{span(mos2['sulfur_vacancy_fraction'], 100, ' %')} of the S columns (one S left: "
        f"`S1`; both gone in {mos2['double_sulfur_vacancy_fraction'] * 100:g} % of them), Mo "
        f"vacancies on {span(mos2['molybdenum_vacancy_fraction'], 100, ' %')}, on graphene "
        f"with probability {mos2['graphene_probability']}; abTEM multislice at "
        f"{mos2['energy'] / 1e3:g} kV, {mos2['frozen_phonons']} frozen phonons, "
        f"{mos2['field']:g} Å field. {training['data']['validation_flakes']} further flakes "
        "(another random stream) are held out for validation and scoring.",
        f"- Every sample draws a new focal series: central defocus "
        f"{span(envelope['central_defocus'], unit=' Å')}, focal step "
        f"{span(envelope['focal_step'], unit=' Å')} (abTEM sign, `defocus` = −C10), Cs "
        f"{span(microscope['cs'], 1e-4, ' µm')}, focal spread "
        f"{span(microscope['focal_spread'], unit=' Å')}, astigmatism up to "
        f"{float(microscope['astigmatism'][1]):g} Å, input sampling "
        f"{span(microscope['sampling'], unit=' Å/px')}, dose "
        f"{span(microscope['dose'], unit=' e/Å²')} per image (Poisson), MTF, blur and gamma as "
        "for `au-hrtem`, and a residual misalignment of up to "
        f"{envelope['misalignment_px']:g} px between the images.",
        f"- {training['steps']} steps of {training['batch_size']} × {training['patch_size']}² "
        f"patches ({training['samples_seen']:,} series), AdamW one-cycle, learning rate "
        f"{training['learning_rate']}, seed {training['seed']}; binary cross-entropy per map "
        "with the column pixels of Mo, S2, S1 weighted "
        f"{', '.join(f'{w:g}' for w in training.get('positive_weights', [1, 1, 1]))} (S1 columns "
        "are rare: unweighted, the network never called one).", "",
        "## Scores on held-out flakes", "",
        f"{images} series per dose, fresh microscopes (seeded). A detection counts when it "
        "lies within 0.5 Å of a column *of its class* (Hungarian matching per class); "
        "*single image* is the same network trained on the middle image only (the ablation).",
        "",
        "| Dose [e/Å² per image] | Input | Species F1 | Precision | Recall | F1 Mo | F1 S2 | "
        "F1 S1 | S1 recall | RMSE [pm] |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in scores.itertuples():
        lines.append(f"| {row.dose:g} | {row.model} | {row.f1:.3f} | {row.precision:.3f} | "
                     f"{row.recall:.3f} | {row.f1_Mo:.3f} | {row.f1_S2:.3f} | {row.f1_S1:.3f} "
                     f"| {row.recall_S1:.3f} | {row.rmse_pm:.1f} |")
    focal = scores[scores["model"] == "focal series"].set_index("dose")
    lines += ["", "## Targets (issue 6)", ""]
    if 1000 in focal.index:
        at = focal.loc[1000]
        lines.append(f"- Species F1 ≥ 0.95 at 1000 e/Å²: {at['f1']:.3f} — "
                     f"{'met' if at['f1'] >= 0.95 else 'not met'}.")
        lines.append(f"- S1 recall ≥ 0.9 at 1000 e/Å²: {at['recall_S1']:.3f} — "
                     f"{'met' if at['recall_S1'] >= 0.9 else 'not met'}.")
    single = scores[scores["model"] == "single image"].set_index("dose")
    if len(single):
        gaps = [f"{dose:g}: {focal.loc[dose, 'f1'] - single.loc[dose, 'f1']:+.3f}"
                for dose in single.index if dose in focal.index]
        lines.append("- Focal series minus single image, species F1 per dose: "
                     + ", ".join(gaps) + ".")
    return "\n".join(lines) + "\n"
