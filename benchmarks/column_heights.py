"""Recall by column height and atom-count accuracy, paired: several models on the same images.

Held-out particles of a training configuration's exit-wave cache (its validation role), e.g. of
configs/au-hrtem-adatoms.toml, whose particles carry adatoms (1-2-atom columns) as well as short
columns at corners and tips. Every model sees the same images at each dose.

Usage: python benchmarks/column_heights.py --config configs/au-hrtem-adatoms.toml
       --models au-hrtem build/au-hrtem-adatoms/run/au-hrtem.safetensors [--doses 100 1000]
       [--images 48]
"""

from __future__ import annotations

import argparse
import warnings

from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.simulation.exit_waves import load_exit_waves
from napari_tem_atoms.training import load_config
from napari_tem_atoms.training.evaluate import evaluate_by_height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--doses", type=float, nargs="+", default=[100.0, 1000.0])
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    run = load_config(args.config)
    particles = load_exit_waves(run.data.folder, "particles", "validation")
    carbons = load_exit_waves(run.data.folder, "carbon", "validation")
    print(f"processor: {processor().describe()}; {len(particles)} held-out particles")
    table = evaluate_by_height(args.models, particles, carbons, doses=args.doses,
                               images_per_dose=args.images, envelope=run.envelope,
                               support_probability=run.data.support_probability)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
