"""The command line as a user meets it: outputs checked before any work, values in range,
one-line errors that name the file."""

from __future__ import annotations

import errno
import os

import numpy as np
import pandas as pd
import pytest

from napari_tem_atoms.cli import main
from napari_tem_atoms.samples import synthetic_gold_stack


@pytest.fixture
def stack_file(tmp_path):
    path = tmp_path / "stack.npy"
    np.save(path, synthetic_gold_stack(n_frames=2, shape=(96, 96), sampling=0.12).images)
    return path


def test_outputs_that_cannot_be_written_are_refused_before_any_work(stack_file, tmp_path,
                                                                    capsys):
    common = ["detect", str(stack_file), "--sampling", "0.12", "-o"]
    before = stack_file.read_bytes()
    for output, words in [(tmp_path, "is a folder"),
                          (tmp_path / "missing" / "atoms.csv", "does not exist"),
                          (stack_file, "is one of the inputs")]:
        assert main([*common, str(output)]) == 1
        error = capsys.readouterr().err
        assert words in error and "Traceback" not in error
        assert "model au-hrtem" not in error  # refused before the model was loaded
    assert stack_file.read_bytes() == before


def test_values_out_of_range_are_refused_by_the_parser(stack_file, tmp_path, capsys):
    output = str(tmp_path / "atoms.csv")
    for option, value, words in [("--threshold", "1.5", "between 0 and 1"),
                                 ("--sampling", "0", "must be above 0")]:
        with pytest.raises(SystemExit) as stop:
            main(["detect", str(stack_file), option, value, "-o", output])
        assert stop.value.code == 2 and words in capsys.readouterr().err


def test_an_image_and_a_stack_together_give_one_csv_layout(stack_file, tmp_path, capsys):
    image = tmp_path / "image.npy"
    np.save(image, np.load(stack_file)[0])
    output = tmp_path / "atoms.csv"
    assert main(["detect", str(image), str(stack_file), "--sampling", "0.12",
                 "-o", str(output)]) == 0, capsys.readouterr().err
    table = pd.read_csv(output)
    assert list(table.columns) == ["frame", "y", "x", "y_angstrom", "x_angstrom", "confidence",
                                   "file"]
    assert table.frame.dtype.kind == "i"
    assert set(table[table.file == str(image)].frame) == {0}
    assert set(table[table.file == str(stack_file)].frame) == {0, 1}


def test_a_bad_frame_is_named_with_its_file(tmp_path, capsys):
    frames = synthetic_gold_stack(n_frames=2, shape=(96, 96), sampling=0.12).images.copy()
    frames[1, 10, 10] = np.nan
    path = tmp_path / "holed.npy"
    np.save(path, frames)
    assert main(["detect", str(path), "--sampling", "0.12", "-o",
                 str(tmp_path / "a.csv")]) == 2  # partial: the other frame is written
    error = capsys.readouterr().err
    assert f"{path}, frame 1" in error and "NaN" in error
    assert "1 of 2 frames failed" in error
    assert set(pd.read_csv(tmp_path / "a.csv").frame) == {0}


def test_an_unreadable_input_is_left_out_and_the_rest_written(stack_file, tmp_path, capsys):
    alone = tmp_path / "alone.csv"
    assert main(["detect", str(stack_file), "--sampling", "0.12", "-o", str(alone)]) == 0
    assert "model au-hrtem on " in capsys.readouterr().err  # registered: its hash is known
    bad = tmp_path / "bad.tif"
    bad.write_text("not a TIFF")
    partial = tmp_path / "partial.csv"
    assert main(["detect", str(stack_file), str(bad), "--sampling", "0.12",
                 "-o", str(partial)]) == 2
    error = capsys.readouterr().err
    assert f"error: {bad}: not a readable TIFF file" in error and "Traceback" not in error
    assert f"1 of 2 inputs could not be read ({bad})" in error
    table = pd.read_csv(partial)
    assert set(table.file) == {str(stack_file)}  # the layout of two inputs
    pd.testing.assert_frame_equal(table.drop(columns="file"), pd.read_csv(alone))
    assert main(["detect", str(bad), "--sampling", "0.12", "-o", str(partial)]) == 1


