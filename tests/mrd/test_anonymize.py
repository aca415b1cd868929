"""De-identification: keyed pseudonyms per site, policies, key handling, bit-exact samples."""

from __future__ import annotations

import os
import shutil

import h5py
import ismrmrd.xsd as xsd
import numpy as np
import pytest
from xsdata.models.datatype import XmlDate

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.anonymize import AnonymizationPolicy, anonymize_file, load_site_key, looks_like_identifier
from cloudmri_kernel.mrd.header import header_to_xml, parse_header
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.validate import validate_file


def with_patient(cpp_phantom, path, name="Doe^Jane", patient_id="MRN-0012345"):
    """The reference dataset with realistic identifiers added to its header."""
    header = parse_header(MRDFile(cpp_phantom).xml)
    header.subjectInformation = xsd.subjectInformationType(
        patientName=name, patientID=patient_id, patientBirthdate=XmlDate(1961, 7, 14), patientGender="F",
        patientWeight_kg=64.0)
    header.studyInformation = xsd.studyInformationType(
        studyDate=XmlDate(2024, 3, 5), studyID="ST1234", accessionNumber=778899, referringPhysicianName="Dr^Who",
        studyInstanceUID="1.2.840.113619.2.55.3.1234", studyDescription=f"follow-up {name}")
    header.measurementInformation = xsd.measurementInformationType(
        measurementID="45387_1079885_1079904_349", patientPosition=xsd.patientPositionType.HFS,
        protocolName="t1_mprage", frameOfReferenceUID="1.3.12.2.1107.5.2.19.45387.1",
        measurementDependency=[xsd.measurementDependencyType(dependencyType="Noise",
                                                             measurementID="45387_1079885_1079904_343")])
    header.acquisitionSystemInformation.deviceSerialNumber = "45387"
    header.acquisitionSystemInformation.stationName = "MRC45387"
    header.userParameters = xsd.userParametersType(userParameterString=[
        xsd.userParameterStringType(name="operator", value="Smith^John"),
        xsd.userParameterStringType(name="coilPreset", value="HeadNeck_20"),
        xsd.userParameterStringType(name="note", value=f"patient {patient_id} scanned"),
    ], userParameterBase64=[xsd.userParameterBase64Type(name="blob", value=b"secret")])
    shutil.copy(cpp_phantom, path)
    with h5py.File(path, "r+") as f:
        del f["dataset/xml"]
        f["dataset"].create_dataset("xml", (1,), dtype=h5py.string_dtype("ascii"))
        f["dataset/xml"][0] = header_to_xml(header).encode()
    return path


def test_identifiers_are_removed_or_pseudonymized(cpp_phantom, tmp_path):
    source = with_patient(cpp_phantom, tmp_path / "in.h5")
    report = anonymize_file(source, tmp_path / "out.h5", site="hospital-a")
    out = MRDFile(tmp_path / "out.h5").header
    text = MRDFile(tmp_path / "out.h5").xml.decode()
    for secret in ("Doe", "Jane", "0012345", "1961-07-14", "Dr^Who", "45387", "113619", "Smith", "c2VjcmV0",
                   "ISM Synthetic", "778899", "ST1234"):
        assert secret not in text, secret
    subject = out.subjectInformation
    assert subject.patientName is None
    assert subject.patientID.startswith("P-") and len(subject.patientID) == 22
    assert subject.patientBirthdate == XmlDate(1961, 1, 1)
    assert subject.patientGender == "F" and subject.patientWeight_kg == 64.0
    assert out.studyInformation.studyInstanceUID.startswith("2.25.")
    assert out.studyInformation.studyDescription is None
    assert out.studyInformation.referringPhysicianName is None
    assert out.acquisitionSystemInformation.institutionName is None
    assert [p.name for p in out.userParameters.userParameterString] == ["coilPreset"]
    assert out.userParameters.userParameterBase64 == []
    assert report.actions["patientID"] == "pseudonymize"
    assert report.actions["userParameters"] == "removed 3 free-text parameter(s)"
    assert validate_file(tmp_path / "out.h5") == []


