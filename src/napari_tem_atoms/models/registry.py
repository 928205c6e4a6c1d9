"""The model registry: bundled weights, weights fetched with pooch, and local files.

Weights are safetensors files (no pickle), whose metadata holds the network's architecture and
how its input must be prepared (sampling, normalisation). A registered model's SHA-256 is checked
every time it is loaded; a mismatch is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._cache import CACHE_ENV, cache_dir, fetch_file
from ..errors import TEMAtomsError
from .description import FORMAT_VERSION, ModelDescription, describe

__all__ = ["REGISTRY", "LoadedModel", "ModelEntry", "load_cached_model", "load_model",
           "model_description", "model_metadata", "model_path", "read_description",
           "registered_models", "save_model", "takes_conditions"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes
    ----------
    name : str
        What users type (``"au-hrtem"``).
    description : str
        One line: what it finds, in which images.
    filename : str
        File name of the safetensors weights.
    sha256 : str
        SHA-256 of that file.
    url : str or None
        Where to fetch it; ``None`` for weights bundled in the package.
    crystal : str or None
        The crystal it finds columns of (``"gold"``), whose lowest-order reflections decide
        at which defoci its images can be trusted (:mod:`napari_tem_atoms.analysis.transfer`).
    task : str
        ``"columns"`` (one image in, atomic columns out: detection, live mode, occupancy) or
        ``"species"`` (a three-image focal series in, columns and their species out).
    """

    name: str
    description: str
    filename: str
    sha256: str
    url: str | None = None
    crystal: str | None = None
    task: str = "columns"

    @property
    def bundled(self) -> bool:
        """True when the weights ship inside the package."""
        return self.url is None


#: Every registered model by name.
REGISTRY: dict[str, ModelEntry] = {
    "au-hrtem": ModelEntry(
        name="au-hrtem",
        description="Atomic columns in HRTEM images of gold nanoparticles (300 kV, any Cs sign)",
        filename="au-hrtem.safetensors",
        sha256="49d5c506dd1e6b259fcfb059c6cefed68743afab8b8aa42d198cc780ff1e2084",
        crystal="gold",
    ),
    "au-hrtem-adatoms": ModelEntry(
        name="au-hrtem-adatoms",
        description="Atomic columns of any height in HRTEM images of gold nanoparticles, "
                    "single adatoms included (300 kV, any Cs sign)",
        filename="au-hrtem-adatoms.safetensors",
        sha256="8803360203cc173b17714c062fe6282cbd271b2feeb2447dc71d611cb93216bd",
        crystal="gold",
    ),
    "stem-columns": ModelEntry(
        name="stem-columns",
        description="Atomic columns in STEM images: HAADF/ADF (bright) and ABF/BF (dark, "
                    "negated before the network), any crystal",
        filename="stem-columns.safetensors",
        sha256="a29298d103b244ddc7997f5171e1e979f28c1be66d84e4ce197cb6f9c98b4a6a",
    ),
    "mos2-focal": ModelEntry(
        name="mos2-focal",
        description="Mo, S2 and S1 (sulfur vacancy) columns of MoS2 from a three-image focal "
                    "series (80 kV)",
        filename="mos2-focal.safetensors",
        sha256="246f186f7d5e7902cf0f4073a8a9394387515569ab50cc9aa56111def4b9dfd7",
        task="species",
    ),
}


def registered_models(task: str) -> list[str]:
    """Names of the registered models of one task (``"columns"`` or ``"species"``)."""
    return [name for name, entry in REGISTRY.items() if entry.task == task]


@dataclass
class LoadedModel:
    """A network ready for inference, with what its input needs.

    Attributes
    ----------
    network : torch.nn.Module
        The network in eval mode on `device`.
    description : ModelDescription
        What its weights say: architecture, ``sampling`` [Å/px] of its input, ``classes``,
        default threshold, training summary. A metadata table is turned into one.
    device : str
        Where it runs (``"cpu"``, ``"cuda"``).
    name : str
        Registry name or file path.
    sha256 : str
        SHA-256 of the weights file.
    precision : str
        ``"fp32"`` or ``"bf16"``: what the network runs at (see
        :func:`~napari_tem_atoms.models.runtime.resolve_precision`).
    engine : object
        What runs the network on a tile (:mod:`~napari_tem_atoms.models.engines`); None: PyTorch
        at `precision`.
    """

    network: Any
    description: ModelDescription
    device: str = "cpu"
    name: str = ""
    sha256: str = field(default="")
    precision: str = "fp32"
    engine: Any = None

    def __post_init__(self) -> None:
        self.description = describe(self.description)
        if self.engine is None:
            from .engines import TorchEngine

            self.engine = TorchEngine(self.network, self.device, self.precision)

    @property
    def engine_name(self) -> str:
        """``"torch"`` or ``"openvino"``."""
        return str(self.engine.name)

    def describe_runtime(self) -> str:
        """Where and how the network runs, for status lines: ``cpu, openvino, bf16``."""
        return f"{self.device}, {self.engine_name}, {self.precision}"

    def run(self, tiles: Any, conditions: Any = None) -> Any:
        """Logits (batch, classes, H, W), float32, of normalised (batch, channels, H, W) tiles."""
        return self.engine(tiles, conditions)

    @property
    def metadata(self) -> dict:
        """The metadata table of the weights, as stored (:attr:`description` types it)."""
        return self.description.metadata

    @property
    def sampling(self) -> float:
        """Pixel size [Å/px] the network expects."""
        return self.description.sampling

    @property
    def threshold(self) -> float:
        """Default confidence threshold (best validation F1), 0.5 when the model has none."""
        return self.description.threshold

    @property
    def takes_conditions(self) -> bool:
        """True when the network takes imaging conditions (Cs, defocus) besides the image."""
        return self.description.takes_conditions

    @property
    def classes(self) -> list[str]:
        """Names of the output maps."""
        return list(self.description.classes)

    @property
    def counts(self) -> bool:
        """True when the network also estimates the atoms along the beam of each column."""
        return self.description.counts


