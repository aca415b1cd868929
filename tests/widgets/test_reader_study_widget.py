"""The reader-study widgets without a browser, against the real app (in-process transport) on both databases."""

from __future__ import annotations

import pytest
from cloudmri_widgets.reader_study import ReaderStudyApp, StudyReader, StudyResults, StudySetup
from cloudmri_widgets.viewer import Viewer

from cloudmri_kernel.client import Client
from tests.service.conftest import api, phantom_mrd  # noqa: F401 - fixtures
from tests.service.test_reader_study import METHODS, phantoms, series_ids, study  # noqa: F401 - fixtures


@pytest.fixture
def client_for(api):  # noqa: F811 - the fixture imported above
    made = []

    def make(user: str) -> Client:
        client = Client("http://testserver", api.tokens[user], transport=api.http._transport, backoff=0.001)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _listing(client: Client, study_id: str) -> dict:
    return next(s for s in client.studies() if s["id"] == study_id)


def _choose(reader: StudyReader, score: int) -> None:
    for scale in reader.scales.values():
        scale.value = str(score)


def test_a_reader_scores_every_case_in_their_blinded_order(client_for, study):  # noqa: F811
    rita = client_for("rita")
    reader = StudyReader(rita, _listing(rita, study["id"]))
    codes = [case["code"] for case in reader.cases]
    assert "Case 1 of 4" in reader.heading.value and codes[0] in reader.heading.value
    (viewer,) = reader.image.children
    assert isinstance(viewer, Viewer) and viewer.shape == [1, 32, 32] and viewer.titles == [codes[0]]
    assert reader.save_button.disabled
    reader.scales["overall"].value = "4"
    assert reader.save_button.disabled and reader.save() is False  # three questions unanswered
    for position in range(4):
        assert reader.index == position
        _choose(reader, position + 1)
        assert not reader.save_button.disabled
        assert reader.save() is True
    assert reader.finished and "All 4 cases are scored" in reader.message.value
    stored = rita.study_cases(study["id"])
    assert [(c["code"], c["version"], c["scores"]["snr"]) for c in stored] == [
        (code, 1, position + 1) for position, code in enumerate(codes)]


def test_a_second_tab_is_told_and_shown_the_other_save_and_nothing_is_lost(client_for, study):  # noqa: F811
    rita = client_for("rita")
    first, second = (StudyReader(rita, _listing(rita, study["id"])) for _ in range(2))
    _choose(first, 5)
    assert first.save() is True
    _choose(second, 1)
    assert second.save() is False
    assert "saved meanwhile in another tab" in second.message.value
    assert {scale.value for scale in second.scales.values()} == {"5"}  # what the other tab stored
    assert rita.study_cases(study["id"])[0]["scores"] == dict.fromkeys(study["criteria"], 5)
    _choose(second, 2)
    assert second.save() is True
    stored = rita.study_cases(study["id"])[0]
    assert (stored["version"], stored["scores"]) == (2, dict.fromkeys(study["criteria"], 2))


def test_the_creator_sees_tables_a_plot_and_kappa(client_for, study):  # noqa: F811
    for user in ("rita", "ada"):
        client = client_for(user)
        reader = StudyReader(client, _listing(client, study["id"]))
        for _ in range(4):
            _choose(reader, 3 if user == "rita" else 4)
            assert reader.save()
    results = StudyResults(client_for("alice"), study["id"], interval="t")
    assert "grappa" in results.summary.value and "ifft" in results.summary.value
    assert "Student's t" in results.summary.value and "3.50" in results.summary.value
    assert results.plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quadratic weights" in results.agreement.value and "<td>ada</td><td>rita</td>" in results.agreement.value
    assert "<td>rita</td><td>4</td><td>4</td>" in results.progress.value
    results.interval.value = "bootstrap"
    assert results.results["interval"] == "bootstrap" and "percentile bootstrap" in results.summary.value


def test_the_app_shows_each_role_its_view(client_for, study):  # noqa: F811
    as_reader = ReaderStudyApp(client_for("rita"))
    assert as_reader.picker.options[0][1] == study["id"] and "0/4 scored" in as_reader.picker.options[0][0]
    assert isinstance(as_reader.body.children[0], StudyReader)
    as_creator = ReaderStudyApp(client_for("alice"))
    assert isinstance(as_creator.body.children[0], StudyResults)
    outsider = ReaderStudyApp(client_for("bob"))
    assert outsider.body.children == () and "no reader studies" in outsider.message.value
    refused = StudyResults(client_for("rita"), study["id"])
    assert "403" in refused.summary.value or "refused" in refused.summary.value


def test_a_researcher_sets_up_a_study_in_the_app(client_for, series_ids):  # noqa: F811
    alice = client_for("alice")
    app = ReaderStudyApp(alice)
    assert app.setup is not None and "no reader studies" in app.message.value
    setup = app.setup
    setup.datasets.value = tuple(value for _, value in setup.datasets.options)
    assert set(setup.choices) == set(series_ids) and all(box.value for box in setup.choices.values())
    assert sorted(box.description.split(" · ")[1] for box in setup.choices.values()) == sorted(METHODS * 2)
    left_out = sorted(setup.choices)[0]
    setup.choices[left_out].value = False
    setup.readers.value = "rita, ray ,"
    assert setup.create() is None and "Give a name first" in setup.message.value
    setup.name.value = "from the app"
    created = setup.create()
    assert created["readers"] == ["ray", "rita"] and created["series_count"] == 3
    assert "created" in setup.message.value
    assert app.picker.value == created["id"] and isinstance(app.body.children[0], StudyResults)
    rita_cases = client_for("rita").study_cases(created["id"])
    assert len(rita_cases) == 3
    assert ReaderStudyApp(client_for("rita")).setup is None  # radiologists hold neither recon nor admin
    refused = StudySetup(client_for("rita"))
    refused.datasets.value = tuple(value for _, value in refused.datasets.options)
    refused.name.value, refused.readers.value = "x", "ray"
    assert refused.create() is None and "Not created" in refused.message.value
