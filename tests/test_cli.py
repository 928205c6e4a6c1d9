"""The command line as a user meets it: outputs checked before any work, values in range,
one-line errors that name the file."""

from __future__ import annotations

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
                 str(tmp_path / "a.csv")]) == 1
    error = capsys.readouterr().err
    assert f"{path}, frame 1" in error and "NaN" in error


def test_an_unknown_device_is_a_message(stack_file, tmp_path, capsys):
    assert main(["detect", str(stack_file), "--sampling", "0.12", "--device", "gpu", "-o",
                 str(tmp_path / "a.csv")]) == 1
    assert "unknown device 'gpu'" in capsys.readouterr().err
