"""Where and how the network runs: precision by processor, engines, cores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_tem_atoms import detect_atoms
from napari_tem_atoms.errors import TEMAtomsError
from napari_tem_atoms.models import load_model, runtime
from napari_tem_atoms.models.engines import openvino_available, resolve_engine
from napari_tem_atoms.models.runtime import Processor, resolve_precision
from napari_tem_atoms.samples import synthetic_gold_stack


def _fake_processor(monkeypatch, bfloat16):
    fake = Processor("Test CPU", "AVX512" if bfloat16 != "emulated" else "AVX2", bfloat16, 2)
    monkeypatch.setattr(runtime, "processor", lambda: fake)


@pytest.mark.parametrize(("bfloat16", "expected"),
                         [("emulated", "fp32"), ("AMX", "bf16"), ("AVX512-BF16", "bf16")])
def test_auto_precision_follows_the_processor(monkeypatch, bfloat16, expected):
    _fake_processor(monkeypatch, bfloat16)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision(None, "cpu") == expected
    # Asked for explicitly, either precision runs (bf16 emulated is slow, not wrong).
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_a_cpu_without_native_bfloat16_trains_in_fp32(monkeypatch):
    from napari_tem_atoms.training.config import TrainConfig

    _fake_processor(monkeypatch, "emulated")
    assert not TrainConfig().use_bfloat16
    assert not TrainConfig(bfloat16=True).use_bfloat16  # older configs: true reads as auto
    assert TrainConfig(precision="bf16").use_bfloat16
    _fake_processor(monkeypatch, "AMX")
    assert TrainConfig().use_bfloat16
    assert not TrainConfig(bfloat16=False).use_bfloat16


def test_forced_avx2_kernels_are_not_native_bfloat16():
    # What an AVX2-only CPU reports; checked in a fresh process (the capability is read once).
    code = ("from napari_tem_atoms.models.runtime import processor, resolve_precision;"
            "print(processor().bfloat16, resolve_precision('auto', 'cpu'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"ATEN_CPU_CAPABILITY": "avx2", "PATH": "/usr/bin:/bin"},
                            check=True)
    assert result.stdout.split() == ["emulated", "fp32"]


def test_unknown_or_unavailable_choices_are_refused_in_words(monkeypatch):
    with pytest.raises(TEMAtomsError, match="unknown precision 'half'"):
        resolve_precision("half", "cpu")
    with pytest.raises(TEMAtomsError, match="unknown engine 'tensorrt'"):
        resolve_engine("tensorrt", "cpu")
    monkeypatch.setattr("napari_tem_atoms.models.engines.openvino_available", lambda: False)
    with pytest.raises(TEMAtomsError, match=r"OpenVINO is not installed.*\[fast\]"):
        resolve_engine("openvino", "cpu")
    assert resolve_engine("auto", "cpu") == "torch"
    monkeypatch.setattr("napari_tem_atoms.models.runtime.native_bfloat16", lambda device: False)
    with pytest.raises(TEMAtomsError, match="does not support it"):
        resolve_precision("bf16", "cuda")


def test_allowed_cores_honour_a_cgroup_quota(monkeypatch):
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 1.5)
    assert runtime.allowed_cores() == min(2, len(__import__("os").sched_getaffinity(0)))
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 1.0)
    assert runtime.allowed_cores() == 1


def test_detections_say_how_they_ran():
    stack = synthetic_gold_stack(n_frames=1, shape=(192, 192), particle_radius=8.0, seed=2)
    atoms = detect_atoms(stack.images[0], sampling=0.12, precision="fp32", engine="torch")
    assert (atoms.attrs["precision"], atoms.attrs["engine"]) == ("fp32", "torch")
    loaded = load_model("au-hrtem", device="cpu", precision="fp32", engine="torch")
    assert loaded.describe_runtime() == "cpu, torch, fp32"


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")
def test_openvino_detects_what_pytorch_detects(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_TEM_ATOMS_CACHE", str(tmp_path))
    stack = synthetic_gold_stack(n_frames=1, shape=(256, 256), particle_radius=11.0, seed=4)
    image = stack.images[0]
    torch_atoms = detect_atoms(image, load_model("au-hrtem", "cpu", "fp32", "torch"),
                               sampling=0.12)
    openvino = load_model("au-hrtem", "cpu", "fp32", "openvino")
    assert openvino.engine_name == "openvino"
    assert list((tmp_path / "openvino").glob("*.xml"))  # converted once, cached per hash
    openvino_atoms = detect_atoms(image, openvino, sampling=0.12)
    assert len(openvino_atoms) == len(torch_atoms) > 20
    np.testing.assert_allclose(openvino_atoms[["y", "x"]], torch_atoms[["y", "x"]], atol=1e-3)
    # With imaging conditions too (a second input of the converted model).
    told_torch = detect_atoms(image, load_model("au-hrtem", "cpu", "fp32", "torch"),
                              sampling=0.12, cs=-15e4, defocus=-60)
    told_openvino = detect_atoms(image, openvino, sampling=0.12, cs=-15e4, defocus=-60)
    np.testing.assert_allclose(told_openvino[["y", "x"]], told_torch[["y", "x"]], atol=1e-3)
