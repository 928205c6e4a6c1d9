"""The package's floors: every import runs down (or across), never up.

::

    floor 3   napari/   training/   cli.py   terminal.py   __init__.py   (front ends, training)
    floor 2   analysis/   batch.py   live.py                 (detection, species, occupancy)
    floor 1   io/   models/   simulation/   samples.py       (files, networks, physics data)
    floor 0   errors.py   events.py   optics.py   _cache.py  (no higher floor: events use errors)

Imports inside functions count too: a lazy import up a floor is still a dependency.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_tem_atoms"

FLOORS = {
    "errors": 0, "events": 0, "optics": 0, "_cache": 0,
    "io": 1, "models": 1, "simulation": 1, "samples": 1,
    "analysis": 2, "batch": 2, "live": 2,
    "napari": 3, "training": 3, "cli": 3, "terminal": 3, "__init__": 3,
}


def _part(path: Path) -> str:
    """The top-level part of the package a file belongs to (``io``, ``cli``...)."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_parts(path: Path) -> set[tuple[str, int]]:
    """(part, line) of every napari_tem_atoms part `path` imports, relative or absolute."""
    relative = path.relative_to(PACKAGE)
    package = list(relative.parts[:-1])  # the package the module sits in
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "napari_tem_atoms."):
            names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".")[1] for alias in node.names
                     if alias.name.startswith("napari_tem_atoms.")]
        else:
            continue
        found |= {(name, node.lineno) for name in names}
    return found


def test_every_part_of_the_package_has_a_floor():
    parts = {_part(path) for path in PACKAGE.rglob("*.py")}
    assert parts <= set(FLOORS), f"give these a floor in FLOORS: {sorted(parts - set(FLOORS))}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(
    p.relative_to(PACKAGE)))
def test_imports_never_run_up_a_floor(path):
    here = FLOORS[_part(path)]
    upward = sorted(f"line {line}: {name} (floor {FLOORS[name]})"
                    for name, line in _imported_parts(path)
                    if name in FLOORS and FLOORS[name] > here)
    assert not upward, f"{path.relative_to(PACKAGE)} (floor {here}) imports up: {upward}"


def test_the_floor_check_sees_an_upward_import(tmp_path, monkeypatch):
    # The check itself: a simulation module that imports the analysis is caught.
    fake = PACKAGE / "simulation" / "columns.py"
    source = "def f():\n    from ..analysis.occupancy import edge_distances\n"
    monkeypatch.setattr(Path, "read_text", lambda self, **kwargs: source)
    assert ("analysis", 2) in _imported_parts(fake)
