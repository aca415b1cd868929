"""`cloudmri fl simulate` and `cloudmri dl`: what a researcher types, checked through the catalog and files; the
deployment commands' security checks."""

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cloudmri_kernel.catalog.db import Catalog
from cloudmri_kernel.catalog.models import Experiment, Model
from cloudmri_kernel.cli import app
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.federated.deployment import make_site_key, superlink_command, supernode_command
from cloudmri_kernel.federated.sites import SiteConfig

EXPERIMENT = """
name: demo
strategy: fedprox
rounds: 1
min_sites: 2
architecture: {unrolls: 1, cg_iterations: 2, features: 8, depth: 3}
sites:
  - {name: charite, matrix: 32, calib: 8, coils: 4, train_count: 4, test_count: 2}
  - {name: ruijin, matrix: 32, calib: 8, coils: 8, noise: 0.03, contrast: t2, train_count: 4, test_count: 2, seed: 1}
"""


def test_simulate_records_the_experiment_and_writes_its_models(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDMRI_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    result = CliRunner().invoke(app, ["fl", "simulate", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "round 1: trained charite, ruijin" in result.output
    assert (tmp_path / "m" / "round-1.pt").is_file()
    card = json.loads((tmp_path / "m" / "round-1.json").read_text())
    catalog = Catalog.open()
    with catalog.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert experiment.name == "demo" and experiment.status == "finished"
        assert experiment.config["strategy"] == "fedprox"
        assert session.scalars(select(Model.sha256).where(Model.round == 1)).one() == card["sha256"]
    catalog.engine.dispose()


def test_bad_experiment_files_are_refused_with_exit_2(tmp_path):
    cases = {"missing.yaml": None, "empty.yaml": "", "nosites.yaml": "name: x\nsites: []\n",
             "unknown.yaml": "colour: red\nsites: [{name: a}]\n", "badsite.yaml": "sites: [{name: a, coils: 0}]\n",
             "yaml.yaml": "sites: [\n"}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        result = CliRunner().invoke(app, ["fl", "simulate", str(tmp_path / name), "--no-record"])
        assert result.exit_code == 2, (name, result.output)


def test_dl_models_lists_the_shipped_model_and_experiment_rounds_with_their_hashes(tmp_path, monkeypatch):
    from cloudmri_kernel.recon.model_files import load_model, save_model
    from cloudmri_kernel.recon.unrolled import MoDL, MoDLConfig

    monkeypatch.setenv("CLOUDMRI_MODELS_DIR", str(tmp_path))
    card = save_model(MoDL(MoDLConfig(unrolls=1, features=8, depth=3)), tmp_path / "demo" / "round-1.pt")
    result = CliRunner().invoke(app, ["dl", "models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert len(rows["modl-synthetic"]["sha256"]) == 64 and rows["modl-synthetic"]["ssim"] > 0.5
    assert rows["demo/round-1"]["sha256"] == card["sha256"]
    assert load_model("demo/round-1")[1]["sha256"] == card["sha256"]


def test_deployment_commands_refuse_unsafe_or_incomplete_security_settings(tmp_path):
    """TLS needs all three files; SuperNode authentication needs TLS and a private key only its owner can read."""
    with pytest.raises(UsageError, match="TLS needs --ssl-certfile"):
        superlink_command(certfile=tmp_path / "s.pem")
    with pytest.raises(UsageError, match="SuperNode authentication needs TLS"):
        superlink_command(insecure=True, node_auth=True)
    private, public = make_site_key(tmp_path / "keys", "charite")
    assert private.stat().st_mode & 0o777 == 0o600 and public.read_text().startswith("ecdsa-sha2-nistp384 ")
    with pytest.raises(UsageError, match="a key of this site exists already"):
        make_site_key(tmp_path / "keys", "charite")
    site = SiteConfig("charite")
    with pytest.raises(UsageError, match="SuperNode authentication needs TLS"):
        supernode_command(site, "127.0.0.1:9093", insecure=True, auth_private_key=private)
    command = supernode_command(site, "127.0.0.1:9093", root_certificates=public, auth_private_key=private)
    assert command[-2:] == ["--auth-supernode-private-key", str(private)]
    private.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others: chmod 600"):
        supernode_command(site, "127.0.0.1:9093", root_certificates=public, auth_private_key=private)
