"""Model cards: how a model was made and what it scores, as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..models.description import ModelDescription, describe

__all__ = ["HAND_WRITTEN_END", "HAND_WRITTEN_START", "keep_hand_written", "model_card",
           "write_model_card", "write_species_card"]

#: Markers around a card's hand-written sections (what each training stage changed and
#: measured), which a regenerated card keeps.
HAND_WRITTEN_START = "<!-- hand-written sections: tem-atoms evaluate --card keeps them -->"
HAND_WRITTEN_END = "<!-- end of hand-written sections -->"


def _range(values: Any, scale: float = 1.0, unit: str = "") -> str:
    low, high = values
    return f"{low * scale:g} … {high * scale:g}{(' ' + unit) if unit else ''}"


def model_card(model: ModelDescription | dict, sha256: str, scores: pd.DataFrame | None = None,
               plot: str | None = None, validation: dict | None = None,
               extra: str = "", stages: list[tuple[str, str]] | None = None) -> str:
    """Render the model card of a trained model.

    Parameters
    ----------
    model : ModelDescription or dict
        What the weights say (architecture, sampling, training summary), or their metadata.
    sha256 : str
        SHA-256 of the weights file.
    scores : pandas.DataFrame, optional
        Output of :func:`~napari_tem_atoms.training.evaluate.evaluate`.
    plot : str, optional
        Relative path of the F1/RMSE plot.
    validation : dict, optional
        The last validation record of training (F1, RMSE).
    extra : str, optional
        More Markdown (speed benchmarks, notes) appended at the end.
    stages : list of (str, str), optional
        (configuration file, output folder) of every training stage, first to last, when the
        weights were made by a chain of runs (see :func:`training_stages`).
    """
    model = describe(model)
    training = model.training
    context = model.architecture.get("context", 0)
    refine = model.architecture.get("refine", 0)
    field_px = _receptive_field(model.architecture)
    envelope = training["envelope"]
    waves = training["exit_waves"]
    data = training["data"]
    lines = [
        f"# Model card: `{model.name}`",
        "",
        model.description + ".",
        "",
        "| | |",
        "|---|---|",
        f"| Weights | `{model.name}.safetensors`, SHA-256 `{sha256}` |",
        f"| Network | U-Net, {training['parameters']:,} parameters, "
        f"{model.architecture['base_channels']} base channels, depth "
        f"{model.architecture['depth']}"
        + (f", {context} dilated context blocks after the bottleneck (receptive field "
           f"{field_px} px = {field_px * model.sampling:.0f} Å)" if context else "")
        + (f", {refine} residual block{'s' if refine > 1 else ''} more in the half-resolution "
           "encoder and decoder" if refine else "")
        + ", fully convolutional |",
        f"| Input | one image rescaled to {model.sampling} Å/px, "
        f"{model.normalisation} |",
        *([_conditions_row(model.conditions, training)] if model.conditions else []),
        f"| Output | {', '.join(model.classes)} probability map; columns are its peaks |",
        f"| Default threshold | {model.threshold} (best F1 on held-out validation "
        "images; `--threshold` overrides it) |",
        f"| Training | {training['steps']:,} steps × {training['batch_size']} patches of "
        f"{training['patch_size']}² px = {training['samples_seen']:,} images, never the same "
        f"twice; AdamW, one-cycle learning rate {training['learning_rate']:g}, seed "
        f"{training['seed']}"
        + (f"; started from `{training['init_from']}` (the previous stage, see Reproduce)"
           if training.get("init_from") else "") + " |",
        "",
        "## Training data",
        "",
        f"- {data['particles']} gold nanoparticles ({data['atoms_total']:,} atoms), diameters "
        f"{_range(data['diameter_range_angstrom'], 0.1, 'nm')}; shapes "
        + ", ".join(f"{k} {v}" for k, v in data["shapes"].items())
        + "; zone axes " + ", ".join(f"{k} {v}" for k, v in data["zone_axes"].items())
        + "; tilts ≤ 1°, any in-plane rotation"
        + ("; each zone axis drawn equally often in training." if training.get("balance_zones")
           else "."),
        f"- Exit waves: abTEM multislice at {waves['energy'] / 1e3:g} kV, "
        f"{waves['simulation_sampling']} Å grid, {waves['slice_thickness']} Å slices, "
        f"{waves['frozen_phonons']} frozen-phonon configurations (RMS displacement "
        f"{waves['rms_displacement']} Å), kept band-limited to {waves['aperture']} Å⁻¹.",
        f"- Support: amorphous carbon slabs ({data['carbon_slabs']} simulated, "
        f"{_range(waves['carbon_thickness'], unit='Å')} thick) under "
        f"{data['support_probability']:.0%} of the images (weak-phase product with the "
        "particle's exit wave).",
        f"- Data seed {data['data_seed']}; validation and evaluation particles come from a "
        "separate random stream and are never trained on.",
    ]
    # Weights of stage 3 carry one regime ("hard_regime"), later ones a list.
    regimes = training.get("hard_regimes") or (
        [training["hard_regime"]] if training.get("hard_regime") else [])
    if regimes:
        shares = "; ".join(_regime(hard) for hard in regimes)
        lines.append(f"- Hard regimes (training images drawn where an earlier stage failed; the "
                     f"rest of each microscope from the envelope below): {shares}. The "
                     "evaluation draws from the envelope only.")
    lines += [
        "",
        "## Microscope envelope (drawn anew for every image)",
        "",
        "| Parameter | Range |",
        "|---|---|",
        f"| Energy | {envelope['energy'] / 1e3:g} kV |",
        f"| Defocus (abTEM sign, `defocus` = −C10) | {_range(envelope['defocus'], unit='Å')} |",
        f"| Cs (C30) | {_range(envelope['cs'], 1e-4, 'µm')} |",
        f"| Focal spread | {_range(envelope['focal_spread'], unit='Å')} |",
        f"| Two-fold astigmatism | {_range(envelope['astigmatism'], unit='Å')}, any angle |",
        f"| Input sampling | {_range(envelope['sampling'], unit='Å/px')} (log-uniform) |",
        f"| Dose | {_range(envelope['dose'], unit='e/Å²')} (log-uniform), Poisson noise |",
        f"| Blur (vibration, drift) | {_range(envelope['blur'], unit='Å')} σ |",
        f"| Detector MTF | floor {_range(envelope['mtf_floor'])}, half-point "
        f"{_range(envelope['mtf_half'])} Nyquist, power {_range(envelope['mtf_power'])}; "
        f"perfect in {envelope['perfect_mtf_probability']:.0%} |",
        f"| Contrast (gamma) | {_range(envelope['gamma'])} |",
        "| Augmentation | 90° rotations and flips |",
        "",
        "Both negative-Cs overfocus imaging (bright columns) and positive-Cs imaging (dark "
        "columns) are covered, and column contrast changes with thickness within a particle.",
        "",
    ]
    if validation:
        lines += [f"Validation during training (last step): F1 {validation['validation_f1']:.3f},"
                  f" RMSE {validation['validation_rmse_pm']:.1f} pm.", ""]
    if scores is not None:
        lines += [
            "## Scores on held-out simulations",
            "",
            "Scoring: Hungarian matching within 0.5 Å; columns of ≥ 3 atoms must be found; "
            "detections of 1–2-atom columns are neither rewarded nor penalised. Each dose: the "
            f"same {int(scores.attrs.get('images_per_dose', 0)) or 'N'} images of validation "
            "particles (microscopes drawn from the envelope once per image; only the dose and "
            "its shot noise change between rows). The classical peer (Gaussian filter + local "
            "maxima, σ and threshold tuned per dose on separate images, told the column "
            "polarity by the truth) is scored on the same images.",
            "",
            "| Dose [e/Å²] | Network F1 | Precision | Recall | RMSE [pm] | Peer F1 "
            "| Peer RMSE [pm] |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        network = scores[scores.method == "network"].set_index("dose")
        peer = scores[scores.method == "classical peer"].set_index("dose")
        for dose in network.index:
            n, p = network.loc[dose], peer.loc[dose]
            lines.append(f"| {dose:g} | {n.f1:.3f} | {n.precision:.3f} | {n.recall:.3f} | "
                         f"{n.rmse_pm:.1f} | {p.f1:.3f} | {p.rmse_pm:.1f} |")
        lines.append("")
        from .evaluate import TOLD

        told = scores[scores.method == TOLD].set_index("dose")
        if not told.empty:
            lines += [
                "### With the imaging conditions given",
                "",
                "The same images, with the network told Cs and the defocus as an operator "
                "would give them: each off by a uniform error of up to 2 µm and 30 Å "
                "(`detect_atoms(..., cs=..., defocus=...)`, `tem-atoms detect --cs-um … "
                "--defocus …`, the Detect widget's imaging conditions). The table above is the "
                "network told nothing.",
                "",
                *_score_table(told),
                "",
            ]
        lines += _window_section(scores, model)
        if plot:
            lines += [f"![F1 and RMSE against dose]({plot})", ""]
        lines += _targets(network, peer)
        if not told.empty and told.index.isin([100, 1000]).any():
            lines += ["Told the imaging conditions: " + "; ".join(
                f"F1 {told.loc[dose, 'f1']:.3f} at {dose:g} e/Å²" for dose in (100, 1000)
                if dose in told.index) + ".", ""]
    lines += _reproduce(model, stages)
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)


def _conditions_row(conditions: dict, training: dict) -> str:
    """The model card's table row on the optional imaging-conditions input."""
    drawn = conditions["training"]
    # Zero when added, whichever stage added them (the metadata does not say which did).
    start = ("; these layers are zero when added, so adding them leaves a network's maps as "
             "they were")
    factor = training.get("condition_learning_rate_factor", 1)
    if factor != 1:
        start += f", and they learnt at {factor:g} × the learning rate"
    return ("| Imaging conditions (optional input) | Cs and defocus, each may be left out "
            "(`cs=`, `defocus=`; `--cs-um`, `--defocus`): they scale and shift every level's "
            f"features{start}. In training, Cs was given for "
            f"{drawn['cs_known']:.0%} of the images (off by up to "
            f"{drawn['cs_error'] * 1e-4:g} µm) and the defocus for "
            f"{drawn['defocus_known']:.0%} (off by up to {drawn['defocus_error']:g} Å), "
            "independently |")


