"""The model registry: bundled weights, weights fetched with pooch, and local files.

Weights are safetensors files (no pickle), whose metadata holds the network's architecture and
how its input must be prepared (sampling, normalisation). A registered model's SHA-256 is checked
every time it is loaded; a mismatch is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._cache import CACHE_ENV, cache_dir, fetch_file
from ..errors import TEMAtomsError

__all__ = ["REGISTRY", "LoadedModel", "ModelEntry", "load_cached_model", "load_model",
           "model_metadata", "model_path", "registered_models", "save_model", "takes_conditions"]


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
    metadata : dict
        Architecture, ``sampling`` [Å/px] of its input, ``classes``, training summary.
    device : str
        Where it runs (``"cpu"``, ``"cuda"``).
    name : str
        Registry name or file path.
    """

    network: Any
    metadata: dict
    device: str
    name: str
    sha256: str = field(default="")

    @property
    def sampling(self) -> float:
        """Pixel size [Å/px] the network expects."""
        return float(self.metadata["sampling"])

    @property
    def threshold(self) -> float:
        """Default confidence threshold (best validation F1), 0.5 when the model has none."""
        return float(self.metadata.get("threshold", 0.5))

    @property
    def takes_conditions(self) -> bool:
        """True when the network takes imaging conditions (Cs, defocus) besides the image."""
        return takes_conditions(self.metadata)

    @property
    def classes(self) -> list[str]:
        """Names of the output maps."""
        return list(self.metadata.get("classes", ["column"]))


def takes_conditions(metadata: dict) -> bool:
    """True when a model's metadata says its network takes imaging conditions (Cs, defocus)."""
    return bool(metadata.get("architecture", {}).get("conditions", 0))


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
        else:
            path = fetch_file(entry.url, entry.sha256, entry.filename, kind="models")
        digest = _sha256(path)
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


def model_metadata(model: str | os.PathLike) -> dict:
    """The metadata of a model's weights (sampling, threshold, training), without loading them."""
    from safetensors import safe_open

    path, _ = model_path(model)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()["napari_tem_atoms"])
    except Exception as exc:  # damaged file, wrong format, missing metadata
        raise TEMAtomsError(f"{path}: not a napari-tem-atoms weights file ({exc})") from exc


def load_model(model: str | os.PathLike = "au-hrtem", device: str | None = None) -> LoadedModel:
    """Load a model for inference, without pickle.

    Parameters
    ----------
    model : str or os.PathLike
        A registry name (see :data:`REGISTRY`) or a ``.safetensors`` file.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default: CUDA when available, else the CPU.

    Returns
    -------
    LoadedModel
        The network in eval mode, prepared for inference (batch norms folded into the
        convolutions, see :func:`~napari_tem_atoms.models.unet.prepare_for_inference`; not
        for training), and its metadata.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .unet import UNet, prepare_for_inference

    path, digest = model_path(model)
    device = _checked_device(device)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["napari_tem_atoms"])
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # damaged file, wrong format, missing metadata
        raise TEMAtomsError(f"{path}: not a napari-tem-atoms weights file ({exc})") from exc
    architecture = metadata["architecture"]
    network = UNet(**architecture)
    network.load_state_dict(state)
    # predict_heatmap feeds channels-last tiles; weights in the same layout spare oneDNN a
    # reorder per convolution: a 768² tile takes 0.17 s instead of 0.36 s on 2 cores.
    prepare_for_inference(network.eval()).to(device, memory_format=torch.channels_last)
    return LoadedModel(network=network, metadata=metadata, device=device, name=os.fspath(model),
                       sha256=digest)


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


_LOADED: dict[tuple[str, str | None], LoadedModel] = {}


def load_cached_model(model: str | os.PathLike = "au-hrtem", device: str | None = None
                      ) -> LoadedModel:
    """:func:`load_model`, once per process: widgets, batch runs and cluster workers reuse it."""
    key = (os.fspath(model), device)
    if key not in _LOADED:
        _LOADED[key] = load_model(model, device=device)
    return _LOADED[key]


def save_model(path: str | os.PathLike, network: Any, metadata: dict) -> str:
    """Write a network's weights and metadata as safetensors; return the file's SHA-256.

    The network must be as trained: one prepared for inference (what :func:`load_model`
    returns) has other layers, which a weights file cannot be loaded back into.
    """
    from safetensors.torch import save_file

    from .unet import SplitInputConv

    if any(isinstance(module, SplitInputConv) for module in network.modules()):
        raise TEMAtomsError("this network was prepared for inference (load_model does that) and "
                            "cannot be saved as weights: save the network as trained")
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    temporary = path.with_name(f".{path.name}.part")
    save_file(state, str(temporary), metadata={"napari_tem_atoms": json.dumps(metadata)})
    temporary.chmod(0o644)
    temporary.replace(path)
    return _sha256(path)
