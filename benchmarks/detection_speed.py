"""Frames per second of detect_atoms, end to end, at 512² and 1024².

Usage: python benchmarks/detection_speed.py [--model au-hrtem] [--device cpu]
"""

from __future__ import annotations

import argparse

from napari_tem_atoms.training.speed import measure_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="au-hrtem")
    parser.add_argument("--device", default=None)
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args()
    speed = measure_speed(args.model, frames=args.frames, device=args.device)
    print(speed.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
