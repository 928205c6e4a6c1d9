r"""Give trained weights the identity of the shipped model they replace, to bundle them.

A second training stage that trains one branch alone (``train_only``), such as the count
branch of ``au-hrtem-adatoms`` (configs/au-hrtem-adatoms-counts.toml), writes weights named
after its configuration and with a threshold calibrated again. This copies them unchanged and
sets the metadata a user sees from the model they replace: its name, description and default
threshold (the column map is the same, so its threshold is), keeping how the column map was
trained under ``column_training``. Written to a temporary file and renamed.

    python tools/ship_model.py build/au-hrtem-adatoms/count-branch/au-hrtem.safetensors \
        src/napari_tem_atoms/models/weights/au-hrtem-adatoms.safetensors \
        --like src/napari_tem_atoms/models/weights/au-hrtem-adatoms.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

KEY = "napari_tem_atoms"


def main() -> None:
    """Copy the weights with the replaced model's name, description and threshold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="trained weights")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--like", type=Path, required=True,
                        help="the weights they replace: name, description, threshold")
    args = parser.parse_args()
    with safe_open(str(args.like), "pt") as reference:
        like = json.loads(reference.metadata()[KEY])
    with safe_open(str(args.source), "pt") as source:
        metadata = json.loads(source.metadata()[KEY])
        tensors = {name: source.get_tensor(name) for name in source.keys()}  # noqa: SIM118 (not a dict)
    metadata.update(name=like["name"], description=like["description"],
                    threshold=like["threshold"],
                    column_training=like.get("column_training", like["training"]))
    handle, temporary = tempfile.mkstemp(dir=args.destination.parent, suffix=".part")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={KEY: json.dumps(metadata)})
        os.replace(temporary, args.destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    digest = hashlib.sha256(args.destination.read_bytes()).hexdigest()
    print(f"wrote {args.destination} ({args.destination.stat().st_size / 1e6:.1f} MB), "
          f"SHA-256 {digest}")


if __name__ == "__main__":
    main()
