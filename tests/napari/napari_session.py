"""Run in a child process under xvfb-run by test_viewer.py: a real napari viewer opens an MRD file with the
plugin, paints on the labels layer it got and saves it with the plugin's writer; prints what it saw as JSON.

Usage: python napari_session.py MANIFEST FILE [LABELS.json] [SCREENSHOT.png]
"""

import json
import sys

import napari
from npe2 import PluginManager, PluginManifest

PLUGIN = "cloudmri-workbench"


def main(manifest: str, path: str, labels_path: str = "", screenshot: str = "") -> None:
    plugins = PluginManager.instance()
    plugins.discover()  # what napari does at start: installed plugins, by their napari.manifest entry points
    try:
        plugins.get_manifest(PLUGIN)
        discovered = True
    except KeyError:  # not installed with its entry point: register the checkout's manifest
        plugins.register(PluginManifest.from_file(manifest))
        discovered = False
    viewer = napari.Viewer(show=False)
    layers = viewer.open(path, plugin=PLUGIN)
    report = {"discovered": discovered,
              "layers": [{"name": layer.name, "type": layer._type_string, "shape": list(layer.data.shape),
                          "scale": [float(s) for s in layer.scale], "series_id": layer.metadata.get("series_id")}
                         for layer in layers]}
    if labels_path:
        labels = next(layer for layer in layers if layer._type_string == "labels")
        labels.data[1, 8:16, 8:24] = 1
        report["saved"] = labels.save(labels_path, plugin=PLUGIN)
    if screenshot:
        viewer.dims.set_current_step(0, 1)
        viewer.screenshot(screenshot, canvas_only=False, flash=False)
    viewer.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
