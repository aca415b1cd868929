"""The aggregator of a deployment: a Flower ServerApp that runs a Cloud-MRI experiment over the SuperLink's grid.

``cloudmri fl run EXPERIMENT.yaml`` submits this app (:mod:`.deployment`); the SuperLink starts it in its own
process with the run config: the experiment file's settings (``experiment``, base64 of their JSON) and where the global
models go (``out-dir``). Sites are whatever SuperNodes are connected: each names itself and its data in its own
node config, so this process never learns where a site's data live, and never opens them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cloudmri_kernel.federated.experiment import experiment_from_mapping, run_experiment

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    encoded = str(context.run_config["experiment"])
    config = experiment_from_mapping(json.loads(base64.urlsafe_b64decode(encoded)) if encoded else {})
    catalog = None
    if context.run_config.get("record", True):
        from cloudmri_kernel.catalog.db import Catalog

        catalog = Catalog.open()
    try:
        run_experiment(config, [], Path(str(context.run_config["out-dir"])), catalog=catalog, grid=grid,
                       created_by=str(context.run_config.get("created-by", "federated")))
    finally:
        if catalog is not None:
            catalog.engine.dispose()
