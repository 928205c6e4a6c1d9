"""Frames per second of detect_atoms, end to end, at 512² and 1024², with the processor named.

Usage: python benchmarks/detection_speed.py [--model au-hrtem] [--device cpu]
       [--precision auto|fp32|bf16] [--engine auto|torch|openvino] [--card docs/models/X.md]

With --card the card's "Speed" section is replaced by this run's (written atomically).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_tem_atoms.io._atomic import atomic_write
from napari_tem_atoms.training.speed import measure_speed, replace_speed_section, speed_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="au-hrtem")
    parser.add_argument("--device", default=None)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--card", type=Path, help="model card whose speed section to replace")
    args = parser.parse_args()
    speed = measure_speed(args.model, frames=args.frames, device=args.device,
                          precision=args.precision, engine=args.engine)
    print(f"processor: {speed.attrs['processor']}")
    print(speed.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.card:
        text = replace_speed_section(args.card, speed_section(speed))
        with atomic_write(args.card, "w", encoding="utf-8") as stream:
            stream.write(text)
        print(f"speed section of {args.card} replaced")


if __name__ == "__main__":
    main()
