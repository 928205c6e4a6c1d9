"""F1 and RMSE against dose: the network and a classical peer on the same held-out images.

Usage: python benchmarks/accuracy_vs_dose.py [--model au-hrtem] [--images 48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_tem_atoms.simulation.exit_waves import load_exit_waves
from napari_tem_atoms.training import load_config
from napari_tem_atoms.training.evaluate import DEFAULT_DOSES, evaluate

ROOT = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=ROOT / "configs" / "au-hrtem.toml")
    parser.add_argument("--model", default="au-hrtem")
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()
    run = load_config(args.config)
    scores = evaluate(args.model, load_exit_waves(run.data.folder, "particles", "validation"),
                      load_exit_waves(run.data.folder, "carbon", "validation"),
                      doses=DEFAULT_DOSES, images_per_dose=args.images, envelope=run.envelope,
                      support_probability=run.data.support_probability)
    print(scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
