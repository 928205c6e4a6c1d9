"""Atoms CSV: column order, Å columns, features, atomic writes, and the round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_tem_atoms import TEMFileError, atoms_table, read_atoms_csv, write_atoms_csv
from napari_tem_atoms.io import is_atoms_csv


def _stack_atoms():
    coordinates = np.array([[0, 10.25, 20.5], [0, 3.0, 4.0], [2, 7.125, 9.875]])
    features = pd.DataFrame({"species": ["Mo", "S2", "S1"], "confidence": [0.9, 0.8, 0.55]})
    return coordinates, features


def test_table_columns_are_in_the_documented_order():
    coordinates, features = _stack_atoms()
    table = atoms_table(coordinates, features, pixel_size_angstrom=0.125)
    assert list(table.columns) == ["frame", "y", "x", "y_angstrom", "x_angstrom", "species",
                                   "confidence"]
    assert table["frame"].dtype.kind == "i"
    np.testing.assert_allclose(table["y_angstrom"], coordinates[:, 1] * 0.125)
    np.testing.assert_allclose(table["x_angstrom"], coordinates[:, 2] * 0.125)


def test_table_for_a_2d_image_has_no_frame_and_no_angstrom_without_calibration():
    table = atoms_table(np.array([[1.0, 2.0]]))
    assert list(table.columns) == ["y", "x"]


def test_feature_named_like_a_coordinate_is_not_written_twice():
    coordinates, _ = _stack_atoms()
    features = pd.DataFrame({"frame": [5, 5, 5], "confidence": [1.0, 1.0, 1.0]})
    table = atoms_table(coordinates, features)
    assert list(table.columns) == ["frame", "y", "x", "confidence"]
    assert table["frame"].tolist() == [0, 0, 2]


@pytest.mark.parametrize("bad", [np.zeros((3, 5)), np.zeros(3)])
def test_table_refuses_other_dimensionalities(bad):
    with pytest.raises(ValueError, match="must be"):
        atoms_table(bad)


def test_focal_time_series_positions_keep_their_image_index(tmp_path):
    coordinates = np.array([[0, 1, 10.0, 20.0], [3, 1, 11.5, 2.25]])
    table = atoms_table(coordinates, pd.DataFrame({"species": ["Mo", "S1"]}), 0.1)
    assert list(table.columns) == ["frame", "image", "y", "x", "y_angstrom", "x_angstrom",
                                   "species"]
    back = read_atoms_csv(write_atoms_csv(tmp_path / "a.csv", table))
    np.testing.assert_allclose(back.coordinates, coordinates)
    assert list(back.features.columns) == ["species"]


def test_round_trip_keeps_positions_features_and_pixel_size(tmp_path):
    coordinates, features = _stack_atoms()
    path = write_atoms_csv(tmp_path / "atoms.csv",
                           atoms_table(coordinates, features, pixel_size_angstrom=(0.13, 0.125)))
    assert path.read_text().splitlines()[0] == (
        "frame,y,x,y_angstrom,x_angstrom,species,confidence")
    assert is_atoms_csv(path)
    table = read_atoms_csv(path)
    np.testing.assert_allclose(table.coordinates, coordinates, atol=1e-6)
    assert table.pixel_size_angstrom == pytest.approx((0.13, 0.125), rel=1e-6)
    pd.testing.assert_frame_equal(table.features, features)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "atoms.csv"
    path.write_text("old content\n")

    def broken_to_csv(self, *args, **kwargs):
        args[0].write("half a line")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    # A message naming the file and the reason, not a traceback (and the old file is kept).
    with pytest.raises(TEMFileError, match=r"atoms\.csv: could not be written \(disk full\)"):
        write_atoms_csv(path, atoms_table(np.array([[1.0, 2.0]])))
    assert path.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atoms.csv"]


def test_write_into_a_missing_folder_names_it(tmp_path):
    with pytest.raises(TEMFileError, match="does not exist"):
        write_atoms_csv(tmp_path / "nowhere" / "atoms.csv", atoms_table(np.array([[1.0, 2.0]])))


@pytest.mark.parametrize(("content", "words"), [
    ("a,b\n1,2\n", "no y and x column"),
    ("y,x\n1,oops\n", "must be numbers"),
    ("y,x\n1,\n", "not finite"),
    ("", "not a readable CSV"),
])
def test_bad_csv_gives_clear_errors(tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TEMFileError, match=words):
        read_atoms_csv(path)


def test_other_csv_files_are_not_taken_for_atoms(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("index,axis-0,axis-1\n0,1,2\n")
    assert not is_atoms_csv(path)


@pytest.mark.parametrize(("content", "words"), [
    # pandas took the leading extra values for an index: y=3, x=4
    ("y,x\n1,2,3,4\n5,6\n", r"line 2 has 4 values for the 2 columns of the header \(y, x\)"),
    ("y,x,species\n\n1,2,Mo\n3,4,S1,extra\n", "Expected 3 fields in line 4, saw 4"),
    ("y,x,y_angstrom,x_angstrom\n1,2,0.1,0.2\n3,4,oops,0.4\n",
     "the y_angstrom column must be numbers: line 3 has 'oops'"),
    ("y,x\n1,2\n\nnot,4\n", "the y column must be numbers: line 4 has 'not'"),
])
def test_malformed_rows_are_refused_naming_the_line(tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TEMFileError, match=words) as error:
        read_atoms_csv(path)
    assert str(error.value).startswith(str(path))


def test_text_cells_that_a_spreadsheet_would_run_are_escaped(tmp_path):
    features = pd.DataFrame({
        "file": ["=HYPERLINK(\"http://x\")", "-cmd|' /C calc'!A0", "+1+1", "@SUM(A1)", "a.tif",
                 "'=quoted", "-1.5"],
        "shift": [-1.5, -2e-7, 0.0, 1.0, 2.0, 3.0, 4.0],
    })
    coordinates = np.column_stack([np.arange(7.0), np.arange(7.0)])
    path = write_atoms_csv(tmp_path / "atoms.csv", atoms_table(coordinates, features))
    rows = path.read_text().splitlines()[1:]
    assert [row.split(",", 2)[2].rsplit(",", 1)[0] for row in rows] == [
        "\"'=HYPERLINK(\"\"http://x\"\")\"", "'-cmd|' /C calc'!A0", "'+1+1", "'@SUM(A1)",
        "a.tif", "''=quoted", "-1.5"]
    assert rows[0].endswith(",-1.500000") and rows[1].endswith(",-2e-07")  # numbers stay
    back = read_atoms_csv(path)
    assert back.features["file"].tolist() == features["file"].tolist()
    np.testing.assert_allclose(back.features["shift"], features["shift"])


def test_small_values_keep_their_significant_digits(tmp_path):
    # compare -o wrote a p-value of 3.0e-11 as 0.000000
    table = pd.DataFrame({"p_value": [3.0e-11, 0.04, np.nan], "y": [1234.56789012, 0.5, 2.0],
                          "x": [1.0, 2.0, 3.0]})
    path = write_atoms_csv(tmp_path / "p.csv", table)
    assert path.read_text().splitlines() == [
        "p_value,y,x", "3e-11,1234.567890,1.000000", "0.04,0.5,2.000000", ",2.000000,3.000000"]
    back = pd.read_csv(path)
    np.testing.assert_allclose(back["p_value"], table["p_value"], rtol=1e-6)


def test_each_table_has_its_writer_and_format(tmp_path):
    from napari_tem_atoms.io import write_scores_csv, write_sites_csv

    table = pd.DataFrame({"dose": [100.0], "f1": [0.5], "p_value": [3e-11], "n": [4],
                          "layer": ["=surface"]})
    scores = write_scores_csv(tmp_path / "scores.csv", table).read_text().splitlines()
    sites = write_sites_csv(tmp_path / "sites.csv", table).read_text().splitlines()
    assert scores[1] == "100.000000,0.500000,0.000000,4,'=surface"
    assert sites[1] == "100.000000,0.5,3e-11,4,'=surface"  # 6 significant digits below 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
