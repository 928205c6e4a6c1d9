"""Training configuration, read from TOML (``tem-atoms train CONFIG.toml``)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TEMFileError
from ..simulation.exit_waves import ExitWaveConfig
from ..simulation.microscope import MicroscopeEnvelope
from .data import ConditionDraw, HardRegime, total_fraction

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "TrainingRun", "columns_run", "config_task",
           "load_config", "read_config", "read_toml", "update_section"]

#: The task of a configuration without a ``task`` key: the column detectors (au-hrtem …).
DEFAULT_TASK = "columns"


@dataclass(frozen=True)
class DataConfig:
    """Exit-wave cache: where, how many structures, which seed."""

    folder: str = "build/au-hrtem/exit_waves"
    train_particles: int = 120
    validation_particles: int = 24
    carbon_slabs: int = 5
    seed: int = 2018
    support_probability: float = 0.5
    balance_zones: bool = False  # draw each zone axis equally often, whatever the particle counts
    # Columns with fewer atoms are masked out of the loss; 1 trains on every column (adatoms).
    min_column_atoms: int = 3
    # Shares of the training images from regimes the network gets wrong ([[data.hard_regimes]]
    # tables with zone_axis, defocus and fraction); none: every image from the envelope.
    hard_regimes: tuple[HardRegime, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """Network and its input."""

    name: str = "au-hrtem"
    description: str = ("Atomic columns in HRTEM images of gold nanoparticles "
                        "(300 kV, any Cs sign)")
    sampling: float = 0.2  # [Å/px] of the network's input
    base_channels: int = 16
    depth: int = 3
    context: int = 0  # dilated residual blocks after the bottleneck (wider receptive field)
    refine: int = 0  # residual blocks more at half resolution (second encoder and its decoder)
    # Take the imaging conditions (Cs, defocus; each may be unknown) as a second input, drawn
    # per training image as [conditions] says.
    conditions: bool = False
    # The crystal whose columns it finds (a key of analysis.transfer.CRYSTAL_REFLECTIONS), kept
    # in the weights: detection then says when the microscope does not transfer its lattice.
    crystal: str = ""
    # A second head that estimates the atoms along the beam of each column (n_atoms).
    counts: int = 0  # 1: a count head on the last features; 2: a count branch (see UNet)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation."""

    steps: int = 3000
    batch_size: int = 8
    patch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 250
    validate_every: int = 250
    validation_images: int = 24
    workers: int = 1
    threads: int = 1  # 0: every core the process may use
    # "auto": bfloat16 autocast only where the CPU computes it natively (AMX, AVX-512-BF16):
    # emulated, a step takes several times as long as in float32. Or "fp32", "bf16".
    precision: str = "auto"
    bfloat16: bool | None = None  # older configurations: true reads as "auto", false as "fp32"
    # Weights (.safetensors) to start from: layers the file lacks keep their initialisation.
    init_from: str = ""
    # Train only the layers whose names start with this (e.g. "count_head"; several separated
    # by commas: "decoders,head"); the rest is frozen, batch norms included. Empty: every layer.
    train_only: str = ""
    # With a count branch (model.counts = 2): its loss trains the encoder too, which the column
    # map shares (the column map changes: judge it again). False: the branch reads the encoder's
    # features detached, and the column map is exactly the network's without it.
    counts_train_encoder: bool = False
    # Learning rate of the imaging-condition layers, as a multiple of learning_rate.
    condition_learning_rate_factor: float = 1.0

    @property
    def use_bfloat16(self) -> bool:
        """Whether training and validation run under bfloat16 autocast on this machine."""
        from ..models.runtime import resolve_precision

        precision = self.precision
        if self.bfloat16 is False and precision == "auto":
            precision = "fp32"
        return resolve_precision(precision, "cpu") == "bf16"

    def torch_threads(self) -> int:
        """Threads for PyTorch: `threads`, or every core this process may use when 0."""
        from ..models.runtime import allowed_cores

        return self.threads if self.threads > 0 else allowed_cores()


@dataclass(frozen=True)
class TrainingRun:
    """Everything a training run needs; ``output`` holds checkpoints, weights and logs."""

    output: str = "build/au-hrtem/run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    exit_waves: ExitWaveConfig = field(default_factory=ExitWaveConfig)
    envelope: MicroscopeEnvelope = field(default_factory=MicroscopeEnvelope)
    conditions: ConditionDraw = field(default_factory=ConditionDraw)


