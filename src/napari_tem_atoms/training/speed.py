"""End-to-end detection speed (rescale, normalise, tile, network, peaks) on this machine."""

from __future__ import annotations

import time

import pandas as pd

__all__ = ["measure_speed"]


def measure_speed(model: str = "au-hrtem", sizes: tuple[int, ...] = (512, 1024),
                  samplings: tuple[float, ...] = (0.05, 0.1, 0.15, 0.25), frames: int = 5,
                  device: str | None = None) -> pd.DataFrame:
    """Frames per second of :func:`~napari_tem_atoms.analysis.detect_atoms` (model loaded once).

    Each row times `frames` frames of a synthetic gold stack of that size and input sampling,
    after one warm-up frame.
    """
    import torch

    from ..analysis import iter_detect_atoms
    from ..models import load_model
    from ..samples import synthetic_gold_stack

    loaded = load_model(model, device=device)
    rows = []
    for size in sizes:
        for sampling in samplings:
            radius = min(25.0, size * sampling / 3)
            stack = synthetic_gold_stack(n_frames=frames + 1, shape=(size, size),
                                         sampling=sampling, particle_radius=radius)
            steps = iter_detect_atoms(stack.images[:1], loaded, sampling=sampling)
            for _ in steps:  # warm-up
                pass
            start = time.perf_counter()
            for _ in iter_detect_atoms(stack.images[1:], loaded, sampling=sampling):
                pass
            elapsed = time.perf_counter() - start
            rows.append({"size": size, "sampling": sampling,
                         "model_pixels": round(size * sampling / loaded.sampling),
                         "frames_per_second": frames / elapsed, "device": loaded.device,
                         "threads": torch.get_num_threads()})
    return pd.DataFrame(rows)
