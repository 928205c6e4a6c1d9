"""The ``tem-atoms`` command-line tool.

Sub-commands
------------
``tem-atoms info FILE...``
    What each file holds: shape, type, pixel size in Å (or why there is none), imaging mode
    (HRTEM or STEM, and where it was read).
``tem-atoms view [FILE...]``
    Open napari with the files (or the synthetic sample) and the plugin's widgets docked.
``tem-atoms detect INPUT... -o atoms.csv``
    Find atomic columns with a trained network; write the atoms CSV. Inputs or frames that
    fail are named on stderr and left out; the exit status is then 2.
``tem-atoms species SERIES -o atoms.csv``
    Columns and their species (Mo, S2, S1) from a three-image focal series.
``tem-atoms occupancy VIDEO -o sites.csv``
    Drift-correct a video, detect atoms, and write every site's occupancy and transitions.
``tem-atoms compare SITES_A.csv SITES_B.csv``
    Test whether two videos' per-site transition rates differ, by distance to the edge.
``tem-atoms train CONFIG.toml``
    Simulate training data with abTEM (cached) and train a network.
``tem-atoms evaluate --config CONFIG.toml``
    Score a model on held-out simulated images, per dose, against a classical peer.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import TEMAtomsError, TEMFileError
from .io import read_images
from .io._atomic import check_writable
from .models.engines import ENGINES
from .models.runtime import PRECISIONS

if TYPE_CHECKING:
    from .io import TEMImage
    from .models import LoadedModel, ModelDescription
    from .terminal import TerminalDriver

PLUGIN_NAME = "napari-tem-atoms"


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive(text: str) -> float:
    """An argparse type: a number above zero."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a confidence threshold between 0 and 1."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a confidence between 0 and 1, not {text}")
    return value


