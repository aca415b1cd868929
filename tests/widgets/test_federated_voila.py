"""The federated experiment form in a real Voilà page, typed into and clicked in Chromium: a round patience is
refused until a site has validation images, Start runs a real in-process Flower experiment in the kernel, and
the page shows the rounds it stopped after and the round whose model it kept; the catalog file holds the same."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloudmri_kernel.catalog.db import Catalog
from cloudmri_kernel.catalog.models import Experiment
from tests.browser import needs_chromium, notebook_file
from tests.browser import voila as voila_server

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (./workbench setup)")
pytestmark = [pytest.mark.slow, needs_chromium]

NOTEBOOK = '''\
from cloudmri_kernel.catalog.db import Catalog
from cloudmri_widgets import FederatedExperiment

form = FederatedExperiment(catalog=Catalog.open("sqlite:///catalog.db"), out_dir="models")
form.matrix.value, form.calib.value = 32, 8
for row in form.site_rows:
    row.train_count.value, row.test_count.value = 4, 2
form.network.value = "small"
form
'''


def test_a_round_patience_typed_in_the_page_stops_the_rounds_and_shows_the_kept_round(tmp_path, browser):
    with voila_server(notebook_file(tmp_path / "federated.ipynb", NOTEBOOK), timeout=120) as url:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        try:
            page.goto(url)
            rounds = page.get_by_label("Rounds", exact=True)
            rounds.wait_for(timeout=120_000)
            for label, value in (("Experiment", "patient-rounds"), ("Rounds", "8"), ("Learning rate", "0.5"),
                                 ("Round patience", "2")):
                field = page.get_by_label(label, exact=True)
                field.fill(value)
                field.press("Enter")
            playwright.expect(page.get_by_text("give at least one site some (the val. column)")).to_be_visible(
                timeout=30_000)
            validation = page.locator(".fl-val input")  # the val. column
            assert page.locator("b[title^='validation images']").inner_text() == "val."  # its header explains it
            assert validation.count() == 3
            for index in range(3):
                validation.nth(index).fill("2")
                validation.nth(index).press("Enter")
            playwright.expect(page.get_by_text("Fix the form")).to_have_count(0, timeout=30_000)
            page.get_by_role("button", name="Start").click()
            message = page.get_by_text("Finished 6 of 8 rounds (2 without a better validation score)")
            playwright.expect(message).to_be_visible(timeout=300_000)
            text = message.inner_text()
            page.screenshot(path=tmp_path / "federated-widget.png", full_page=True)
        finally:
            page.close()
    assert "Kept round 4: the best mean validation SSIM of the sites" in text
    assert str(tmp_path / "models" / "round-4.pt") in text or "models/round-4.pt" in text
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    with catalog.session() as session:
        experiment = session.scalars(select(Experiment)).one()
        assert (experiment.name, experiment.status, experiment.config["rounds_patience"]) == \
            ("patient-rounds", "finished", 2)
        assert [s["val_count"] for s in experiment.config["sites"]] == [2, 2, 2]
        assert experiment.metrics[-1]["kept"]["round"] == 4 and experiment.metrics[-1]["kept"]["rounds_run"] == 6
    catalog.engine.dispose()
    assert (tmp_path / "federated-widget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