def _regime(hard: dict) -> str:
    """'20% a [100] particle at defocus -90 … 40 Å' for a hard regime's metadata."""
    particle = ("a particle of any zone axis" if hard["zone_axis"] == "any"
                else f"a {hard['zone_axis']} particle")
    return f"{hard['fraction']:.0%} {particle} at defocus {_range(hard['defocus'], unit='Å')}"


def _receptive_field(architecture: dict) -> int:
    """Receptive field [px] of the U-Net (pooling offsets left out).

    Two 3×3 convolutions per level down and up, two at the bottleneck, and two dilated ones
    (dilations 2 and 4) per context block, all at the bottleneck's 2^depth px, and two 3×3
    convolutions per half-resolution block (two of them per ``refine``).
    """
    depth = architecture["depth"]
    levels = sum(2 * 2 * 2**level for level in range(depth)) * 2  # encoder and decoder
    bottleneck = 2 * 2 * 2**depth
    context = architecture.get("context", 0) * 2 * (2 + 4) * 2**depth
    # Per refine: a block in the encoder and one in the decoder, two 3×3 convolutions each, at
    # the half-resolution level's 2 px.
    refine = architecture.get("refine", 0) * 2 * 2 * 2 * 2**1
    return 1 + levels + bottleneck + context + refine