#: Every option that names a file a command writes, and its attribute.
_OUTPUT_OPTIONS = (("-o", "output"), ("--matrix", "matrix"), ("--table", "table"),
                   ("--plot", "plot"), ("--card", "card"), ("--screenshot", "screenshot"))


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that cannot be written or would overwrite an input.

    Cannot be written: a folder, a missing or read-only folder, a block device, a socket (see
    :func:`~.io._atomic.check_writable`); a long detection must not end in that refusal.
    """
    inputs: list[Path] = []
    for name in ("inputs", "series", "video", "atoms", "first", "second", "config"):
        value = getattr(args, name, None)
        inputs += [Path(path) for path in (value if isinstance(value, list) else [value])
                   if path is not None]
    for option, name in _OUTPUT_OPTIONS:
        output = getattr(args, name, None)
        if output is None:
            continue
        try:
            output = check_writable(output)
        except TEMAtomsError as exc:
            raise TEMAtomsError(f"{option} {exc}") from None
        if any(output.exists() and path.exists() and output.samefile(path) for path in inputs):
            raise TEMAtomsError(f"{option} {output}: is one of the inputs; the results would "
                                "overwrite it")


def _info(args: argparse.Namespace) -> int:
    failures = 0
    for path in args.paths:
        try:
            images = read_images(path, lazy=True)
        except TEMAtomsError as exc:  # said, and the other files are still described
            _say_error(exc)
            failures += 1
            continue
        for image in images:
            calibration = image.calibration
            if calibration.is_real_space:
                size_y, size_x = calibration.pixel_size_angstrom
                pixel = (f"{size_x:.6g} Å/px" if size_y == size_x
                         else f"{size_y:.6g} × {size_x:.6g} Å/px")
                pixel += f"  (file: {calibration.scale[1]:.6g} {calibration.unit})"
            else:
                pixel = f"none ({calibration.note})"
            shape = " × ".join(str(n) for n in image.data.shape)
            print(f"{image.path}  [{image.name}]")
            print(f"  format: {image.file_format}")
            print(f"  shape: {shape}  dtype: {image.data.dtype}")
            print(f"  pixel size: {pixel}")
            print(f"  mode: {image.imaging_mode} ({image.imaging_mode_source})")
            if image.frame_interval_s:
                print(f"  frame interval: {image.frame_interval_s:.6g} s")
    return 1 if failures else 0


def _view(args: argparse.Namespace) -> int:
    import time

    import napari
    from qtpy.QtWidgets import QApplication

    from .napari._layout import show_scale_bar

    viewer = napari.Viewer(title="napari-tem-atoms")
    # Within the screen: a window taller than the screen hides its status bar.
    screen = QApplication.primaryScreen().availableGeometry()
    viewer.window.resize(min(1400, screen.width()), min(900, screen.height()))
    if args.paths:
        for path in args.paths:
            viewer.open(path, plugin=PLUGIN_NAME)
    else:
        viewer.open_sample(PLUGIN_NAME, "synthetic_gold_stack")
    _dock_plugin_widgets(viewer)
    # Bottom left: napari's notifications pop up over the bottom-right corner of the canvas.
    show_scale_bar(viewer, "bottom_left")
    if args.screenshot:
        for _ in range(5):  # napari lays its status bar out on timers: one pass left it jumbled
            QApplication.processEvents()
            time.sleep(0.05)
        viewer.window.screenshot(str(args.screenshot), canvas_only=False)
        print(f"screenshot written to {args.screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0


def _detect(args: argparse.Namespace) -> int:
    """Detect atoms in every input; exit status 0, 1 (nothing written) or 2 (partial result).

    An input that cannot be read, or a frame that fails, is said on stderr and left out; the
    CSV holds the atoms of the rest, in the layout a run without failures gives.
    """
    from dataclasses import replace

    import pandas as pd

    from .analysis.detect import domain_warning, sampling_warning
    from .analysis.modes import choose_model
    from .batch import frame_jobs, iter_jobs
    from .events import Notice
    from .io import combined_atoms_table, write_atoms_csv
    from .models import load_cached_model
    from .terminal import TerminalDriver

    images, jobs, unusable = [], [], []
    for path in args.inputs:  # each on its own: one unreadable input does not stop the others
        try:
            found = read_images(path, lazy=True)
            found_jobs = frame_jobs(found, args.sampling)  # no pixel size, not an image...
        except TEMAtomsError as exc:
            _say_error(exc)
            unusable.append(str(path))
            continue
        jobs += [replace(job, image=job.image + len(images)) for job in found_jobs]
        images += found
    if not images:
        return 1
    images = [_with_mode(image, args.mode) for image in images]
    # The model of each file: the one asked for, or the one for its imaging mode.
    chosen = [(str(args.model), None) if args.model != "auto"
              else choose_model(image.imaging_mode, image.imaging_mode_source)
              for image in images]
    models = {name: load_cached_model(name, args.device, args.precision, args.engine)
              for name in dict.fromkeys(name for name, _ in chosen)}
    conditions = _conditions_of(args)
    if any(value is not None for value in conditions.values()):  # once, before any frame
        for name, model in models.items():
            _check_conditions(name, model.description, conditions)
    where = f"scheduler {args.scheduler}" if args.scheduler else "this computer"
    for model in models.values():
        print(f"{_runtime_line(model)}; {len(jobs)} frames on {where}", file=sys.stderr)
    driver = TerminalDriver(descriptions={"detect": "detecting"})
    modes = []  # each file's imaging mode, for its frames
    for image, (name, reason) in zip(images, chosen, strict=True):
        # Said once per file here (the driver says a text once per file): the frames' own
        # notices stay in the workers, and frames carry no imaging mode.
        loaded = models[name]
        if reason:  # which model ran on it, and why
            print(f"{image.path}: {name}: {reason}", file=sys.stderr)
        warning = sampling_warning(args.sampling or image.pixel_size_angstrom)
        if warning:
            driver.notice(Notice("sampling", warning), where=str(image.path))
        domain = domain_warning(image.imaging_mode, image.imaging_mode_source, loaded.name,
                                loaded.description)
        if domain:
            driver.notice(Notice("domain", domain), where=str(image.path))
        decided, note = _decide_contrast(image, args.sampling, loaded)
        if note:
            driver.notice(Notice("domain", note), where=str(image.path))
        modes.append(decided.imaging_mode)  # the workers get the mode decided here
    jobs = [replace(job, imaging_mode=modes[job.image]) for job in jobs]
    for model in models.values():
        _say_transfer(conditions, model.description, driver)  # once: the frames do not warn
    try:
        results = driver.run(iter_jobs(jobs, str(args.model), args.threshold, args.scheduler,
                                       args.device, average_mirrors=args.average_mirrors,
                                       precision=args.precision, engine=args.engine,
                                       errors="collect", **conditions))
    except TEMAtomsError as exc:
        return _failed(exc)
    failed = [result for result in results if isinstance(result, TEMAtomsError)]
    for error in failed:  # each names its file and frame
        driver.error(str(error))
    parts = []
    for number, image in enumerate(images):
        atoms = [table for job, table in zip(jobs, results, strict=True)
                 if job.image == number and not isinstance(table, TEMAtomsError)]
        if atoms:  # not when every frame of it failed
            parts.append((pd.concat(atoms, ignore_index=True),
                          args.sampling or image.pixel_size_angstrom, str(image.path)))
    if not parts:
        raise TEMAtomsError(f"no frame could be analysed; {args.output} was not written")
    # One table, one layout, whatever failed: with any stack among the inputs an image is
    # frame 0; with several inputs, every row names its file.
    result = combined_atoms_table(parts, stacks=any(image.data.ndim == 3 for image in images),
                                  name_files=len(images) > 1 or len(args.inputs) > 1)
    write_atoms_csv(args.output, result)
    done = len(jobs) - len(failed)
    print(f"{len(result)} atoms in {done} frame{'s' if done != 1 else ''} written to "
          f"{args.output}", file=sys.stderr)
    if failed or unusable:  # a partial result: exit status 2, what is missing said last
        missing = ([f"{len(unusable)} of {len(args.inputs)} inputs could not be read "
                    f"({', '.join(unusable)})"] if unusable else [])
        missing += [f"{len(failed)} of {len(jobs)} frames failed"] if failed else []
        raise IncompleteResult(f"incomplete: {' and '.join(missing)} (see above); their atoms "
                               f"are not in {args.output}")
    return 0


def _species(args: argparse.Namespace) -> int:
    from .analysis.species import iter_detect_species, species_atoms_table, species_counts
    from .io import read_image, write_atoms_csv
    from .models import load_cached_model
    from .terminal import TerminalDriver

    defoci = None
    if args.defoci:
        try:
            defoci = [float(value) for value in args.defoci.split(",")]
        except ValueError:
            raise TEMAtomsError(f"--defoci must be numbers separated by commas (Å), not "
                                f"{args.defoci!r}") from None
    try:
        series = _with_mode(read_image(args.series, lazy=True), args.mode)
        sampling = args.sampling or series.pixel_size_angstrom
        loaded = load_cached_model(str(args.model), args.device, args.precision, args.engine)
        print(_runtime_line(loaded), file=sys.stderr)
        # The TEMImage, not its data: its imaging mode is checked against the model's.
        atoms = TerminalDriver(where=str(args.series)).run(iter_detect_species(
            series, loaded, sampling, defoci, align=not args.no_align,
            threshold=args.threshold, max_shift=args.max_shift))
    except TEMAtomsError as exc:
        return _failed(TEMAtomsError(f"{args.series}: {exc}"))
    write_atoms_csv(args.output, species_atoms_table(atoms, sampling, series.data.ndim == 4,
                                                     defoci))
    print(f"{len(atoms)} columns ({species_counts(atoms)}) written to {args.output}",
          file=sys.stderr)
    return 0


def _occupancy(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis.video import OCCUPANCY_MODEL, iter_video_occupancy
    from .io import read_atoms_csv, read_image, write_occupancy_matrix_csv, write_sites_csv
    from .io.imaging_mode import is_stem
    from .models import load_cached_model, model_description
    from .terminal import TerminalDriver

    try:
        video = _with_mode(read_image(args.video, lazy=True), args.mode)
        if args.model == "auto":  # STEM videos: the STEM model; else the one that sees adatoms
            args.model = ("stem-columns" if is_stem(video.imaging_mode)
                          else OCCUPANCY_MODEL)
        atoms = None
        if args.atoms:
            table = read_atoms_csv(args.atoms)
            if table.coordinates.shape[1] != 3:
                raise TEMAtomsError(f"{args.atoms}: the atoms have no frame column; an "
                                    "occupancy needs the atoms of every frame")
            atoms = pd.DataFrame(table.coordinates, columns=["frame", "y", "x"])
        sampling = args.sampling or video.pixel_size_angstrom
        radius = args.site_radius / sampling if args.site_radius and sampling else None
        conditions = _conditions_of(args)
        driver = TerminalDriver()
        if atoms is None and any(value is not None for value in conditions.values()):
            described = model_description(str(args.model))  # said before the drift
            _check_conditions(str(args.model), described, conditions)
            _say_transfer(conditions, described, driver)  # the detector's own: said already
        model: object = args.model
        if atoms is None:  # the detector runs: say where and how
            model = load_cached_model(str(args.model), args.device, args.precision, args.engine)
            print(_runtime_line(model), file=sys.stderr)
        result = driver.run(iter_video_occupancy(
            video, model, sampling, atoms=atoms, threshold=args.threshold,
            max_shift=args.max_shift, site_radius=radius, method=args.method, **conditions))
    except TEMAtomsError as exc:
        return _failed(exc)
    write_sites_csv(args.output, result.sites)
    sites = result.sites
    print(f"{len(sites)} sites over {result.occupied.shape[0]} frames written to {args.output}; "
          f"drift up to {abs(result.drift).max():.1f} px", file=sys.stderr)
    for layer, group in sites.groupby("layer", sort=False):
        print(f"  {layer}: {len(group)} sites, median occupancy {group['occupancy'].median():.2f}"
              f", median transition rate {group['transition_rate'].median():.3f} per frame",
              file=sys.stderr)
    print(f"method: {result.method}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.matrix:
        write_occupancy_matrix_csv(args.matrix, result.occupancy_matrix())
        print(f"occupancy matrix (frames × sites) written to {args.matrix}", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis.occupancy import compare_transition_rates
    from .io import write_comparison_csv

    tables = []
    for path in (args.first, args.second):
        try:
            tables.append(pd.read_csv(path))
        except (OSError, ValueError) as exc:
            raise TEMFileError(path, f"cannot read a sites CSV ({exc})") from None
    names = tuple(args.names) if args.names else (Path(args.first).stem, Path(args.second).stem)
    result = compare_transition_rates(tables[0], tables[1], names, args.column)
    print(result.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.output:
        write_comparison_csv(args.output, result)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training.train import load_task, train

    def log(line: str) -> None:
        print(line, flush=True)

    task = load_task(args.config, precision=args.precision)  # names the file
    try:  # what the configuration points at is missing or does not fit
        train(task, log=log)
    except TEMAtomsError as exc:
        raise TEMAtomsError(f"{args.config}: {exc}") from None
    return 0


def _evaluate_species(args: argparse.Namespace) -> int:
    import pandas as pd

    from .io import write_scores_csv
    from .training.card import write_species_card
    from .training.species import evaluate_species, load_species_config

    run = load_species_config(args.config)
    if args.scores:
        scores = pd.read_csv(args.scores)
    else:
        doses = args.doses if args.doses_given else [100, 300, 1000, 3000, 10000]
        scores = evaluate_species(run, args.model, doses, args.images, single=args.single)
    print(scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.table:
        write_scores_csv(args.table, scores)
    if args.card:
        write_species_card(args.card, args.model, scores, args.images)
        print(f"model card written to {args.card}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .io import write_scores_csv
    from .training.config import config_task

    if config_task(args.config) == "species":
        return _evaluate_species(args)
    from .simulation.exit_waves import load_exit_waves
    from .training import load_config
    from .training.evaluate import evaluate, plot_scores

    run = load_config(args.config)
    by_height = args.by_height is not None  # (--by-height alone: --model only)
    if by_height or not args.scores:  # both score the held-out exit waves
        particles = load_exit_waves(run.data.folder, "particles", "validation")
        carbons = load_exit_waves(run.data.folder, "carbon", "validation")
        if not particles:
            raise TEMAtomsError(f"no validation exit waves in {run.data.folder}: run "
                                f"`tem-atoms train {args.config}` first")
    if by_height:  # recall by column height and atom counts, paired over the models
        from .training.evaluate import evaluate_by_height

        models = [args.model, *args.by_height]
        table = evaluate_by_height(models, particles, carbons,
                                   doses=args.doses if args.doses_given else (100, 1000),
                                   images_per_dose=args.images,
                                   envelope=run.envelope,
                                   support_probability=run.data.support_probability,
                                   log=lambda line: print(line, flush=True))
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.table:
            write_scores_csv(args.table, table)
        return 0
    if args.scores:  # scores of an earlier run: only (re)write the table, plot and card
        scores = pd.read_csv(args.scores)
    else:
        scores = evaluate(args.model, particles, carbons, doses=args.doses,
                          images_per_dose=args.images, envelope=run.envelope,
                          support_probability=run.data.support_probability,
                          log=lambda line: print(line, flush=True))
    print(scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.table:
        write_scores_csv(args.table, scores)
    if args.plot:
        plot_scores(scores, args.plot)
    if args.card:
        from .training.card import write_model_card
        from .training.speed import measure_speed

        speed = measure_speed(str(args.model))
        print(speed.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        write_model_card(args.card, args.model, scores, args.images, speed=speed,
                         plot=args.plot, config=args.config)
        print(f"model card written to {args.card}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from .analysis.transfer import transfer_report
    from .models import model_description

    if args.astigmatism < 0:
        raise TEMAtomsError("--astigmatism is a magnitude (Å): it cannot be negative")
    lines = transfer_report(model_description(str(args.model)), str(args.model),
                            args.cs_um * 1e4, args.defocus or [], args.astigmatism)
    print("\n".join(lines))
    return 0


def _check_conditions(model: str, described: ModelDescription,
                      conditions: dict[str, float | None]) -> None:
    """Refuse --cs-um/--defocus values the model cannot take (TEMAtomsError naming them)."""
    from .analysis.conditions import model_condition_vector

    try:
        model_condition_vector(described, **conditions)
    except TEMAtomsError as exc:
        raise TEMAtomsError(f"model {model}: {exc} (--cs-um, --defocus)") from None


def _say_transfer(conditions: dict[str, float | None], described: ModelDescription,
                  driver: TerminalDriver) -> None:
    """Say, once, a warning when the conditions barely transfer the model's lattice."""
    from .analysis.transfer import model_optics
    from .events import Notice

    optics = model_optics(described)
    transfer = optics.warning(**conditions) if optics else None
    if transfer:
        driver.notice(Notice("transfer", transfer))


