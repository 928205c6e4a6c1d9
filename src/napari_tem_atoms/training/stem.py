"""Training and scoring ``stem-columns``: atomic columns in HAADF and ABF STEM images.

Images are made on the fly by :mod:`napari_tem_atoms.simulation.stem` (no cache to build):
every sample draws a structure from a pool of projected crystals, nanoparticles and
monolayers, an in-plane rotation and position, a microscope, a scan and a dose. ABF images
are given to the network with their contrast flipped, exactly as detection flips an image whose
mode is ABF or BF, so one network finds bright columns of both (the model card argues it).

``tem-atoms train configs/stem-columns.toml`` runs it (``task = "stem-columns"``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..analysis.detect import normalise_image, rescale_to_sampling
from ..errors import ConfigError
from ..simulation.stem import (
    HAADF_LIGHT_Z,
    HELD_OUT_STRUCTURES,
    IGNORED_FRACTION,
    TRAINING_STRUCTURES,
    VISIBLE_FRACTION,
    ProjectedStructure,
    StemEnvelope,
    StemSettings,
    render_stem_image,
    structure_pool,
)
from .columns import ColumnTargetsTask
from .config import ModelConfig, TrainConfig, read_toml, update_section
from .data import Sample, column_targets, random_patch
from .metrics import MatchCounts, match_columns
from .pipeline import Log, Trained, TrainingData, optimisation_summary, run_training

__all__ = ["HeldOutImage", "HeldOutSet", "StemColumnsTask", "StemConfig", "StemRun",
           "StemSampleMaker", "evaluate_stem", "image_maxima", "load_stem_config",
           "resolved_columns", "score", "stem_card", "stem_run", "train_stem"]

#: Field of view of a training image [Å] (a little more than a 256-px patch at 0.15 Å/px).
FIELD = 40.0


@dataclass(frozen=True)
class StemConfig:
    """The ``[stem]`` section: the structure pools and how images are drawn."""

    structures_per_kind: int = 6  # random instances (thickness, vacancies) of each structure
    validation_per_kind: int = 1
    seed: int = 2024
    abf_fraction: float = 0.35  # share of ABF images (the rest HAADF)
    vacuum_probability: float = 0.25  # a bulk structure only partly in the field
    materials: tuple[str, ...] = ()  # only these of the training structures (empty: all)
    # Columns fainter than this share of the brightest are negatives (between it and
    # VISIBLE_FRACTION, neither target nor error): raise it to teach a network not to mark
    # columns a detector barely shows (oxygen in HAADF).
    ignored_fraction: float = IGNORED_FRACTION


@dataclass(frozen=True)
class StemRun:
    """Everything a STEM training run needs."""

    output: str = "build/stem-columns/run"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        name="stem-columns", description="Atomic columns in HAADF/ADF and ABF STEM images",
        sampling=0.15))
    train: TrainConfig = field(default_factory=TrainConfig)
    stem: StemConfig = field(default_factory=StemConfig)
    envelope: StemEnvelope = field(default_factory=StemEnvelope)


def load_stem_config(path: str | Path) -> StemRun:
    """Read a STEM training configuration; keys left out keep their defaults.

    Sections: ``task``, ``output``, ``[model]``, ``[train]``, ``[stem]``, ``[envelope]``;
    relative folders are relative to the file.
    """
    path = Path(path)
    raw = read_toml(path)
    if raw.pop("task", "stem-columns") != "stem-columns":
        raise ConfigError(f"{path}: not a stem-columns configuration")
    return stem_run(path, raw)


def stem_run(path: Path, raw: dict[str, Any]) -> StemRun:
    """The :class:`StemRun` of the TOML `raw` (less ``task``) read from `path`."""
    run = StemRun()
    try:
        model = update_section(run.model, raw.pop("model", {}), "model")
        train = update_section(run.train, raw.pop("train", {}), "train")
        stem = update_section(run.stem, raw.pop("stem", {}), "stem")
        envelope = update_section(run.envelope, raw.pop("envelope", {}), "envelope")
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    output = raw.pop("output", run.output)
    if raw:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(raw))}")
    envelope = replace(envelope, abf_fraction=stem.abf_fraction)
    if train.init_from:
        train = replace(train, init_from=str((path.parent / train.init_from).resolve()))
    return StemRun(output=str((path.parent / output).resolve()), model=model, train=train,
                   stem=stem, envelope=envelope)


def flip_dark_columns(image: np.ndarray) -> np.ndarray:
    """ABF/BF images show columns dark: the network is given them bright (negated)."""
    return -np.asarray(image, dtype=np.float32)


class StemSampleMaker:
    """Random STEM samples at the model's sampling, with their column maps.

    Parameters
    ----------
    structures : list of ProjectedStructure
        The pool structures are drawn from (each kind equally often).
    model_sampling : float
        Pixel size of the network's input [Å/px].
    envelope : StemEnvelope
        Microscopes, scans and doses.
    vacuum_probability : float
        Chance that a bulk structure is shifted so that part of the field is empty.
    ignored_fraction : float
        Columns between this share of the brightest and ``VISIBLE_FRACTION`` are neither
        targets nor errors; fainter ones are negatives.
    """

    def __init__(self, structures: list[ProjectedStructure], model_sampling: float,
                 envelope: StemEnvelope | None = None, vacuum_probability: float = 0.25,
                 ignored_fraction: float = IGNORED_FRACTION) -> None:
        if not structures:
            raise ValueError("no structures to draw from")
        self.structures = structures
        self.model_sampling = model_sampling
        self.envelope = envelope or StemEnvelope()
        self.vacuum_probability = vacuum_probability
        self.ignored_fraction = ignored_fraction
        labels = np.array([s.spec.label + s.spec.kind for s in structures])
        self.groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]

    def make(self, rng: np.random.Generator, settings: StemSettings | None = None,
             structure_index: int | None = None, field_of_view: float = FIELD) -> Sample:
        """One sample: the recorded image, the network's input, target and loss mask.

        ``columns`` holds (y, x) at the model's sampling and 1 for a visible column (a
        target), 0 for a faint one (neither target nor error: e.g. oxygen in HAADF).
        """
        return self.sample(*self.render(rng, settings, structure_index, field_of_view))

    def render(self, rng: np.random.Generator, settings: StemSettings | None = None,
               structure_index: int | None = None, field_of_view: float = FIELD,
               noise: bool = True) -> tuple[StemSettings, np.ndarray, np.ndarray, np.ndarray]:
        """Draw what :meth:`make` draws and record the image.

        Returns the settings, the recorded image (`noise` False: the expected counts of the
        same scan, see :func:`render_stem_image`), and every column inside the field: (row,
        col) [recorded px] and its signal relative to the structure's brightest.
        """
        if structure_index is None:
            group = self.groups[int(rng.integers(len(self.groups)))]
            structure_index = int(group[rng.integers(len(group))])
        structure = self.structures[structure_index]
        settings = settings or self.envelope.draw(rng)
        n = round(field_of_view / settings.sampling)
        offset = (0.0, 0.0)
        if structure.spec.kind == "particle":
            offset = tuple(rng.uniform(-0.35, 0.35, 2) * field_of_view)
        elif rng.random() < self.vacuum_probability:
            # The slab's edge inside the field: a surface, a hole, a wedge.
            offset = tuple(rng.uniform(-1, 1, 2) * (structure.extent + field_of_view / 4))
        recorded, columns, visibility = render_stem_image(structure, settings, (n, n), rng,
                                                          offset, noise)
        return settings, recorded, columns, visibility

    def sample(self, settings: StemSettings, recorded: np.ndarray, columns: np.ndarray,
               visibility: np.ndarray) -> Sample:
        """The :class:`Sample` of an image :meth:`render` recorded."""
        image = recorded if settings.mode == "HAADF" else flip_dark_columns(recorded)
        rescaled, factor = rescale_to_sampling(image, settings.sampling, self.model_sampling)
        image = normalise_image(rescaled)
        keep = visibility >= self.ignored_fraction
        labelled = np.column_stack([columns[keep] / factor,
                                    (visibility[keep] >= VISIBLE_FRACTION).astype(float)])
        target, mask = column_targets(image.shape, labelled, self.model_sampling, min_atoms=1)
        return Sample(image=image, target=target, mask=mask, columns=labelled, settings=settings,
                      recorded=recorded, recorded_sampling=settings.sampling)

    def patch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
        """A random `size` × `size` crop of a new sample, randomly flipped and rotated."""
        sample = self.make(rng)
        return random_patch(rng, size, sample.image[None], sample.target[None],
                            sample.mask[None])


#: Band along the field's edge that evaluate_stem does not score [Å]: a column just outside
#: the field shows its peak on the edge, where the truth (columns inside the field) has none
#: (a third of HAADF's and two thirds of ABF's held-out false detections were there).
SCORED_BORDER = 0.5


def score(detected: np.ndarray, columns: np.ndarray, sampling: float,
          resolved_only: bool = False, noise_free: np.ndarray | None = None,
          shape: tuple[int, int] | None = None, border: float = 0.0) -> MatchCounts:
    """Match detections to the visible columns; faint ones are neither rewarded nor errors.

    Parameters
    ----------
    detected : numpy.ndarray
        (N, 2) detections (row, col) [px].
    columns : numpy.ndarray
        (M, 3) columns (row, col) [px] and 1 (target) or 0 (faint).
    sampling : float
        Pixel size [Å/px].
    resolved_only : bool, optional
        Score only the targets the probe resolves: those with a local maximum of their own
        in `noise_free` (:func:`resolved_columns`); the others count as faint.
    noise_free : numpy.ndarray, optional
        The image without noise, columns bright (ABF negated); needed by `resolved_only`.
    shape : (int, int), optional
        The image's shape [px]; with `border`, the band of that width [Å] along its edge is not
        scored (its columns are faint, its detections dropped).
    border : float, optional
        See `shape`.
    """
    if shape is not None and border > 0:
        margin = border / sampling
        limits = np.asarray(shape[:2], dtype=float) - 1 - margin
        columns = np.array(columns, dtype=float).reshape(-1, 3)
        near_edge = np.any((columns[:, :2] < margin) | (columns[:, :2] > limits), axis=1)
        columns[near_edge, 2] = 0.0
        detected = np.asarray(detected, dtype=float).reshape(-1, 2)
        detected = detected[np.all((detected >= margin) & (detected <= limits), axis=1)]
    if resolved_only:
        if noise_free is None:
            raise ValueError("resolved_only needs the noise-free image")
        columns = np.array(columns, dtype=float).reshape(-1, 3)
        columns[:, 2] *= resolved_columns(noise_free, columns[:, :2], sampling)
    return match_columns(detected, columns, sampling, min_atoms=1)


def image_maxima(image: np.ndarray, threshold: float = -np.inf) -> np.ndarray:
    """(N, 2) positions (row, col) [px] of the local maxima of `image` above `threshold`.

    A maximum is a connected group of pixels that are the largest of their 3 × 3
    neighbourhood, at its centre: a flat top (a saturated column) is one maximum, and a flat
    region's inside (a vacuum clipped at zero) none (it must exceed one of its neighbours).
    """
    image = np.asarray(image, dtype=np.float32)
    is_max = ((image == ndimage.maximum_filter(image, size=3, mode="nearest"))
              & (image > ndimage.minimum_filter(image, size=3, mode="nearest"))
              & (image > threshold))
    labels, count = ndimage.label(is_max, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(is_max, labels, range(1, count + 1)))


def resolved_columns(noise_free: np.ndarray, positions: np.ndarray, sampling: float,
                     radius: float = 0.5) -> np.ndarray:
    """Which columns have a local maximum of the noise-free image within `radius` [Å].

    Two columns closer than the probe's width make one peak (or a ridge): only one of them,
    or neither, has a maximum of its own, and a peak finder cannot separate them (a network
    may still place them from the peak's shape and the lattice around it).

    Parameters
    ----------
    noise_free : numpy.ndarray
        (H, W) image without noise, columns bright (ABF negated).
    positions : numpy.ndarray
        (M, 2) columns (row, col) [px].
    sampling : float
        Pixel size [Å/px].
    radius : float, optional
        Largest distance [Å] from a column to its maximum (the matching radius).

    Returns
    -------
    numpy.ndarray
        (M,) bool.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 2)
    maxima = image_maxima(noise_free)
    if len(maxima) == 0 or len(positions) == 0:
        return np.zeros(len(positions), dtype=bool)
    distance, _ = cKDTree(maxima).query(positions)
    return distance * sampling <= radius


