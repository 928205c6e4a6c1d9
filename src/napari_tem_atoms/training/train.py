"""``tem-atoms train``: build the exit-wave cache, train the network, write weights and a card.

Resumable (a checkpoint every ``checkpoint_every`` steps, loaded with
``torch.load(weights_only=True)``) and reproducible (seeded model, data stream and validation).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.conditions import CONDITION_INPUTS, CS_SCALE, DEFOCUS_SCALE
from ..analysis.detect import MIN_COLUMN_DISTANCE, find_peaks
from ..errors import TEMAtomsError
from ..simulation.exit_waves import build_exit_wave_cache, load_exit_waves
from .card import model_card
from .config import TrainingRun
from .data import SampleMaker, describe_dataset
from .metrics import MatchCounts, match_columns

__all__ = ["ensure_exit_waves", "train"]

Log = Callable[[str], None]


#: Files of a training run's output folder: the checkpoint to resume from, the log per step.
CHECKPOINT_FILE, LOG_FILE = "checkpoint.pt", "training_log.jsonl"


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


def _batches(maker: SampleMaker, batch_size: int, patch: int, seed: int, start_step: int,
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


def _validation_set(maker: SampleMaker, count: int, seed: int) -> list:
    rng = np.random.default_rng([seed, 99])
    return [maker.make(rng, particle_index=i % len(maker.particles)) for i in range(count)]


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


def _heatmaps(network: Any, samples: list, bfloat16: bool) -> list[np.ndarray]:
    """The network's maps of whole validation fields (no tiling)."""
    network.eval()
    maps = [network_maps(network, sample.image[None], bfloat16, sample.conditions)[0]
            for sample in samples]
    network.train()
    return maps


def validate(network: Any, samples: list, sampling: float, bfloat16: bool,
             threshold: float = 0.5) -> MatchCounts:
    """F1 and RMSE on fixed validation samples at `threshold`."""
    counts = MatchCounts()
    for sample, heat in zip(samples, _heatmaps(network, samples, bfloat16), strict=True):
        positions, _ = find_peaks(heat, threshold, MIN_COLUMN_DISTANCE / sampling)
        counts += match_columns(positions, sample.columns, sampling)
    return counts