def takes_conditions(model: ModelDescription | Mapping[str, Any]) -> bool:
    """True when a model's network takes imaging conditions (Cs, defocus) besides the image."""
    return describe(model).takes_conditions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(model: str | os.PathLike) -> tuple[Path, str]:
    """The verified weights file of a registered model, or a local ``.safetensors`` path.

    Returns
    -------
    path : pathlib.Path
        The weights file.
    sha256 : str
        Its SHA-256.

    Raises
    ------
    TEMAtomsError
        Unknown name, missing file (with where to put it), or a hash mismatch.
    """
    name = os.fspath(model)
    if name in REGISTRY:
        entry = REGISTRY[name]
        if entry.bundled:
            path = Path(str(resources.files("napari_tem_atoms.models") / "weights"
                            / entry.filename))
            if not path.is_file():
                raise TEMAtomsError(
                    f"the bundled weights of model {name!r} are missing from the package "
                    f"({path}); reinstall napari-tem-atoms"
                )
            digest = _sha256(path)
        else:
            path, digest = _fetched(entry)
        if digest != entry.sha256:
            raise TEMAtomsError(
                f"{path}: SHA-256 {digest[:12]}... does not match the registered "
                f"{entry.sha256[:12]}... for model {name!r}; the file is damaged or was replaced"
                " and is not used"
            )
        return path, digest
    path = Path(name).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise TEMAtomsError(f"{path}: no such weights file")
        return path, _sha256(path)
    known = ", ".join(sorted(REGISTRY))
    raise TEMAtomsError(
        f"unknown model {name!r}: use one of {known}, or the path of a .safetensors file "
        f"(fetched models are cached in {cache_dir('models')}; set {CACHE_ENV} to move it)"
    )


def _fetched(entry: ModelEntry) -> tuple[Path, str]:
    """The cached weights of a fetched model and their SHA-256, fetched when missing or damaged.

    A cached file whose hash does not match is removed before fetching: when the fetch fails
    (offline), the message says so rather than only that a download failed.
    """
    cached = cache_dir("models") / entry.filename
    if cached.is_file():
        digest = _sha256(cached)
        if digest == entry.sha256:
            return cached, digest
        mismatch = (f"{cached}: the cached weights of model {entry.name!r} have SHA-256 "
                    f"{digest[:12]}..., which does not match the registered "
                    f"{entry.sha256[:12]}...: the file is damaged or was replaced")
        try:
            cached.unlink(missing_ok=True)
        except OSError as exc:  # a shared, read-only cache
            raise TEMAtomsError(f"{mismatch}, and could not be removed ({exc.strerror}): remove "
                                "it, or put the right file there") from None
        replaced = f"{mismatch}, and was removed"
        try:
            path = fetch_file(entry.url, entry.sha256, entry.filename, kind="models")
        except TEMAtomsError as exc:
            raise TEMAtomsError(
                f"{replaced}; it will be fetched again from {entry.url} the next time the model "
                f"is used (fetching it now failed: {exc})") from exc
        warnings.warn(f"{replaced} and fetched again", UserWarning, stacklevel=3)
    else:
        path = fetch_file(entry.url, entry.sha256, entry.filename, kind="models")
    return path, _sha256(path)