@dataclass
class StemData(TrainingData):
    """The structure pools a STEM task draws from, and its sample maker."""

    structures: list[ProjectedStructure]
    maker: StemSampleMaker


class StemColumnsTask(ColumnTargetsTask):
    """``stem-columns``: columns of STEM images (HAADF/ADF bright, ABF/BF negated).

    The loss, the network input and the architecture are every column detector's; the data
    are drawn on the fly (no cache), and only visible columns are scored (faint ones, e.g.
    oxygen in HAADF, are neither rewarded nor errors).
    """

    name = "stem-columns"
    run: StemRun
    #: Visible columns are 1 in the samples' truth, faint ones 0 (neither target nor error).
    scored_min_atoms = 1

    @classmethod
    def from_config(cls, path: Path, raw: dict[str, Any]) -> StemColumnsTask:
        """See :func:`load_stem_config`."""
        return cls(stem_run(path, raw))

    def build_data(self, log: Log) -> StemData:
        """Random instances of the training structures, and new ones for validation."""
        run = self.run
        start = time.time()
        specs = tuple(spec for spec in TRAINING_STRUCTURES
                      if not run.stem.materials or spec.name in run.stem.materials)
        if not specs:
            raise ConfigError(f"[stem] materials = {list(run.stem.materials)}: none of the "
                              "training structures ("
                              f"{', '.join(sorted({s.name for s in TRAINING_STRUCTURES}))})")
        structures = structure_pool(specs, run.stem.structures_per_kind, run.stem.seed)
        held_out = structure_pool(specs, run.stem.validation_per_kind, run.stem.seed + 1)
        log(f"{len(structures)} training and {len(held_out)} validation structures built in "
            f"{time.time() - start:.0f} s")
        maker = StemSampleMaker(structures, run.model.sampling, run.envelope,
                                run.stem.vacuum_probability, run.stem.ignored_fraction)
        validation_maker = StemSampleMaker(held_out, run.model.sampling, run.envelope,
                                           run.stem.vacuum_probability,
                                           run.stem.ignored_fraction)
        return StemData(
            patches=maker,
            held_out=lambda rng, index: validation_maker.make(
                rng, structure_index=index % len(held_out)),
            summary=f"{len(structures)} structures", structures=structures, maker=maker)

    def metadata(self, trained: Trained, data: StemData) -> dict[str, Any]:
        """Network, input, modes (dark ones negated), threshold and how it was trained."""
        run, cfg, model = self.run, self.run.train, self.run.model
        return {
            "name": model.name,
            "description": model.description,
            "architecture": trained.architecture,
            "sampling": model.sampling,
            "classes": ["column"],
            "threshold": trained.threshold,
            "imaging_modes": ["STEM-HAADF", "STEM-ABF", "STEM-BF", "STEM"],
            "dark_columns": ["STEM-ABF", "STEM-BF"],
            "normalisation": ("per frame: zero mean, unit standard deviation at the model "
                              "sampling; ABF/BF images negated first (bright columns)"),
            "training": {
                **optimisation_summary(cfg), "parameters": trained.parameters,
                "samples_seen": cfg.steps * cfg.batch_size,
                "data": {"simulation": "incoherent STEM (simulation/stem.py)",
                         "structures": sorted({s.spec.label + f" ({s.spec.kind})"
                                               for s in data.structures}),
                         "held_out_structures": sorted({s.label + f" ({s.kind})"
                                                        for s in HELD_OUT_STRUCTURES}),
                         **asdict(run.stem)},
                "envelope": {**run.envelope.as_dict(), "haadf_light_z": HAADF_LIGHT_Z},
            },
        }

    def card(self, metadata: dict[str, Any], sha256: str,
             last_validation: dict[str, Any] | None) -> str:
        """:func:`stem_card`."""
        return stem_card(metadata, sha256, validation=last_validation)