def update_section(instance: Any, values: dict, section: str) -> Any:
    """`instance` (a dataclass) with the keys of the TOML table `section` set.

    Raises
    ------
    ValueError
        A key the dataclass has no field for.
    """
    known = {f.name for f in fields(instance)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{section}] has unknown keys: {', '.join(sorted(unknown))}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return replace(instance, **converted)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML configuration file.

    Raises
    ------
    TEMFileError
        The file cannot be read.
    ConfigError
        It is not valid TOML (the message names the file and the line).
    """
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise TEMFileError(path, f"cannot read the configuration ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not a valid TOML file ({exc})") from None


def config_task(path: str | Path) -> str:
    """What a training configuration trains: its top-level ``task`` (default ``"columns"``).

    Raises
    ------
    TEMFileError, ConfigError
        As :func:`read_toml`.
    """
    return str(read_toml(path).get("task", DEFAULT_TASK))


def read_config(path: str | Path) -> dict[str, Any]:
    """The TOML of a training configuration, as a dictionary (see :func:`read_toml`)."""
    return read_toml(path)


def load_config(path: str | Path) -> TrainingRun:
    """Read the training configuration of a column detector; keys left out keep their defaults.

    Sections: top-level ``output`` (and ``task = "columns"``, the default); ``[data]``,
    ``[model]``, ``[train]``, ``[exit_waves]``, ``[envelope]``, ``[conditions]`` with the
    fields of the matching dataclasses. Relative folders are relative to the configuration
    file. ``[[data.hard_regimes]]`` tables (``zone_axis``, ``defocus``, ``fraction``) become
    :class:`~napari_tem_atoms.training.data.HardRegime` entries.

    Raises
    ------
    ConfigError
        An unknown section or key, or a hard regime that is incomplete or out of range; the
        message names the file (a ``ValueError`` too).
    TEMFileError
        The file cannot be read.
    """
    path = Path(path)
    raw = read_toml(path)
    task = raw.pop("task", DEFAULT_TASK)
    if task != DEFAULT_TASK:
        raise ConfigError(f"{path}: a {task!r} configuration, not a column detector's")
    return columns_run(path, raw)


def columns_run(path: Path, raw: dict[str, Any]) -> TrainingRun:
    """The :class:`TrainingRun` of the TOML `raw` read from `path` (see :func:`load_config`)."""
    run = TrainingRun()
    sections = {"data": run.data, "model": run.model, "train": run.train,
                "exit_waves": run.exit_waves, "envelope": run.envelope,
                "conditions": run.conditions}
    has_conditions = "conditions" in raw
    try:
        updated = {name: update_section(default, raw.pop(name, {}), name)
                   for name, default in sections.items()}
    except ValueError as error:
        hint = (" (the hard_* keys are now [[data.hard_regimes]] tables: zone_axis, defocus, "
                "fraction)" if "hard_" in str(error) else "")
        raise ConfigError(f"{path}: {error}{hint}") from None
    if has_conditions and not updated["model"].conditions:
        raise ConfigError(f"{path}: [conditions] applies only to a network with condition "
                         "inputs: set conditions = true in [model], or remove the section")
    model = updated["model"]
    if model.crystal:
        from ..analysis.transfer import CRYSTAL_REFLECTIONS

        if model.crystal not in CRYSTAL_REFLECTIONS:
            raise ConfigError(f"{path}: [model] crystal = {model.crystal!r} is not one of "
                             f"{', '.join(map(repr, CRYSTAL_REFLECTIONS))} (or leave it out)")
    from ..models.unet import check_architecture

    try:  # now, not when training starts
        check_architecture(base_channels=model.base_channels, depth=model.depth,
                           context=model.context, refine=model.refine)
    except ValueError as error:
        raise ConfigError(f"{path}: [model] {error}") from None
    from ..models.runtime import PRECISIONS

    if updated["train"].precision not in PRECISIONS:
        raise ConfigError(f"{path}: [train] precision = {updated['train'].precision!r} is not "
                         f"one of {', '.join(map(repr, PRECISIONS))}")
    output = raw.pop("output", run.output)
    if raw:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(raw))}")
    base = path.parent
    data = updated["data"]
    try:
        regimes = tuple(HardRegime.from_dict(dict(regime)) for regime in data.hard_regimes)
        total_fraction(regimes)
    except (TypeError, ValueError) as error:  # a missing or unknown key, a bad range or share
        raise ConfigError(f"{path}: [[data.hard_regimes]]: {error}") from None
    data = replace(data, folder=str((base / data.folder).resolve()), hard_regimes=regimes)
    train = updated["train"]
    if train.init_from:
        train = replace(train, init_from=str((base / train.init_from).resolve()))
    return TrainingRun(output=str((base / output).resolve()), data=data,
                       model=updated["model"], train=train,
                       exit_waves=updated["exit_waves"], envelope=updated["envelope"],
                       conditions=updated["conditions"])
