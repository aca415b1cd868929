"""The upload widget without a browser, against a real service process: values set as a user would, the
handlers called, then the widget's state and what the service's catalog holds are checked."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cloudmri_widgets import Upload

from cloudmri_kernel.client import Client
from cloudmri_kernel.mrd.anonymize import Pseudonymizer, load_site_key
from cloudmri_kernel.mrd.phantom import PhantomSpec, write_phantom
from tests.mrd.test_anonymize import with_patient


def scan(path: Path, seed: int) -> Path:
    """A small valid MRD raw file (32 x 32, 4 coils); each seed gives different bytes, so a different dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_phantom(path, PhantomSpec(matrix=32, coils=4, accel=2, calib=8, oversampling=1, seed=seed))


def picked(*paths: Path) -> tuple[dict, ...]:
    """What ipywidgets' FileUpload holds after the user picked these files in the browser."""
    return tuple({"name": p.name, "type": "application/x-hdf5", "size": p.stat().st_size,
                  "content": memoryview(p.read_bytes()), "last_modified": datetime.now(UTC)} for p in paths)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_ids(client: Client) -> set[str]:
    return {d["id"] for d in client.datasets(limit=1000)}


def test_picked_and_server_files_are_deidentified_uploaded_and_their_ids_shown(alice, tmp_path):
    patient = with_patient(scan(tmp_path / "raw.h5", seed=11), tmp_path / "patient.h5")
    on_server = scan(tmp_path / "server" / "knee.h5", seed=12)
    form = Upload(alice)
    assert form.site.options == ("siteA",) and form.site.value == "siteA" and form.policy.value == "default"

    form.files.value = picked(patient)
    form.path.value = str(on_server.parent)  # a folder contributes its MRD files
    form.button.click()  # the upload runs in a thread, as in the notebook
    form.wait(120)

    assert [r["file"] for r in form.results] == ["patient.h5", "knee.h5"]
    assert all(r["valid"] and r["findings"] == [] and r["error"] is None for r in form.results)
    assert form.dataset_ids == [r["dataset_id"] for r in form.results] and len(set(form.dataset_ids)) == 2
    rows = form.rows.children
    assert [row.children[0].value for row in rows] == [100, 100]
    assert [row.children[0].bar_style for row in rows] == ["success", "success"]
    assert all(dataset_id in row.children[1].value for row, dataset_id in zip(rows, form.dataset_ids, strict=True))
    assert "Uploaded 2 file(s) to site siteA" in form.message.value

    stored = {d["id"]: d for d in alice.datasets(limit=1000)}
    first, second = (stored[i] for i in form.dataset_ids)
    assert (first["filename"], first["site"], first["uploaded_by"]) == ("patient.h5", "siteA", "alice")
    # De-identified before it left: the service holds the pseudonym of this site's key, not the record number.
    expected = Pseudonymizer(load_site_key("siteA")).token("patient", "MRN-0012345", "P-")
    assert first["subject"] == expected != "MRN-0012345"
    assert first["sha256"] != sha256_of(patient) and second["sha256"] != sha256_of(on_server)
    assert form.files.value and form.path.value  # the choices stay for the next run


def test_policy_none_sends_the_bytes_unchanged_and_a_policy_file_applies(alice, tmp_path):
    plain = scan(tmp_path / "plain.h5", seed=21)
    form = Upload(alice)
    form.policy.value, form.path.value = "none", str(plain)
    (dataset_id,) = form.upload()
    assert alice.dataset(dataset_id)["sha256"] == sha256_of(plain)

    patient = with_patient(scan(tmp_path / "raw.h5", seed=22), tmp_path / "patient.h5")
    policy = tmp_path / "policy.yaml"
    policy.write_text("patient_id: remove\n")
    form.policy.value, form.policy_file.value, form.path.value = "file", str(policy), str(patient)
    assert form.policy_file.layout.display == ""
    (dataset_id,) = form.upload()
    assert alice.dataset(dataset_id)["subject"] is None


def test_a_bad_policy_file_uploads_nothing(alice, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("patient_idd: remove\n")
    before = dataset_ids(alice)
    form = Upload(alice)
    form.policy.value, form.policy_file.value = "file", str(policy)
    form.path.value = str(scan(tmp_path / "scan.h5", seed=31))

    assert form.upload() == []
    assert "Nothing was uploaded" in form.message.value and "patient_idd" in form.message.value
    assert dataset_ids(alice) == before


def test_an_invalid_file_shows_its_findings_and_nothing_is_uploaded(alice, tmp_path):
    not_mrd = tmp_path / "notes.h5"
    not_mrd.write_text("this is not an MRD file")
    valid = scan(tmp_path / "valid.h5", seed=41)
    before = dataset_ids(alice)
    form = Upload(alice)
    form.files.value = picked(not_mrd)
    form.path.value = str(valid)

    assert form.upload() == []

    bad, good = form.results
    assert (bad["file"], bad["valid"], good["valid"]) == ("notes.h5", False, True)
    assert [(f["severity"], f["where"]) for f in bad["findings"]] == [("error", "file")]
    assert "not an HDF5 file" in bad["findings"][0]["message"]
    status = form.rows.children[0].children[1].value
    assert "invalid (1 error(s)), not sent" in status and "not an HDF5 file" in status
    assert [row.children[0].value for row in form.rows.children] == [0, 0]  # nothing went out, not even the valid
    assert "Nothing was uploaded: 1 of 2 file(s) are not valid MRD (notes.h5)" in form.message.value
    assert form.dataset_ids == [] and dataset_ids(alice) == before


def test_no_choice_or_a_missing_path_gets_a_message(alice, tmp_path):
    form = Upload(alice)
    assert form.upload() == []
    assert "Pick files, or type the path" in form.message.value
    form.path.value = str(tmp_path / "nowhere.h5")
    assert form.upload() == []
    assert "There is no file or folder" in form.message.value and "nowhere.h5" in form.message.value


@pytest.mark.parametrize("token, reason", [("expired", "the token has expired"),
                                          ("not-a-token", "the token is not valid")])
def test_a_refused_token_gets_a_message_and_nothing_is_lost(widget_service, alice, tmp_path, token, reason):
    before = dataset_ids(alice)
    file = scan(tmp_path / "scan.h5", seed=51)
    refused = Client(widget_service.service.url, widget_service.tokens.get(token, token))
    form = Upload(refused)
    assert reason in form.message.value and "Nothing was lost" in form.message.value
    form.files.value = picked(file)

    assert form.upload() == []
    assert reason in form.message.value and "press the button again" in form.message.value
    assert form.results[0]["valid"] and form.dataset_ids == [] and dataset_ids(alice) == before

    form.client = alice  # a new token, same form: the same choices go up
    (dataset_id,) = form.upload()
    assert form.files.value[0]["name"] == "scan.h5" and form.site.value == "siteA"
    assert dataset_ids(alice) == before | {dataset_id}