def _add_condition_arguments(parser: argparse.ArgumentParser) -> None:
    """The optional --cs-um and --defocus of the commands that detect atoms."""
    conditions = parser.add_argument_group(
        "imaging conditions (optional)",
        "what the microscope was set to, for a model that takes it (its card says so): near "
        "Gaussian focus it tells a lattice from the same lattice shifted by half a period")
    conditions.add_argument("--cs-um", type=float, metavar="µm",
                            help="spherical aberration Cs in µm, as the corrector reports it "
                                 "(negative for negative-Cs imaging)")
    conditions.add_argument("--defocus", type=float, metavar="Å",
                            help="defocus set, in Å, abTEM's sign (-C10: positive is "
                                 "underfocus); tens of Å off is fine")


#: --mode values (besides auto); see napari_tem_atoms.io.imaging_mode.
MODE_CHOICES = ("auto", "hrtem", "stem-haadf", "stem-abf", "stem-bf")


def _add_mode_argument(parser: argparse.ArgumentParser) -> None:
    """--mode: how the images were recorded, over what the files say."""
    parser.add_argument("--mode", choices=MODE_CHOICES, default="auto",
                        help="how the images were recorded (default auto: what each file's "
                             "metadata say, shown by tem-atoms info); it picks the model "
                             "(--model auto) and whether STEM columns are dark (ABF, BF)")


