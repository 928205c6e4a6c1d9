"""The simulated microscope, the column truth and the scoring rule."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tem_atoms.simulation import MicroscopeSettings, project_columns, wavelength
from napari_tem_atoms.simulation.microscope import form_image, fourier_resample, transfer_function
from napari_tem_atoms.training.data import column_targets
from napari_tem_atoms.training.metrics import match_columns


def test_wavelength_at_300_kv():
    assert wavelength(300e3) == pytest.approx(0.019687, rel=1e-4)


def test_columns_cluster_projected_atoms_within_half_an_angstrom():
    atoms = np.array([[1.0, 2.0, 0.0], [1.1, 2.05, 2.9], [1.05, 1.95, 5.8],  # a 3-atom column
                      [4.0, 2.0, 0.0],  # a single atom
                      [4.3, 2.0, 2.9]])  # 0.3 Å away: the same column
    columns = project_columns(atoms)
    columns = columns[np.argsort(columns[:, 1])]
    np.testing.assert_allclose(columns[0], [2.0, 1.05, 3])
    np.testing.assert_allclose(columns[1], [2.0, 4.15, 2])


def test_fourier_resampling_keeps_positions():
    sampling = 0.125
    y, x = np.mgrid[0:200, 0:200] * sampling
    centre = (11.3, 13.7)  # Å
    image = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * 0.6**2))
    resampled, new_sampling = fourier_resample(image, sampling, 0.2)
    assert new_sampling == pytest.approx(0.2, rel=1e-2)
    # Pixel [i, j] of the result is the image at (i, j) x new sampling: compare with the model.
    y, x = np.mgrid[0:resampled.shape[0], 0:resampled.shape[1]] * new_sampling
    expected = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * 0.6**2))
    np.testing.assert_allclose(resampled, expected, atol=1e-3)


def test_perfect_microscope_shows_the_exit_wave_intensity():
    rng = np.random.default_rng(0)
    wave = np.ones((64, 64), np.complex64)
    wave[20:30, 10:40] = 0.5  # an amplitude object: visible in focus without aberrations
    settings = MicroscopeSettings(defocus=0, cs=0, focal_spread=0, sampling=0.125, dose=1e9,
                                  mtf_floor=1.0)
    image, sampling = form_image(wave[None], 0.125, settings, rng, aperture=1e3)
    assert sampling == pytest.approx(0.125)
    np.testing.assert_allclose(image / image.mean(), np.abs(wave) ** 2 / np.mean(np.abs(wave) ** 2),
                               atol=2e-3)


def test_defocus_sign_follows_abtem():
    """Checked against abTEM's own CTF when it is installed (the `simulate` extra)."""
    abtem = pytest.importorskip("abtem")
    rng = np.random.default_rng(1)
    wave = (1 + 0.1j * rng.normal(size=(96, 96))).astype(np.complex64)
    for defocus, cs, c12, angle in [(90, 3e5, 0, 0), (-60, -15e4, 30, 0.7)]:
        settings = MicroscopeSettings(defocus=defocus, cs=cs, astigmatism=c12,
                                      astigmatism_angle=angle, focal_spread=30)
        ours = np.abs(np.fft.ifft2(np.fft.fft2(wave)
                                   * transfer_function(wave.shape, 0.1, settings, 2.0))) ** 2
        ctf = abtem.CTF(defocus=defocus, Cs=cs, astigmatism=c12, astigmatism_angle=angle,
                        focal_spread=30, soft=False,
                        semiangle_cutoff=2.0 * wavelength(300e3) * 1e3)
        waves = abtem.Waves(wave.T.copy(), energy=300e3, sampling=0.1)  # abTEM is (x, y)
        theirs = np.abs(waves.apply_ctf(ctf).compute().array.T) ** 2
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_targets_peak_at_thick_columns_and_ignore_thin_ones():
    columns = np.array([[10.0, 10.0, 5], [10.0, 30.0, 1]])
    target, mask = column_targets((40, 40), columns, sampling=0.2)
    assert target[10, 10] == pytest.approx(1.0)
    assert target[10, 30] == 0.0
    assert mask[10, 30] == 0.0 and mask[10, 10] == 1.0
    assert mask[30, 30] == 1.0


def test_scoring_counts_and_ignores_thin_columns():
    columns = np.array([[0.0, 0.0, 5], [0.0, 20.0, 4], [20.0, 0.0, 1]])
    detected = np.array([[0.5, 0.0],     # 0.1 Å off a thick column: true positive
                         [20.0, 0.5],    # on a 1-atom column: ignored
                         [40.0, 40.0]])  # nowhere: false positive
    counts = match_columns(detected, columns, sampling=0.2)
    assert (counts.true_positives, counts.false_positives, counts.false_negatives) == (1, 1, 1)
    assert counts.rmse_pm == pytest.approx(10.0)
    assert counts.f1 == pytest.approx(0.5)


def test_scoring_refuses_matches_beyond_half_an_angstrom():
    counts = match_columns(np.array([[0.0, 3.0]]), np.array([[0.0, 0.0, 3]]), sampling=0.2)
    assert (counts.true_positives, counts.false_positives, counts.false_negatives) == (0, 1, 1)


@pytest.mark.slow
def test_diffusion_video_truth_matches_its_frames():
    from napari_tem_atoms.simulation.diffusion import simulate_diffusion_video

    video = simulate_diffusion_video(n_frames=3, dose=1e5, diameter=12.0, seed=2,
                                     drift_per_frame=0.0)
    assert video.frames.shape[0] == 3 and video.sampling == pytest.approx(0.1, rel=0.02)
    sites = video.sites
    assert sites["surface"].any() and not sites["surface"].all()
    # Only surface columns switch; the rest are there in every frame.
    assert video.present[:, ~sites["surface"].to_numpy()].all()
    np.testing.assert_allclose(sites["occupancy"], video.present.mean(axis=0))
    # The columns are where the image has contrast: their pixels differ from the vacuum more.
    frame = video.frames[0]
    contrast = np.abs(frame - np.median(frame))
    rows, cols = np.round(sites[["y", "x"]].to_numpy()[video.present[0]]).astype(int).T
    corner = contrast[:20, :20]
    assert np.mean(contrast[rows, cols]) > 3 * np.mean(corner)


def test_the_outline_of_a_110_particle_comes_from_geometry():
    import numpy as np

    from napari_tem_atoms.simulation.diffusion import outline_columns

    a = 4.078  # a centred rectangular patch of [110] columns: a along x, a/√2 along y
    ys, xs = np.mgrid[0:7, 0:5]
    lattice = np.concatenate([np.c_[ys.ravel() * a / np.sqrt(2), xs.ravel() * a],
                              np.c_[(ys.ravel() + 0.5) * a / np.sqrt(2),
                                    (xs.ravel() + 0.5) * a]])
    outline = outline_columns(lattice, a)
    # Inside: six neighbours, two of its own sublattice at ±a/√2 and four of the other at
    # a√(3/8); counted on the index grid of each sublattice.
    y, x = ys.ravel(), xs.ravel()
    inner = np.concatenate([(y >= 1) & (y <= 5) & (x >= 1), (y >= 1) & (y <= 5) & (x <= 3)])
    np.testing.assert_array_equal(outline, ~inner)
