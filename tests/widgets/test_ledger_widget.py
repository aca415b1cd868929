"""The ledger widget without a browser, against a real service process with a real anvil ledger node: search by
pseudonym, dataset and series ID, the anchored record and its proof, Verify (✓, and ✗ for a tampered store object),
grant controls by scope, and on-chain grants issued and revoked through the widget."""

from __future__ import annotations

import shutil
import time

import h5py
import pytest
from cloudmri_widgets import LedgerBrowser

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.header import header_to_xml, parse_header
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.mrd.reader import MRDFile

PSEUDONYM = "P-ledgerwidget01"


def _phantom(path, accel: int, subject: str | None = None):
    """A small valid MRD file; with ``subject``, its header names that subject pseudonym."""
    write_phantom(path, PhantomSpec(matrix=32, coils=2, accel=accel, calib=8 if accel > 1 else 0))
    if subject is not None:
        import ismrmrd.xsd as xsd

        header = parse_header(MRDFile(path).xml)
        header.subjectInformation = xsd.subjectInformationType(patientID=subject)
        with h5py.File(path, "r+") as f:
            del f["dataset/xml"]
            f["dataset"].create_dataset("xml", (1,), dtype=h5py.string_dtype("ascii"))
            f["dataset/xml"][0] = header_to_xml(header).encode()
    return path


def _client(workbench, user: str) -> Client:
    return Client(workbench.service.url, workbench.tokens[user], retries=2)


def _anchored(client: Client, dataset_id: str, timeout: float = 60.0) -> dict:
    """The dataset's provenance once the service's flusher has anchored it."""
    deadline = time.monotonic() + timeout
    while (record := client.provenance(dataset_id))["state"] != "anchored":
        assert time.monotonic() < deadline, f"dataset {dataset_id} not anchored within {timeout:.0f} s"
        time.sleep(0.1)
    return record


@pytest.fixture(scope="module")
def anchored_dataset(ledger_service, tmp_path_factory):
    """alice's upload of a phantom of subject PSEUDONYM, anchored on chain, and a series reconstructed from it."""
    folder = tmp_path_factory.mktemp("scans")
    with _client(ledger_service, "alice") as client:
        dataset = client.upload(_phantom(folder / "subject.h5", accel=1, subject=PSEUDONYM))
        record = _anchored(client, dataset["id"])
        job = client.wait(client.submit(dataset["id"])["id"], timeout=300)
        return dataset, record, job["series_id"]


def test_search_by_pseudonym_dataset_and_series_shows_the_anchored_record(ledger_service, anchored_dataset):
    dataset, record, series_id = anchored_dataset
    with _client(ledger_service, "alice") as client:
        browser = LedgerBrowser(client)
        for query in (PSEUDONYM, dataset["id"], series_id):
            browser.query.value = f"  {query} "
            browser.search_button.click()
            assert [p.dataset["id"] for p in browser.panels] == [dataset["id"]], browser.message.value
            assert browser.results.children == tuple(browser.panels)
        assert "reconstructed into series" in browser.message.value

        panel = browser.panels[0]
        assert panel.record["state"] == "anchored" and panel.record["sha256"] == dataset["sha256"]
        assert panel.record["block_number"] == record["block_number"] >= 1
        assert panel.record["tx_hash"] == record["tx_hash"] and panel.record["anchored_by_site"] == "siteA"
        history = panel.history.value
        for shown in (dataset["sha256"], record["root"], record["batch_id"], record["tx_hash"],
                      f"<td>{record['block_number']}</td>", f"{record['leaf_index']} of {record['batch_size']}",
                      f"inclusion proof: {len(record['proof'])} hash(es)", *record["proof"]):
            assert shown in history
        assert panel.verification.value == ""  # nothing claimed before Verify is pressed
        series_sha256 = client.series(series_id)["sha256"]
        history_records = client.ledger_history(dataset["id"])
        assert [r["kind"] for r in history_records] == ["dataset", "series"]
        assert history_records[0]["object_hash"] == dataset["sha256"]
        assert history_records[1]["object_hash"] == series_sha256
        assert "<td>series</td>" in history and series_sha256[:12] in history

        panel.verify_button.click()
        assert panel.verified is True
        assert f'<span class="cml-ok">✓</span> verified: sha256 {dataset["sha256"]}' in panel.verification.value
        assert f"block {record['block_number']}" in panel.verification.value
        assert not panel.verify_button.disabled and panel.verify_button.description == "Verify"


