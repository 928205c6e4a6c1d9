"""Where stem-columns' position error comes from: dose, scan distortion, or the network.

The held-out images of ``benchmarks/stem_accuracy.py`` (the same structures, microscopes and
seeds), each scored as drawn and again with parts of the scan's distortion taken away:

- **no line jitter**: each scan line's random shift is 0. The truth is where the column is in
  the scan distorted by drift and fly-back alone; its image averages the random shifts of the
  ~10 lines its probe spans, an error no detector can undo from one frame: a floor on the RMSE
  of any detector;
- **no scan distortion**: no jitter, no fly-back, no drift;

and each of those without noise (the same image, no Poisson, read-out or line-gain noise): what
remains is the network's own error.

Usage: python benchmarks/stem_rmse_floor.py [--model stem-columns] [--images 24] [--dose 1e5]
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace

from napari_tem_atoms import detect_atoms
from napari_tem_atoms.models import load_model
from napari_tem_atoms.models.runtime import processor
from napari_tem_atoms.training.metrics import MatchCounts
from napari_tem_atoms.training.stem import HELD_OUT_STRUCTURES, SCORED_BORDER, HeldOutSet, score

VARIANTS = {
    "as drawn": {},
    "no line jitter": {"line_jitter": 0.0},
    "no scan distortion": {"line_jitter": 0.0, "flyback": 0.0, "drift": (0.0, 0.0)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="stem-columns")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--dose", type=float, default=1e5, help="e/Å²")
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # out-of-domain notices are not scores
    loaded = load_model(args.model)
    print(f"model {args.model}; {args.images} held-out images per mode at {args.dose:g} e/Å²; "
          f"processor: {processor().describe()}")
    print("| Mode | Scan | Noise | F1 | RMSE pm |\n|---|---|---|---|---|")
    for mode in ("HAADF", "ABF"):
        for variant, changes in VARIANTS.items():
            held_out = HeldOutSet(args.images, args.seed, HELD_OUT_STRUCTURES, mode,
                                  loaded.sampling)
            held_out.draws = [(replace(settings, **changes), structure)
                              for settings, structure in held_out.draws]
            for noise in (True, False):
                counts = MatchCounts()
                for index in range(args.images):
                    image = held_out.image(index, args.dose, noise=noise)
                    atoms = detect_atoms(image.recorded, loaded, sampling=image.settings.sampling,
                                         imaging_mode=f"STEM-{mode}")
                    counts += score(atoms[["y", "x"]].to_numpy(), image.truth,
                                    image.settings.sampling, shape=image.recorded.shape,
                                    border=SCORED_BORDER)
                print(f"| {mode} | {variant} | {'yes' if noise else 'none'} | {counts.f1:.3f} "
                      f"| {counts.rmse_pm:.1f} |", flush=True)


if __name__ == "__main__":
    main()