def train_stem(run: StemRun, log: Log = print) -> Path:
    """Train ``stem-columns``; return the path of the written weights (with metadata, card)."""
    return run_training(StemColumnsTask(run), log)


def _span(bounds: Any, unit: str = "", scale: float = 1.0) -> str:
    low, high = (float(v) * scale for v in bounds)
    return f"{low:g} … {high:g}{' ' + unit if unit else ''}"


def _light_atoms(envelope: dict[str, Any]) -> str:
    """The HAADF light-atom factor the weights were trained with (none before it existed)."""
    light_z = envelope.get("haadf_light_z")
    return "" if light_z is None else f" (HAADF × Z⁴ / (Z⁴ + {light_z:g}⁴): light atoms weaker)"


def stem_card(metadata: dict[str, Any], sha256: str, validation: dict | None = None,
              extra: str = "") -> str:
    """The Markdown model card of a ``stem-columns`` network, from its metadata."""
    training, envelope = metadata["training"], metadata["training"]["envelope"]
    data = training["data"]
    lines = [
        f"# Model card: `{metadata['name']}`", "", metadata["description"] + ".", "",
        "| | |", "|---|---|",
        f"| Weights | `{metadata['name']}.safetensors`, SHA-256 `{sha256}` |",
        f"| Network | U-Net, {training['parameters']:,} parameters, "
        f"{metadata['architecture']['base_channels']} base channels, depth "
        f"{metadata['architecture']['depth']}, "
        f"{metadata['architecture'].get('context', 0)} dilated context block(s) |",
        f"| Input | one image rescaled to {metadata['sampling']} Å/px, "
        f"{metadata['normalisation']} |",
        f"| Imaging modes | {', '.join(metadata['imaging_modes'])}; dark columns (negated "
        f"first): {', '.join(metadata['dark_columns'])} |",
        "| Output | column probability map; columns are its peaks |",
        f"| Default threshold | {metadata['threshold']} (best F1 on validation images) |",
        f"| Training | {training['steps']:,} steps × {training['batch_size']} patches of "
        f"{training['patch_size']}² px = {training['samples_seen']:,} images, never the same "
        f"twice; AdamW, one-cycle learning rate {training['learning_rate']:g}, seed "
        f"{training['seed']} |",
        "", "## Training data", "",
        f"- {data['simulation'][:1].upper()}{data['simulation'][1:]}: "
        f"{data['structures_per_kind']} random instances (thickness "
        "15-100 Å, 0-3 % vacancies; monolayers 0-8 % chalcogen vacancies; particles 2-4.5 nm) "
        "of each of: " + ", ".join(data["structures"]) + ".",
        "- Every image: a random in-plane rotation and position (a slab's edge inside the "
        f"field in {data['vacuum_probability']:.0%} of bulk images), ABF in "
        f"{data['abf_fraction']:.0%} of the images.",
        "- Held out (never trained on, used for the evaluation): "
        + ", ".join(data["held_out_structures"]) + ".",
        "- Targets: every column whose signal in the drawn mode reaches "
        f"{VISIBLE_FRACTION:.0%} of the structure's brightest columns; columns between "
        f"{data.get('ignored_fraction', IGNORED_FRACTION):.1%} and that (oxygen in HAADF) are "
        "neither targets nor errors; fainter ones are negatives.",
        "", "## Microscope and scan envelope (drawn anew for every image)", "",
        "| Parameter | Range |", "|---|---|",
        f"| Energy | {', '.join(f'{e / 1e3:g}' for e in envelope['energy'])} kV |",
        f"| Convergence semi-angle | {_span(envelope['convergence'], 'mrad')} |",
        f"| Defocus | {_span(envelope['defocus'], 'Å')} |",
        f"| Cs | {_span(envelope['cs'], 'µm', 1e-4)} |",
        f"| Two-fold astigmatism | {_span(envelope['astigmatism'], 'Å')}, any angle |",
        f"| Axial coma | {_span(envelope['coma'], 'Å')}, any angle |",
        f"| Source size (σ) | {_span(envelope['source_size'], 'Å')} |",
        f"| Column width (σ) | {_span(envelope['column_width'], 'Å')} |",
        f"| Column signal ∝ Σ Z^γ{_light_atoms(envelope)} | γ {_span(envelope['z_exponent'])}; "
        f"ABF {_span(envelope['abf_z_exponent'])} |",
        f"| Channelling: × n^(β-1) | β {_span(envelope['length_exponent'])} |",
        f"| Scan sampling | {_span(envelope['sampling'], 'Å/px')} (log-uniform) |",
        f"| Dose | {_span(envelope['dose'], 'e/Å²')} (log-uniform), Poisson noise |",
        f"| Detected fraction at the brightest columns | {_span(envelope['signal'])} |",
        f"| Background, amorphous layer | {_span(envelope['background'])}, "
        f"{_span(envelope['amorphous'])} |",
        f"| Detector read-out noise | {_span(envelope['readout_noise'])} e |",
        f"| Line jitter (σ) | {_span(envelope['line_jitter'], 'Å')} |",
        f"| Fly-back distortion | {_span(envelope['flyback'], 'Å')}, decaying over "
        f"{_span(envelope['flyback_decay'], 'px')} |",
        f"| Drift | {_span(envelope['drift'], 'Å per line')}, any direction |",
        f"| Line-to-line gain | {_span(envelope['line_gain'])} |",
        "| Augmentation | 90° rotations and flips |",
    ]
    if validation:
        lines += ["", f"Last validation during training (threshold 0.5, training structures, new "
                  f"instances): F1 {validation['validation_f1']:.3f}, RMSE "
                  f"{validation['validation_rmse_pm']:.1f} pm."]
    return "\n".join(lines) + "\n" + (("\n" + extra) if extra else "")