def _with_mode(image: TEMImage, mode: str) -> TEMImage:
    """`image` with the --mode given (``"auto"``: as read from its file)."""
    from dataclasses import replace

    from .io.imaging_mode import parse_imaging_mode

    if mode == "auto":
        return image
    return replace(image, imaging_mode=parse_imaging_mode(mode),
                   imaging_mode_source="set by the user (--mode)")


def _decide_contrast(image: TEMImage, sampling: float | None, loaded: LoadedModel
                     ) -> tuple[TEMImage, str | None]:
    """A file's mode for a bright-column STEM model, decided once from its first frame.

    Where the mode does not say which way the columns point (``STEM``, ``unknown``), the
    network decides on the first frame and the file's frames go to the workers with that mode
    (``STEM-ABF``: negated; ``STEM-HAADF``: not); a mode that says it is checked against the
    image's contrast. Returns the image (its mode decided) and the sentence to say, if any.
    """
    from dataclasses import replace

    import numpy as np

    from .analysis.detect import frame_contrast
    from .analysis.modes import dark_column_modes

    if not dark_column_modes(loaded.description):
        return image, None
    first = np.asarray(image.data if image.data.ndim == 2 else image.data[0], dtype=np.float32)
    negate, note = frame_contrast(loaded, first, sampling or image.pixel_size_angstrom,
                                  image.imaging_mode)
    if image.imaging_mode in ("STEM", "unknown"):
        image = replace(image, imaging_mode="STEM-ABF" if negate else "STEM-HAADF",
                        imaging_mode_source="decided from the image's contrast "
                                            f"(was {image.imaging_mode})")
    return image, note