def read_description(path: str | os.PathLike) -> ModelDescription:
    """The checked description of a weights file (see :meth:`ModelDescription.from_metadata`).

    Raises
    ------
    TEMAtomsError
        Not a napari-tem-atoms weights file, or metadata a network cannot be built from,
        naming the file and what is wrong.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["napari_tem_atoms"])
    except Exception as exc:  # damaged file, wrong format, missing metadata
        raise TEMAtomsError(f"{path}: not a napari-tem-atoms weights file ({exc})") from exc
    return ModelDescription.from_metadata(metadata, str(path))


def model_description(model: str | os.PathLike) -> ModelDescription:
    """What a model's weights say about it (sampling, threshold, training), without loading them.

    Raises
    ------
    TEMAtomsError
        As :func:`model_path`; or metadata a network cannot be built from, naming the file
        and what is wrong.
    """
    path, _ = model_path(model)
    return read_description(path)


def model_metadata(model: str | os.PathLike) -> dict:
    """The metadata table of a model's weights, as stored (:func:`model_description` types it).

    Raises
    ------
    TEMAtomsError
        As :func:`model_description`.
    """
    return dict(model_description(model).metadata)


def load_model(model: str | os.PathLike = "au-hrtem", device: str | None = None,
               precision: str | None = "auto", engine: str | None = "auto") -> LoadedModel:
    """Load a model for inference, without pickle.

    Parameters
    ----------
    model : str or os.PathLike
        A registry name (see :data:`REGISTRY`) or a ``.safetensors`` file.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default: CUDA when available, else the CPU.
    precision : {"auto", "fp32", "bf16"}, optional
        ``"auto"``: bfloat16 where the device computes it natively (a CPU with AMX or
        AVX-512-BF16, a GPU with bfloat16), float32 elsewhere.
    engine : {"auto", "torch", "openvino"}, optional
        ``"auto"``: OpenVINO on the CPU when it is installed, else PyTorch.

    Returns
    -------
    LoadedModel
        The network in eval mode, prepared for inference (batch norms folded into the
        convolutions, see :func:`~napari_tem_atoms.models.unet.prepare_for_inference`; not
        for training), and its metadata.
    """
    import torch
    from safetensors.torch import load_file

    from .engines import make_engine, resolve_engine
    from .runtime import resolve_precision, use_allowed_cores
    from .unet import UNet, prepare_for_inference

    path, digest = model_path(model)
    device = _checked_device(device)
    precision = resolve_precision(precision, device)
    engine = resolve_engine(engine, device)
    threads = use_allowed_cores()
    description = read_description(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # damaged file, wrong format
        raise TEMAtomsError(f"{path}: not a napari-tem-atoms weights file ({exc})") from exc
    try:
        network = UNet(**description.architecture)
    except ValueError as exc:  # check_architecture: too few channels or poolings
        raise TEMAtomsError(f"{path}: its architecture cannot be built ({exc})") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:  # layers missing, extra, or of other shapes
        first = (str(exc).splitlines()[1:] or [str(exc)])[0].strip()  # after "Error(s) in..."
        raise TEMAtomsError(
            f"{path}: the weights do not fit the architecture its metadata declares "
            f"({first[:200]}); the file is damaged or its metadata was edited") from None
    # predict_heatmap feeds channels-last tiles; weights in the same layout spare oneDNN a
    # reorder per convolution: a 768² tile takes 0.17 s instead of 0.36 s on 2 cores.
    prepare_for_inference(network.eval()).to(device, memory_format=torch.channels_last)
    runner = make_engine(network, device, precision, engine, digest, description.n_conditions,
                         threads)
    return LoadedModel(network=network, description=description, device=device,
                       name=os.fspath(model), sha256=digest, precision=precision, engine=runner)


def _checked_device(device: str | None) -> str:
    """The device to run on: CUDA when available by default; a device that is not, refused."""
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise TEMAtomsError(f"unknown device {device!r}: use cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise TEMAtomsError(f"device {device!r} was asked for, but this PyTorch sees no CUDA "
                            "GPU: use cpu")
    return device


_LOADED: dict[tuple[str, str | None, str, str], LoadedModel] = {}


def load_cached_model(model: str | os.PathLike = "au-hrtem", device: str | None = None,
                      precision: str | None = "auto", engine: str | None = "auto"
                      ) -> LoadedModel:
    """:func:`load_model`, once per process: widgets, batch runs and cluster workers reuse it."""
    key = (os.fspath(model), device, (precision or "auto").lower(), (engine or "auto").lower())
    if key not in _LOADED:
        _LOADED[key] = load_model(model, device=device, precision=precision, engine=engine)
    return _LOADED[key]


def save_model(path: str | os.PathLike, network: Any,
               metadata: ModelDescription | Mapping[str, Any]) -> str:
    """Write a network's weights and metadata as safetensors; return the file's SHA-256.

    The network must be as trained: one prepared for inference (what :func:`load_model`
    returns) has other layers, which a weights file cannot be loaded back into. The metadata
    is stored with the current ``format_version``
    (:data:`~napari_tem_atoms.models.description.FORMAT_VERSION`).
    """
    from safetensors.torch import save_file

    from .unet import SplitInputConv

    if any(isinstance(module, SplitInputConv) for module in network.modules()):
        raise TEMAtomsError("this network was prepared for inference (load_model does that) and "
                            "cannot be saved as weights: save the network as trained")
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    temporary = path.with_name(f".{path.name}.part")
    # As given (a load refuses what cannot be used), with the format version it is written in.
    stored = (metadata.to_metadata() if isinstance(metadata, ModelDescription)
              else {**metadata, "format_version": metadata.get("format_version",
                                                               FORMAT_VERSION)})
    save_file(state, str(temporary), metadata={"napari_tem_atoms": json.dumps(stored)})
    temporary.chmod(0o644)
    temporary.replace(path)
    return _sha256(path)