@dataclass(frozen=True)
class HeldOutImage:
    """One image of :class:`HeldOutSet`, and its truth.

    Attributes
    ----------
    settings : StemSettings
        The microscope and scan (at the dose asked for).
    structure : ProjectedStructure
        The structure imaged.
    recorded : numpy.ndarray
        The recorded image (HAADF bright, ABF dark columns); without noise if so asked.
    truth : numpy.ndarray
        (M, 3) columns (row, col) [recorded px] as scored: 1 target, 0 faint.
    columns : numpy.ndarray
        (K, 2) every column inside the field (row, col) [recorded px] ...
    visibility : numpy.ndarray
        (K,) ... and its signal relative to the structure's brightest (what labels it).
    """

    settings: StemSettings
    structure: ProjectedStructure
    recorded: np.ndarray
    truth: np.ndarray
    columns: np.ndarray
    visibility: np.ndarray


class HeldOutSet:
    """The images :func:`evaluate_stem` scores: the same structures and microscopes at every dose.

    Parameters are :func:`evaluate_stem`'s.
    """

    def __init__(self, images: int, seed: int, specs: tuple = HELD_OUT_STRUCTURES,
                 mode: str = "HAADF", model_sampling: float = 0.15) -> None:
        rng = np.random.default_rng([seed, 7])
        structures = structure_pool(specs, 1, seed + 10_000)
        self.seed, self.model_sampling = seed, model_sampling
        self.maker = StemSampleMaker(structures, model_sampling, StemEnvelope())
        self.draws = [(self.maker.envelope.draw(rng, mode=mode), i % len(structures))
                      for i in range(images)]

    def image(self, index: int, dose: float, noise: bool = True) -> HeldOutImage:
        """Image `index` at `dose` [e/Å²]; `noise` False: the same image without noise."""
        settings, structure_index = self.draws[index]
        settings, recorded, columns, visibility = self.maker.render(
            np.random.default_rng([self.seed, index]), replace(settings, dose=dose),
            structure_index, noise=noise)
        truth = self.maker.sample(settings, recorded, columns, visibility).columns.copy()
        # Model pixels -> recorded pixels (rescaling keeps pixel centres; the factor is
        # exactly the ratio of the pixel sizes).
        truth[:, :2] *= self.model_sampling / settings.sampling
        return HeldOutImage(settings, self.maker.structures[structure_index], recorded, truth,
                            columns, visibility)

    def bright_noise_free(self, index: int, dose: float) -> np.ndarray:
        """Image `index` without noise, columns bright (ABF negated): what resolves a column."""
        image = self.image(index, dose, noise=False)
        if image.settings.mode == "HAADF":
            return image.recorded
        return flip_dark_columns(image.recorded)


