r"""Give trained weights the identity of the shipped model they replace, to bundle them.

A later training stage (``au-hrtem-adatoms``: a count branch, configs/au-hrtem-adatoms-counts.toml;
the count loss training the encoder, -joint.toml; the column decoders alone, -decoders.toml)
writes weights named after its configuration. This copies them unchanged and sets the metadata a
user sees from the model they replace: its name and description, and the replaced model's
threshold (a stage that left the column map alone) or, with ``--own-threshold``, the one the
stage calibrated for the column map it changed. ``--earlier`` keeps the training record of each
earlier stage's weights under ``earlier_training`` (in order), besides the last stage's
``training``. Written as every writer of the package writes (io._atomic.atomic_write). The
bundled au-hrtem-adatoms was made by this command (it keeps the threshold 0.45 of the weights it
replaced):

    python tools/ship_model.py build/au-hrtem-adatoms/decoders/au-hrtem.safetensors \
        src/napari_tem_atoms/models/weights/au-hrtem-adatoms.safetensors \
        --like src/napari_tem_atoms/models/weights/au-hrtem-adatoms.safetensors \
        --earlier build/au-hrtem-adatoms/run/au-hrtem.safetensors \
        build/au-hrtem-adatoms/count-branch/au-hrtem.safetensors \
        build/au-hrtem-adatoms/joint/au-hrtem.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save

from napari_tem_atoms.io._atomic import atomic_write
from napari_tem_atoms.models.registry import model_metadata

KEY = "napari_tem_atoms"


def main() -> None:
    """Copy the weights with the replaced model's name, description and threshold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="trained weights")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--like", type=Path, required=True,
                        help="the weights they replace: name, description, threshold")
    parser.add_argument("--own-threshold", action="store_true",
                        help="keep the trained weights' threshold (their column map changed)")
    parser.add_argument("--earlier", type=Path, nargs="*", default=[],
                        help="earlier stages' weights, in order: their training records")
    args = parser.parse_args()
    earlier = [model_metadata(path)["training"] for path in args.earlier]
    like = model_metadata(args.like)
    metadata = model_metadata(args.source)
    with safe_open(str(args.source), "pt") as source:
        tensors = {name: source.get_tensor(name) for name in source.keys()}  # noqa: SIM118 (not a dict)
    metadata.update(name=like["name"], description=like["description"])
    if not args.own_threshold:
        metadata["threshold"] = like["threshold"]
    if earlier:
        metadata["earlier_training"] = earlier
    else:  # one earlier stage, the replaced model's: how its column map was trained
        metadata["column_training"] = like.get("column_training", like["training"])
    with atomic_write(args.destination, "wb") as handle:
        handle.write(save(tensors, metadata={KEY: json.dumps(metadata)}))
    digest = hashlib.sha256(args.destination.read_bytes()).hexdigest()
    print(f"wrote {args.destination} ({args.destination.stat().st_size / 1e6:.1f} MB), "
          f"SHA-256 {digest}")


if __name__ == "__main__":
    main()
