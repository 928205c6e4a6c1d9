"""Focal-series and drift registration: known shifts, contrast reversal, lattice ambiguity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_tem_atoms.analysis.align import (
    _window,
    align_focal_series,
    apply_shifts,
    common_area,
    estimate_drift,
    estimate_shift,
)
from napari_tem_atoms.errors import TEMAtomsError
from napari_tem_atoms.samples import synthetic_focal_series


def _fourier_shift(image: np.ndarray, shift) -> np.ndarray:
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(np.fft.fft2(image) * ramp)


def focal_series(shifts, **kwargs):
    return synthetic_focal_series(np.asarray(shifts), **kwargs)


def test_known_shift_is_found_to_a_twentieth_of_a_pixel():
    rng = np.random.default_rng(1)
    reference = ndimage.gaussian_filter(rng.normal(size=(128, 160)), 2)
    moving = np.real(_fourier_shift(reference, (4.35, -2.6)))
    np.testing.assert_allclose(estimate_shift(reference, moving), [4.35, -2.6], atol=0.05)
    # moving[r] = reference[r - s]: a feature moves from p to p + s.
    rows, cols = np.mgrid[0:128, 0:160]
    blob = np.exp(-((rows - 40.0) ** 2 + (cols - 50.0) ** 2) / 8.0)
    moved = np.exp(-((rows - 44.0) ** 2 + (cols - 47.0) ** 2) / 8.0)
    np.testing.assert_allclose(estimate_shift(blob, moved), [4.0, -3.0], atol=0.05)


def test_focal_series_with_contrast_reversal_is_aligned():
    true = np.array([[1.7, -2.2], [0.0, 0.0], [-2.4, 1.3]])
    series = focal_series(true)
    # The defoci reverse the contrast of the columns: plain correlation cannot rely on sign.
    columns = np.round(np.array(series.shape[1:]) / 2).astype(int)
    assert np.sign(series[0][tuple(columns)] - series[0].mean()) != np.sign(
        series[2][tuple(columns)] - series[2].mean())
    shifts = align_focal_series(series, reference=1, max_shift=6)
    np.testing.assert_allclose(shifts, true, atol=0.2)
    # Any order of defocus, any reference.
    shifts = align_focal_series(series[[2, 0, 1]], reference=0, max_shift=6)
    np.testing.assert_allclose(shifts, true[[2, 0, 1]] - true[2], atol=0.2)


def test_the_bound_keeps_a_periodic_lattice_from_jumping_a_lattice_vector():
    period = 8.0
    rows, cols = np.mgrid[0:128, 0:128]
    crystal = lambda y, x: np.cos(2 * np.pi * (rows - y) / period) + np.cos(  # noqa: E731
        2 * np.pi * (cols - x) / period)
    reference, moving = crystal(0, 0), crystal(1.5, -1.0)
    # The whole field is crystal: shifts by (1.5, -1) and (1.5 - 8, -1 + 8) look the same.
    for bound in (2.0, 3.0, 3.9):
        shift = estimate_shift(reference, moving, max_shift=bound)
        np.testing.assert_allclose(shift, [1.5, -1.0], atol=0.1)
    # Centred elsewhere, the bound picks the lattice translate there, and never beyond it.
    shift = estimate_shift(reference, moving, max_shift=3.0, expected=(9.5, -9.0))
    np.testing.assert_allclose(shift, [9.5, -9.0], atol=0.1)
    assert np.hypot(*(shift - [9.5, -9.0])) <= 3.0


def test_drift_of_a_video_is_recovered_and_undone():
    rng = np.random.default_rng(2)
    base = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 1.5)
    drift = np.cumsum(rng.normal(0, 1.5, size=(12, 2)), axis=0)
    drift -= drift[0]
    frames = np.array([np.real(_fourier_shift(base, d)) + rng.normal(0, 0.02, base.shape)
                       for d in drift])
    for mode in ("reference", "previous"):
        found = estimate_drift(frames, max_shift=6, mode=mode)
        np.testing.assert_allclose(found, drift, atol=0.1)
    aligned = apply_shifts(frames, drift)
    rows, cols = common_area(frames.shape[1:], drift)
    assert np.all(np.isfinite(aligned[:, rows, cols]))
    inner = (slice(rows.start + 4, rows.stop - 4), slice(cols.start + 4, cols.stop - 4))
    residual = aligned[:, inner[0], inner[1]] - base[inner]
    assert np.abs(residual).max() < 0.15
    assert np.isnan(aligned).any()  # what came from outside the frame is marked, not invented


@pytest.mark.parametrize(("images", "words"), [
    (np.zeros((1, 32, 32)), "at least 2"),
    (np.zeros((32, 32)), "stack of 2-D images"),
    (np.ones((2, 32, 32)), "constant"),
])
def test_bad_series_give_clear_errors(images, words):
    with pytest.raises(TEMAtomsError, match=words):
        align_focal_series(images)


def test_mismatched_shapes_and_impossible_bounds_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(TEMAtomsError, match="same shape"):
        estimate_shift(rng.normal(size=(32, 32)), rng.normal(size=(32, 40)))
    with pytest.raises(TEMAtomsError, match="lower max_shift"):
        estimate_shift(rng.normal(size=(32, 32)), rng.normal(size=(32, 32)), max_shift=40)
    with pytest.raises(TEMAtomsError, match="no area common"):
        common_area((10, 10), np.array([[0, 0], [12, 0]]))


def test_windows_hann_and_tukey_and_the_automatic_choice():
    tukey = _window("tukey", 101, 81)
    assert tukey[0].max() == 0.0 and tukey[:, 0].max() == 0.0
    np.testing.assert_array_equal(tukey[26:76, 21:61], 1.0)  # flat over the inner half
    hann = _window("hann", 101, 81)
    assert hann[50, 40] == 1.0 and hann[26, 40] < 0.55
    # A particle in noisy vacuum: the Hann window keeps the empty border out, and the automatic
    # choice is the Hann result; a lattice filling the field aligns under both windows.
    rows, cols = np.mgrid[0:192, 0:192]
    lattice = np.cos(2 * np.pi * rows / 9.0) + np.cos(2 * np.pi * (rows + 1.73 * cols) / 18.0)
    particle = lattice * np.exp(-((rows - 96.0) ** 2 + (cols - 96.0) ** 2) / (2 * 25.0**2))
    true = np.array([1.3, -0.7])
    rng = np.random.default_rng(3)
    for scene, noise, chosen in ((particle, 3.0, ("hann",)), (lattice, 6.0, ("hann", "tukey"))):
        reference = 20 + 2 * scene + rng.normal(0, noise, scene.shape)
        moving = 20 - 2 * np.real(_fourier_shift(scene, true)) + rng.normal(0, noise, scene.shape)
        found = {window: estimate_shift(reference, moving, 3, contrast_invariant=True,
                                        window=window) for window in ("auto", "hann", "tukey")}
        assert any(np.array_equal(found["auto"], found[window]) for window in chosen)
        np.testing.assert_allclose(found["auto"], true, atol=0.35)
    with pytest.raises(TEMAtomsError, match="window must be one of"):
        estimate_shift(reference, moving, 3, window="gauss")
    drift = estimate_drift(np.stack([reference, moving]), max_shift=3, window="auto",
                           contrast_invariant=True)
    np.testing.assert_allclose(drift[1], true, atol=0.35)
    with pytest.raises(TEMAtomsError, match="window must be one of"):
        estimate_drift(np.stack([reference, moving]), max_shift=3, window="flat")


@pytest.mark.slow
def test_default_bound_keeps_a_flickering_particle_video_on_its_lattice():
    from napari_tem_atoms.samples import synthetic_gold_stack

    stack = synthetic_gold_stack(n_frames=40, seed=3)
    # 0.9 Å is below half the lattice period: no frame may jump to a lattice translate.
    drift = estimate_drift(stack.images, sampling=stack.sampling)
    assert np.hypot(*(drift - stack.drift).T).max() < 0.5