def _reproduce(model: ModelDescription | dict, stages: list[tuple[str, str]] | None = None
               ) -> list[str]:
    """The commands that make these weights, from the configuration files in the repo."""
    model = describe(model)
    name = model.name
    init_from = model.training.get("init_from")
    if not stages:  # one run, or the two-stage layout of the configs folder
        stages = ([(f"configs/{name}-stage1.toml", "run")] if init_from else [])
        stages.append((f"configs/{name}.toml", "finetune" if init_from else "run"))
    lines = ["## Reproduce", "", "```bash", 'pip install -e ".[train]"']
    width = max(len(config) for config, _ in stages)
    for number, (config, _) in enumerate(stages, start=1):
        what = ("exit waves (cached), then training" if number == 1
                else f"from stage {number - 1}'s weights")
        label = f"stage {number}: {what}" if len(stages) > 1 else what
        lines.append(f"tem-atoms train {config:<{width}}   # {label}")
    final_config, final_output = stages[-1]
    lines += [f"tem-atoms evaluate --config {final_config} --model "
              f"build/{name}/{final_output}/{name}.safetensors \\",
              f"    --card docs/models/{name}.md --plot docs/models/{name}-scores.png", "```", ""]
    if len(stages) > 1:
        lines += ["Each configuration file says at its top what its stage changes and how its "
                  "weights were made exactly (runs lengthened from their checkpoints). A fresh "
                  "run gives the same data, seeds and networks, not bit-identical weights "
                  "(thread scheduling).", ""]
    return lines


