"""Inference engines: what runs a loaded network on a tile (PyTorch, or OpenVINO when installed).

Both take the same normalised float32 tiles and give the same logits (float32: within 5e-5 of
each other on au-hrtem). OpenVINO is used on the CPU when it is installed
(``pip install napari-tem-atoms[fast]``): on the project's machines it ran au-hrtem 1.3x
(float32) to 2x (bfloat16) faster than PyTorch (``benchmarks/engine_speed.py``). Its model is
converted from the loaded PyTorch network at run time, so the safetensors weights stay the only
weights file; the converted model is cached per weights hash.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._cache import cache_dir
from ..errors import TEMAtomsError

__all__ = ["ENGINES", "OpenVINOEngine", "TorchEngine", "make_engine", "openvino_available",
           "resolve_engine"]

#: What users may ask for: ``auto`` is OpenVINO on the CPU when installed, else PyTorch.
ENGINES = ("auto", "torch", "openvino")


def openvino_available() -> bool:
    """True when the OpenVINO runtime can be imported."""
    return importlib.util.find_spec("openvino") is not None


def resolve_engine(engine: str | None, device: str) -> str:
    """The engine that will run: ``"torch"`` or ``"openvino"``.

    Raises
    ------
    TEMAtomsError
        An unknown engine, OpenVINO asked for but not installed, or asked for on a GPU.
    """
    engine = (engine or "auto").lower()
    if engine not in ENGINES:
        raise TEMAtomsError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    on_cpu = device == "cpu"
    if engine == "auto":
        return "openvino" if on_cpu and openvino_available() else "torch"
    if engine == "openvino":
        if not openvino_available():
            raise TEMAtomsError("the OpenVINO engine was asked for, but OpenVINO is not "
                                "installed: pip install 'napari-tem-atoms[fast]' (or use "
                                "--engine torch)")
        if not on_cpu:
            raise TEMAtomsError(f"the OpenVINO engine runs on the CPU here, not on {device}: "
                                "use --engine torch for a GPU")
    return engine


class TorchEngine:
    """Run the PyTorch network (channels-last tiles; bfloat16 by autocast when asked)."""

    name = "torch"

    def __init__(self, network: Any, device: str, precision: str) -> None:
        self.network, self.device, self.precision = network, device, precision

    def __call__(self, tiles: np.ndarray, conditions: np.ndarray | None) -> np.ndarray:
        """Logits (batch, classes, H, W) of float32 `tiles` (batch, channels, H, W)."""
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        batch = batch.contiguous(memory_format=torch.channels_last)
        extra = () if conditions is None else (
            torch.as_tensor(conditions, dtype=torch.float32, device=self.device),)
        with torch.inference_mode(), torch.autocast(
            device_type="cuda" if self.device.startswith("cuda") else "cpu",
            dtype=torch.bfloat16, enabled=self.precision == "bf16",
        ):
            logits = self.network(batch, *extra)
        return logits.float().cpu().numpy()


class OpenVINOEngine:
    """Run the network with OpenVINO on the CPU (any tile size; one compiled model).

    Parameters
    ----------
    network : torch.nn.Module
        The loaded network (eval mode, prepared for inference).
    precision : str
        ``"fp32"`` or ``"bf16"`` (OpenVINO's inference precision hint).
    sha256 : str
        The weights' hash: the converted model is cached under it.
    conditions : int
        Length of the imaging-condition vector the network takes (0: none).
    threads : int
        Threads OpenVINO may use.
    """

    name = "openvino"

    def __init__(self, network: Any, precision: str, sha256: str, conditions: int,
                 threads: int) -> None:
        import openvino

        self.precision, self.conditions = precision, conditions
        core = openvino.Core()
        model = core.read_model(str(_converted_model(network, sha256, conditions)))
        try:
            self._compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": int(threads),
                "PERFORMANCE_HINT": "LATENCY",
            })
        except RuntimeError as exc:  # e.g. bf16 asked of a CPU whose kernels lack it
            reason = str(exc).strip().splitlines()[-1]
            raise TEMAtomsError(f"OpenVINO cannot run the network at {precision} on this CPU "
                                f"({reason}); use --precision fp32 (or auto), or --engine "
                                "torch") from None
        self._lock = threading.Lock()  # one infer request at a time (widgets share a model)

    def __call__(self, tiles: np.ndarray, conditions: np.ndarray | None) -> np.ndarray:
        """Logits (batch, classes, H, W) of float32 `tiles` (batch, channels, H, W)."""
        inputs = [np.ascontiguousarray(tiles, dtype=np.float32)]
        if self.conditions:
            if conditions is None:  # as the PyTorch network: nothing known is zeros
                conditions = np.zeros((len(tiles), self.conditions), np.float32)
            inputs.append(np.ascontiguousarray(conditions, dtype=np.float32))
        with self._lock:
            return np.array(self._compiled(inputs)[0], dtype=np.float32)


_CONVERT_LOCK = threading.Lock()


def _converted_model(network: Any, sha256: str, conditions: int) -> Path:
    """The OpenVINO model of `network`, converted once per weights hash and cached on disk."""
    import openvino
    import torch

    folder = cache_dir("openvino")
    path = folder / f"{sha256[:16]}-{openvino.__version__.split('-')[0]}.xml"
    with _CONVERT_LOCK:
        if path.is_file() and path.with_suffix(".bin").is_file():
            return path

        class _Traced(torch.nn.Module):  # a fixed signature for the converter
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *inputs: Any) -> Any:
                return self.inner(*inputs)

        # The FiLM fold decides per call whether it applies: a converted graph takes the plain
        # path, which OpenVINO fuses into the convolutions itself.
        folded = getattr(network, "film_folded", False)
        channels = network.encoders[0][0].in_channels
        example = [torch.zeros(1, channels, 64, 64)]
        shapes = [openvino.PartialShape([-1, channels, -1, -1])]
        if conditions:
            example.append(torch.zeros(1, conditions))
            shapes.append(openvino.PartialShape([-1, conditions]))
        try:
            network.film_folded = False
            # (The converter traces with torch.jit, whose deprecation notices mean nothing to
            # a user.)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = openvino.convert_model(_Traced(network).eval(),
                                               example_input=tuple(example), input=shapes)
        except Exception as exc:  # the converter's own errors: say which engine failed
            raise TEMAtomsError(f"OpenVINO could not convert the network ({exc}); use "
                                "--engine torch") from exc
        finally:
            if folded:
                network.film_folded = folded
        # Written under temporary names, then renamed: a concurrent reader never sees half.
        part = path.with_name(f".{path.stem}.{os.getpid()}.part.xml")
        openvino.save_model(model, str(part), compress_to_fp16=False)
        part.with_suffix(".bin").replace(path.with_suffix(".bin"))
        part.replace(path)
    return path


def make_engine(network: Any, device: str, precision: str, engine: str, sha256: str,
                conditions: int, threads: int) -> Any:
    """The engine object that runs `network` (see :func:`resolve_engine` for `engine`)."""
    if engine == "openvino":
        return OpenVINOEngine(network, precision, sha256, conditions, threads)
    return TorchEngine(network, device, precision)
