"""Dataset listings with grants recorded only on chain, against a real anvil node: a dataset of siteA granted on
chain to siteB's account (with ``cloudmri ledger grant`` or by the consortium admin, never through the API) shows in
siteB's listings and searches, marked ``chain grant``, until it is revoked (at once through the service, within
the cache period on chain) or expires; grants for another scope or site show nothing; the node down, the listing
still answers with the site's and catalog-granted rows and says the chain could not be asked."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloudmri_kernel import cli_ledger  # noqa: F401 - registers the ledger commands on app
from cloudmri_kernel.cli import app as cli
from cloudmri_kernel.ledger.testing import ledger_for
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from tests.ledger.test_service_ledger import _audit, _until, service_account  # noqa: F401 - a fixture
from tests.service.conftest import Api, make_tokens

runner = CliRunner()
CHAIN = "X-CloudMRI-Chain-Grants"


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three small, valid and different MRD files."""
    folder = tmp_path_factory.mktemp("scans")
    return [write_phantom(folder / f"scan{i}.h5", PhantomSpec(matrix=32, coils=2, accel=accel, calib=8))
            for i, accel in enumerate((1, 2, 4))]


@pytest.fixture
def grant_cache_s() -> float:
    """CLOUDMRI_LEDGER_GRANT_CACHE_S of the service; a test parametrizes it to change it."""
    return 3600.0


@pytest.fixture
def api(service_account, grant_cache_s, monkeypatch) -> Api:  # noqa: F811 - the fixture imported above
    """The service (siteA's key on the chain) with the test's grant cache period."""
    from cloudmri_kernel.config import settings
    from cloudmri_kernel.service.app import create_app

    monkeypatch.setenv("CLOUDMRI_LEDGER_GRANT_CACHE_S", str(grant_cache_s))
    tokens = make_tokens()
    with TestClient(create_app(), raise_server_exceptions=False) as http:
        yield Api(http, tokens, settings().data_dir)


@pytest.fixture
def site_b(admin, node, tmp_path):
    """siteB's account on chain, registered by the consortium admin."""
    ledger = ledger_for(tmp_path / "siteB-ledger", node.url)
    admin.register_site(ledger.address, "siteB")
    yield ledger
    ledger.close()


def _upload(api: Api, scan, user: str) -> dict:
    """Upload as ``user`` and wait until anchored (the service's key may then claim the dataset and grant it)."""
    reply = api.upload(scan, user)
    assert reply.status_code == 201, reply.text
    provenance = f"/datasets/{reply.json()['id']}/provenance"
    return _until(lambda: (found := api.get(provenance, user).json())["state"] == "anchored" and found,
                  f"dataset {reply.json()['id']} anchored")


def _listing(api: Api, user: str, **params) -> tuple[list[tuple[str, str]], str | None]:
    reply = api.get("/datasets", user, params=params)
    assert reply.status_code == 200, reply.text
    return [(row["id"], row["access"]) for row in reply.json()], reply.headers.get(CHAIN)


def _site_audit(api: Api, admin: str, action: str) -> list[dict]:
    """Audit events ``action`` as the site admin ``admin`` may read them (their site's users', newest first)."""
    reply = api.get("/audit", admin, params={"action": action, "limit": 1000})
    assert reply.status_code == 200, reply.text
    return reply.json()


def _listed_by_chain(api: Api, user: str, dataset_id: str) -> list[dict]:
    return [e for e in _audit(api, "grant-decision") if e["user"] == user and e["dataset_id"] == dataset_id
            and e["reason"].startswith("listed: ")]


def _mine(ledger) -> None:
    """A new block: the chain's clock, which expiries are compared with, moves on only with blocks."""
    ledger.w3.provider.make_request("evm_mine", [])


