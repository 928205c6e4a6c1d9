"""The package as napari and users find it: manifest, entry points, and a Qt-free core."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from npe2 import PluginManager, PluginManifest

ROOT = Path(__file__).parents[1]
TOP_LEVEL_MANIFEST = ROOT / "napari.yaml"
TEM_ATOMS = str(Path(sys.executable).with_name("tem-atoms"))  # the venv's console script
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy",
               "superqt", "napari_plugin_engine")


def _python_names() -> list[str]:
    manifest = yaml.safe_load(TOP_LEVEL_MANIFEST.read_text())
    return [command["python_name"] for command in manifest["contributions"]["commands"]]


@pytest.mark.parametrize("python_name", _python_names())
def test_every_python_name_in_the_manifest_imports(python_name):
    module_name, attribute = python_name.split(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))


def test_manifest_is_valid_and_the_one_napari_finds():
    manifest = PluginManifest.from_file(TOP_LEVEL_MANIFEST)
    plugins = PluginManager()
    plugins.discover()
    found = plugins.get_manifest("napari-tem-atoms")
    assert found.contributions == manifest.contributions
    assert found.package_metadata.version  # found through the installed distribution


def test_packaged_manifest_is_the_top_level_file():
    packaged = ROOT / "src" / "napari_tem_atoms" / "napari.yaml"
    assert packaged.resolve() == TOP_LEVEL_MANIFEST.resolve()


@pytest.mark.slow
def test_regular_install_ships_the_manifest_napari_finds(tmp_path):
    """Build a wheel, install it (not editable) into a folder, and discover it with npe2."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(wheels), str(ROOT)], check=True)
    wheel = next(wheels.glob("napari_tem_atoms-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True)
    installed = site / "napari_tem_atoms" / "napari.yaml"
    assert not installed.is_symlink()
    assert installed.read_bytes() == TOP_LEVEL_MANIFEST.read_bytes()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from npe2 import PluginManager
        plugins = PluginManager()
        plugins.discover()
        manifest = plugins.get_manifest("napari-tem-atoms")
        import napari_tem_atoms
        print(napari_tem_atoms.__file__)
        print(sorted(c.id for c in manifest.contributions.commands))
    """)
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True).stdout.splitlines()
    assert output[0].startswith(str(site))
    expected = sorted(c.id for c in PluginManifest.from_file(TOP_LEVEL_MANIFEST)
                      .contributions.commands)
    assert output[1] == str(expected)


def test_core_imports_no_qt_and_no_napari(tmp_path):
    """Import every core module and use it, in a fresh interpreter; no GUI module may load."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import numpy as np
        import napari_tem_atoms
        for module in pkgutil.walk_packages(napari_tem_atoms.__path__, "napari_tem_atoms."):
            if not module.name.startswith("napari_tem_atoms.napari"):
                importlib.import_module(module.name)
        from napari_tem_atoms import atoms_table, read_image, synthetic_gold_stack, write_atoms_csv
        np.save({str(tmp_path / "a.npy")!r}, np.ones((8, 8)))
        read_image({str(tmp_path / "a.npy")!r})
        synthetic_gold_stack(n_frames=1, shape=(32, 32), particle_radius=3)
        write_atoms_csv({str(tmp_path / "a.csv")!r}, atoms_table(np.ones((2, 2))))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {GUI_MODULES!r})
        print(loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_command_line_tool_is_installed():
    result = subprocess.run([TEM_ATOMS, "--version"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.startswith("tem-atoms 0.")


def test_cli_info_prints_the_pixel_size(hyperspy_files):
    path = hyperspy_files / "emd_files/fei_example_tem_stack.emd"
    result = subprocess.run([TEM_ATOMS, "info", str(path)], capture_output=True, text=True,
                            check=True)
    assert "pixel size: 0.0817288 Å/px  (file: 8.17288 pm)" in result.stdout
    assert "frame interval: 0.8 s" in result.stdout


def test_cli_info_reports_bad_files_and_fails(tmp_path):
    path = tmp_path / "empty.dm4"
    path.write_bytes(b"")
    result = subprocess.run([TEM_ATOMS, "info", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"error: {path}: the file is empty" in result.stderr
    assert "Traceback" not in result.stderr
