"""The held-out evaluation: paired draws across doses, and the classical peer's tuning."""

from __future__ import annotations

import numpy as np

from napari_tem_atoms.simulation.microscope import MicroscopeEnvelope
from napari_tem_atoms.training.data import SampleMaker
from napari_tem_atoms.training.evaluate import PEER_THRESHOLDS, ClassicalPeer, _images


def _lattice_particle(size: int = 128, sampling: float = 0.1) -> dict:
    """A weak-phase 'particle': Gaussian phase bumps on a 2.5 Å square lattice."""
    spacing = 2.5 / sampling
    centres = np.array([(r, c) for r in np.arange(20, size - 20, spacing)
                        for c in np.arange(20, size - 20, spacing)])
    yy, xx = np.mgrid[:size, :size]
    phase = np.zeros((size, size))
    for r, c in centres:
        phase += 0.3 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.0**2))
    columns = np.column_stack([centres * sampling, np.full(len(centres), 5.0)])
    return {"waves": np.exp(1j * phase)[None].astype(np.complex64), "sampling": sampling,
            "columns": columns}


def test_every_dose_images_the_same_particle_under_the_same_microscope():
    maker = SampleMaker([_lattice_particle()], [], model_sampling=0.2)
    envelope = MicroscopeEnvelope()
    low = _images(maker, envelope, 1e7, 3, seed=7)
    high = _images(maker, envelope, 1e8, 3, seed=7)
    for (image_low, sampling_low, _), (image_high, sampling_high, _) in zip(low, high, strict=True):
        assert sampling_low == sampling_high  # the same draw of the microscope
        assert image_low.shape == image_high.shape
        # Same image up to shot noise (doses high enough to see it through the noise).
        assert np.corrcoef(image_low.ravel(), image_high.ravel())[0, 1] > 0.9
    assert low[0][1] != low[1][1]  # but every image draws its own microscope
    assert not np.array_equal(low[0][0], high[0][0])  # and the noise differs


def test_the_peer_tuning_shortcut_finds_what_the_peer_detects():
    rng = np.random.default_rng(3)
    image = np.zeros((96, 96))
    yy, xx = np.mgrid[:96, :96]
    for r, c in rng.uniform(8, 88, size=(25, 2)):
        image += rng.uniform(0.5, 2.0) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 8.0)
    image += rng.normal(0, 0.2, image.shape)
    lowest = ClassicalPeer(0.4, PEER_THRESHOLDS[0])
    peaks, values = lowest.maxima(image, 0.1, 1.0)
    for threshold in (0.5, 1.0, 2.0, 3.0):
        direct = ClassicalPeer(0.4, threshold).detect(image, 0.1, 1.0)
        shortcut = peaks[values > threshold]
        assert len(direct) > 0
        assert sorted(map(tuple, direct)) == sorted(map(tuple, shortcut))