def test_unknown_id_and_tampered_store_object_give_clear_messages(ledger_service, tmp_path):
    with _client(ledger_service, "alice") as client:
        browser = LedgerBrowser(client)
        assert browser.search("0" * 32) == []
        assert ("no dataset, series or subject pseudonym '00000000000000000000000000000000' that you may see"
                in browser.message.value)
        assert browser.search("P-nobody") == [] and "'P-nobody'" in browser.message.value
        assert browser.search("   ") == [] and "type a dataset ID" in browser.message.value

        dataset = client.upload(_phantom(tmp_path / "tampered.h5", accel=2))
        record = _anchored(client, dataset["id"])
        stored = (ledger_service.data_dir / "store" / "objects" / "siteA" / dataset["sha256"][:2]
                  / dataset["sha256"])
        damaged = bytearray(stored.read_bytes())
        damaged[len(damaged) // 2] ^= 0x01
        stored.write_bytes(bytes(damaged))

        panel = browser.search(dataset["id"])[0]
        assert panel.verify() is False and panel.record is None
        verdict = panel.verification.value
        assert '<span class="cml-bad">✗</span> TAMPERED: dataset ' + dataset["id"] in verdict
        assert (f"the ledger anchored sha256 {dataset['sha256']} in block {record['block_number']}" in verdict
                and "fails authentication" in verdict)
        assert "TAMPERED" in panel.history.value and dataset["sha256"] in panel.history.value


def test_researcher_gets_no_grant_controls_and_the_service_refuses_anyway(ledger_service, anchored_dataset):
    dataset, _, _ = anchored_dataset
    with _client(ledger_service, "alice") as client:
        browser = LedgerBrowser(client)
        assert browser.can_grant is False
        panel = browser.search(dataset["id"])[0]
        assert panel.grant_controls.layout.display == "none"
        assert panel.grant_button.disabled and panel.revoke_button.disabled
        assert panel.grant("siteB", "read-images", 7) is False  # called from code all the same: the 403 shows
        assert ("this needs the scope custom:cloudmri:admin, which alice's token does not carry (HTTP 403)"
                in panel.grant_message.value)
        assert client.ledger_grants(dataset["id"]) == []


def test_admin_grants_and_revokes_on_chain_and_the_grants_list_shows_it(ledger_service, anchored_dataset):
    dataset, _, _ = anchored_dataset
    account = ledger_service.site_b_account
    with _client(ledger_service, "ada") as client:
        browser = LedgerBrowser(client)
        assert browser.can_grant is True
        panel = browser.search(dataset["id"])[0]
        assert panel.grant_controls.layout.display != "none" and not panel.grant_button.disabled
        assert [g for g in panel.grants if g["scope"] == "read-images"] == []
        assert panel.verify() is True  # an admin verifies too

        panel.grantee.value, panel.scope.value, panel.days.value = "siteB", "read-images", 7
        panel.grant_button.click()
        assert '<span class="cml-ok">✓</span> granted read-images to siteB' in panel.grant_message.value
        granted = [(g["account"], g["active"]) for g in panel.grants if g["scope"] == "read-images"]
        assert granted == [(account, True)]
        assert f"{account}</span></td><td>read-images</td>" in panel.grants_table.value
        assert "<td>active</td>" in panel.grants_table.value

        panel.revoke_button.click()
        assert '<span class="cml-ok">✓</span> revoked read-images of siteB' in panel.grant_message.value
        assert [(g["account"], g["active"]) for g in panel.grants if g["scope"] == "read-images"] == [(account, False)]
        assert "<td>revoked</td>" in panel.grants_table.value
        on_chain = [g["active"] for g in client.ledger_grants(dataset["id"]) if g["scope"] == "read-images"]
        assert on_chain == [False]  # on chain, not only in the widget

        panel.revoke_button.click()  # nothing left to revoke: the service's reason is shown
        assert "no active read-images grant" in panel.grant_message.value
        panel.grantee.value = "nosuchsite"
        panel.grant_button.click()
        assert "site 'nosuchsite' has no account registered on chain" in panel.grant_message.value


VOILA_NOTEBOOK = '''\
from cloudmri_widgets import LedgerBrowser

LedgerBrowser()  # the default client: CLOUDMRI_SERVICE_URL and CLOUDMRI_SERVICE_TOKEN of the environment
'''


@pytest.mark.slow
def test_search_and_verify_in_a_voila_page(ledger_service, anchored_dataset, tmp_path):
    """Typed and clicked in Chromium as siteA's admin: the record shows with its block, Verify shows ✓, and a
    grant (read-raw to siteB) goes on chain and into the grants table. The page is saved as a screenshot
    (docs/images/ledger-widget.png is one)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    from tests.browser import CHROMIUM, notebook_file
    from tests.browser import voila as voila_server

    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian's chromium (./workbench setup installs it)")
    dataset, record, _ = anchored_dataset
    env = ledger_service.service.client_env(ledger_service.tokens["ada"], tmp_path / "client")
    with voila_server(notebook_file(tmp_path / "ledger.ipynb", VOILA_NOTEBOOK), env) as url, \
            playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(url)
            search = page.get_by_placeholder("dataset ID, series ID or subject pseudonym")
            search.wait_for(timeout=60_000)
            search.fill(PSEUDONYM)
            page.get_by_role("button", name="Search").click()
            playwright.expect(page.locator(".cml-table").first).to_contain_text(record["tx_hash"], timeout=30_000)
            page.get_by_role("button", name="Verify").click()
            playwright.expect(page.locator(".cml-ok").first).to_be_visible(timeout=30_000)
            assert f"block {record['block_number']}" in page.locator(".cml-ok").first.locator("..").inner_text()
            page.get_by_placeholder("site or 0x account").fill("siteB")
            page.get_by_role("combobox").select_option("read-raw")
            page.get_by_role("button", name="Grant").click()
            playwright.expect(page.get_by_text("granted read-raw to siteB")).to_be_visible(timeout=30_000)
            playwright.expect(page.locator(".cml-table").nth(1)).to_contain_text(
                ledger_service.site_b_account, timeout=30_000)
            page.screenshot(path=tmp_path / "ledger-widget.png", full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "ledger-widget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