def test_raw_data_is_copied_bit_for_bit(cpp_phantom, tmp_path):
    source = with_patient(cpp_phantom, tmp_path / "in.h5")
    anonymize_file(source, tmp_path / "out.h5", site="a")
    with h5py.File(source) as a, h5py.File(tmp_path / "out.h5") as b:
        assert a["dataset/data"].fields("head")[()].tobytes() == b["dataset/data"].fields("head")[()].tobytes()
        for name in ("phantom", "csm", "coil_images"):
            np.testing.assert_array_equal(a[f"dataset/{name}"][()], b[f"dataset/{name}"][()])
    first = MRDFile(source).read_acquisitions()
    second = MRDFile(tmp_path / "out.h5").read_acquisitions()
    assert len(first) == len(second) == 81
    pairs = zip(first.data, second.data, strict=True)
    assert all(np.array_equal(x.view(np.uint32), y.view(np.uint32)) for x, y in pairs)


def test_pseudonyms_link_within_a_site_and_not_across(cpp_phantom, tmp_path):
    source = with_patient(cpp_phantom, tmp_path / "in.h5")
    ids = {}
    for run, site in (("a1", "a"), ("a2", "a"), ("b", "b")):
        anonymize_file(source, tmp_path / f"{run}.h5", site=site)
        header = MRDFile(tmp_path / f"{run}.h5").header
        ids[run] = (header.subjectInformation.patientID, header.measurementInformation.measurementID,
                    header.measurementInformation.measurementDependency[0].measurementID)
    assert ids["a1"] == ids["a2"]
    assert not set(ids["a1"]) & set(ids["b"])
    other = with_patient(cpp_phantom, tmp_path / "other.h5", name="Roe^Rick", patient_id="MRN-999")
    anonymize_file(other, tmp_path / "o.h5", site="a")
    assert MRDFile(tmp_path / "o.h5").header.subjectInformation.patientID != ids["a1"][0]


def test_policy_file_changes_what_is_kept(cpp_phantom, tmp_path):
    source = with_patient(cpp_phantom, tmp_path / "in.h5")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("patient_id: remove\nbirthdate: remove\nsex: remove\ninstitution: keep\n"
                           "keep_user_parameters: [operator]\n")
    anonymize_file(source, tmp_path / "out.h5", site="a", policy=AnonymizationPolicy.from_file(policy_file))
    out = MRDFile(tmp_path / "out.h5").header
    assert out.subjectInformation.patientID is None
    assert out.subjectInformation.patientBirthdate is None and out.subjectInformation.patientGender is None
    assert out.acquisitionSystemInformation.institutionName == "ISMRM Synthetic Imaging Lab"
    assert [p.name for p in out.userParameters.userParameterString] == ["operator", "coilPreset"]


@pytest.mark.parametrize("content, message", [
    ("patient_idd: remove\n", "patient_idd: Extra inputs are not permitted"),
    ("birthdate: blur\n", "birthdate: Input should be 'remove', 'year' or 'keep'"),
    ("[unclosed\n", "not valid YAML"),
])
def test_bad_policy_files(tmp_path, content, message):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(content)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        AnonymizationPolicy.from_file(policy_file)


def test_site_key_is_private_and_refused_when_readable(tmp_path):
    key = load_site_key("north")
    assert len(key) == 32 and load_site_key("north") == key
    path = tmp_path / "state" / "keys" / "north.key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="readable by others"):
        load_site_key("north")
    with pytest.raises(UsageError, match="site name"):
        load_site_key("../etc")


def test_output_must_not_overwrite_input(cpp_phantom, tmp_path):
    source = with_patient(cpp_phantom, tmp_path / "in.h5")
    before = source.read_bytes()
    with pytest.raises(UsageError, match="originals are never modified"):
        anonymize_file(source, source, site="a")
    assert source.read_bytes() == before


def test_identifier_heuristics():
    assert looks_like_identifier("Doe^Jane", [])
    assert looks_like_identifier("scanned 2024-03-05", [])
    assert looks_like_identifier("id 1234567", [])
    assert looks_like_identifier("contact x@y.org", [])
    assert looks_like_identifier("for jane doe", ["Jane Doe"])
    assert not looks_like_identifier("HeadNeck_20", [])
