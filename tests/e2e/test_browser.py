"""Every role in a real browser: Debian's Chromium driven by Playwright against `cloudmri up --demo`.

Screenshots of each role's landing page go to ``CLOUDMRI_TEST_ARTIFACTS`` (default ``out/test-artifacts``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cloudmri_kernel import up
from cloudmri_kernel.client import Client
from tests.browser import needs_chromium
from tests.hub.conftest import needs_user_servers

ARTIFACTS = Path(os.environ.get("CLOUDMRI_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "out" /
                                "test-artifacts"))
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, *needs_user_servers, needs_chromium]


def _sign_in(browser, bench, user: str):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(90_000)
    page.goto(f"{bench.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", bench.demo_passwords[user])
    page.click("input[type=submit], button[type=submit]")
    return page


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_a_researcher_gets_jupyterlab_with_the_cloudmri_kernel_and_lists_datasets(browser, workbench):
    page = _sign_in(browser, workbench, "researcher")
    page.wait_for_url("**/user/researcher/lab**")
    card = page.locator(".jp-LauncherCard[title='Cloud-MRI (Python 3)']").first
    card.wait_for()
    _screenshot(page, "researcher-landing")
    card.click()
    page.get_by_text("Cloud-MRI (Python 3) | Idle").wait_for()  # the kernel has started and imported cm
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    page.keyboard.type("print(sorted(d['filename'] for d in cm.datasets()))")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output", has_text="phantom_full.h5").first
    try:
        output.wait_for()
    except playwright.TimeoutError:
        _screenshot(page, "researcher-failure")
        raise
    assert "phantom_cs_r4.h5" in output.inner_text()
    _screenshot(page, "researcher-notebook")
    page.close()


def test_an_admin_chooses_a_gpu_profile_and_gets_a_server(browser, workbench):
    page = _sign_in(browser, workbench, "admin")
    page.wait_for_url("**/hub/spawn**")
    assert page.locator("input[name=profile]").count() == 2
    _screenshot(page, "admin-landing")
    page.check("input[name=profile][value=gpu-1]")
    page.click("form#spawn_form input[type=submit], form#spawn_form button[type=submit]")
    page.wait_for_url("**/user/admin/lab**")
    page.locator(".jp-LauncherCard").first.wait_for()
    page.goto(f"{workbench.url}/hub/admin")
    page.get_by_text("researcher").first.wait_for()
    _screenshot(page, "admin-users")
    page.close()


def _demo_reconstructions_done(bench) -> None:
    """Wait for the reconstructions `up --demo` started, so the radiologist's first study has its images."""
    token = up.user_token(bench, "researcher", "e2e: demo reconstructions")
    with Client(f"{bench.url}/services/cloudmri", token) as client:
        deadline = time.monotonic() + 300
        while jobs := client.jobs(status="queued") + client.jobs(status="running"):
            assert time.monotonic() < deadline, f"demo reconstructions still running: {jobs}"
            time.sleep(1)


def test_a_radiologist_lands_on_the_reading_app_and_cannot_open_jupyterlab(browser, workbench):
    _demo_reconstructions_done(workbench)
    page = _sign_in(browser, workbench, "radiologist")
    page.wait_for_url("**/user/radiologist/voila/render/reading.ipynb**")
    page.get_by_text("Cloud-MRI reading room").first.wait_for()
    page.get_by_text("studies on your worklist").first.wait_for()
    rows = page.locator("table.reading-worklist tbody tr")
    rows.first.wait_for()
    assert rows.first.inner_text().split("\t")[:2] == ["5", "assigned"]  # the demo's most urgent study first
    page.locator(".widget-select select").select_option(index=0)
    page.get_by_role("button", name="Open").click()
    page.locator(".cml-root canvas").wait_for()  # its images, in the labeler
    _screenshot(page, "radiologist-landing")
    page.goto(f"{workbench.url}/user/radiologist/voila/render/reader_study.ipynb")  # the other reading app
    page.get_by_text("You have no reader studies: none was set up with you as a reader.").wait_for()
    refused = page.goto(f"{workbench.url}/user/radiologist/lab")
    assert refused.status in (403, 404)
    page.close()


def test_a_wrong_password_gets_a_clear_message(browser, workbench):
    page = browser.new_page()
    page.goto(f"{workbench.url}/hub/login")
    page.fill("input[name=username]", "researcher")
    page.fill("input[name=password]", "not-the-password")
    page.click("input[type=submit], button[type=submit]")
    page.get_by_text("Invalid username or password").wait_for()
    page.close()
