"""The npe2 manifest: valid with every command importable, and the plugin's functions behind its commands."""

from __future__ import annotations

import os
import subprocess
import sys

import napari_cloudmri
import pytest

from tests.napari.conftest import MANIFEST, plugin_entry_point, with_extensions_path

PluginManifest = pytest.importorskip("npe2", reason="npe2 is in the dev extra: pip install -e '.[dev]'"
                                     ).PluginManifest
NPE2 = [sys.executable, "-m", "npe2"]


def test_npe2_validates_the_manifest_and_imports_its_commands():
    result = subprocess.run([*NPE2, "validate", str(MANIFEST), "--imports"], capture_output=True, text=True,
                            env=with_extensions_path(dict(os.environ)), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Manifest for 'Cloud-MRI Workbench' valid!" in result.stdout


def test_the_manifest_names_the_distribution_and_the_plugin_functions():
    manifest = PluginManifest.from_file(MANIFEST)
    # npe2 refuses a manifest found through an entry point unless its name is the distribution's.
    assert manifest.name == "cloudmri-workbench"
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands == {"cloudmri-workbench.get_reader": "napari_cloudmri.reader:get_reader",
                        "cloudmri-workbench.write_labels": "napari_cloudmri.writer:write_labels"}
    (reader,) = manifest.contributions.readers
    assert reader.filename_patterns == ["*.h5", "*.hdf5", "*.mrd"] and not reader.accepts_directories
    (writer,) = manifest.contributions.writers
    assert writer.layer_types == ["labels"] and writer.filename_extensions == [".json"]
    assert napari_cloudmri.get_reader is napari_cloudmri.reader.get_reader


@pytest.mark.skipif(plugin_entry_point() is None, reason="the napari.manifest entry point is registered once "
                    "pyproject.toml declares it and the project is reinstalled (pip install -e .)")
def test_npe2_validates_the_installed_distribution():
    result = subprocess.run([*NPE2, "validate", "cloudmri-workbench", "--imports"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid!" in result.stdout
