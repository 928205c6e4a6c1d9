"""Scoring STEM detections against what the probe resolves (benchmarks/stem_misses.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_tem_atoms.simulation.stem import (
    ProjectedStructure,
    StemSettings,
    StemStructureSpec,
    column_height,
    render_stem_image,
)
from napari_tem_atoms.training.stem import image_maxima, resolved_columns, score


def _probe_image(columns_a: np.ndarray, sampling: float, sigma: float) -> np.ndarray:
    """Noise-free image: a Gaussian probe of `sigma` [Å] over point columns at `columns_a`."""
    yy, xx = np.mgrid[:160, :160] * sampling
    return sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)) for y, x in columns_a)


def test_resolved_only_leaves_out_columns_the_probe_does_not_resolve():
    sampling, sigma = 0.05, 0.7  # probe FWHM 1.65 Å
    close = np.array([[4.0, 3.4], [4.0, 4.6]])  # 1.2 Å < 2σ apart: one peak between them
    far = np.array([[4.0, 2.5], [4.0, 5.5]])  # 3 Å: a peak each
    for columns_a, resolved in ((close, False), (far, True)):
        noise_free = _probe_image(columns_a, sampling, sigma)
        truth = np.column_stack([columns_a / sampling, np.ones(2)])
        assert len(image_maxima(noise_free)) == (2 if resolved else 1)
        assert resolved_columns(noise_free, truth[:, :2], sampling).tolist() == [resolved] * 2
        nothing, both = np.zeros((0, 2)), truth[:, :2]
        assert score(nothing, truth, sampling).false_negatives == 2
        assert score(both, truth, sampling).true_positives == 2
        # Unresolved columns are neither targets nor errors: not missed, not found, and a
        # detection on one is not false.
        missed = score(nothing, truth, sampling, resolved_only=True, noise_free=noise_free)
        found = score(both, truth, sampling, resolved_only=True, noise_free=noise_free)
        assert missed.false_negatives == (2 if resolved else 0)
        assert found.true_positives == (2 if resolved else 0)
        assert found.false_positives == 0
    with pytest.raises(ValueError, match="noise-free"):
        score(nothing, truth, sampling, resolved_only=True)


@pytest.mark.parametrize("mode", ["HAADF", "ABF"])
def test_the_noise_free_image_is_the_noisy_one_without_noise(mode):
    spec = StemStructureSpec("Au", "bulk", (0, 0, 1))
    structure = ProjectedStructure(spec, np.array([[0.0, 0.0], [0.0, 4.0]]),
                                   np.array([[10], [10]]), np.array([79]), 5.0)
    settings = replace(StemSettings(mode=mode, sampling=0.1, dose=1e6), rotation=0.0)
    noisy, columns, visibility = render_stem_image(structure, settings, (96, 96),
                                                   np.random.default_rng(3))
    clean, clean_columns, clean_visibility = render_stem_image(
        structure, settings, (96, 96), np.random.default_rng(3), noise=False)
    assert np.array_equal(columns, clean_columns)  # the same scan and distortions
    assert np.array_equal(visibility, clean_visibility)
    # What differs is the noise: zero on average, Poisson-sized (line gain and read-out small).
    assert noisy.mean() == pytest.approx(clean.mean(), rel=0.01)
    assert np.std(noisy - clean) == pytest.approx(np.sqrt(clean).mean(), rel=0.2)
    # In column units an isolated column of relative signal 1 peaks near 1, the vacuum near 0.
    height = column_height(clean, settings)
    at = np.round(columns).astype(int)
    peaks = [height[r - 3:r + 4, c - 3:c + 4].max() for r, c in at]
    assert peaks == pytest.approx([1.0, 1.0], abs=0.3)
    assert abs(np.median(height[:10, :10])) < 0.1
