"""The TWIX importer against a real Siemens VE11C file (twixtools' GRE example, a phantom on a 2.89 T Skyra)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import twixtools
from twixtools.hdr_def import MultiRaidFileHeader
from twixtools.mdh_def import VB17_header

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.formats.twix import read_twix
from cloudmri_kernel.mrd.header import header_to_xml, schema_errors
from cloudmri_kernel.mrd.reader import MRDFile, has_flag
from cloudmri_kernel.mrd.writer import MRDWriter
from tests.conftest import TWIX_FILE, cpp_recon_summary

needs_twix = pytest.mark.skipif(not TWIX_FILE.exists(), reason="needs ../shared/data/siemens_gre.dat (present in CI)")
TWIX_BYTES = 1_657_344  # the file; its only measurement ends at byte 1_656_864 (then alignment padding)


@pytest.fixture(scope="module")
def content():
    if not TWIX_FILE.exists():
        pytest.skip("needs ../shared/data/siemens_gre.dat (present in CI)")
    return read_twix(TWIX_FILE)


@pytest.fixture(scope="module")
def blocks(content):
    return list(content.blocks)


@pytest.fixture(scope="module")
def headers(blocks):
    return np.concatenate([block.headers for block in blocks])


@pytest.fixture(scope="module")
def vb_file(tmp_path_factory):
    """The same measurement in the VB layout: no measurement directory, one 128-byte MDH per channel."""
    if not TWIX_FILE.exists():
        pytest.skip("needs ../shared/data/siemens_gre.dat (present in CI)")
    scan = twixtools.read_twix(str(TWIX_FILE), verbose=False)[-1]
    out = bytearray(scan["hdr_str"].tobytes())
    for mdb in scan["mdb"]:
        vb = VB17_header()
        for name in ("MeasUID", "ScanCounter", "TimeStamp", "PMUTimeStamp", "EvalInfoMask", "SamplesInScan",
                     "UsedChannels", "Counter", "CutOff", "CenterCol", "ReadOutOffcentre", "TimeSinceLastRF",
                     "CenterLin", "CenterPar", "SliceData"):
            setattr(vb, name, getattr(mdb.mdh, name))
        for channel, samples in enumerate(mdb.data):
            vb.ChannelId = channel
            out += bytes(vb) + samples.tobytes()
    end = VB17_header(EvalInfoMask=1, FlagsAndDMALength=256, SamplesInScan=16, UsedChannels=1)  # ACQEND
    out += bytes(end) + bytes(128)
    path = tmp_path_factory.mktemp("vb") / "meas_vb.dat"
    path.write_bytes(bytes(out))
    return path


@needs_twix
def test_header_carries_the_protocol(content):
    header = content.header
    assert content.source_format == "twix"
    system = header.acquisitionSystemInformation
    assert (system.systemVendor, system.systemModel, system.institutionName) == ("SIEMENS", "Skyra",
                                                                                  "DZNE_Bonn-Venusberg")
    assert system.systemFieldStrength_T == pytest.approx(2.89362)
    assert system.receiverChannels == 2
    assert [(c.coilNumber, c.coilName) for c in system.coilLabel] == [(0, "Body:BC2"), (1, "Body:BC")]
    assert header.experimentalConditions.H1resonanceFrequency_Hz == 123_263_034
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.z) == \
        (320, 160, 1)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y, enc.reconSpace.matrixSize.z) == (160, 160, 1)
    fov = enc.encodedSpace.fieldOfView_mm
    assert (fov.x, fov.y, fov.z) == (400.0, 200.0, 4.0)  # readout FOV doubled by 2x oversampling
    fov = enc.reconSpace.fieldOfView_mm
    assert (fov.x, fov.y, fov.z) == (200.0, 200.0, 4.0)
    step1 = enc.encodingLimits.kspace_encoding_step_1
    assert (step1.minimum, step1.maximum, step1.center) == (0, 159, 80)
    assert enc.encodingLimits.kspace_encoding_step_2.maximum == 0
    assert enc.trajectory.value == "cartesian"
    factor = enc.parallelImaging.accelerationFactor
    assert (factor.kspace_encoding_step_1, factor.kspace_encoding_step_2) == (1, 1)
    sequence = header.sequenceParameters
    assert (sequence.TR, sequence.TE, sequence.TI, sequence.flipAngle_deg) == ([10.0], [3.0], [300.0], [15.0])
    measurement = header.measurementInformation
    assert measurement.protocolName == "gre"
    assert measurement.patientPosition.value == "HFS"
    assert measurement.measurementID == "45385_66327770_66327775_358"
    assert measurement.frameOfReferenceUID == "1.3.12.2.1107.5.2.19.45385.1.20210622151635693.0.0.0"
    # Identifiers are carried over (the scanner already blanked them to x's) so de-identification sees them.
    subject = header.subjectInformation
    assert subject.patientName == "xxxxxxx"
    assert subject.patientID == "x" * 48
    assert (subject.patientGender, subject.patientWeight_kg) == ("O", 100.0)
    assert schema_errors(header_to_xml(header)) == []


@needs_twix
def test_acquisitions_follow_the_measurement_data_headers(blocks, headers):
    assert sum(len(block) for block in blocks) == 160
    assert all(d.shape == (2, 320) and d.dtype == np.complex64 for block in blocks for d in block.data)
    np.testing.assert_array_equal(headers["scan_counter"], np.arange(1, 161))
    np.testing.assert_array_equal(headers["idx"]["kspace_encode_step_1"], np.arange(160))
    assert not headers["idx"]["slice"].any() and not headers["idx"]["kspace_encode_step_2"].any()
    assert set(headers["measurement_uid"]) == {358}
    assert set(headers["center_sample"]) == {160}
    assert set(headers["idx"]["user"][:, 5]) == {80}  # the MDH's k-space centre line, as siemens_to_ismrmrd
    np.testing.assert_allclose(headers["sample_time_us"], 11.6, rtol=1e-6)  # alDwellTime[0] = 11600 ns
    np.testing.assert_array_equal(np.diff(headers["acquisition_time_stamp"].astype(np.int64)) > 0, True)
    assert headers["physiology_time_stamp"][0, 0] == 10_016_447
    flags = headers["flags"]
    np.testing.assert_array_equal(np.flatnonzero(has_flag(flags, "FIRST_IN_SLICE")), [0])
    np.testing.assert_array_equal(np.flatnonzero(has_flag(flags, "LAST_IN_SLICE")), [159])
    np.testing.assert_array_equal(np.flatnonzero(has_flag(flags, "LAST_IN_MEASUREMENT")), [159])
    assert not has_flag(flags, "IS_NOISE_MEASUREMENT").any()
    # The slice lies where the protocol put it, its normal along the slice direction.
    np.testing.assert_allclose(headers["position"][0], (-2.58970, 53.92243, -53.99947), atol=1e-4)
    np.testing.assert_allclose(headers["slice_dir"][0], (6.58e-9, 0.0383878, 0.9992630), atol=1e-6)
    np.testing.assert_allclose(np.cross(headers["phase_dir"][0], headers["read_dir"][0]), headers["slice_dir"][0],
                               atol=1e-6)
    assert headers["patient_table_position"][0, 2] == -1_040_015


@needs_twix
def test_samples_are_twixtools_own_bit_for_bit(blocks):
    reference = [mdb for mdb in twixtools.read_twix(str(TWIX_FILE), verbose=False)[-1]["mdb"]
                 if mdb.is_image_scan()]
    ours = [d for block in blocks for d in block.data]
    assert len(ours) == len(reference) == 160
    for mine, theirs in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(mine.view(np.uint32), np.ascontiguousarray(theirs.data).view(np.uint32))


@needs_twix
def test_blocks_can_be_read_twice(content, blocks):
    again = list(content.blocks)
    assert [len(b) for b in again] == [len(b) for b in blocks]
    np.testing.assert_array_equal(again[-1].data[-1], blocks[-1].data[-1])


@needs_twix
def test_written_mrd_is_valid_and_readable_by_python_and_cpp(content, blocks, tmp_path):
    out = tmp_path / "gre.h5"
    with MRDWriter(out, content.header) as writer:
        for block in blocks:
            writer.append_acquisitions(block.headers, block.data)
    with MRDFile(out) as mrd:
        assert schema_errors(mrd.xml) == []
        assert mrd.number_of_acquisitions == 160
        back = mrd.read_acquisitions()
        assert mrd.header.encoding[0].encodedSpace.matrixSize.x == 320
    np.testing.assert_array_equal(back.stacked(), np.concatenate([block.data for block in blocks]))
    if shutil.which("ismrmrd_recon_cartesian_2d") is None:
        pytest.skip("needs Debian's ismrmrd-tools for the C++ check (present in CI)")
    summary = cpp_recon_summary(out)
    assert summary["Encoding Matrix Size"] == "[320, 160, 1]"
    assert summary["Reconstruction Matrix Size"] == "[160, 160, 1]"
    assert summary["Number of Channels"] == "2"
    assert summary["Number of acquisitions"] == "160"


@needs_twix
def test_vb_layout_gives_the_same_acquisitions(vb_file, content, blocks, headers):
    vb = read_twix(vb_file)
    assert header_to_xml(vb.header) == header_to_xml(content.header)
    vb_blocks = list(vb.blocks)
    vb_headers = np.concatenate([block.headers for block in vb_blocks])
    for field in ("flags", "idx", "scan_counter", "acquisition_time_stamp", "number_of_samples", "active_channels",
                  "center_sample", "sample_time_us", "position", "read_dir", "phase_dir", "slice_dir"):
        np.testing.assert_array_equal(vb_headers[field], headers[field], err_msg=field)
    assert not vb_headers["patient_table_position"].any()  # VB's MDH has no table position
    np.testing.assert_array_equal(np.concatenate([b.data for b in vb_blocks]),
                                  np.concatenate([b.data for b in blocks]))
    # Without a measurement directory, a cut is found by the missing end block or inside the protocol.
    truncated = vb_file.with_name("cut.dat")
    truncated.write_bytes(vb_file.read_bytes()[:830_000])
    with pytest.raises(InvalidDataError, match=r"stops after 8 acquisitions, without its end-of-acquisition"):
        read_twix(truncated)
    truncated.write_bytes(vb_file.read_bytes()[:500_000])
    with pytest.raises(InvalidDataError, match=r"cut short after 500000 of at least 786112 bytes \(inside the "):
        read_twix(truncated)


@needs_twix
def test_measurement_index_counts_from_either_end(content):
    first = read_twix(TWIX_FILE, measurement=0)
    assert first.header.measurementInformation.measurementID == content.header.measurementInformation.measurementID
    assert sum(len(block) for block in first.blocks) == 160
    with pytest.raises(InvalidDataError, match=r"measurement 1 does not exist: the file holds 1 \(give 0 to 0"):
        read_twix(TWIX_FILE, measurement=1)
    with pytest.raises(InvalidDataError, match="measurement -2 does not exist"):
        read_twix(TWIX_FILE, measurement=-2)


@needs_twix
def test_truncated_copy_is_reported_with_its_size(tmp_path):
    truncated = tmp_path / "meas_MID00358_FID117959_gre.dat"
    truncated.write_bytes(TWIX_FILE.read_bytes()[: int(TWIX_BYTES * 0.6)])
    with pytest.raises(InvalidDataError,
                       match=r"cut short after 994406 of 1656864 bytes: copy it again from the scanner"):
        read_twix(truncated)


@needs_twix
def test_truncated_copy_without_a_length_is_found_by_its_missing_end(tmp_path):
    """Single-measurement files may record length 0; then the missing end-of-acquisition block tells."""
    raw = bytearray(TWIX_FILE.read_bytes()[: int(TWIX_BYTES * 0.6)])
    directory = np.frombuffer(bytes(raw[:MultiRaidFileHeader.itemsize]), MultiRaidFileHeader).copy()
    directory[0]["entry"][0]["len_"] = 0
    raw[:MultiRaidFileHeader.itemsize] = directory.tobytes()
    truncated = tmp_path / "no_length.dat"
    truncated.write_bytes(bytes(raw))
    with pytest.raises(InvalidDataError, match=r"cut short after 994406 bytes: measurement 0 stops after 36 "
                                               r"acquisitions, without its end-of-acquisition block \(ACQEND\)"):
        read_twix(truncated)


def test_text_file_renamed_dat_is_not_twix(tmp_path):
    fake = tmp_path / "notes.dat"
    fake.write_text("patient list, not raw data\n" * 20)
    with pytest.raises(InvalidDataError,
                       match=r"is not a Siemens TWIX raw file .*\(first bytes: b'patient list, no'\)"):
        read_twix(fake)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(InvalidDataError, match="not a Siemens TWIX raw file .*: it holds only 0 bytes"):
        read_twix(empty)


def test_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_twix(tmp_path / "absent.dat")
    with pytest.raises(UsageError, match="is a directory"):
        read_twix(tmp_path)