def test_a_dataset_granted_on_chain_is_listed_searched_and_opened_until_revoked_through_the_service(
        api, site_b, scans):
    own = _upload(api, scans[0], "bob")["dataset_id"]  # siteB's own dataset
    theirs = _upload(api, scans[1], "alice")
    theirs_id, theirs_sha = theirs["dataset_id"], theirs["sha256"]
    # siteA's operator grants on chain with the CLI (the service's key), not through the API
    result = runner.invoke(cli, ["ledger", "grant", theirs_sha, site_b.address, "--scope", "read-images",
                                 "--days", "1"])
    assert result.exit_code == 0, result.output

    assert _listing(api, "bob") == ([(theirs_id, "chain grant"), (own, "site")], "ok")  # newest first
    assert _listing(api, "bob", site="siteA") == ([(theirs_id, "chain grant")], "ok")
    assert _listing(api, "bob", site="siteB") == ([(own, "site")], "ok")
    assert _listing(api, "bob", text="scan") == ([(theirs_id, "chain grant"), (own, "site")], "ok")
    assert _listing(api, "bob", text="no such file") == ([], "ok")
    assert _listing(api, "bob", limit=1) == ([(theirs_id, "chain grant")], "ok")
    assert _listing(api, "bob", limit=1, offset=1) == ([(own, "site")], "ok")
    assert _listing(api, "alice") == ([(theirs_id, "site")], "ok")  # siteB's dataset stays siteB's

    opened = api.get(f"/datasets/{theirs_id}", "bob")
    assert opened.status_code == 200 and opened.json()["access"] == "chain grant"
    assert api.get(f"/datasets/{theirs_id}/series", "bob").status_code == 200
    assert api.get(f"/datasets/{own}", "bob").json()["access"] == "site"

    listed = _listed_by_chain(api, "bob", theirs_id)
    assert len(listed) == 4  # one per listing that showed it, as one per access check
    assert {(e["outcome"], e["site"], e["details"]["need"], e["details"]["decision"], e["details"]["source"],
             e["details"]["dataset_site"]) for e in listed} == {("success", "siteB", "see", "allow", "chain", "siteA")}
    assert listed[0]["reason"] == f"listed: on-chain grant of read-images to {site_b.address} of site siteB"
    assert _listed_by_chain(api, "bob", own) == []  # own-site rows are no grant decision
    request = next(e for e in _site_audit(api, "bea", "list_datasets") if e["user"] == "bob")
    assert (request["status_code"], request["reason"]) == (200, "1 by site")  # the last listing: offset 1

    revoked = api.delete("/ledger/grants", "ada", params={"dataset_id": theirs_id, "site": "siteB",
                                                           "scope": "read-images"})
    assert revoked.status_code == 200, revoked.text
    assert _listing(api, "bob") == ([(own, "site")], "ok")  # at once, although the cache holds for an hour
    assert api.get(f"/datasets/{theirs_id}", "bob").status_code == 403
    assert len(_listed_by_chain(api, "bob", theirs_id)) == 4


@pytest.mark.parametrize("grant_cache_s", [1.0])
def test_direct_revocation_expiry_and_grants_for_another_scope_or_site(api, admin, site_b, node, scans, tmp_path):
    granted = _upload(api, scans[0], "alice")
    other = _upload(api, scans[1], "alice")
    expiring = _upload(api, scans[2], "alice")
    site_c = ledger_for(tmp_path / "siteC-ledger", node.url)
    admin.register_site(site_c.address, "siteC")
    in_a_day = datetime.now(UTC) + timedelta(days=1)

    # by the consortium admin, directly on chain
    admin.grant(granted["sha256"], site_b.address, "read-images", in_a_day)
    admin.grant(other["sha256"], site_b.address, "report", in_a_day)  # a scope that shows no data
    admin.grant(other["sha256"], site_c.address, "read-raw", in_a_day)  # another site
    expiry = int(time.time()) + 3
    admin.grant(expiring["sha256"], site_b.address, "read-raw", expiry)
    assert admin.is_granted(expiring["sha256"], site_b.address, "read-raw")
    _until(lambda: (expiring["dataset_id"], "chain grant") in _listing(api, "bob")[0], "the expiring grant listed")

    _until(lambda: time.time() > expiry + 1, "the grant's expiry passed", timeout=30)
    # anvil mines only on a transaction, so its clock still stands before the expiry: the node still grants, the
    # service (by the later of the chain's clock and its own) no longer does, in listings and access checks
    assert admin.is_granted(expiring["sha256"], site_b.address, "read-raw")
    _until(lambda: (expiring["dataset_id"], "chain grant") not in _listing(api, "bob")[0], "the expiry seen")
    assert api.get(f"/datasets/{expiring['dataset_id']}", "bob").status_code == 403
    _mine(admin)
    assert not admin.is_granted(expiring["sha256"], site_b.address, "read-raw")
    shown = _until(lambda: _listing(api, "bob")[0] or None, "the on-chain grant listed")
    assert shown == [(granted["dataset_id"], "chain grant")]
    assert _listing(api, "bob", text="scan") == ([(granted["dataset_id"], "chain grant")], "ok")
    assert api.get(f"/datasets/{granted['dataset_id']}", "bob").status_code == 200
    for dataset in (other, expiring):
        assert api.get(f"/datasets/{dataset['dataset_id']}", "bob").status_code == 403
    assert api.get(f"/datasets/{other['dataset_id']}", "alice").json()["access"] == "site"

    admin.revoke(granted["sha256"], site_b.address, "read-images")  # on chain: this service learns within 1 s
    _until(lambda: _listing(api, "bob")[0] == [], "the revocation on chain seen by the listing")
    _until(lambda: api.get(f"/datasets/{granted['dataset_id']}", "bob").status_code == 403,
           "the revocation on chain seen by the access check")
    assert {e["dataset_id"] for e in _audit(api, "grant-decision")
            if e["reason"].startswith("listed: ")} == {granted["dataset_id"], expiring["dataset_id"]}
    site_c.close()