def _conditions_of(args: argparse.Namespace) -> dict[str, float | None]:
    """``cs`` and ``defocus`` [Å] from --cs-um and --defocus."""
    return {"cs": None if args.cs_um is None else args.cs_um * 1e4, "defocus": args.defocus}


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """--precision and --engine: how the network runs."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="network precision (default auto: bf16 where the processor "
                             "computes it natively, AMX or AVX-512-BF16, else fp32)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (default auto: OpenVINO on the CPU when "
                             "installed, napari-tem-atoms[fast]; else PyTorch)")


def _runtime_line(loaded: LoadedModel) -> str:
    """``model au-hrtem on cpu (openvino, bf16) · <processor>``: what ran, for the log.

    Weights given as a file, not a registered name, are not checked against a known hash:
    the line gives theirs (``model w.safetensors, SHA-256 <16 hex digits>, on cpu ...``), for
    the user to record which weights made the results.
    """
    from .models import REGISTRY
    from .models.runtime import processor

    where = (processor().describe() if loaded.device == "cpu" else loaded.device)
    name = loaded.name
    if loaded.name not in REGISTRY and loaded.sha256:
        name += f", SHA-256 {loaded.sha256[:16]},"
    return (f"model {name} on {loaded.device} ({loaded.engine_name}, "
            f"{loaded.precision}); processor: {where}")


#: Tab titles of the docked widgets: their full names did not fit six tabs ("Calib...").
TAB_TITLES = {"Detect atoms": "Detect", "Live mode": "Live", "Species (focal series)": "Species",
              "Align (focal series, drift)": "Align"}


def _dock_plugin_widgets(viewer: object) -> None:
    """Dock every widget this plugin contributes, as tabs (Detect atoms in front).

    The image is then fitted to the canvas the docks leave: fitted before they came, it was cut
    off at both sides.
    """
    from npe2 import PluginManager
    from qtpy.QtWidgets import QApplication

    manifest = PluginManager.instance().get_manifest(PLUGIN_NAME)
    widgets = manifest.contributions.widgets or []
    for index, widget in enumerate(reversed(widgets)):  # the last docked tab is shown
        dock, _ = viewer.window.add_plugin_dock_widget(  # type: ignore[attr-defined]
            PLUGIN_NAME, widget.display_name, tabify=index > 0)
        # The tab shows the window title; the dock's own title bar keeps the full name.
        dock.setWindowTitle(TAB_TITLES.get(widget.display_name, widget.display_name))
    QApplication.processEvents()  # the canvas takes its new size
    viewer.reset_view()  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tem-atoms`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="tem-atoms",
        description="Atoms, species and per-column statistics from atomic-resolution TEM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="show what files hold and their pixel size in Å")
    info.add_argument("paths", nargs="+", type=Path, metavar="FILE",
                      help="images, stacks or folders of frames")
    info.set_defaults(run=_info)

    view = commands.add_parser("view", help="open napari with the plugin's widgets docked")
    view.add_argument("paths", nargs="*", type=Path, metavar="FILE",
                      help="files to open (default: the synthetic sample stack)")
    view.add_argument("--screenshot", type=Path, metavar="PNG",
                      help="save a screenshot of the window and exit (needs a display)")
    view.set_defaults(run=_view)

    detect = commands.add_parser("detect", help="find atomic columns; write an atoms CSV")
    detect.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="images, stacks or folders of frames (every readable format)")
    detect.add_argument("--model", default="auto",
                        help="registered model name or .safetensors file (default auto: "
                             "au-hrtem for HRTEM images, stem-columns for STEM ones, from "
                             "each file's imaging mode or --mode)")
    detect.add_argument("--sampling", type=_positive, metavar="Å/px",
                        help="pixel size, when the files do not give it (or to override it)")
    detect.add_argument("--threshold", type=_fraction, default=None,
                        help="network confidence threshold, 0-1 (default: the model's own)")
    _add_mode_argument(detect)
    detect.add_argument("--average-mirrors", action="store_true",
                        help="average the network's maps of each frame and its three mirror "
                             "images (4x slower, a little more accurate at low dose)")
    _add_condition_arguments(detect)
    detect.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _add_runtime_arguments(detect)
    detect.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on a dask.distributed cluster (e.g. tcp://host:8786); "
                        "default: this computer")
    detect.add_argument("-o", "--output", type=Path, required=True, metavar="CSV",
                        help="atoms CSV to write")
    detect.set_defaults(run=_detect)

    species = commands.add_parser(
        "species", help="columns and their species from a focal series; write an atoms CSV")
    species.add_argument("series", type=Path, metavar="SERIES",
                         help="a file holding a (3, H, W) focal series or a (T, 3, H, W) time "
                         "series of them")
    species.add_argument("--model", default="mos2-focal",
                         help="species model name or .safetensors file (default: mos2-focal)")
    species.add_argument("--sampling", type=_positive, metavar="Å/px",
                         help="pixel size, when the file does not give it")
    species.add_argument("--defoci", metavar="D1,D2,D3",
                         help="defocus of each image in Å (abTEM sign, defocus = -C10); "
                         "default: the images are in increasing defocus")
    _add_mode_argument(species)
    species.add_argument("--no-align", action="store_true",
                         help="the images are aligned already")
    species.add_argument("--max-shift", type=_positive, metavar="PX",
                         help="largest misalignment searched, in pixels (default: 0.9 Å in "
                         "pixels, kept between 2 px and 1/8 of the image)")
    species.add_argument("--threshold", type=_fraction, default=None,
                         help="confidence threshold, 0-1 (default: the model's own)")
    species.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _add_runtime_arguments(species)
    species.add_argument("-o", "--output", type=Path, required=True, metavar="CSV",
                         help="atoms CSV to write (with a species column)")
    species.set_defaults(run=_species)

    occupancy = commands.add_parser(
        "occupancy", help="per-site occupancy and transitions over a video; write a sites CSV")
    occupancy.add_argument("video", type=Path, metavar="VIDEO",
                           help="a stack of frames in any readable format")
    occupancy.add_argument("--model", default="auto",
                           help="registered model name or .safetensors file (default auto: "
                                "au-hrtem-adatoms, which sees single adatoms, or stem-columns "
                                "for a STEM video)")
    occupancy.add_argument("--sampling", type=_positive, metavar="Å/px",
                           help="pixel size, when the file does not give it")
    occupancy.add_argument("--atoms", type=Path, metavar="CSV",
                           help="reuse the detections of an atoms CSV (frame, y, x) instead of "
                           "detecting")
    occupancy.add_argument("--threshold", type=_fraction, default=None,
                           help="network confidence threshold, 0-1 (default: the model's own)")
    occupancy.add_argument("--max-shift", type=_positive, metavar="PX",
                           help="largest drift between neighbouring frames, in pixels "
                           "(default: 0.9 Å in pixels, below half a lattice period; kept "
                           "between 2 px and 1/8 of the image)")
    occupancy.add_argument("--site-radius", type=_positive, default=0.6, metavar="Å",
                           help="detections closer than this belong to one site (default 0.6)")
    occupancy.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _add_runtime_arguments(occupancy)
    _add_mode_argument(occupancy)
    occupancy.add_argument("--method", choices=("evidence", "detections"), default="evidence",
                           help="evidence (default): sites from the whole video and the lattice, "
                                "each frame judged by the image at every site, a hidden Markov "
                                "model per site (sees single adatoms); detections (always with "
                                "--atoms): a frame is occupied where a detection was found")
    _add_condition_arguments(occupancy)
    occupancy.add_argument("--matrix", type=Path, metavar="CSV",
                           help="also write the per-frame occupancy matrix (frames × sites)")
    occupancy.add_argument("-o", "--output", type=Path, required=True, metavar="CSV",
                           help="sites CSV to write")
    occupancy.set_defaults(run=_occupancy)

    compare = commands.add_parser(
        "compare", help="compare two videos' per-site transition rates, layer by layer")
    compare.add_argument("first", type=Path, metavar="SITES_A.csv")
    compare.add_argument("second", type=Path, metavar="SITES_B.csv")
    compare.add_argument("--names", nargs=2, metavar=("A", "B"),
                         help="names of the two videos (default: the file names)")
    compare.add_argument("--column", default="transition_rate",
                         help="per-site quantity to compare (default: transition_rate)")
    compare.add_argument("-o", "--output", type=Path, metavar="CSV", help="write the table")
    compare.set_defaults(run=_compare)

    transfer = commands.add_parser(
        "transfer", help="which defoci transfer the lattice a model finds (where it is reliable)")
    transfer.add_argument("--cs-um", type=float, required=True, metavar="µm",
                          help="spherical aberration C30 in µm, as the corrector reports it")
    transfer.add_argument("--defocus", type=float, nargs="*", metavar="Å",
                          help="defoci to check [Å], abTEM's sign (-C10: negative-Cs imaging "
                               "uses a negative one)")
    transfer.add_argument("--astigmatism", type=float, default=0.0, metavar="Å",
                          help="2-fold astigmatism |A1| = |C12| [Å] left after correction, as "
                               "the corrector reports it; its worst direction is assumed "
                               "(default 0)")
    transfer.add_argument("--model", default="au-hrtem")
    transfer.set_defaults(run=_transfer)

    train = commands.add_parser("train", help="simulate data and train a network")
    train.add_argument("config", type=Path, metavar="CONFIG.toml")
    train.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="training precision, over the configuration's [train] precision "
                            "(auto: bf16 only where the CPU computes it natively)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="score a model on held-out simulations")
    evaluate.add_argument("--config", type=Path, required=True, metavar="CONFIG.toml",
                          help="the training configuration (for the held-out exit waves)")
    evaluate.add_argument("--model", default="au-hrtem")
    evaluate.add_argument("--by-height", nargs="*", metavar="OTHER_MODEL", default=None,
                          help="score recall by column height (1, 2, 3-5, 6-10, >10 atoms) and "
                               "the atom counts (exact, within one) instead, paired over the "
                               "same images for --model and these")
    evaluate.add_argument("--doses", type=float, nargs="+",
                          default=[10, 30, 100, 300, 1000, 3000, 10000], metavar="E_PER_A2")
    evaluate.add_argument("--single", metavar="MODEL",
                          help="species models: the single-image ablation to score alongside")
    evaluate.add_argument("--images", type=int, default=96,
                          help="images (species models: series) per dose")
    evaluate.add_argument("--table", type=Path, help="write the scores as CSV")
    evaluate.add_argument("--plot", type=Path, help="write F1 and RMSE against dose as PNG")
    evaluate.add_argument("--scores", type=Path, metavar="CSV",
                          help="reuse the scores table of an earlier --table run")
    evaluate.add_argument("--card", type=Path, metavar="MARKDOWN",
                          help="write the model card (scores, plot, speed) to this file")
    evaluate.set_defaults(run=_evaluate)
    return parser


#: Options whose value is a comma-separated list that may start with a minus sign.
_LIST_OPTIONS = ("--defoci",)


def _attach_list_values(argv: list[str]) -> list[str]:
    """Join ``--defoci -60,0,60`` into ``--defoci=-60,0,60``.

    argparse takes a value that starts with "-" and is not a single number for an option, so
    a focal series in increasing defocus, the usual order, would be refused.
    """
    joined: list[str] = []
    for argument in argv:
        if joined and joined[-1] in _LIST_OPTIONS and argument.startswith("-"):
            joined[-1] = f"{joined[-1]}={argument}"
        else:
            joined.append(argument)
    return joined


class IncompleteResult(TEMAtomsError):
    """Some inputs or frames failed (each said already); the results of the rest are written."""

    exit_status = 2


def _say_error(error: TEMAtomsError) -> None:
    """The one way an error reaches the terminal: ``error: <message>`` on stderr."""
    print(f"error: {error}", file=sys.stderr)


def _failed(error: TEMAtomsError) -> int:
    """Say `error`; the exit status it gives (1, or 2 for an incomplete result)."""
    _say_error(error)
    return int(getattr(error, "exit_status", 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tem-atoms``.

    Exit status: 0 done; 1 an error (said on one line, no traceback), nothing written; 2 an
    incomplete result (what failed is said, the rest is written).
    """
    argv = _attach_list_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    args.doses_given = "--doses" in argv
    try:
        _check_outputs(args)
        return int(args.run(args))
    except TEMAtomsError as exc:  # whatever a command raised: a line, no traceback
        return _failed(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
