"""The reading room without a browser, against a real service process: a radiologist works through the
worklist, labels, reports and signs, and every refusal (expired token, a study reassigned meanwhile, a second
tab, a signed report) is explained with nothing typed lost. What the service holds is checked afterwards."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from cloudmri_widgets import ReadingRoom
from cloudmri_widgets.labeler import Labeler
from cloudmri_widgets.reading import KEYS_ESM, TEMPLATES, template_text

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from cloudmri_kernel.service.identity import ROLE_SCOPES, LocalTokens
from tests.browser import needs_chromium

_seeds = itertools.count(100)


@pytest.fixture
def rita(reading_staff) -> Client:
    return reading_staff["rita"]


@pytest.fixture
def assign(widget_service, reading_staff, tmp_path):
    """Upload a fresh 32 x 32 phantom of alice's, optionally reconstruct it (inverse FFT), and put it on rita's
    worklist with a priority; returns the assignment."""

    def make(priority: int, reconstruct: bool = False) -> dict:
        seed = next(_seeds)
        with widget_service.client("alice") as alice:
            dataset = alice.upload(write_phantom(tmp_path / f"study-{seed}.h5",
                                                 PhantomSpec(matrix=32, coils=2, accel=1, calib=8, oversampling=1,
                                                             seed=seed)))
            if reconstruct:
                alice.wait(alice.submit(dataset["id"], {"method": "ifft"})["id"], timeout=120)
        return reading_staff["ada"].assign(dataset["id"], "rita", priority=priority)

    return make


def _row(client: Client, assignment_id: str) -> dict | None:
    return next((row for row in client.worklist() if row["id"] == assignment_id), None)


def _reports(client: Client, dataset_id: str) -> list[dict]:
    return client._json("GET", f"/datasets/{dataset_id}/reports")


def test_a_radiologist_labels_reports_and_signs_then_moves_on(rita, assign):
    urgent, routine = assign(9, reconstruct=True), assign(8)
    room = ReadingRoom(rita)
    ids = [row["id"] for row in room.assignments]
    assert ids.index(urgent["id"]) < ids.index(routine["id"])  # highest priority first
    assert [row["priority"] for row in room.assignments] == sorted((r["priority"] for r in room.assignments),
                                                                    reverse=True)
    room.priority_filter.value = 9
    assert urgent["id"] in [r["id"] for r in room.assignments] and routine["id"] not in [
        r["id"] for r in room.assignments]
    room.priority_filter.value = 8
    room.status_filter.value = "assigned"
    assert {urgent["id"], routine["id"]} <= {r["id"] for r in room.assignments}
    assert "reading-worklist" in room.table.value and "ada" in room.table.value
    room.status_filter.value = None

    assert room.open_study(urgent["id"])
    assert _row(rita, urgent["id"])["status"] == "in_progress"
    assert isinstance(room.labeler, Labeler) and room.labeler.shape == [1, 32, 32]
    assert room.findings.value == template_text("generic") and not room.findings.disabled
    room.template.value = "brain-mri"  # untouched findings follow the template
    assert room.findings.value == template_text("brain-mri")
    assert set(TEMPLATES["brain-mri"]["sections"]) <= {line.split(":")[0] for line in room.findings.value.split("\n")}

    room.labeler.rois = [{"slice": 0, "label": "lesion", "kind": "ellipse", "points": [[10, 10], [16, 14]]}]
    assert room.save_labels()
    (stored,) = rita.labels(room.series_id, reader="rita")
    assert (stored["name"], stored["rois"]) == ("reading", room.labeler.rois)

    room.findings.value = room.findings.value.replace("White matter:", "White matter: a 6 mm lesion, right")
    room.impression.value = "Single nonspecific white-matter lesion."
    assert room.sign()
    assert room.locked and room.findings.disabled and room.impression.disabled and room.sign_button.disabled
    (report,) = _reports(rita, urgent["dataset_id"])
    assert report["status"] == "signed" and len(report["sha256"]) == 64
    assert (report["template"], report["impression"]) == ("brain-mri", "Single nonspecific white-matter lesion.")
    assert "White matter: a 6 mm lesion, right" in report["findings"]
    assert report["sha256"] in room.signature.value and report["sha256"] in room.message.value
    assert _row(rita, urgent["id"])["status"] == "done"

    position = room.position
    room.shortcuts._handle_custom_msg({"event": "next"}, [])  # what Alt+Right sends
    assert room.position == position + 1
    assert room.step(-1) and room.assignment["id"] == urgent["id"]
    assert room.locked and report["sha256"] in room.signature.value  # reopened: still signed and read-only
    room.open_study(routine["id"])
    assert room.labeler is None and "No series has been reconstructed" in room.image.children[0].value


def test_typed_findings_survive_a_template_and_sending_back_needs_a_reason(rita, assign):
    assignment = assign(1)
    room = ReadingRoom(rita)
    assert room.findings.disabled and room.send_back_button.disabled  # nothing opened yet
    assert room.open_study(assignment["id"])
    room.findings.value = "My own words."
    room.template.value = "knee-mri"  # typed findings are never replaced by a template
    assert room.findings.value == "My own words." and "kept as typed" in room.message.value
    assert not room.send_back("  ")
    assert "Give a reason" in room.message.value
    assert _row(rita, assignment["id"])["status"] == "in_progress"
    assert room.send_back("motion artifacts: repeat the series")
    row = _row(rita, assignment["id"])
    assert (row["status"], row["reason"]) == ("sent_back", "motion artifacts: repeat the series")
    assert "Sent back to ada" in room.message.value


def test_an_expired_token_keeps_the_typed_report(widget_service, rita, assign):
    assignment = assign(1)
    room = ReadingRoom(rita)
    assert room.open_study(assignment["id"])
    room.findings.value, room.impression.value = "Findings: none.", "Normal study."
    local = LocalTokens(widget_service.service.data_dir / "service" / "tokens.json")
    expired = local.create("rita", "siteA", ROLE_SCOPES["radiologist"], timedelta(seconds=-1))
    with Client(widget_service.service.url, expired) as client:
        room.client = client
        assert not room.save_draft()
        assert not room.sign()
    assert "did not accept your token" in room.message.value and "kept" in room.message.value
    assert (room.findings.value, room.impression.value) == ("Findings: none.", "Normal study.")
    assert _reports(rita, assignment["dataset_id"]) == []
    room.client = rita  # a new token: the same text saves
    assert room.save_draft()
    assert [r["impression"] for r in _reports(rita, assignment["dataset_id"])] == ["Normal study."]


def test_a_study_reassigned_meanwhile_is_explained_and_the_worklist_refreshed(reading_staff, rita, assign):
    assignment, other = assign(1), assign(1)
    room = ReadingRoom(rita)
    assert room.open_study(assignment["id"]) and room.open_study(other["id"])
    room.impression.value = "Typed before the study was taken away."
    for moved in (assignment, other):  # the site's admin gives both studies to rob
        assert reading_staff["ada"].reassign(moved["id"], "rob", "rita is on call")["reader"] == "rob"
    assert not room.save_draft()
    assert "no longer on your worklist" in room.message.value and "worklist is refreshed" in room.message.value
    assert other["id"] not in [row["id"] for row in room.assignments]
    assert room.impression.value == "Typed before the study was taken away."
    assert _reports(rita, other["dataset_id"]) == []
    assert not room.send_back("wrong patient")  # the service refuses: 403, the assignment is rob's
    assert "403" in room.message.value and "rob" in room.message.value


def test_a_second_tab_and_a_signed_report_are_caught_and_nothing_typed_is_lost(rita, assign):
    assignment = assign(1)
    first, second = ReadingRoom(rita), ReadingRoom(rita)
    assert first.open_study(assignment["id"]) and second.open_study(assignment["id"])
    first.impression.value = "First tab."
    assert first.save_draft()
    second.impression.value = "Second tab."
    assert not second.save_draft()
    assert "saved meanwhile in another tab" in second.message.value and "First tab." in second.message.value
    assert second.impression.value == "Second tab."
    assert [r["impression"] for r in _reports(rita, assignment["dataset_id"])] == ["First tab."]
    assert second.save_draft()  # pressed again: the reader chose their text
    assert second.sign()
    (report,) = _reports(rita, assignment["dataset_id"])
    assert (report["impression"], report["status"]) == ("Second tab.", "signed")

    first.impression.value = "First tab, edited after sign-off."
    assert not first.save_draft()
    assert "the service refused" in first.message.value and "signed and locked" in first.message.value
    assert first.locked and first.impression.value == "First tab, edited after sign-off."
    assert report["sha256"] in first.signature.value
    assert _reports(rita, assignment["dataset_id"]) == [report]


def test_two_tabs_editing_one_draft_the_later_save_is_refused_with_the_stored_text(rita, assign):
    assignment = assign(1)
    first = ReadingRoom(rita)
    assert first.open_study(assignment["id"])
    first.impression.value = "Draft."
    assert first.save_draft()
    second = ReadingRoom(rita)
    assert second.open_study(assignment["id"]) and second.report["version"] == 1
    first.impression.value = "First tab's edit."
    assert first.save_draft() and first.report["version"] == 2
    second.impression.value = "Second tab's edit."
    assert not second.sign()  # the service refuses version 1: it is at 2
    assert "changed meanwhile" in second.message.value and "First tab&#x27;s edit." in second.message.value
    assert second.impression.value == "Second tab's edit." and not second.locked
    ((impression, version, status),) = [(r["impression"], r["version"], r["status"])
                                        for r in _reports(rita, assignment["dataset_id"])]
    assert (impression, version, status) == ("First tab's edit.", 2, "draft")
    assert second.sign()  # pressed again: the reader chose their text, and signs version 3
    (report,) = _reports(rita, assignment["dataset_id"])
    assert (report["impression"], report["version"], report["status"]) == ("Second tab's edit.", 4, "signed")


@pytest.mark.slow
@needs_chromium
def test_alt_arrows_send_next_and_previous_in_chromium(browser):
    """The shortcut module as shipped, in Chromium with a stand-in model: Alt+Right/Left send next/previous from
    anywhere on the page, plain arrows (typing in the report) send nothing, and the listener goes with the view."""
    page = browser.new_page()
    page.set_content("<textarea id='findings'></textarea><div id='app'></div>")
    page.add_script_tag(type="module", content=KEYS_ESM.replace("export default", "window.keys =")
                        + """
window.sent = [];
window.remove = window.keys.render({ model: { send: (content) => window.sent.push(content) },
                                     el: document.getElementById("app") });""")
    page.wait_for_function("window.remove !== undefined")
    page.focus("#findings")
    for key in ("Alt+ArrowRight", "ArrowRight", "Alt+ArrowLeft", "Control+Alt+ArrowRight"):
        page.keyboard.press(key)
    assert page.evaluate("window.sent") == [{"event": "next"}, {"event": "previous"}]
    page.evaluate("window.remove()")
    page.keyboard.press("Alt+ArrowRight")
    assert page.evaluate("window.sent.length") == 2
    page.close()
