"""Per-site occupancy: exact counts on known matrices, drift, edge distance, bad input, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_tem_atoms.analysis.occupancy import (
    compare_transition_rates,
    edge_distances,
    occupancy_map,
    occupancy_statistics,
    site_occupancy,
)
from napari_tem_atoms.cli import main
from napari_tem_atoms.errors import TEMAtomsError
from napari_tem_atoms.io import read_atoms_csv


def _lattice(n: int = 6, spacing: float = 10.0, origin: float = 30.0) -> np.ndarray:
    rows, cols = np.mgrid[0:n, 0:n]
    return np.stack([rows.ravel(), cols.ravel()], axis=1) * spacing + origin


def _detections(sites: np.ndarray, occupied: np.ndarray, drift: np.ndarray | None = None,
                noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames, index = np.nonzero(occupied)
    positions = sites[index] + rng.normal(0, noise, (len(index), 2))
    if drift is not None:
        positions = positions + drift[frames]
    return pd.DataFrame({"frame": frames, "y": positions[:, 0], "x": positions[:, 1]})


def test_known_matrix_gives_exact_fractions_and_counts():
    occupied = np.array([[1, 1, 0],
                         [0, 1, 0],
                         [1, 1, 1],
                         [1, 1, 0],
                         [0, 1, 1]], dtype=bool)
    table = occupancy_statistics(occupied)
    np.testing.assert_allclose(table["occupancy"], [0.6, 1.0, 0.4])
    np.testing.assert_array_equal(table["transitions_off"], [2, 0, 1])
    np.testing.assert_array_equal(table["transitions_on"], [1, 0, 2])
    np.testing.assert_array_equal(table["n_frames"], [5, 5, 5])
    # Off per occupied frame with a successor (site 0: 2 of 3), on per empty one (1 of 1).
    np.testing.assert_allclose(table["rate_off"], [2 / 3, 0.0, 1 / 1])
    np.testing.assert_allclose(table["rate_on"][[0, 2]], [1.0, 2 / 3])
    assert np.isnan(table["rate_on"][1])  # never empty: no rate, not zero
    np.testing.assert_allclose(table["transition_rate"], [3 / 4, 0.0, 3 / 4])
    assert np.all(table["occupancy_low"] <= table["occupancy"])
    assert np.all(table["occupancy"] <= table["occupancy_high"])


def test_unobserved_frames_do_not_count():
    occupied = np.array([[1], [0], [1], [1]], dtype=bool)
    observed = np.array([[1], [0], [1], [1]], dtype=bool)  # frame 1: out of view, not empty
    table = occupancy_statistics(occupied, observed)
    assert table["occupancy"][0] == 1.0 and table["n_frames"][0] == 3
    assert table["transitions_off"][0] == 0 and table["transitions_on"][0] == 0


def test_sites_from_detections_reproduce_the_matrix_and_undo_drift():
    rng = np.random.default_rng(3)
    sites = _lattice()
    occupied = rng.random((40, len(sites))) < 0.6
    occupied[:, 14] = True  # one site always there
    occupied[:, 20] = False
    occupied[7, 20] = True  # one site seen once: kept
    drift = np.cumsum(rng.normal(0, 1.0, (40, 2)), axis=0)
    drift -= drift[0]
    detections = _detections(sites, occupied, drift, noise=0.3)
    result = site_occupancy(detections, n_frames=40, drift=drift, sampling=0.1,
                            site_radius=3.0)
    assert len(result.sites) == len(sites)
    distance = np.linalg.norm(result.sites[["y", "x"]].to_numpy()[:, None] - sites[None],
                              axis=-1)
    match = distance.argmin(axis=0)
    # Drift undone: sites where they were in frame 0 (to the noise of the detections' mean).
    assert np.median(distance.min(axis=0)) < 0.15 and distance.min(axis=0).max() < 1.0
    np.testing.assert_array_equal(result.occupied[:, match], occupied)
    np.testing.assert_allclose(result.sites["occupancy"].to_numpy()[match], occupied.mean(0))
    assert result.sites["occupancy"].to_numpy()[match[20]] == pytest.approx(1 / 40)
    np.testing.assert_allclose(result.sites["y_angstrom"], result.sites["y"] * 0.1)
    # Without drift correction the same detections smear into more, worse sites.
    smeared = site_occupancy(detections, n_frames=40, sampling=0.1, site_radius=3.0)
    assert len(smeared.sites) != len(sites) or not np.array_equal(
        smeared.occupied[:, match], occupied)


def test_a_site_never_detected_does_not_appear():
    sites = _lattice(4)
    occupied = np.ones((10, len(sites)), dtype=bool)
    occupied[:, 5] = False
    result = site_occupancy(_detections(sites, occupied), site_radius=3.0)
    assert len(result.sites) == len(sites) - 1
    assert np.min(np.linalg.norm(result.sites[["y", "x"]].to_numpy() - sites[5], axis=1)) > 5


def test_sites_out_of_view_are_not_counted_empty():
    sites = np.array([[20.0, 20.0], [20.0, 60.0]])
    drift = np.zeros((6, 2))
    drift[3:, 1] = 30.0  # the second site drifts out of a 80-px frame from frame 3
    occupied = np.array([[1, 1]] * 3 + [[1, 0]] * 3, dtype=bool)
    result = site_occupancy(_detections(sites, occupied, drift), drift=drift,
                            frame_shape=(80, 80), site_radius=3.0)
    second = int(np.argmin(np.abs(result.sites["x"] - 60)))
    assert result.sites["n_frames"][second] == 3
    assert result.sites["occupancy"][second] == 1.0


def test_edge_distance_of_a_square_particle():
    spacing = 2.0
    sites = _lattice(9, spacing, 0.0)
    distance, used = edge_distances(sites)
    assert used == pytest.approx(spacing)
    layer = np.minimum.reduce([sites[:, 0], sites[:, 1], 16 - sites[:, 0], 16 - sites[:, 1]])
    np.testing.assert_allclose(distance, layer, atol=0.05)  # 0 at the edge, 2 one layer in...
    result = site_occupancy(_detections(sites, np.ones((3, len(sites)), bool)), sampling=0.5,
                            site_radius=0.6)
    counts = result.sites["layer"].value_counts()
    assert counts["surface"] == 32 and counts["sub-surface"] == 24 and counts["bulk"] == 25
    np.testing.assert_allclose(np.sort(result.sites["edge_distance_angstrom"].unique()),
                               [0, 1, 2, 3, 4], atol=0.1)


@pytest.mark.parametrize(("detections", "kwargs", "words"), [
    (pd.DataFrame({"frame": [0, 0], "y": [1.0, 2.0], "x": [1.0, 2.0]}), {}, "at least 2"),
    (pd.DataFrame({"frame": [], "y": [], "x": []}), {"n_frames": 5}, "no detections"),
    (pd.DataFrame({"frame": [0, 7], "y": [1.0, 2.0], "x": [1.0, 2.0]}), {"n_frames": 5},
     "do not match"),
    (pd.DataFrame({"frame": [0, 1], "y": [1.0, 2.0], "x": [1.0, 2.0]}),
     {"drift": np.zeros((3, 2)), "n_frames": 4}, r"\(4, 2\)"),
    (pd.DataFrame({"y": [1.0], "x": [1.0]}), {}, "frame"),
])
def test_bad_input_gives_clear_errors(detections, kwargs, words):
    with pytest.raises(TEMAtomsError, match=words):
        site_occupancy(detections, **kwargs)


def test_two_videos_are_compared_layer_by_layer():
    rng = np.random.default_rng(0)
    layers = np.repeat(["surface", "sub-surface", "bulk"], 30)
    vacuum = pd.DataFrame({"layer": layers, "transition_rate": rng.uniform(0, 0.1, 90)})
    gas = vacuum.assign(transition_rate=np.where(layers == "surface",
                                                 rng.uniform(0.2, 0.4, 90),
                                                 rng.uniform(0, 0.1, 90)))
    table = compare_transition_rates(vacuum, gas, ("vacuum", "gas")).set_index("layer")
    assert table.loc["surface", "p_value"] < 1e-6
    assert table.loc["bulk", "p_value"] > 0.01
    assert table.loc["surface", "median_gas"] > table.loc["surface", "median_vacuum"]
    with pytest.raises(TEMAtomsError, match="layer"):
        compare_transition_rates(vacuum.drop(columns="layer"), gas)


def test_occupancy_map_fills_each_cell_with_its_site_value():
    sites = _lattice(3, 10.0, 10.0)
    values = np.linspace(0, 1, len(sites))
    heat = occupancy_map(sites, values, (60, 60))
    for (y, x), value in zip(sites.astype(int), values, strict=True):
        assert heat[y, x] == pytest.approx(value)
        assert heat[y + 3, x - 3] == pytest.approx(value)  # the cell, not just the pixel
    assert np.isnan(heat[0, 0]) and np.isnan(heat[59, 59])  # outside the particle


def test_site_and_occupancy_step_scales_to_large_videos():
    # 300 frames × 400 sites: the benchmark measures 1000 × 1000; here only that it works.
    rng = np.random.default_rng(5)
    sites = _lattice(20, 8.0)
    occupied = rng.random((300, len(sites))) < 0.8
    result = site_occupancy(_detections(sites, occupied, noise=0.4), site_radius=2.5)
    assert len(result.sites) == len(sites)
    assert result.occupied.shape == (300, len(sites))


def test_cli_occupancy_reuses_atoms_and_writes_the_sites_csv(tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(1)
    sites = _lattice(5, 12.0, 20.0)
    occupied = rng.random((8, len(sites))) < 0.7
    video = tmp_path / "video.tif"
    frames = rng.normal(100, 5, (8, 100, 100)).astype(np.float32)
    frames[:, 20:80:12, 20:80:12] += 200  # something to register on
    tifffile.imwrite(video, frames, photometric="minisblack")
    atoms = tmp_path / "atoms.csv"
    _detections(sites, occupied).to_csv(atoms, index=False)
    output, matrix = tmp_path / "sites.csv", tmp_path / "matrix.csv"
    code = main(["occupancy", str(video), "--atoms", str(atoms), "--sampling", "0.1",
                 "--site-radius", "0.4", "--max-shift", "4", "-o", str(output),
                 "--matrix", str(matrix)])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(output)
    assert list(table.columns[:12]) == [
        "site", "y", "x", "y_angstrom", "x_angstrom", "occupancy", "occupancy_low",
        "occupancy_high", "transitions_off", "transitions_on", "n_frames",
        "edge_distance_angstrom"]
    assert len(table) == len(sites)
    np.testing.assert_allclose(np.sort(table["occupancy"]), np.sort(occupied.mean(0)))
    assert read_atoms_csv(output).pixel_size_angstrom == pytest.approx((0.1, 0.1))
    assert pd.read_csv(matrix).shape == (8, len(sites) + 1)
    assert "sites over 8 frames" in capsys.readouterr().err

    assert main(["compare", str(output), str(output), "--names", "a", "b"]) == 0
    assert "surface" in capsys.readouterr().out


def test_cli_occupancy_explains_bad_input(tmp_path, capsys):
    import tifffile

    single = tmp_path / "single.tif"
    tifffile.imwrite(single, np.ones((50, 50), np.float32))
    assert main(["occupancy", str(single), "--sampling", "0.1", "-o",
                 str(tmp_path / "s.csv")]) == 1
    assert "at least 2 frames" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_cli_occupancy_passes_the_imaging_conditions_to_the_detector(tmp_path, capsys,
                                                                     monkeypatch):
    import tifffile

    import napari_tem_atoms.analysis.video as video_module
    from napari_tem_atoms.samples import synthetic_gold_stack

    video = tmp_path / "video.tif"
    stack = synthetic_gold_stack(n_frames=3, shape=(160, 160), particle_radius=7.0, seed=3)
    tifffile.imwrite(video, stack.images.astype(np.float32), photometric="minisblack")
    passed = []
    original = video_module.iter_detect_atoms

    def recording(*args, **kwargs):
        passed.append({key: kwargs.get(key) for key in ("cs", "defocus")})
        return original(*args, **kwargs)

    monkeypatch.setattr(video_module, "iter_detect_atoms", recording)
    output = tmp_path / "sites.csv"
    assert main(["occupancy", str(video), "--sampling", "0.12", "--cs-um", "-15",
                 "--defocus", "-50", "-o", str(output)]) == 0, capsys.readouterr().err
    assert passed == [{"cs": -15e4, "defocus": -50.0}]
    assert len(pd.read_csv(output)) > 10
    # A value the model was not trained on stops the run with a message, and writes nothing.
    assert main(["occupancy", str(video), "--sampling", "0.12", "--cs-um", "1200", "-o",
                 str(tmp_path / "bad.csv")]) == 1
    err = capsys.readouterr().err
    assert "Cs 1200 µm is outside what the model was trained on" in err, err
    assert not (tmp_path / "bad.csv").exists()
