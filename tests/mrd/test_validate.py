"""`validate_file` on valid files and on each kind of damage the issue names, plus property-based fuzzing."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmri_kernel.errors import CloudMRIError
from cloudmri_kernel.mrd.header import header_to_xml, parse_header
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.validate import validate_file
from tests.conftest import GRAPPA_FILE, needs_shared_data


def errors(path) -> list[str]:
    return [f.message for f in validate_file(path) if f.severity == "error"]


def copy_with(source: Path, target: Path, edit) -> Path:
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        edit(f["dataset"])
    return target


def set_xml(group, text: str) -> None:
    del group["xml"]
    group.create_dataset("xml", (1,), dtype=h5py.string_dtype("ascii"))
    group["xml"][0] = text.encode()


def edit_record(group, index: int, **fields) -> None:
    record = group["data"][index]
    for name, value in fields.items():
        if name in record["head"].dtype.names:
            record["head"][name] = value
        else:
            record["head"]["idx"][name] = value
    group["data"][index] = record


def test_reference_files_are_valid(cpp_phantom):
    assert validate_file(cpp_phantom) == []


@needs_shared_data
def test_real_siemens_file_is_valid():
    assert validate_file(GRAPPA_FILE) == []


def test_header_failing_the_schema(cpp_phantom, tmp_path):
    xml = MRDFile(cpp_phantom).xml.decode().replace("<trajectory>cartesian</trajectory>",
                                                     "<trajectory>zigzag</trajectory>")
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: set_xml(g, xml))
    found = errors(bad)
    assert len(found) == 1 and "zigzag" in found[0] and "header line" in found[0]


def test_header_that_is_not_xml(cpp_phantom, tmp_path):
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: set_xml(g, "hello <world"))
    assert errors(bad)[0].startswith("header is not well-formed XML")


def test_acquisition_sizes_disagreeing_with_header(cpp_phantom, tmp_path):
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: edit_record(g, 3, number_of_samples=64))
    assert errors(bad) == ["1 acquisitions store a number of samples other than their header's channels x samples "
                           "(acquisitions 3)"]


def test_channel_count_disagreeing_with_header(cpp_phantom, tmp_path):
    header = parse_header(MRDFile(cpp_phantom).xml)
    header.acquisitionSystemInformation.receiverChannels = 8
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: set_xml(g, header_to_xml(header)))
    assert "have a channel count other than the header's receiverChannels=8" in errors(bad)[0]


def test_encoding_counter_beyond_limits(cpp_phantom, tmp_path):
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: edit_record(g, 10, kspace_encode_step_1=90))
    assert errors(bad) == ["counter 'kspace_encode_step_1' outside the header's limits [0, 63] in acquisitions 10"]


def test_too_many_samples_for_the_encoded_matrix(cpp_phantom, tmp_path):
    header = parse_header(MRDFile(cpp_phantom).xml)
    header.encoding[0].encodedSpace.matrixSize.x = 100
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: set_xml(g, header_to_xml(header)))
    assert "have more samples than the encoded matrix x=100" in errors(bad)[0]


def test_non_cartesian_without_trajectory(cpp_phantom, tmp_path):
    header = parse_header(MRDFile(cpp_phantom).xml)
    header.encoding[0].trajectory = type(header.encoding[0].trajectory)("radial")
    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", lambda g: set_xml(g, header_to_xml(header)))
    assert "radial trajectory, but acquisitions" in errors(bad)[0]


def test_truncated_and_foreign_files(cpp_phantom, tmp_path):
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(cpp_phantom.read_bytes()[:5000])
    assert "truncated or damaged HDF5" in errors(truncated)[0]
    text = tmp_path / "text.h5"
    text.write_text("<ismrmrdHeader/>")
    assert "not an HDF5 file" in errors(text)[0]


FIELDS = ["number_of_samples", "active_channels", "trajectory_dimensions", "kspace_encode_step_1", "slice",
          "repetition", "encoding_space_ref", "center_sample", "version"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.integers(0, 80), st.sampled_from(FIELDS), st.integers(0, 65535)),
                        min_size=1, max_size=4))
def test_corrupted_acquisition_headers_never_crash_the_reader(cpp_phantom, tmp_path_factory, changes):
    path = tmp_path_factory.mktemp("fuzz") / "f.h5"

    def corrupt(group):
        for index, name, value in changes:
            edit_record(group, index, **{name: value})

    copy_with(cpp_phantom, path, corrupt)
    findings = validate_file(path)
    assert all(f.severity in ("error", "warning") and f.message for f in findings)
    try:
        with MRDFile(path) as mrd:
            mrd.read_acquisitions()
    except CloudMRIError:
        assert any(f.severity == "error" for f in findings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 2000), junk=st.binary(min_size=0, max_size=40))
def test_corrupted_header_text_never_crashes(cpp_phantom, tmp_path_factory, cut, junk):
    xml = MRDFile(cpp_phantom).xml
    junk = junk.replace(b"\x00", b"")  # HDF5 strings cannot hold NUL
    damaged = (xml[:cut] + junk + xml[cut + len(junk):]).decode("ascii", errors="ignore")
    path = copy_with(cpp_phantom, tmp_path_factory.mktemp("fuzz") / "h.h5", lambda g: set_xml(g, damaged))
    valid = not any(f.severity == "error" for f in validate_file(path))
    try:
        MRDFile(path).header  # noqa: B018
        parsed = True
    except CloudMRIError as exc:
        assert str(exc).startswith(str(path))
        parsed = False
    assert parsed or not valid, "validate passed a header that the reader cannot parse"


@pytest.mark.parametrize("value", [np.zeros(3), "plain text"])
def test_xml_dataset_of_the_wrong_kind(cpp_phantom, tmp_path, value):
    def replace(group):
        del group["xml"]
        group["xml"] = value

    bad = copy_with(cpp_phantom, tmp_path / "bad.h5", replace)
    assert errors(bad)
