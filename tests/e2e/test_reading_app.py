"""The radiologist's reading app in a real browser: Voilà renders ``notebooks/apps/reading.ipynb`` against a real
service process and Debian's Chromium works through the worklist as a radiologist would — opens the urgent study,
draws an ROI and saves it, changes the window with a key, writes the report from a template and signs it, moves
on with Alt+→ and sends the next study back with a reason. The catalog then holds exactly that: the reader's
label set, the signed report with its hash, and each assignment's status.

A screenshot goes to ``docs/images/reading-room.png``.
"""

from __future__ import annotations

import pytest
from cloudmri_widgets.reading import template_text
from sqlalchemy import select

from cloudmri_kernel.catalog.models import Assignment, Label, Report
from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.routes.reading import report_sha256
from cloudmri_kernel.service.testing import create_token
from tests.browser import needs_chromium, voila_as
from tests.conftest import REPO
from tests.e2e.conftest import service_catalog

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, needs_chromium]

APP = REPO / "notebooks" / "apps" / "reading.ipynb"
SCREENSHOTS = REPO / "docs" / "images"


@pytest.fixture(scope="module")
def worklist(app_service, tmp_path_factory) -> dict:
    """alice uploads two phantoms and reconstructs the first; ada (admin) puts both on rita's worklist."""
    running, env = app_service
    folder = tmp_path_factory.mktemp("reading-data")
    tokens = {"alice": create_token(env, "alice", "siteA", ["researcher"]),
              "ada": create_token(env, "ada", "siteA", ["admin"]),
              "rita": create_token(env, "rita", "siteA", ["radiologist"])}
    with Client(running.url, tokens["alice"]) as alice:
        datasets = [alice.upload(write_phantom(folder / f"case{seed}.h5", PhantomSpec(matrix=64, coils=4, seed=seed)))
                    for seed in (1, 2)]
        job = alice.wait(alice.submit(datasets[0]["id"], {"method": "ifft"})["id"], timeout=300)
    with Client(running.url, tokens["ada"]) as ada:
        urgent = ada.assign(datasets[0]["id"], "rita", priority=5)
        routine = ada.assign(datasets[1]["id"], "rita", priority=1)
    return {"tokens": tokens, "urgent": urgent, "routine": routine, "series_id": job["series_id"]}


def test_a_radiologist_reads_labels_reports_signs_and_sends_back(browser, app_service, worklist, tmp_path):
    running, env = app_service
    with voila_as(APP, running.url, worklist["tokens"]["rita"], tmp_path / "rita", tmp_path / "voila.log") as address:
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.set_default_timeout(90_000)
        page.goto(address)
        page.get_by_text("Signed in as rita: 2 studies on your worklist: 2 assigned.").wait_for()
        rows = page.locator("table.reading-worklist tbody tr")
        playwright.expect(rows).to_have_count(2)
        assert rows.first.inner_text().split("\t")[:2] == ["5", "assigned"]  # most urgent first

        # Open the urgent study: its series in the labeler, the report form enabled.
        page.locator(".widget-select select").select_option(index=0)
        page.get_by_role("button", name="Open").click()
        page.get_by_text("Opened study 1 of 2.").wait_for()
        canvas = page.locator(".cml-root canvas")
        canvas.wait_for()
        box = canvas.bounding_box()
        scale = box["width"] / 64  # the labeler fits the 64 x 64 image into its canvas
        # A rectangle over image pixels (16, 16)-(32, 24), then the ROI is saved as rita's label set.
        page.mouse.move(box["x"] + 16 * scale, box["y"] + 16 * scale)
        page.mouse.down()
        page.mouse.move(box["x"] + 32 * scale, box["y"] + 24 * scale, steps=5)
        page.mouse.up()
        page.get_by_text("1 ROI(s) on this slice").wait_for()
        page.get_by_role("button", name="Save ROIs").click()
        page.get_by_text("Saved 1 ROI(s)").wait_for()
        # Key 2 on the image: the "full" window preset.
        canvas.click(button="middle")
        page.keyboard.press("2")
        playwright.expect(page.locator("button.cml-on[data-preset]")).to_contain_text(["full"])

        # The report: the brain template fills the findings' sections; rita adds hers and an impression.
        page.locator(".widget-dropdown:has-text('Template') select").select_option(label="Brain MRI")
        findings = page.locator(".widget-textarea:has-text('Findings') textarea")
        playwright.expect(findings).to_have_value(template_text("brain-mri"))
        findings.fill("Technique: phantom.\nFindings: one rectangular region marked, otherwise normal.")
        page.locator(".widget-textarea:has-text('Impression') textarea").fill("No abnormality.")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "reading-room.png"), full_page=True)
        page.get_by_role("button", name="Sign").click()
        page.get_by_text("Signed. SHA-256").wait_for()
        page.get_by_text("Signed by rita at").wait_for()
        playwright.expect(page.locator(".widget-textarea:has-text('Impression') textarea")).to_be_disabled()

        # Alt+Right: the next study, which has no series yet; it goes back to ada with a reason.
        page.keyboard.press("Alt+ArrowRight")
        page.get_by_text("Opened study 2 of 2.").wait_for()
        page.get_by_text("No series has been reconstructed from this dataset yet").wait_for()
        page.get_by_role("button", name="Send back").click()
        page.get_by_text("Give a reason for sending the study back").wait_for()
        page.get_by_placeholder("why the study goes back (required)").fill("No images: please reconstruct first.")
        page.get_by_role("button", name="Send back").click()
        page.get_by_text("Sent back to ada: No images: please reconstruct first.").wait_for()
        page.close()

    catalog = service_catalog(env)
    try:
        with catalog.session() as db:
            (label,) = db.scalars(select(Label).where(Label.reader == "rita"))
            assert (label.series_id, label.name, label.version) == (worklist["series_id"], "reading", 1)
            ((roi,),) = [label.rois]
            assert (roi["kind"], roi["label"], roi["slice"]) == ("rectangle", "lesion", 0)
            assert roi["points"] == [pytest.approx([16, 16], abs=0.5), pytest.approx([32, 24], abs=0.5)]
            (report,) = db.scalars(select(Report).where(Report.author == "rita"))
            assert (report.dataset_id, report.status, report.template) == (
                worklist["urgent"]["dataset_id"], "signed", "brain-mri")
            assert report.findings.endswith("one rectangular region marked, otherwise normal.")
            assert report.impression == "No abnormality." and report.sha256 == report_sha256(report)
            statuses = {a.id: (a.status, a.reason) for a in db.scalars(select(Assignment))}
            assert statuses == {worklist["urgent"]["id"]: ("done", ""),
                                worklist["routine"]["id"]: ("sent_back", "No images: please reconstruct first.")}
    finally:
        catalog.dispose()