def training_stages(config: str | Path) -> list[tuple[str, str]]:
    """The chain of runs behind `config`: (configuration, output folder name), first to last.

    A stage that starts from weights (``init_from``) follows the configuration, in the same
    folder, whose output holds those weights.
    """
    from .config import load_config

    config = Path(config)
    runs = {}
    for path in sorted(config.parent.glob("*.toml")):
        try:
            runs[path] = load_config(path)
        except ValueError:  # another kind of run (a species model's configuration)
            continue
    chain, current = [], config
    while current is not None and len(chain) <= len(runs):
        run = runs.get(current) or load_config(current)
        chain.insert(0, (current.as_posix(), Path(run.output).name))
        source = Path(run.train.init_from).parent if run.train.init_from else None
        current = next((path for path, other in runs.items()
                        if source is not None and Path(other.output) == source), None)
    return chain


def _window_section(scores: pd.DataFrame, model: ModelDescription) -> list[str]:
    """The table of the images whose microscope transfers the lattice (if scored)."""
    from ..analysis.transfer import MINIMUM_TRANSFER, model_optics
    from .evaluate import IN_WINDOW

    window = scores[scores.method == IN_WINDOW].set_index("dose")
    optics = model_optics(model)
    if window.empty or optics is None:
        return []
    names = " and ".join(f"{name} ({spacing:.2f} Å)"
                         for name, spacing in optics.reflections.items())
    lines = [
        "### Where the microscope transfers the lattice",
        "",
        f"The network told nothing, scored as above but only on the images whose microscope "
        f"transfers {optics.crystal}'s lowest-order reflections, {names}, with |sin χ| ≥ "
        f"{MINIMUM_TRANSFER:g} in every direction (kinematic transfer, the image's own 2-fold "
        "astigmatism included): images recorded at a defocus that `tem-atoms transfer "
        "--cs-um … --astigmatism …` lists. In the other images a reflection lies near a zero "
        "of the transfer, or astigmatism near focus transfers it with opposite signs in "
        "different directions; in the kinematic picture the lattice in the image is then "
        "shifted by half a period from the columns in at least one direction, and the network "
        "can put the columns between the true ones.",
        "",
        *_score_table(window, images=True),
    ]
    return [*lines, ""]


def _score_table(rows: pd.DataFrame, images: bool = False) -> list[str]:
    """A Markdown table of one method's scores by dose (with the images scored, on request)."""
    counted = " Images |" if images else ""
    lines = [f"| Dose [e/Å²] |{counted} F1 | Precision | Recall | RMSE [pm] |",
             "|---:|" + "---:|" * (5 if images else 4)]
    for dose, row in rows.iterrows():
        count = f" {int(row.images)} |" if images else ""
        lines.append(f"| {dose:g} |{count} {row.f1:.3f} | {row.precision:.3f} | "
                     f"{row.recall:.3f} | {row.rmse_pm:.1f} |")
    return lines


