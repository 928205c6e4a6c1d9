"""Occupancy from the whole video: the HMMs, evidence and sites, edges, adatom training data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tem_atoms.analysis.hmm import fit_site_levels, fit_two_state
from napari_tem_atoms.analysis.occupancy import (
    edge_distances,
    evidence_occupancy,
    field_of_view,
    site_occupancy,
)
from napari_tem_atoms.analysis.site_evidence import (
    evidence_polarity,
    image_evidence,
    lattice_step_sites,
    mean_map,
    site_evidence,
    sites_from_mean_map,
)
from napari_tem_atoms.errors import TEMAtomsError


def _chains(rng, frames, p_off, p_on):
    states = np.zeros((frames, len(p_off)), dtype=bool)
    states[0] = rng.random(len(p_off)) < p_on / (p_on + p_off)
    for t in range(1, frames):
        flip = np.where(states[t - 1], rng.random(len(p_off)) < p_off,
                        rng.random(len(p_on)) < p_on)
        states[t] = states[t - 1] ^ flip
    return states


def test_hmm_recovers_known_rates_and_states():
    rng = np.random.default_rng(3)
    sites, frames = 60, 400
    p_off = np.repeat([0.05, 0.3], sites // 2)
    p_on = np.repeat([0.1, 0.3], sites // 2)
    states = _chains(rng, frames, p_off, p_on)
    # Adatoms (weak) and thick columns (strong) in one video; one noise level.
    level = np.tile([1.0, 4.0], sites // 2)
    evidence = np.where(states, level, 0.0) + rng.normal(0, 0.35, states.shape)
    fit = fit_two_state(evidence, threshold=0.5)
    assert (fit.states == states).mean() > 0.95
    slow, fast = slice(0, sites // 2), slice(sites // 2, sites)
    assert np.median(fit.p_off[slow]) == pytest.approx(0.05, abs=0.03)
    assert np.median(fit.p_off[fast]) == pytest.approx(0.3, abs=0.06)
    assert np.median(fit.p_on[fast]) == pytest.approx(0.3, abs=0.06)
    assert np.abs(fit.occupancy - states.mean(axis=0)).mean() < 0.03
    true_flips = (states[1:] != states[:-1]).sum(axis=0)
    assert np.abs(fit.expected_off + fit.expected_on - true_flips).mean() < 0.1 * frames * 0.2


def test_a_site_occupied_in_3_of_40_frames_is_found():
    rng = np.random.default_rng(5)
    frames, shape, sampling = 40, (64, 64), 0.2
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    rare, steady = np.array([20.0, 20.0]), np.array([40.0, 44.0])
    occupied = np.zeros(frames, bool)
    occupied[[7, 8, 30]] = True
    maps = []
    for t in range(frames):
        frame = 0.02 * rng.random(shape)
        for centre, present, height in ((rare, occupied[t], 0.6), (steady, True, 0.95)):
            if present:
                frame = np.maximum(frame, height * np.exp(
                    -((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 2.0**2)))
        maps.append(frame.astype(np.float32))
    drift = np.zeros((frames, 2))
    sites = sites_from_mean_map(mean_map(maps, drift), sampling)
    assert len(sites) == 2
    evidence, observed = site_evidence(maps, sites, drift, sampling)
    result = evidence_occupancy(evidence, sites, observed, threshold=0.0)
    rare_site = int(np.argmin(np.linalg.norm(sites - rare, axis=1)))
    np.testing.assert_array_equal(result.occupied[:, rare_site], occupied)
    assert result.sites.loc[rare_site, "occupancy"] == pytest.approx(3 / 40, abs=0.01)
    assert result.sites.loc[1 - rare_site, "occupancy"] == pytest.approx(1.0, abs=0.01)
    assert result.method == "evidence" and result.posterior.shape == (frames, 2)


def test_mean_map_undoes_the_drift():
    reference = np.zeros((32, 32), np.float32)
    reference[10, 12] = 1.0
    drift = np.array([[1.0, 1.0], [2.0, -3.0]])
    frames = [np.roll(reference, (1, 1), axis=(0, 1)), np.roll(reference, (2, -3), axis=(0, 1))]
    mean = mean_map(frames, drift)
    assert np.nanargmax(mean) == np.ravel_multi_index((10, 12), mean.shape)
    assert mean[10, 12] == pytest.approx(1.0)
    assert np.isnan(mean[31]).all()  # the last row: no frame showed it


def test_a_field_full_of_crystal_has_no_surface():
    # A square lattice filling a 100 x 100 px field: the field's border is no particle edge.
    grid = np.stack(np.meshgrid(np.arange(5, 96, 10.0), np.arange(5, 96, 10.0),
                                indexing="ij"), -1).reshape(-1, 2)
    seen = field_of_view(np.zeros((3, 2)), (100, 100))
    distances, _ = edge_distances(grid, seen=seen)
    assert np.isinf(distances).all()
    result = site_occupancy(np.column_stack([np.zeros(len(grid)), grid]), n_frames=2,
                            frame_shape=(100, 100))
    assert (result.sites["layer"] == "bulk").all()
    assert any("no particle edge" in note for note in result.notes)
    # A particle in the middle of a field with vacuum around it has a surface.
    particle = grid[np.linalg.norm(grid - 50, axis=1) < 25]
    distances, _ = edge_distances(particle, seen=seen)
    assert (distances == 0).sum() >= 8 and np.isfinite(distances).all()


def test_hmm_refuses_what_it_cannot_fit():
    with pytest.raises(TEMAtomsError, match="at least 2 frames"):
        fit_two_state(np.zeros((1, 3)))
    with pytest.raises(TEMAtomsError, match="no site was observed"):
        fit_two_state(np.full((4, 2), np.nan))
    with pytest.raises(TEMAtomsError, match=r"\(frames, sites\)"):
        fit_two_state(np.zeros(5))


def test_adatoms_sit_on_hollow_sites_as_new_short_columns():
    from ase.cluster import Octahedron

    from napari_tem_atoms.simulation.columns import project_columns
    from napari_tem_atoms.simulation.structures import GOLD_LATTICE_CONSTANT, add_adatoms

    particle = Octahedron("Au", 6, cutoff=2, latticeconstant=GOLD_LATTICE_CONSTANT).positions
    beam = np.array([0.0, 0.0, 1.0])
    adatoms = add_adatoms(particle, beam, np.random.default_rng(1), columns=5)
    assert 5 <= len(adatoms) <= 10
    nearest = GOLD_LATTICE_CONSTANT / np.sqrt(2)
    for atom in adatoms:  # on a hollow site: at least 3 particle atoms at the bond length
        bonds = np.linalg.norm(particle - atom, axis=1)
        assert bonds.min() == pytest.approx(nearest, abs=0.01)
        assert (np.abs(bonds - nearest) < 0.05).sum() >= 3
    columns = project_columns(np.vstack([particle, adatoms]))
    before = project_columns(particle)
    assert len(columns) == len(before) + 5  # five new columns ...
    new = columns[~np.isin(np.round(columns[:, :2], 2), np.round(before[:, :2], 2)).all(axis=1)]
    assert set(new[:, 2].astype(int)) <= {1, 2}  # ... of one or two atoms


def test_count_targets_hold_log_atoms_at_column_centres():
    from napari_tem_atoms.training.data import column_targets, count_targets

    columns = np.array([[10.0, 10.0, 1], [10.0, 30.0, 7]])
    target, weight = count_targets((40, 40), columns, sampling=0.1)
    assert target[10, 10] == pytest.approx(0.0) and weight[10, 10] == 1
    assert target[10, 30] == pytest.approx(np.log(7)) and weight[10, 30] == 1
    assert weight[25, 20] == 0
    masked_map, mask = column_targets((40, 40), columns, 0.1)  # default: 1 atom masked out
    assert mask[10, 10] == 0 and masked_map[10, 10] == 0
    every_map, mask = column_targets((40, 40), columns, 0.1, min_atoms=1)
    assert mask[10, 10] == 1 and every_map[10, 10] == pytest.approx(1.0)


def test_a_model_with_counts_gives_whole_numbers_of_atoms(tmp_path):
    import torch

    from napari_tem_atoms import detect_atoms
    from napari_tem_atoms.io import atoms_table, read_atoms_csv, write_atoms_csv
    from napari_tem_atoms.models import load_model, save_model
    from napari_tem_atoms.models.unet import UNet

    torch.manual_seed(0)
    network = UNet(base_channels=4, depth=2, counts=1).eval()
    with torch.no_grad():  # a count head that says log(4) everywhere: four atoms
        network.count_head[-1].weight.zero_()
        network.count_head[-1].bias.fill_(float(np.log(4.0)))
        network.head.bias.fill_(-3.0)
    path = tmp_path / "counting.safetensors"
    save_model(path, network, {"architecture": {"in_channels": 1, "out_channels": 1,
                                                "base_channels": 4, "depth": 2, "counts": 1},
                               "sampling": 0.2, "classes": ["column"], "threshold": 0.01})
    for engine in ("torch", "openvino") if _openvino() else ("torch",):
        loaded = load_model(path, "cpu", "fp32", engine)
        assert loaded.counts
        rng = np.random.default_rng(0)
        atoms = detect_atoms(rng.normal(size=(96, 96)).astype(np.float32), loaded,
                             sampling=0.2)
        assert len(atoms) and set(atoms["n_atoms"]) == {4}
    table = atoms_table(atoms[["y", "x"]].to_numpy(), atoms[["confidence", "n_atoms"]], 0.2)
    written = write_atoms_csv(tmp_path / "atoms.csv", table)
    assert "n_atoms" in written.read_text().splitlines()[0]
    assert set(read_atoms_csv(written).features["n_atoms"]) == {4}


def _openvino() -> bool:
    from napari_tem_atoms.models.engines import openvino_available

    return openvino_available()


@pytest.mark.slow
def test_the_evidence_method_runs_on_a_video_end_to_end():
    from napari_tem_atoms.analysis.video import video_occupancy
    from napari_tem_atoms.samples import synthetic_gold_stack

    stack = synthetic_gold_stack(n_frames=6, shape=(192, 192), particle_radius=8.0, seed=3)
    result = video_occupancy(stack.images, sampling=stack.sampling, method="evidence",
                             engine="torch")
    assert result.method == "evidence" and len(result.sites) > 10
    assert result.posterior.shape == (6, len(result.sites))
    assert (result.sites["occupancy"].between(0, 1)).all()
    detections = video_occupancy(stack.images, sampling=stack.sampling, method="detections",
                                 engine="torch")
    assert detections.method == "detections" and detections.posterior is None
    with pytest.raises(TEMAtomsError, match="unknown occupancy method"):
        video_occupancy(stack.images, sampling=stack.sampling, method="votes")


@pytest.mark.slow
def test_adatom_videos_have_truth_from_geometry():
    from napari_tem_atoms.simulation.diffusion import simulate_adatom_video

    video = simulate_adatom_video(n_frames=2, diameter=15.0, adatom_sites=6, seed=2,
                                  regime="fast")
    sites = video.sites
    adatoms = sites[sites["surface"]]
    assert 1 <= len(adatoms) <= 6 and set(adatoms["n_atoms"]) <= {1, 2}
    assert set(adatoms["kind"]) <= {"facet", "edge"}
    assert (sites.loc[~sites["surface"], "kind"] == "particle").all()
    assert video.present[:, ~sites["surface"].to_numpy()].all()  # the particle stays whole
    assert video.frames.shape[0] == 2
    with pytest.raises(ValueError, match="regime"):
        simulate_adatom_video(n_frames=2, regime="oxygen")


def test_training_only_the_count_head_leaves_the_column_map_alone():
    import torch

    from napari_tem_atoms.models.unet import UNet
    from napari_tem_atoms.training.train import _freeze_all_but

    network = UNet(base_channels=4, depth=2, counts=1)
    _freeze_all_but(network, "count_head")
    network.train()
    trained = {name for name, p in network.named_parameters() if p.requires_grad}
    assert trained and all(name.startswith("count_head.") for name in trained)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)  # running statistics stay as they are
    before = {k: v.clone() for k, v in network.state_dict().items() if "running" in k}
    network(torch.randn(2, 1, 32, 32))
    assert all(torch.equal(before[k], network.state_dict()[k]) for k in before)
    with pytest.raises(TEMAtomsError, match="no layer 'count_head'"):
        _freeze_all_but(UNet(base_channels=4, depth=2), "count_head")


def test_training_the_column_decoders_alone_leaves_the_encoder_and_count_branch_alone():
    from napari_tem_atoms.models.unet import UNet
    from napari_tem_atoms.training.train import _freeze_all_but

    network = UNet(base_channels=4, depth=2, counts=2)
    _freeze_all_but(network, "decoders, head")
    trained = {name.split(".")[0] for name, p in network.named_parameters() if p.requires_grad}
    assert trained == {"decoders", "head"}
    with pytest.raises(TEMAtomsError, match="no layer 'heads'"):
        _freeze_all_but(network, "decoders,heads")


# The evidence method: each site's own levels, lattice sites, the image as evidence.

def test_sites_with_their_own_levels_give_back_known_rates():
    rng = np.random.default_rng(11)
    sites, frames = 40, 300
    p_off = np.repeat([0.05, 0.3], sites // 2)
    p_on = np.repeat([0.1, 0.3], sites // 2)
    states = _chains(rng, frames, p_off, p_on)
    # Each site sits in its own surroundings (an offset far larger than the atom's contrast).
    offsets = rng.uniform(-5, 5, sites)
    evidence = offsets + np.where(states, 1.0, 0.0) + rng.normal(0, 0.25, states.shape)
    fit = fit_site_levels(evidence)
    assert fit.switching.all()
    assert (fit.states == states).mean() > 0.97
    slow, fast = slice(0, sites // 2), slice(sites // 2, sites)
    assert np.median(fit.p_off[slow]) == pytest.approx(0.05, abs=0.03)
    assert np.median(fit.p_off[fast]) == pytest.approx(0.3, abs=0.06)
    assert np.median(fit.p_on[fast]) == pytest.approx(0.3, abs=0.06)
    np.testing.assert_allclose(fit.means[:, 0], offsets, atol=0.1)


def test_empty_sites_do_not_switch_and_a_site_occupied_in_3_of_40_frames_does():
    rng = np.random.default_rng(2)
    frames = 40
    # A video's sites: adatoms coming and going, lattice sites never occupied, and one site
    # occupied in 3 frames; each in its own surroundings, one atom's contrast 5 noise σ.
    states = _chains(rng, frames, np.full(20, 0.1), np.full(20, 0.1))
    rare = np.zeros(frames, bool)
    rare[[7, 8, 30]] = True
    occupied = np.column_stack([states, np.zeros((frames, 20), bool), rare])
    evidence = (rng.uniform(-3, 3, occupied.shape[1]) + 1.0 * occupied
                + rng.normal(0, 0.2, occupied.shape))
    fit = fit_site_levels(evidence)
    moving = occupied.any(axis=0) & ~occupied.all(axis=0)
    assert fit.switching[moving].all()
    # Noise alone, with nothing noisier in the video to set the common σ, passes for one
    # empty site in twenty or so (on simulated adatom videos none of 72 did; see hmm.py).
    assert fit.switching[~moving].sum() <= 2
    np.testing.assert_array_equal(fit.states[:, -1], rare)
    assert (fit.states[:, moving] == occupied[:, moving]).mean() > 0.98


def test_own_levels_keep_steady_columns_and_drop_empty_sites():
    rng = np.random.default_rng(4)
    frames = 40
    switching = np.repeat([False, True], 20)
    evidence = np.column_stack([
        2.0 + rng.normal(0, 0.2, frames),                     # a column, always there
        0.5 + rng.normal(0, 0.2, frames),                     # an empty lattice site
        0.5 + switching + rng.normal(0, 0.2, frames),         # an adatom arriving
    ])
    sites = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    result = evidence_occupancy(evidence, sites, levels="own",
                                steady=np.array([True, False, False]))
    assert len(result.sites) == 2  # the empty lattice site is no site
    np.testing.assert_allclose(result.sites[["y", "x"]], sites[[0, 2]])
    assert result.sites["occupancy"].to_numpy() == pytest.approx([1.0, 0.5], abs=0.02)
    assert result.sites["transitions_on"].to_numpy() == pytest.approx([0.0, 1.0], abs=0.05)
    np.testing.assert_array_equal(result.occupied[:, 1], switching)
    assert result.evidence_levels.shape == (2, 2)
    with pytest.raises(TEMAtomsError, match="levels must be"):
        evidence_occupancy(evidence, sites, levels="mine")


def test_lattice_steps_find_the_sites_beyond_the_surface_and_a_vacancy():
    # A triangular lattice (2.5 px) cut to a hexagonal patch, its centre column missing.
    a1, a2 = np.array([0.0, 2.5]), np.array([2.5 * np.sqrt(3) / 2, 1.25])
    points = np.array([i * a1 + j * a2 for i in range(-6, 7) for j in range(-6, 7)])
    inside = np.linalg.norm(points, axis=1) < 7.0
    columns = points[inside & (np.linalg.norm(points, axis=1) > 0.1)] + 50.0
    sites = lattice_step_sites(columns)
    lattice = points + 50.0
    # Every site found is a lattice point where no column is.
    distance_to_lattice = np.min(np.linalg.norm(sites[:, None] - lattice[None], axis=2), axis=1)
    assert distance_to_lattice.max() < 1e-6
    assert np.min(np.linalg.norm(sites[:, None] - columns[None], axis=2), axis=1).min() > 2.0
    # The vacancy and the whole first shell outside the patch are found.
    assert np.min(np.linalg.norm(sites - 50.0, axis=1)) < 1e-6
    shell = lattice[(~inside) & (np.min(np.linalg.norm(
        lattice[:, None] - columns[None], axis=2), axis=1) < 2.6)]
    found = np.min(np.linalg.norm(shell[:, None] - sites[None], axis=2), axis=1) < 1e-6
    assert found.mean() > 0.9
    assert len(lattice_step_sites(columns[:2])) == 0


def test_image_evidence_follows_the_drift_and_the_sign_comes_from_the_network():
    rng = np.random.default_rng(0)
    frames, shape, sampling = 12, (48, 48), 0.1
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    site = np.array([20.0, 24.0])
    drift = np.cumsum(rng.normal(0, 1.0, (frames, 2)), axis=0)
    drift -= drift[0]
    present = np.arange(frames) % 3 == 0
    stack = []
    for t in range(frames):
        frame = np.full(shape, 10.0) + rng.normal(0, 0.2, shape)
        if present[t]:
            centre = site + drift[t]
            frame -= 3.0 * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 8.0)
        stack.append(frame)
    evidence, observed = image_evidence(stack, site[None], drift, sampling)
    assert observed.all()
    # A dark atom lowers the image's evidence in every frame it is there.
    assert evidence[present, 0].max() < evidence[~present, 0].min()
    network = np.where(present, 2.0, -2.0)[:, None]
    assert evidence_polarity(evidence, network, observed) == -1.0
    assert evidence_polarity(-evidence, network, observed) == 1.0
    outside, seen = image_evidence(stack, np.array([[0.5, 0.5]]), drift, sampling)
    assert not seen[0, 0] and np.isnan(outside[0, 0])
    with pytest.raises(TEMAtomsError, match="drift of"):
        image_evidence(stack, site[None], drift[:3], sampling)


def test_compare_has_a_row_for_the_sites_that_switch():
    import pandas as pd

    from napari_tem_atoms.analysis.occupancy import compare_transition_rates

    rng = np.random.default_rng(1)

    def table(rates):
        # 40 columns that never move (rate 0) and the switching sites, all at the surface.
        return pd.DataFrame({"transition_rate": np.r_[np.zeros(40), rates],
                             "layer": "surface",
                             "switching": np.r_[np.zeros(40, bool), np.ones(len(rates), bool)]})

    slow, fast = table(rng.uniform(0.02, 0.1, 15)), table(rng.uniform(0.15, 0.4, 15))
    result = compare_transition_rates(slow, fast, names=("slow", "fast")).set_index("layer")
    assert result.loc["switching", "n_slow"] == 15 and result.loc["surface", "n_slow"] == 55
    assert result.loc["switching", "p_value"] < 1e-4
    assert result.loc["switching", "p_value"] < result.loc["surface", "p_value"]
    # Read back from CSV the column is text: it still counts; tables without it have no row.
    as_text = slow.assign(switching=slow["switching"].map({True: "True", False: "False"}))
    again = compare_transition_rates(as_text, fast).set_index("layer")
    assert again.loc["switching", "n_first"] == 15
    assert "switching" not in compare_transition_rates(slow.drop(columns="switching"),
                                                       fast)["layer"].to_list()


def test_occupancy_without_a_pixel_size_is_refused_before_the_drift():
    from napari_tem_atoms.analysis.video import iter_video_occupancy

    stream = iter_video_occupancy(np.random.default_rng(0).random((3, 32, 32)))
    with pytest.raises(TEMAtomsError, match="pixel size of the image is not known"):
        next(stream)  # the first event would be the drift's


@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_the_bundled_adatom_model_counts_atoms_through_either_engine(engine):
    if engine == "openvino" and not _openvino():
        pytest.skip("OpenVINO is not installed")
    from napari_tem_atoms import detect_atoms
    from napari_tem_atoms.models import load_model
    from napari_tem_atoms.samples import synthetic_gold_stack

    loaded = load_model("au-hrtem-adatoms", "cpu", "fp32", engine)
    assert loaded.counts and loaded.threshold == 0.45
    stack = synthetic_gold_stack(n_frames=1, shape=(160, 160), particle_radius=6.0, seed=1)
    atoms = detect_atoms(stack.images[0], loaded, sampling=stack.sampling)
    assert len(atoms) > 10
    assert atoms["n_atoms"].between(1, 60).all()
    assert (atoms["n_atoms"] == atoms["n_atoms"].round()).all()
    assert atoms["n_atoms"].nunique() > 1  # a particle has thin and thick columns
