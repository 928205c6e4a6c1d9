"""The one training pipeline every task runs through, and the interface a task implements.

A :class:`TrainingTask` says what is particular to one kind of model: its data (a source of
training patches and of held-out samples), its network, its loss, its validation metric and
what its weights record. :func:`run_training` does the rest the same way for every task: seeds,
threads, the optimiser and its one-cycle schedule, resuming from a checkpoint, starting from
other weights (``init_from``), training only some layers (``train_only``), the optimisation loop
with its log, one threshold calibration on one grid, and writing the weights, their metadata
and the model card.

::

    CONFIG.toml --(task key)--> train.TASKS --> ColumnsTask  (columns.py) --+
                                            --> SpeciesTask  (species.py) --+
    TrainingTask: build_data, network_input,                                 |
      architecture, loss, score, metadata, card                              v
                            run_training (here) --> <name>.safetensors, .json, .md

Resumable (a checkpoint every ``checkpoint_every`` steps, loaded with
``torch.load(weights_only=True)``) and reproducible (seeded model, data stream and validation).
"""

from __future__ import annotations

import json
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from ..errors import TEMAtomsError
from .config import TrainConfig

__all__ = ["CHECKPOINT_FILE", "LOG_FILE", "THRESHOLDS", "Log", "PatchSource", "Trained",
           "TrainingData", "TrainingTask", "Validation", "calibrate", "held_out_maps",
           "initialise_from", "network_maps", "optimisation_summary", "optimise", "resume",
           "run_training", "save_checkpoint", "training_runtime"]

Log = Callable[[str], None]

#: Files of a training run's output folder: the checkpoint to resume from, the log per step.
CHECKPOINT_FILE, LOG_FILE = "checkpoint.pt", "training_log.jsonl"

#: The confidence thresholds calibration tries, for every task (the lowest of equally good
#: ones is kept). Unrounded, as ``np.arange`` makes them; the metadata keep them rounded.
THRESHOLDS = np.arange(0.1, 0.91, 0.05)

#: Threshold of the validation during training (calibration comes at the end).
VALIDATION_THRESHOLD = 0.5


class PatchSource(Protocol):
    """Where training patches come from (a sample maker)."""

    def patch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
        """(images, targets, masks[, conditions]) of one random `size` × `size` patch."""


@dataclass
class TrainingData:
    """What a task trains and validates on.

    Attributes
    ----------
    patches : PatchSource
        Random training patches (drawn in background workers when ``workers`` > 0).
    held_out : callable
        ``held_out(rng, index)``: one whole validation sample; `index` counts up from 0 (a task
        cycles it through its held-out structures).
    summary : str
        What the data are, for the log line that starts training ("120 particles, 5 carbon
        slabs").
    """

    patches: PatchSource
    held_out: Callable[[np.random.Generator, int], Any]
    summary: str


@dataclass(frozen=True)
class Validation:
    """A task's scores of the network on held-out samples at one threshold.

    Attributes
    ----------
    f1 : float
        What threshold calibration maximises.
    fields : dict
        Written into ``training_log.jsonl`` (``validation_f1`` and the task's other scores).
    line : str
        The console line of a validation during training.
    summary : str
        The scores in the calibration's log line ("F1 0.912, RMSE 12.3 pm").
    """

    f1: float
    fields: dict[str, float]
    line: str
    summary: str


@dataclass(frozen=True)
class Trained:
    """What the pipeline knows of a trained network, for the task's metadata."""

    architecture: dict[str, Any]
    threshold: float
    parameters: int


class Scored(Protocol):
    """Scores with an F1 (what calibration maximises)."""

    @property
    def f1(self) -> float:
        """F1 of the detections."""


ScoresT = TypeVar("ScoresT", bound=Scored)
RunT = TypeVar("RunT")
DataT = TypeVar("DataT", bound=TrainingData)


