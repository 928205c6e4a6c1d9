"""End-to-end detection speed (rescale, normalise, tile, network, peaks) on this machine.

Every figure is printed with the processor it ran on (name, PyTorch's CPU capability, how
bfloat16 is computed, cores), the engine and the precision: the same network runs 10x faster
or slower depending on them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

__all__ = ["SPEED_TARGET", "measure_speed", "replace_speed_section", "speed_section"]

#: The project's speed target: 1024² frames end to end [frames/s].
SPEED_TARGET = 2.0


def measure_speed(model: str = "au-hrtem", sizes: tuple[int, ...] = (512, 1024),
                  samplings: tuple[float, ...] = (0.05, 0.1, 0.15, 0.25), frames: int = 5,
                  device: str | None = None, precision: str = "auto", engine: str = "auto"
                  ) -> pd.DataFrame:
    """Frames per second of :func:`~napari_tem_atoms.analysis.detect_atoms` (model loaded once).

    Each row times `frames` frames of a synthetic gold stack of that size and input sampling,
    after one warm-up frame. ``attrs["processor"]`` describes the CPU; the ``engine`` and
    ``precision`` columns say what ran.
    """
    import torch

    from ..analysis import iter_detect_atoms
    from ..models import load_model
    from ..models.runtime import processor
    from ..samples import synthetic_gold_stack

    loaded = load_model(model, device=device, precision=precision, engine=engine)
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
                         "engine": loaded.engine_name, "precision": loaded.precision,
                         "threads": torch.get_num_threads()})
    speed = pd.DataFrame(rows)
    speed.attrs["processor"] = (processor().describe() if loaded.device == "cpu"
                                else loaded.device)
    return speed


def speed_section(speed: pd.DataFrame) -> str:
    """The model card's "Speed" section (Markdown) from :func:`measure_speed`'s table."""
    first = speed.iloc[0]
    lines = ["## Speed (end to end, model loaded once)", "",
             f"Processor: {speed.attrs.get('processor', first['device'])}; engine "
             f"{first['engine']}, precision {first['precision']}, {first['threads']} threads. "
             "Frames per second of `detect_atoms` (rescale, normalise, tile, network, peaks) "
             "on synthetic frames; measured by `benchmarks/detection_speed.py`. On another "
             "processor the figures differ: bfloat16 is chosen only where the CPU computes it "
             "natively (see the section on processors above).", "",
             "| Frame [px] | Input sampling [Å/px] | Network input [px] | Frames/s |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {r.size}² | {r.sampling:g} | {r.model_pixels}² | {r.frames_per_second:.2f} |"
              for r in speed.itertuples()]
    large = speed[speed["size"] == 1024]
    if len(large):
        below = large[large["frames_per_second"] < SPEED_TARGET]
        if below.empty:
            slowest = large.loc[large["frames_per_second"].idxmin()]
            verdict = (f"met at every sampling measured (slowest: "
                       f"{slowest['frames_per_second']:.2f} frames/s at "
                       f"{slowest['sampling']:g} Å/px)")
        else:
            verdict = "**not met** at " + ", ".join(
                f"{r.sampling:g} Å/px ({r.frames_per_second:.2f} frames/s)"
                for r in below.itertuples())
        lines += ["", f"The project's target, at least {SPEED_TARGET:g} frames/s for 1024² "
                  f"frames end to end on this processor, is {verdict}."]
    return "\n".join(lines)


def replace_speed_section(card: str | Path, section: str) -> str:
    """The text of the card at `card` with its speed section (to the next ``## ``) replaced."""
    text = Path(card).read_text(encoding="utf-8")
    start = text.find("\n## Speed")
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    end = text.find("\n## ", start + 1)
    rest = text[end:] if end >= 0 else ""
    return text[:start + 1] + section + "\n" + rest