def _targets(network: pd.DataFrame, peer: pd.DataFrame) -> list[str]:
    """The project's accuracy targets against what was measured (met or not, plainly)."""
    def f1_at(doses: list[float]) -> float:
        return float(network.loc[[d for d in doses if d in network.index], "f1"].min())

    rows = []
    if 100 in network.index:
        rows.append(("F1 ≥ 0.95 at 100 e/Å²", f"{network.loc[100, 'f1']:.3f}",
                     network.loc[100, "f1"] >= 0.95))
    high = [d for d in network.index if d >= 1000]
    if high:
        rows.append(("F1 ≥ 0.99 at ≥ 1000 e/Å²", f"{f1_at(high):.3f} (lowest)",
                     f1_at(high) >= 0.99))
    if 1000 in network.index:
        rows.append(("RMSE ≤ 15 pm at 1000 e/Å²", f"{network.loc[1000, 'rmse_pm']:.1f} pm",
                     network.loc[1000, "rmse_pm"] <= 15))
    better = bool((network.f1 > peer.reindex(network.index).f1).all())
    rows.append(("F1 better than the classical peer at every dose",
                 "yes" if better else "no", better))
    lines = ["### Against the project's targets", "", "| Target | Measured | Met |",
             "|---|---|---|"]
    lines += [f"| {target} | {value} | {'yes' if met else '**no**'} |"
              for target, value, met in rows]
    return [*lines, ""]


def metadata_of(weights: str | Path) -> ModelDescription:
    """What a safetensors weights file says about its model (checked, typed)."""
    from ..models import read_description

    return read_description(weights)


def keep_hand_written(card: str, previous: str | Path) -> str:
    """Put the hand-written sections of the card at `previous` into a regenerated `card`.

    The sections between :data:`HAND_WRITTEN_START` and :data:`HAND_WRITTEN_END` go before
    the regenerated card's speed section (or at its end); a card without them, or no file at
    `previous`, leaves `card` as it is.
    """
    try:
        text = Path(previous).read_text(encoding="utf-8")
    except FileNotFoundError:
        return card
    start, end = text.find(HAND_WRITTEN_START), text.find(HAND_WRITTEN_END)
    if start < 0 or end < start:
        return card
    block = text[start:end + len(HAND_WRITTEN_END)] + "\n\n"
    speed = card.find("\n## Speed")
    if speed < 0:
        return card.rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"
    return card[:speed + 1] + block + card[speed + 1:]


def write_model_card(card: str | Path, model: str, scores: pd.DataFrame, images: int,
                     speed: pd.DataFrame | None = None, plot: str | Path | None = None,
                     config: str | Path | None = None) -> Path:
    """Write the model card of a column model, keeping the hand-written sections of the last.

    Parameters
    ----------
    card : str or Path
        The Markdown file (written atomically).
    model : str
        Registered model name or ``.safetensors`` file.
    scores : pandas.DataFrame
        Output of :func:`~napari_tem_atoms.training.evaluate.evaluate`.
    images : int
        Images scored per dose.
    speed : pandas.DataFrame, optional
        Output of :func:`~napari_tem_atoms.training.speed.measure_speed`: the card's speed
        section and the verdict on the project's speed target.
    plot : str or Path, optional
        The F1/RMSE plot, linked relative to the card.
    config : str or Path, optional
        The training configuration: the card's Reproduce section follows its stages.
    """
    import os

    from ..io._atomic import atomic_write
    from ..models import model_path, read_description
    from .speed import speed_section

    card = Path(card)
    weights, digest = model_path(model)
    scores.attrs["images_per_dose"] = images
    link = os.path.relpath(plot, card.parent) if plot else None
    stages = training_stages(config) if config else None
    extra = speed_section(speed) if speed is not None else ""
    text = keep_hand_written(model_card(read_description(weights), digest, scores=scores,
                                        plot=link, extra=extra, stages=stages), card)
    with atomic_write(card, "w", encoding="utf-8") as stream:
        stream.write(text)
    return card


def write_species_card(card: str | Path, model: str, scores: pd.DataFrame, images: int
                       ) -> Path:
    """Write the model card of a species model, keeping the hand-written sections of the last.

    `scores` is the output of :func:`~napari_tem_atoms.training.species.evaluate_species`
    (`images` series per dose).
    """
    from ..io._atomic import atomic_write
    from ..models import model_path, read_description
    from .species import species_card

    card = Path(card)
    weights, digest = model_path(model)
    text = keep_hand_written(species_card(read_description(weights), digest, scores, images),
                             card)
    with atomic_write(card, "w", encoding="utf-8") as stream:
        stream.write(text)
    return card