@dataclass(frozen=True)
class TrainingTask(ABC, Generic[RunT, DataT]):
    """One kind of model: what :func:`run_training` needs to know that differs between them.

    A new model plugs in as a subclass with a ``name`` (the ``task`` key of its training
    configuration), a ``from_config`` that reads its configuration, and the methods below;
    then an entry in :data:`napari_tem_atoms.training.train.TASKS`.

    Attributes
    ----------
    run : dataclass
        The task's whole configuration; ``output`` (folder), ``train``
        (:class:`~napari_tem_atoms.training.config.TrainConfig`) and ``model`` (``name``,
        ``sampling``) are read by the pipeline.
    """

    name: ClassVar[str]
    run: RunT

    @classmethod
    @abstractmethod
    def from_config(cls, path: Path, raw: dict[str, Any]) -> TrainingTask:
        """The task of the configuration file `path`, whose TOML is `raw` (less ``task``).

        Raises ``ValueError`` naming `path` for a bad setting.
        """

    @property
    def train(self) -> TrainConfig:
        """The optimisation settings."""
        return self.run.train  # type: ignore[attr-defined]

    @property
    def model_name(self) -> str:
        """Name of the weights (``<name>.safetensors``)."""
        return self.run.model.name  # type: ignore[attr-defined]

    @property
    def output(self) -> Path:
        """Folder of the checkpoint, training log, weights, metadata and card."""
        return Path(self.run.output)  # type: ignore[attr-defined]

    # -- data ------------------------------------------------------------------------------
    @abstractmethod
    def build_data(self, log: Log) -> DataT:
        """Make (or load from a cache) what the task trains and validates on."""

    @abstractmethod
    def network_input(self, sample: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """A held-out sample's (channels, H, W) input, and its condition vector (or None)."""

    # -- network and loss ------------------------------------------------------------------
    @abstractmethod
    def architecture(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~napari_tem_atoms.models.unet.UNet`.

        They are kept in the weights: only keys in use, so that older weights read the same.
        """

    @abstractmethod
    def loss(self, logits: Any, targets: Any, masks: Any) -> Any:
        """The loss of one batch (float32 logits, as ``patches`` made targets and masks)."""

    # -- validation ------------------------------------------------------------------------
    @abstractmethod
    def score(self, maps: Sequence[np.ndarray], samples: Sequence[Any],
              threshold: float) -> Validation:
        """Scores of the network's (classes, H, W) `maps` of held-out `samples`."""

    # -- record ----------------------------------------------------------------------------
    @abstractmethod
    def metadata(self, trained: Trained, data: DataT) -> dict[str, Any]:
        """What the weights file and ``<name>.json`` keep: the model's description."""

    def card(self, metadata: dict[str, Any], sha256: str,
             last_validation: dict[str, Any] | None) -> str | None:
        """The model card written beside the weights (``<name>.md``), or None for none."""
        return None


def optimisation_summary(cfg: TrainConfig) -> dict[str, Any]:
    """How a network was optimised, as every task's metadata records it first."""
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "patch_size": cfg.patch_size,
            "learning_rate": cfg.learning_rate, "seed": cfg.seed}


# -- the pipeline ----------------------------------------------------------------------------

def run_training(task: TrainingTask, log: Log = print) -> Path:
    """Train the network of `task`; return the path of the written weights.

    Writes into ``task.output``: ``checkpoint.pt`` (resume), ``training_log.jsonl`` (loss and
    validation per step), ``<name>.safetensors`` and ``<name>.json`` (metadata and SHA-256),
    and the task's model card ``<name>.md`` where it has one.
    """
    import torch

    from ..models.registry import save_model
    from ..models.unet import UNet

    cfg = task.train
    output = task.output
    output.mkdir(parents=True, exist_ok=True)
    data = task.build_data(log)
    validation_samples = held_out_samples(data, cfg.validation_images, cfg.seed)

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads())
    architecture = task.architecture()
    network = UNet(**architecture).to(memory_format=torch.channels_last)
    if cfg.train_only:
        _freeze_all_but(network, cfg.train_only)
    if cfg.counts_train_encoder:
        if network.counts != 2:
            raise TEMAtomsError("counts_train_encoder = true needs a count branch ([model] "
                                "counts = 2)")
        network.counts_train_encoder = True
    optimiser, scheduler = _optimiser(network, cfg)
    step = resume(output / CHECKPOINT_FILE, network, optimiser, scheduler, cfg.steps, log)
    if not step and cfg.init_from:
        log(initialise_from(network, cfg.init_from))
    n_parameters = sum(p.numel() for p in network.parameters())
    log(f"training {task.model_name}: {n_parameters:,} parameters, {data.summary}, "
        f"{cfg.steps} steps of {cfg.batch_size}×{cfg.patch_size}²")
    log(training_runtime(cfg))

    bfloat16 = cfg.use_bfloat16
    batches = _batches(data.patches, cfg.batch_size, cfg.patch_size, cfg.seed, step,
                       cfg.workers)

    def validate_now() -> tuple[dict[str, float], str]:
        maps = held_out_maps(network, validation_samples, bfloat16, task.network_input)
        scores = task.score(maps, validation_samples, VALIDATION_THRESHOLD)
        return scores.fields, scores.line

    optimise(network, optimiser, scheduler, batches, step=step, cfg=cfg, loss_of=task.loss,
             validate_now=validate_now, output=output, log=log)
    calibration_samples = held_out_samples(data, 4 * cfg.validation_images, cfg.seed + 1)
    maps = held_out_maps(network, calibration_samples, bfloat16, task.network_input)
    threshold, calibrated = calibrate(
        lambda threshold: task.score(maps, calibration_samples, threshold))
    log(f"default threshold {threshold}: validation {calibrated.summary} on "
        f"{len(calibration_samples)} images")

    metadata = task.metadata(Trained(architecture, threshold, n_parameters), data)
    weights = output / f"{task.model_name}.safetensors"
    digest = save_model(weights, network, metadata)
    (output / f"{task.model_name}.json").write_text(
        json.dumps({**metadata, "sha256": digest}, indent=2))
    card = task.card(metadata, digest, _last_validation(output / LOG_FILE))
    if card is not None:
        (output / f"{task.model_name}.md").write_text(card)
    log(f"wrote {weights} (SHA-256 {digest})" + (" and its model card" if card else ""))
    return weights


def held_out_samples(data: TrainingData, count: int, seed: int) -> list:
    """`count` fixed held-out samples of `data`, the same for the same `seed`."""
    rng = np.random.default_rng([seed, 99])
    return [data.held_out(rng, index) for index in range(count)]


def calibrate(score_at: Callable[[float], ScoresT]) -> tuple[float, ScoresT]:
    """The threshold of :data:`THRESHOLDS` with the best F1, and the scores there.

    ``score_at(threshold)`` scores the network at one threshold (maps computed once); of equally
    good thresholds the lowest is kept, rounded to 0.01.
    """
    scored = [(score_at(threshold), round(float(threshold), 2)) for threshold in THRESHOLDS]
    best, threshold = max(scored, key=lambda item: item[0].f1)
    return threshold, best


def network_maps(network: Any, images: np.ndarray, bfloat16: bool,
                 conditions: np.ndarray | None = None) -> np.ndarray:
    """The network's (classes, H, W) maps of one whole (channels, H, W) field (no tiling)."""
    import torch

    multiple = 2 ** network.depth
    pad = [(-n) % multiple for n in images.shape[1:]]
    padded = np.pad(images, ((0, 0), (0, pad[0]), (0, pad[1])), mode="reflect")
    batch = torch.from_numpy(padded[None]).contiguous(memory_format=torch.channels_last)
    inputs = (batch,) if conditions is None else (batch, torch.from_numpy(conditions[None]))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
        maps = torch.sigmoid(network(*inputs).float())[0].numpy()
    return maps[:, : images.shape[1], : images.shape[2]]


def held_out_maps(network: Any, samples: Sequence[Any], bfloat16: bool,
                  network_input: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]
                  ) -> list[np.ndarray]:
    """The network's maps of whole held-out samples (in eval mode; left in training mode)."""
    network.eval()
    maps = []
    for sample in samples:
        images, conditions = network_input(sample)
        maps.append(network_maps(network, images, bfloat16, conditions))
    network.train()
    return maps


def _last_validation(history: Path) -> dict[str, Any] | None:
    records = [json.loads(line) for line in history.read_text().splitlines()]
    return next((r for r in reversed(records) if "validation_f1" in r), None)


def _batches(maker: PatchSource, batch_size: int, patch: int, seed: int, start_step: int,
             workers: int) -> Iterator[tuple[Any, Any, Any]]:
    """Endless batches; with workers, samples are made in background processes."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    class Patches(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            worker = 0 if info is None else info.id
            rng = np.random.default_rng([seed, start_step, worker])
            while True:
                yield maker.patch(rng, patch)

    loader = DataLoader(Patches(), batch_size=batch_size, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
    for images, targets, masks, *conditions in loader:
        images = images.contiguous(memory_format=torch.channels_last)
        # A network with condition inputs gets (images, conditions).
        yield ((images, conditions[0]) if conditions else images), targets, masks


def _optimiser(network: Any, cfg: TrainConfig) -> tuple[Any, Any]:
    """AdamW and its one-cycle schedule over ``cfg.steps``.

    The condition layers (``film.``) may learn faster than the rest: a parameter group of
    their own. One group when they do not (the optimiser state of earlier runs, and their
    checkpoints), and one of the trained layers alone with ``train_only``.
    """
    import torch

    film = [p for name, p in network.named_parameters() if name.startswith("film.")]
    rest = [p for name, p in network.named_parameters() if not name.startswith("film.")]
    rates = [cfg.learning_rate, cfg.learning_rate * cfg.condition_learning_rate_factor]
    groups = ([{"params": rest, "lr": rates[0]}, {"params": film, "lr": rates[1]}]
              if film and rates[1] != rates[0] else [{"params": list(network.parameters())}])
    if cfg.train_only:
        groups = [{"params": [p for p in network.parameters() if p.requires_grad]}]
    optimiser = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=rates if len(groups) > 1
                                                    else rates[0],
                                                    total_steps=cfg.steps, pct_start=0.05)
    return optimiser, scheduler


def resume(checkpoint: Path, network: Any, optimiser: Any, scheduler: Any, steps: int,
           log: Log) -> int:
    """Load a training checkpoint if there is one; return the step to go on from (0: none).

    When the run now plans more (or fewer) steps than the checkpoint's, the one-cycle schedule
    is re-laid over the new length, with the learning rate configured now, and followed from
    the checkpoint's step.
    """
    import torch

    if not checkpoint.exists():
        return 0
    state = torch.load(checkpoint, weights_only=True)
    # The optimiser's state carries the old schedule's rates: keep the new ones to re-lay it.
    planned = [{key: group[key] for key in ("initial_lr", "max_lr", "min_lr") if key in group}
               for group in optimiser.param_groups]
    try:
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
    except (RuntimeError, ValueError) as exc:
        raise TEMAtomsError(f"{checkpoint} was written by another network than this "
                            f"configuration's: move it away to start afresh ({exc})") from None
    step = int(state["step"])
    if step > steps:
        raise TEMAtomsError(f"{checkpoint} is at step {step}, beyond the {steps} steps "
                            "configured: raise steps, or move the checkpoint away")
    if state["scheduler"].get("total_steps") == steps:
        scheduler.load_state_dict(state["scheduler"])
        saved = optimiser.param_groups[0].get("max_lr")
        wanted = planned[0].get("max_lr") if planned else None
        if saved is not None and wanted is not None and abs(saved - wanted) > 1e-12 * wanted:
            log(f"note: the checkpoint's schedule (learning rate {saved:g}) goes on; the "
                f"configured {wanted:g} applies when steps changes or in a new run")
    else:
        for group, rates in zip(optimiser.param_groups, planned, strict=True):
            group.update(rates)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "step before optimizer.step": intended here
            for _ in range(min(step, steps)):
                scheduler.step()
        log(f"schedule re-laid over {steps} steps (the checkpoint planned "
            f"{state['scheduler'].get('total_steps')})")
    log(f"resumed from {checkpoint} at step {step}")
    return step


def save_checkpoint(checkpoint: Path, network: Any, optimiser: Any, scheduler: Any,
                    step: int) -> None:
    """Write a training checkpoint (to a temporary file, then renamed: never half-written)."""
    import torch

    torch.save({"network": network.state_dict(), "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step},
               checkpoint.with_suffix(".part"))
    checkpoint.with_suffix(".part").replace(checkpoint)


def optimise(network: Any, optimiser: Any, scheduler: Any, batches: Iterator, *, step: int,
             cfg: Any, loss_of: Callable[[Any, Any, Any], Any],
             validate_now: Callable[[], tuple[dict[str, float], str]], output: Path,
             log: Log) -> None:
    """The optimisation loop: from `step` to ``cfg.steps``.

    Parameters
    ----------
    cfg : TrainConfig
        ``steps``, ``use_bfloat16`` (autocast), ``validate_every`` and ``checkpoint_every`` (both
        also at the last step).
    loss_of : callable
        ``loss_of(logits, targets, masks)`` for one batch of ``batches`` (float32 logits).
    validate_now : callable
        Scores the network on the validation set: the fields for the training log and a line
        for the console.
    output : pathlib.Path
        Folder of ``checkpoint.pt`` and ``training_log.jsonl``.

    Every 25 steps the loss, speed and learning rate go to the console and to
    ``training_log.jsonl`` (one JSON record per line); a checkpoint lets an interrupted or
    lengthened run go on.
    """
    import torch

    steps, checkpoint, history = cfg.steps, output / CHECKPOINT_FILE, output / LOG_FILE
    network.train()
    bfloat16 = cfg.use_bfloat16  # read the processor once, not per step
    start, losses = time.time(), []
    while step < steps:
        inputs, targets, masks = next(batches)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = network(*inputs) if isinstance(inputs, tuple) else network(inputs)
        loss = loss_of(logits.float(), targets, masks)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        step += 1
        losses.append(loss.item())
        record: dict[str, Any] = {}
        if step % 25 == 0 or step == steps:
            rate = (time.time() - start) / len(losses)
            record = {"step": step, "loss": float(np.mean(losses[-25:])),
                      "seconds_per_step": rate, "lr": scheduler.get_last_lr()[0]}
            log(f"step {step}/{steps}  loss {record['loss']:.4f}  {rate:.2f} s/step  "
                f"ETA {(steps - step) * rate / 60:.0f} min")
        if step % cfg.validate_every == 0 or step == steps:
            fields, line = validate_now()
            record.update(step=step, **fields)
            log(f"  validation: {line}")
        if record:
            with open(history, "a") as stream:
                stream.write(json.dumps(record) + "\n")
        if step % cfg.checkpoint_every == 0 or step == steps:
            save_checkpoint(checkpoint, network, optimiser, scheduler, step)
    network.eval()


def _freeze_all_but(network: Any, prefix: str) -> None:
    """Train only the top-level layers named `prefix`…; the rest keeps its weights and stats.

    `prefix` may name several, separated by commas (``"decoders,head"``). Frozen layers stay
    in eval mode whenever the network is put in training mode, so their batch norms neither
    learn nor update their running statistics.
    """
    prefixes = tuple(part.strip() for part in prefix.split(",") if part.strip())
    children = [name for name, _ in network.named_children()]
    for part in prefixes:
        if not any(name.startswith(part) for name in children):
            raise TEMAtomsError(f"train_only = {prefix!r}: the network has no layer "
                                f"{part!r} (it has {', '.join(children)})")
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
    original = network.train

    def train(mode: bool = True) -> Any:
        original(mode)
        for name, child in network.named_children():
            if not name.startswith(prefixes):
                child.eval()
        return network

    network.train = train


def training_runtime(cfg: Any) -> str:
    """One log line: the processor, threads and precision a training run uses."""
    import torch

    from ..models.runtime import processor

    return (f"on {processor().describe()}: {torch.get_num_threads()} thread(s), "
            f"{'bf16 autocast' if cfg.use_bfloat16 else 'fp32'} (precision {cfg.precision})")


def initialise_from(network: Any, weights: str | Path) -> str:
    """Copy the layers of a weights file into `network`; say what was new.

    Layers the file lacks (e.g. added context blocks) keep their initialisation, except a count
    branch, which starts from the column decoders' weights (:meth:`UNet.start_count_branch`);
    a layer of the file that the network lacks, or of another shape, is an error: it would be
    silently lost.
    """
    from safetensors.torch import load_file

    if not Path(weights).is_file():
        raise TEMAtomsError(f"init_from: no weights file {weights} (train the first stage "
                            "first)")
    state = load_file(str(weights), device="cpu")
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a layer of another shape: another architecture
        raise TEMAtomsError(f"init_from {weights}: not the same network ({exc})") from None
    if unexpected:
        raise TEMAtomsError(f"init_from {weights}: layers the network does not have: "
                            f"{', '.join(unexpected)}")
    message = (f"initialised from {weights} ({len(state)} tensors); new: {len(missing)} "
               "tensors" + (f" ({missing[0].split('.')[0]} …)" if missing else ""))
    if (any(name.startswith("count_decoders") for name in missing)
            and network.start_count_branch()):
        message += "; count branch started from the column decoders' weights"
    return message