def evaluate_stem(detect: Any, doses: list[float], images_per_dose: int, seed: int,
                  specs: tuple = HELD_OUT_STRUCTURES, mode: str = "HAADF",
                  model_sampling: float = 0.15) -> list[dict[str, Any]]:
    """F1 and RMSE of `detect` on held-out STEM images, per dose.

    Parameters
    ----------
    detect : callable
        ``detect(image, sampling, mode) -> (N, 2) positions (row, col) in image pixels``.
    doses : list of float
        Doses [e/Å²] to score at; the rest of the microscope is drawn from the envelope.
    images_per_dose : int
        Images per dose (the same structures and microscopes at every dose).
    seed : int
        Seed of the structures (never those of training), microscopes and noise.
    specs : tuple of StemStructureSpec
        The structures (default: those never trained on).
    mode : str
        ``"HAADF"`` or ``"ABF"``.

    Returns
    -------
    list of dict
        Per dose: ``f1``, ``precision``, ``recall``, ``rmse_pm`` against every visible column,
        and the same with ``_resolved`` against those the probe resolves (a maximum of their
        own in the noise-free image, :func:`resolved_columns`; the others neither target nor
        error): a column the probe merges into its neighbour's peak cannot be told from it.

    The outer :data:`SCORED_BORDER` of every image is not scored.
    """
    held_out = HeldOutSet(images_per_dose, seed, specs, mode, model_sampling)
    noise_free: dict[int, np.ndarray] = {}  # where its maxima are does not depend on the dose
    rows = []
    for dose in doses:
        counts, counts_resolved = MatchCounts(), MatchCounts()
        for index in range(images_per_dose):
            image = held_out.image(index, dose)
            if index not in noise_free:
                noise_free[index] = held_out.bright_noise_free(index, dose)
            positions = detect(image.recorded, image.settings.sampling, mode)
            for tally, resolved_only in ((counts, False), (counts_resolved, True)):
                tally += score(positions, image.truth, image.settings.sampling,
                               resolved_only=resolved_only, noise_free=noise_free[index],
                               shape=image.recorded.shape, border=SCORED_BORDER)
        row = {"dose": dose, "images": images_per_dose}
        for suffix, tally in (("", counts), ("_resolved", counts_resolved)):
            row.update({f"f1{suffix}": tally.f1, f"precision{suffix}": tally.precision,
                        f"recall{suffix}": tally.recall, f"rmse{suffix}_pm": tally.rmse_pm})
        rows.append(row)
    return rows