@pytest.mark.parametrize("grant_cache_s", [0.0])
def test_node_down_the_listing_keeps_site_and_catalog_rows_and_says_so(api, admin, site_b, node, scans):
    own = _upload(api, scans[0], "bob")["dataset_id"]
    on_chain = _upload(api, scans[1], "alice")
    in_catalog = _upload(api, scans[2], "alice")["dataset_id"]
    admin.grant(on_chain["sha256"], site_b.address, "read-images", datetime.now(UTC) + timedelta(days=1))
    made = api.post("/grants", "ada", json={"dataset_id": in_catalog, "site": "siteB", "scope": "read-images",
                                            "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()})
    assert made.status_code == 201, made.text
    assert _listing(api, "bob") == ([(in_catalog, "grant"), (on_chain["dataset_id"], "chain grant"),
                                     (own, "site")], "ok")

    node.stop()
    assert _listing(api, "bob") == ([(in_catalog, "grant"), (own, "site")], "unavailable")
    assert _listing(api, "bob", site="siteA") == ([(in_catalog, "grant")], "unavailable")
    assert api.get(f"/datasets/{on_chain['dataset_id']}", "bob").status_code == 403  # fails closed
    assert api.get(f"/datasets/{in_catalog}", "bob").json()["access"] == "grant"
    down = [e for e in _site_audit(api, "bea", "grant-decision") if e["user"] == "bob" and e["dataset_id"] is None]
    assert len(down) == 2
    assert {(e["outcome"], e["details"]["decision"], e["details"]["source"], e["details"]["need"])
            for e in down} == {("failure", "deny", "chain", "see")}
    assert "the ledger node does not answer, so datasets granted on chain are not listed" in down[0]["reason"]
    request = next(e for e in _site_audit(api, "bea", "list_datasets") if e["user"] == "bob")
    assert (request["status_code"], request["reason"]) == (
        200, "1 by grant; the ledger node does not answer: datasets granted on chain are not listed")

    node.start()  # the same chain comes back: so do its grants
    assert _listing(api, "bob") == ([(in_catalog, "grant"), (on_chain["dataset_id"], "chain grant"),
                                     (own, "site")], "ok")


@pytest.mark.parametrize("grant_cache_s", [0.0])
def test_a_reorganized_chain_is_read_again(api, admin, site_b, scans):
    """The grant's block replaced by others (anvil's snapshot and revert, then new blocks up to a higher number):
    the replica sees another hash at the last block it read, reads every grant again, and the grant is gone."""
    dataset = _upload(api, scans[0], "alice")
    snapshot = admin.w3.provider.make_request("evm_snapshot", [])["result"]
    admin.grant(dataset["sha256"], site_b.address, "read-images", datetime.now(UTC) + timedelta(days=1))
    assert _listing(api, "bob") == ([(dataset["dataset_id"], "chain grant")], "ok")
    head = admin.w3.eth.block_number
    assert admin.w3.provider.make_request("evm_revert", [snapshot])["result"] is True
    for _ in range(3):
        _mine(admin)
    assert admin.w3.eth.block_number > head
    assert _listing(api, "bob") == ([], "ok")
    assert api.get(f"/datasets/{dataset['dataset_id']}", "bob").status_code == 403


def test_without_a_ledger_listings_carry_no_chain_header(monkeypatch, scans):
    from cloudmri_kernel.config import settings
    from cloudmri_kernel.service.app import create_app

    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    tokens = make_tokens()
    with TestClient(create_app(), raise_server_exceptions=False) as http:
        api = Api(http, tokens, settings().data_dir)
        made = api.upload(scans[0], "alice")
        assert made.status_code == 201, made.text
        assert _listing(api, "alice") == ([(made.json()["id"], "site")], None)
        assert _listing(api, "bob") == ([], None)