def calibrate_threshold(network: Any, samples: list, sampling: float, bfloat16: bool
                        ) -> tuple[float, MatchCounts]:
    """The confidence threshold with the best F1 on validation samples, and its scores."""
    maps = _heatmaps(network, samples, bfloat16)
    scored = []
    for threshold in np.arange(0.1, 0.91, 0.05):
        counts = MatchCounts()
        for sample, heat in zip(samples, maps, strict=True):
            positions, _ = find_peaks(heat, threshold, MIN_COLUMN_DISTANCE / sampling)
            counts += match_columns(positions, sample.columns, sampling)
        scored.append((counts.f1, round(float(threshold), 2), counts))
    _, threshold, counts = max(scored, key=lambda item: item[0])
    return threshold, counts


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
    """The optimisation loop both tasks share: from `step` to ``cfg.steps``.

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


def _freeze_all_but(network: Any, prefix: str) -> None:
    """Train only the top-level layers named `prefix`…; the rest keeps its weights and stats.

    Frozen layers stay in eval mode whenever the network is put in training mode, so their
    batch norms neither learn nor update their running statistics.
    """
    trained = [name for name, _ in network.named_children() if name.startswith(prefix)]
    if not trained:
        raise TEMAtomsError(f"train_only = {prefix!r}: the network has no such layer (it has "
                            f"{', '.join(name for name, _ in network.named_children())})")
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith(prefix))
    original = network.train

    def train(mode: bool = True) -> Any:
        original(mode)
        for name, child in network.named_children():
            if not name.startswith(prefix):
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

    Layers the file lacks (e.g. added context blocks) keep their initialisation; a layer of the
    file that the network lacks, or of another shape, is an error: it would be silently lost.
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
    return (f"initialised from {weights} ({len(state)} tensors); new: "
            f"{len(missing)} tensors" + (f" ({missing[0].split('.')[0]} …)" if missing else ""))


def train(run: TrainingRun, log: Log = print) -> Path:
    """Train the network of `run`; return the path of the written weights.

    Writes into ``run.output``: ``checkpoint.pt`` (resume), ``training_log.jsonl`` (loss and
    validation per step), ``<name>.safetensors`` and ``<name>.json`` (metadata and summary).
    """
    import torch

    from ..models.registry import save_model
    from ..models.unet import UNet

    cfg, model_cfg = run.train, run.model
    output = Path(run.output)
    output.mkdir(parents=True, exist_ok=True)
    ensure_exit_waves(run, log)
    particles = load_exit_waves(run.data.folder, "particles", "train")
    carbons = load_exit_waves(run.data.folder, "carbon", "train")
    validation = load_exit_waves(run.data.folder, "particles", "validation")
    validation_carbons = load_exit_waves(run.data.folder, "carbon", "validation")
    conditions = run.conditions if model_cfg.conditions else None
    maker = SampleMaker(particles, carbons, model_cfg.sampling, run.envelope,
                        run.data.support_probability, run.data.balance_zones,
                        run.data.hard_regimes, conditions, run.data.min_column_atoms,
                        model_cfg.counts)
    # Validation images are told their microscope as training images are (a mixture).
    validation_maker = SampleMaker(validation, validation_carbons, model_cfg.sampling,
                                   run.envelope, run.data.support_probability,
                                   conditions=conditions,
                                   min_column_atoms=run.data.min_column_atoms)
    validation_samples = _validation_set(validation_maker, cfg.validation_images, cfg.seed)

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads())
    architecture = {"in_channels": 1, "out_channels": 1, "base_channels": model_cfg.base_channels,
                    "depth": model_cfg.depth}
    if model_cfg.context:  # only when used: older weights files carry no such key
        architecture["context"] = model_cfg.context
    if model_cfg.refine:
        architecture["refine"] = model_cfg.refine
    if model_cfg.conditions:
        architecture["conditions"] = CONDITION_INPUTS
    if model_cfg.counts:
        architecture["counts"] = 1
    network = UNet(**architecture).to(memory_format=torch.channels_last)
    if cfg.train_only:
        _freeze_all_but(network, cfg.train_only)
    # The condition layers may learn faster than the rest (a group of their own).
    film = [p for name, p in network.named_parameters() if name.startswith("film.")]
    rest = [p for name, p in network.named_parameters() if not name.startswith("film.")]
    rates = [cfg.learning_rate, cfg.learning_rate * cfg.condition_learning_rate_factor]
    # One group when they do not: the optimiser state of earlier runs, and their checkpoints.
    groups = ([{"params": rest, "lr": rates[0]}, {"params": film, "lr": rates[1]}]
              if film and rates[1] != rates[0] else [{"params": list(network.parameters())}])
    if cfg.train_only:
        groups = [{"params": [p for p in network.parameters() if p.requires_grad]}]
    optimiser = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=rates if len(groups) > 1
                                                    else rates[0],
                                                    total_steps=cfg.steps, pct_start=0.05)
    checkpoint = output / CHECKPOINT_FILE
    step = resume(checkpoint, network, optimiser, scheduler, cfg.steps, log)
    if not step and cfg.init_from:
        log(initialise_from(network, cfg.init_from))
    n_parameters = sum(p.numel() for p in network.parameters())
    log(f"training {model_cfg.name}: {n_parameters:,} parameters, {len(particles)} particles, "
        f"{len(carbons)} carbon slabs, {cfg.steps} steps of {cfg.batch_size}×{cfg.patch_size}²")
    log(training_runtime(cfg))

    batches = _batches(maker, cfg.batch_size, cfg.patch_size, cfg.seed, step, cfg.workers)

    def validate_now() -> tuple[dict[str, float], str]:
        counts = validate(network, validation_samples, model_cfg.sampling, cfg.use_bfloat16)
        return ({"validation_f1": counts.f1, "validation_rmse_pm": counts.rmse_pm},
                f"F1 {counts.f1:.3f}  precision {counts.precision:.3f}  "
                f"recall {counts.recall:.3f}  RMSE {counts.rmse_pm:.1f} pm")

    optimise(network, optimiser, scheduler, batches, step=step, cfg=cfg,
             loss_of=lambda logits, targets, masks: column_loss(logits, targets, masks),
             validate_now=validate_now, output=output, log=log)
    calibration_samples = _validation_set(validation_maker, 4 * cfg.validation_images,
                                          cfg.seed + 1)
    threshold, calibrated = calibrate_threshold(network, calibration_samples,
                                                model_cfg.sampling, cfg.use_bfloat16)
    log(f"default threshold {threshold}: validation F1 {calibrated.f1:.3f}, RMSE "
        f"{calibrated.rmse_pm:.1f} pm on {len(calibration_samples)} images")
    metadata = {
        "name": model_cfg.name,
        "description": model_cfg.description,
        "architecture": architecture,
        "sampling": model_cfg.sampling,
        "classes": ["column"],
        **({"crystal": model_cfg.crystal} if model_cfg.crystal else {}),
        "threshold": threshold,
        "normalisation": "per frame: zero mean, unit standard deviation at the model sampling",
        **({"conditions": {"inputs": ["cs", "cs_known", "defocus", "defocus_known"],
                           "cs_scale_angstrom": CS_SCALE,
                           "defocus_scale_angstrom": DEFOCUS_SCALE,
                           "training": asdict(run.conditions)}}
           if model_cfg.conditions else {}),
        "training": {
            "steps": cfg.steps, "batch_size": cfg.batch_size, "patch_size": cfg.patch_size,
            "learning_rate": cfg.learning_rate, "seed": cfg.seed,
            "init_from": Path(cfg.init_from).name if cfg.init_from else None,
            **({"condition_learning_rate_factor": cfg.condition_learning_rate_factor}
               if model_cfg.conditions and cfg.condition_learning_rate_factor != 1 else {}),
            "balance_zones": run.data.balance_zones,
            **({"hard_regimes": [asdict(regime) for regime in maker.hard_regimes]}
               if maker.hard_regimes else {}),  # those in use (fraction > 0)
            "parameters": n_parameters, "samples_seen": cfg.steps * cfg.batch_size,
            "data": {**describe_dataset(particles), "carbon_slabs": len(carbons),
                     "support_probability": run.data.support_probability,
                     "data_seed": run.data.seed},
            "exit_waves": asdict(run.exit_waves),
            "envelope": run.envelope.as_dict(),
        },
    }
    weights = output / f"{model_cfg.name}.safetensors"
    digest = save_model(weights, network, metadata)
    (output / f"{model_cfg.name}.json").write_text(
        json.dumps({**metadata, "sha256": digest}, indent=2))
    records = [json.loads(line) for line in (output / LOG_FILE).read_text().splitlines()]
    last_validation = next((r for r in reversed(records) if "validation_f1" in r), None)
    (output / f"{model_cfg.name}.md").write_text(
        model_card(metadata, digest, validation=last_validation))
    log(f"wrote {weights} (SHA-256 {digest}) and its model card")
    return weights
