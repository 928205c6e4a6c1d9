"""What a wider network would cost in end-to-end detection speed on this machine.

For each base width, a network of the shipped model's architecture with random weights runs
alongside the shipped one inside ``detect_atoms`` (1024² frames, so the same tiles, rescaling
and peaks), so its time is the difference to the shipped model alone; the script prints the
parameter count, the network time per frame and the frames per second the wider model would
reach. Random weights would give random maps and a peak finder far slower than a trained
model's, which is why the shipped model's own map is kept.

    python benchmarks/network_width_speed.py --widths 16 20 24 --sampling 0.25
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from napari_tem_atoms.analysis import iter_detect_atoms
from napari_tem_atoms.models import load_model, model_metadata
from napari_tem_atoms.models.registry import save_model
from napari_tem_atoms.models.unet import UNet
from napari_tem_atoms.samples import synthetic_gold_stack


class _AlongsideShipped(torch.nn.Module):
    """Runs an extra network on every tile, then returns the shipped network's map."""

    def __init__(self, extra: torch.nn.Module, shipped: torch.nn.Module) -> None:
        super().__init__()
        self.extra = extra
        self.shipped = shipped

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # depth, film_folded...: the shipped network's
            return getattr(self.shipped, name)

    def forward(self, images: torch.Tensor, conditions: torch.Tensor | None = None
                ) -> torch.Tensor:
        self.extra(images, conditions)
        return self.shipped(images, conditions)


def _seconds_per_frame(loaded, images, sampling: float) -> float:
    for _ in iter_detect_atoms(images[:1], loaded, sampling=sampling):  # warm-up
        pass
    start = time.perf_counter()
    for _ in iter_detect_atoms(images[1:], loaded, sampling=sampling):
        pass
    return (time.perf_counter() - start) / (len(images) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="au-hrtem")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 20, 24])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--sampling", type=float, default=0.25, help="input Å/px")
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args()

    metadata = model_metadata(args.model)
    stack = synthetic_gold_stack(n_frames=args.frames + 1, shape=(args.size, args.size),
                                 sampling=args.sampling,
                                 particle_radius=min(25.0, args.size * args.sampling / 3))
    shipped_time = _seconds_per_frame(load_model(args.model, device="cpu"), stack.images,
                                      args.sampling)
    print(f"{args.model}: {1 / shipped_time:.2f} frames/s ({args.size}² at {args.sampling} Å/px, "
          f"{torch.get_num_threads()} threads)")
    shipped_width = metadata["architecture"]["base_channels"]
    widths = sorted({shipped_width, *args.widths})
    network_times, parameters = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for width in widths:
            torch.manual_seed(0)
            architecture = dict(metadata["architecture"], base_channels=width)
            network = UNet(**architecture)
            parameters[width] = sum(p.numel() for p in network.parameters())
            path = Path(folder) / f"width{width}.safetensors"
            save_model(path, network, dict(metadata, architecture=architecture))
            loaded = load_model(args.model, device="cpu")
            loaded.network = _AlongsideShipped(load_model(path, device="cpu").network,
                                               loaded.network)
            network_times[width] = (_seconds_per_frame(loaded, stack.images, args.sampling)
                                    - shipped_time)
    # Everything but the network (reading, rescaling, peaks) is what the shipped model's
    # frame costs beyond its own width's network time.
    rest = shipped_time - network_times[shipped_width]
    print("base_channels  parameters  network [s/frame]  end to end [frames/s]")
    for width in widths:
        print(f"{width:13d}  {parameters[width]:10,d}  {network_times[width]:17.3f}  "
              f"{1 / (rest + network_times[width]):21.2f}")

if __name__ == "__main__":
    main()
