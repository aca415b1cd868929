"""The reader-study app in a real browser: Voilà renders ``notebooks/apps/reader_study.ipynb`` against a real service
process; a radiologist scores a blinded study in Debian's Chromium, and the catalog holds exactly what was clicked.

The creator then opens the same app and sees the results. Screenshots go to ``docs/images/reader-study.png`` and
``docs/images/reader-study-results.png``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloudmri_kernel.catalog.models import ReaderStudyCase, Series
from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.testing import create_token
from tests.browser import needs_chromium, voila_as
from tests.conftest import REPO
from tests.e2e.conftest import service_catalog

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, needs_chromium]

APP = REPO / "notebooks" / "apps" / "reader_study.ipynb"
SCREENSHOTS = REPO / "docs" / "images"
CRITERIA = ("overall", "artifacts", "snr", "confidence")


@pytest.fixture(scope="module")
def study(app_service, tmp_path_factory) -> dict:
    """alice (researcher) reconstructs two phantoms with two methods and sets up a study read by rita and ray."""
    running, env = app_service
    folder = tmp_path_factory.mktemp("study-data")
    tokens = {"alice": create_token(env, "alice", "siteA", ["researcher"]),
              "rita": create_token(env, "rita", "siteA", ["radiologist"]),
              "ray": create_token(env, "ray", "siteA", ["radiologist"])}
    with Client(running.url, tokens["alice"]) as alice:
        series = []
        for seed in (1, 2):
            path = write_phantom(folder / f"case{seed}.h5", PhantomSpec(matrix=64, coils=4, accel=2, calib=16,
                                                                         seed=seed))
            dataset = alice.upload(path)
            for method in ("ifft", "grappa"):
                job = alice.wait(alice.submit(dataset["id"], {"method": method})["id"], timeout=300)
                series.append(job["series_id"])
        made = alice.create_study("GRAPPA vs zero-filled", series, ["rita", "ray"])
    return {**made, "tokens": tokens, "client_dir": folder}


def _catalog_rows(env: dict, study_id: str, reader: str) -> list[tuple]:
    catalog = service_catalog(env)
    try:
        with catalog.session() as db:
            return [tuple(row) for row in db.execute(
                select(ReaderStudyCase.reader, ReaderStudyCase.position, ReaderStudyCase.version,
                       ReaderStudyCase.scores, Series.method, ReaderStudyCase.series_id, ReaderStudyCase.case_code)
                .join(Series, Series.id == ReaderStudyCase.series_id)
                .where(ReaderStudyCase.study_id == study_id, ReaderStudyCase.reader == reader)
                .order_by(ReaderStudyCase.position))]
    finally:
        catalog.dispose()


def test_a_radiologist_scores_a_blinded_study_in_the_browser(browser, app_service, study, tmp_path):
    running, env = app_service
    with voila_as(APP, running.url, study["tokens"]["rita"], tmp_path / "rita", tmp_path / "voila.log") as address:
        page = browser.new_page(viewport={"width": 1100, "height": 1250})
        page.set_default_timeout(90_000)
        page.goto(address)
        page.get_by_text("Case 1 of 4").wait_for()
        page.wait_for_selector(".cmv-panel canvas")
        body = page.inner_text("body")
        assert "ifft" not in body and "grappa" not in body  # blinded: no method, no series or dataset IDs
        for position in range(4):
            page.get_by_text(f"Case {position + 1} of 4").wait_for()
            for c, criterion in enumerate(CRITERIA):
                score = 5 - (position + c) % 3
                page.locator(f".likert-{criterion} input[type=radio]").nth(score - 1).check()
            if position == 0:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.get_by_text("Cloud-MRI reader study").first.scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "reader-study.png"))
            page.get_by_role("button", name="Save & next").click()
            page.get_by_text(f"{position + 1} of 4 scored").wait_for()
        page.get_by_text("All 4 cases are scored").wait_for()
        page.close()
    rows = _catalog_rows(env, study["id"], "rita")
    assert [(reader, position, version) for reader, position, version, *_ in rows] == [
        ("rita", p, 1) for p in range(4)]
    assert [row[3] for row in rows] == [
        {criterion: 5 - (p + c) % 3 for c, criterion in enumerate(CRITERIA)} for p in range(4)]
    assert sorted(row[4] for row in rows) == ["grappa", "grappa", "ifft", "ifft"]
    assert all(version == 0 for _, _, version, *_ in _catalog_rows(env, study["id"], "ray"))


def test_the_creator_sees_the_results_in_the_browser(browser, app_service, study, tmp_path):
    running, env = app_service
    with Client(running.url, study["tokens"]["rita"]) as client:  # what the browser test enters, if it ran elsewhere
        for _, position, version, _, _, _, code in _catalog_rows(env, study["id"], "rita"):
            if version == 0:
                client.score_case(study["id"], code, {criterion: 5 - (position + c) % 3
                                                      for c, criterion in enumerate(CRITERIA)}, 0)
    rita = {row[5]: row[3] for row in _catalog_rows(env, study["id"], "rita")}
    with Client(running.url, study["tokens"]["ray"]) as ray:  # ray agrees with rita but for one case's quality
        for position, (*_, series_id, code) in enumerate(_catalog_rows(env, study["id"], "ray")):
            scores = dict(rita[series_id] or dict.fromkeys(CRITERIA, 4))
            if position == 0:
                scores["overall"] = max(scores["overall"] - 1, 1)
            ray.score_case(study["id"], code, scores, 0)
    with voila_as(APP, running.url, study["tokens"]["alice"], tmp_path / "alice", tmp_path / "voila.log") as address:
        page = browser.new_page(viewport={"width": 1100, "height": 1500})
        page.set_default_timeout(90_000)
        page.goto(address)
        page.get_by_text("GRAPPA vs zero-filled: scores per method").wait_for()
        table = page.locator("table.study-summary")
        assert table.locator("tbody tr").count() == 8
        assert "grappa" in table.inner_text() and "ifft" in table.inner_text()
        kappa = page.locator("table.study-kappa tbody tr")
        assert kappa.count() == 4 and kappa.first.inner_text().split("\t")[:4] == ["ray", "rita", "overall", "4"]
        alphas = page.locator(".study-alpha").inner_text()
        assert alphas.startswith("overall ") and "confidence" in alphas  # Krippendorff's alpha per criterion
        page.locator(".widget-image img, img.widget-image").first.wait_for()
        page.get_by_text("Inter-reader agreement").wait_for()
        page.screenshot(path=str(SCREENSHOTS / "reader-study-results.png"))
        page.close()