class _FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._stream.close()

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_a_message_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    from napari_tem_atoms.io import _atomic

    paths = []
    for name, offset in (("vacuum", 0.0), ("gas", 0.5)):
        paths.append(tmp_path / f"{name}.csv")
        pd.DataFrame({"layer": "surface", "transition_rate": np.linspace(0, 0.01, 20) + offset
                      }).to_csv(paths[-1], index=False)
    output = tmp_path / "compare.csv"
    real_fdopen = os.fdopen
    monkeypatch.setattr(_atomic.os, "fdopen",
                        lambda fd, *args, **kwargs: _FullDisk(real_fdopen(fd, *args, **kwargs)))
    assert main(["compare", *map(str, paths), "-o", str(output)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {output}: could not be written (No space left on device: "
                            "free some space, or write the file elsewhere)")
    assert "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gas.csv", "vacuum.csv"]


def test_weights_given_as_a_file_have_their_hash_said(stack_file, tmp_path, capsys):
    import torch

    from napari_tem_atoms.models import save_model
    from napari_tem_atoms.models.unet import UNet

    torch.manual_seed(0)
    weights = tmp_path / "mine.safetensors"
    digest = save_model(weights, UNet(base_channels=4, depth=2).eval(), {
        "architecture": {"in_channels": 1, "out_channels": 1, "base_channels": 4, "depth": 2},
        "sampling": 0.2, "classes": ["column"]})
    assert main(["detect", str(stack_file), "--sampling", "0.12", "--model", str(weights),
                 "--device", "cpu", "--engine", "torch", "-o", str(tmp_path / "a.csv")]) == 0
    error = capsys.readouterr().err
    assert f"model {weights}, SHA-256 {digest[:16]}, on cpu (torch, " in error


def test_an_unknown_device_is_a_message(stack_file, tmp_path, capsys):
    assert main(["detect", str(stack_file), "--sampling", "0.12", "--device", "gpu", "-o",
                 str(tmp_path / "a.csv")]) == 1
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_info_names_a_damaged_npy_and_goes_on_to_the_next_file(stack_file, tmp_path, capsys):
    from numpy.lib import format as npy_format

    bad = tmp_path / "bad.npy"
    with open(bad, "wb") as stream:  # declares 2**124 values in a file of 144 bytes
        npy_format.write_array_header_1_0(
            stream, {"descr": "<f4", "fortran_order": False, "shape": (2**62, 2**62)})
        stream.write(b"\0" * 16)
    assert main(["info", str(bad), str(stack_file)]) == 1
    out, err = capsys.readouterr()
    assert f"error: {bad}: the header declares shape" in err and "Traceback" not in err
    assert f"{stack_file}  [stack]" in out and "shape: 2 × 96 × 96" in out


def test_compare_writes_a_tiny_p_value_with_its_digits(tmp_path, capsys):
    from scipy import stats

    rates = np.linspace(0.0, 0.01, 40)
    paths = []
    for name, offset in (("vacuum", 0.0), ("gas", 0.5)):
        paths.append(tmp_path / f"{name}.csv")
        pd.DataFrame({"layer": "surface", "transition_rate": rates + offset}).to_csv(
            paths[-1], index=False)
    output = tmp_path / "compare.csv"
    assert main(["compare", *map(str, paths), "-o", str(output)]) == 0, capsys.readouterr().err
    p_value = pd.read_csv(output).set_index("layer").loc["all", "p_value"]
    expected = stats.mannwhitneyu(rates, rates + 0.5).pvalue  # 1.4e-14: was written 0.000000
    assert p_value == pytest.approx(expected, rel=1e-5, abs=0)
