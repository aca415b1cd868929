"""Reconstruction on a cluster made by a real Dask-Gateway server (its local backend, on loopback)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.processes import ProcessGroup, free_port
from cloudmri_kernel.recon.engine import reconstruct_file
from cloudmri_kernel.recon.recipe import parse_recipe

pytest.importorskip("dask_gateway_server", reason="dask-gateway-server is a dev dependency (./workbench setup)")
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def gateway(tmp_path):
    """A Dask-Gateway server whose clusters are local processes of this account (UnsafeLocalBackend)."""
    api, proxy = free_port(), free_port()
    config = tmp_path / "gateway_config.py"
    config.write_text(f"""
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.LocalBackend.clusters_directory = {str(tmp_path / "clusters")!r}
c.ClusterConfig.scheduler_cmd = [{str(BIN / "dask")!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{str(BIN / "dask")!r}, "worker"]
c.ClusterConfig.worker_cores = 1
""")
    server = ProcessGroup([str(BIN / "dask-gateway-server"), "-f", str(config)], {"PATH": "/usr/bin:/bin"},
                          tmp_path / "gateway.log", cwd=tmp_path)
    server.start()
    url = f"http://127.0.0.1:{proxy}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert not server.exited(), server.log_since_start()
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.2)
    try:
        yield url
    finally:
        server.stop()


def test_a_gateway_cluster_gives_the_images_of_the_local_run(tmp_path, gateway, monkeypatch):
    path = tmp_path / "slices.h5"
    write_phantom(path, PhantomSpec(matrix=64, coils=4, accel=2, calib=16, slices=3, noise=0.003, seed=5))
    recipe = parse_recipe({"method": "sense", "max_iter": 10, "maps": "lowres"})
    local = reconstruct_file(path, recipe)
    monkeypatch.setenv("CLOUDMRI_DASK_GATEWAY", gateway)
    links = []
    remote = reconstruct_file(path, recipe, workers=2, progress=lambda done, total, link: links.append(link))
    np.testing.assert_allclose(remote.images, local.images, rtol=0, atol=1e-5 * local.images.max())
    assert len(links) == 3 and links[-1].startswith(gateway)  # the dashboard, through the gateway's proxy
