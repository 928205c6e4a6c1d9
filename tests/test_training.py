"""The training loop on tiny data: exit waves with abTEM, a few steps, weights, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("abtem")

TINY = """
output = "run"
[data]
folder = "waves"
train_particles = 2
validation_particles = 1
carbon_slabs = 2
seed = 1
[model]
name = "tiny"
sampling = 0.2
base_channels = 4
depth = 2
[train]
steps = STEPS
batch_size = 2
patch_size = 64
checkpoint_every = 2
validate_every = 2
validation_images = 1
workers = 0
[exit_waves]
diameter = [8.0, 14.0]
min_field = 20.0
frozen_phonons = 2
carbon_size = 24.0
carbon_thickness = [4.0, 6.0]
"""

TEM_ATOMS = str(Path(sys.executable).with_name("tem-atoms"))


def _train(config: Path) -> subprocess.CompletedProcess:
    """``tem-atoms train CONFIG``, its output captured."""
    return subprocess.run([TEM_ATOMS, "train", str(config)], capture_output=True, text=True,
                          timeout=600)


def _later_stage(output: str, model: str = "", train: str = "") -> str:
    """TINY as a 2-step stage from the first stage's weights, into `output`, with lines added
    to its [model] and [train] tables."""
    return (TINY.replace("STEPS", "2").replace('output = "run"', f'output = "{output}"')
            .replace("depth = 2\n", f"depth = 2\n{model}")
            .replace("workers = 0\n", f'workers = 0\ninit_from = "run/tiny.safetensors"\n{train}'))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    config = folder / "tiny.toml"
    config.write_text(TINY.replace("STEPS", "4"))
    result = _train(config)
    assert result.returncode == 0, result.stderr
    return folder, config, result.stdout


@pytest.mark.slow
def test_training_writes_safetensors_weights_and_a_summary(trained):
    folder, _, output = trained
    assert "computing 5 exit waves with abTEM" in output
    assert "step 4/4" in output
    weights = folder / "run" / "tiny.safetensors"
    summary = json.loads((folder / "run" / "tiny.json").read_text())
    assert weights.stat().st_size > 1000
    assert summary["training"]["steps"] == 4
    assert summary["training"]["data"]["particles"] == 2
    assert summary["training"]["envelope"]["cs"] == [-300000.0, 300000.0]
    log = [json.loads(line) for line in (folder / "run" / "training_log.jsonl").read_text()
           .splitlines()]
    assert [r["step"] for r in log if "validation_f1" in r] == [2, 4]
    waves = np.load(next((folder / "waves" / "particles").glob("train_*.npz")))
    assert waves["waves"].shape[0] == 2  # two frozen-phonon configurations
    assert waves["columns"].shape[1] == 3


@pytest.mark.slow
def test_training_resumes_from_its_checkpoint(trained):
    _folder, config, _ = trained
    config.write_text(TINY.replace("STEPS", "6"))
    result = _train(config)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout and "at step 4" in result.stdout
    assert "schedule re-laid over 6 steps (the checkpoint planned 4)" in result.stdout
    assert "computing" not in result.stdout  # the exit waves are cached
    assert "step 6/6" in result.stdout


@pytest.mark.slow
def test_a_second_stage_starts_from_weights_and_adds_context_blocks(trained):
    from napari_tem_atoms.models import load_model

    folder, _, _ = trained
    stage2 = _later_stage("stage2", model="context = 1\n").replace(
        "seed = 1\n", "seed = 1\nbalance_zones = true\n")
    config = folder / "stage2.toml"
    config.write_text(stage2)
    result = _train(config)
    assert result.returncode == 0, result.stderr
    assert "initialised from" in result.stdout and "new: 10 tensors (context" in result.stdout
    loaded = load_model(folder / "stage2" / "tiny.safetensors")
    assert loaded.metadata["architecture"]["context"] == 1
    assert loaded.metadata["training"]["init_from"] == "tiny.safetensors"
    assert len(loaded.network.context) == 1

    config.write_text(stage2.replace("run/tiny.safetensors", "run/missing.safetensors")
                      .replace('output = "stage2"', 'output = "stage2b"'))
    failed = _train(config)
    assert failed.returncode != 0
    assert "missing.safetensors" in failed.stderr and "Traceback" not in failed.stderr
    assert "train the first stage first" in failed.stderr


@pytest.mark.slow
def test_a_stage_with_conditions_learns_from_told_images_and_records_it(trained):
    from napari_tem_atoms.models import load_model

    folder, _, _ = trained
    stage = (_later_stage("told", model="conditions = true\n",
                          train="condition_learning_rate_factor = 5.0\n")
             + "[conditions]\ncs_known = 1.0\ndefocus_known = 0.5\ndefocus_error = 20.0\n")
    config = folder / "told.toml"
    config.write_text(stage)
    result = _train(config)
    assert result.returncode == 0, result.stderr
    assert "new: 10 tensors (film" in result.stdout  # 5 levels: weight and bias each
    loaded = load_model(folder / "told" / "tiny.safetensors")
    assert loaded.takes_conditions and loaded.metadata["architecture"]["conditions"] == 4
    drawn = loaded.metadata["conditions"]["training"]
    assert drawn["cs_known"] == 1.0 and drawn["defocus_error"] == 20.0
    assert loaded.metadata["training"]["condition_learning_rate_factor"] == 5.0
    # The condition layers had a learning rate of their own: 5 times the rest.
    import torch

    state = torch.load(folder / "told" / "checkpoint.pt", weights_only=True)
    rates = [group["max_lr"] for group in state["optimiser"]["param_groups"]]
    assert rates == pytest.approx([2e-3, 1e-2])
    # Trained: the condition layers moved away from their zero start.
    assert any(float(film.linear.weight.detach().abs().max()) > 0
               for film in loaded.network.film)
    card = (folder / "told" / "tiny.md").read_text()
    assert "Imaging conditions (optional input)" in card
    assert "they learnt at 5 × the learning rate" in card

    config.write_text(stage.replace("cs_known = 1.0", "cs_known = 2.0")
                      .replace('output = "told"', 'output = "told2"'))
    failed = _train(config)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "told.toml" in failed.stderr and "cs_known must be in 0 … 1" in failed.stderr


@pytest.mark.slow
def test_detect_command_refuses_conditions_for_a_model_without_them(trained, made_files,
                                                                    tmp_path):
    folder, _, _ = trained
    result = subprocess.run(
        [TEM_ATOMS, "detect", str(made_files["ome_stack"]), "--model",
         str(folder / "run" / "tiny.safetensors"), "--cs-um", "-15", "--defocus", "-50",
         "-o", str(tmp_path / "a.csv")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not take imaging conditions" in result.stderr
    assert not (tmp_path / "a.csv").exists()


@pytest.mark.slow
def test_detect_command_writes_the_atoms_csv(trained, made_files, tmp_path):
    folder, _, _ = trained
    weights = folder / "run" / "tiny.safetensors"
    output = tmp_path / "atoms.csv"
    result = subprocess.run(
        [TEM_ATOMS, "detect", str(made_files["ome_stack"]), str(made_files["imagej_angstrom"]),
         "--model", str(weights), "--threshold", "0.0", "-o", str(output)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "model " in result.stderr and "on cpu" in result.stderr
    table = pd.read_csv(output)
    assert list(table.columns) == ["frame", "y", "x", "y_angstrom", "x_angstrom", "confidence",
                                   "file"]
    ome = table[table.file == str(made_files["ome_stack"])]
    np.testing.assert_allclose(ome.x_angstrom, ome.x * 0.123, rtol=1e-5)
    assert set(ome.frame) <= {0, 1, 2}


@pytest.mark.slow
def test_detect_command_asks_for_a_pixel_size_when_none_is_known(trained, made_files, tmp_path):
    folder, _, _ = trained
    result = subprocess.run(
        [TEM_ATOMS, "detect", str(made_files["npy_stack"]), "--model",
         str(folder / "run" / "tiny.safetensors"), "-o", str(tmp_path / "a.csv")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "give the pixel size with --sampling" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_detect_on_a_local_dask_cluster_gives_the_same_csv(trained, made_files, tmp_path):
    from dask.distributed import LocalCluster

    folder, _, _ = trained
    weights = str(folder / "run" / "tiny.safetensors")
    inputs = [str(made_files["ome_stack"]), str(made_files["frames"])]
    here, there = tmp_path / "here.csv", tmp_path / "cluster.csv"
    common = ["--model", weights, "--threshold", "0.0"]
    subprocess.run([TEM_ATOMS, "detect", *inputs, *common, "-o", str(here)], check=True,
                   capture_output=True, timeout=300)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, processes=True) as cluster:
        result = subprocess.run([TEM_ATOMS, "detect", *inputs, *common, "--scheduler",
                                 cluster.scheduler_address, "-o", str(there)],
                                capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"on scheduler {cluster.scheduler_address}" in result.stderr
    assert len(pd.read_csv(here)) > 0
    assert here.read_text() == there.read_text()


@pytest.mark.slow
def test_a_count_stage_records_which_layers_trained_and_needs_a_count_branch(trained):
    from napari_tem_atoms.models import load_model

    folder, _, _ = trained
    counts = _later_stage("counts", model="counts = 2\n",
                          train="counts_train_encoder = true\n")
    config = folder / "counts.toml"
    config.write_text(counts)
    result = _train(config)
    assert result.returncode == 0, result.stderr
    training = load_model(folder / "counts" / "tiny.safetensors").metadata["training"]
    assert training["counts_train_encoder"] is True and "train_only" not in training

    config.write_text(counts.replace("counts = 2\n", "").replace('"counts"', '"nocounts"'))
    failed = _train(config)
    assert failed.returncode != 0
    assert "counts_train_encoder" in failed.stderr and "Traceback" not in failed.stderr
