"""Occupancy from the image over the whole video: own-level HMM, lattice sites, image evidence."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tem_atoms.analysis.hmm import fit_site_levels
from napari_tem_atoms.analysis.occupancy import evidence_occupancy
from napari_tem_atoms.analysis.site_evidence import (
    evidence_polarity,
    image_evidence,
    lattice_step_sites,
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
