"""Bulk reading and atomic writing against the C++ reference library and the ismrmrd Python package."""

from __future__ import annotations

import shutil

import h5py
import ismrmrd
import numpy as np
import pytest
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype, image_header_dtype

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.reader import MRDFile, flag_mask, has_flag
from cloudmri_kernel.mrd.writer import MRDWriter
from tests.conftest import GRAPPA_FILE, cpp_recon_summary, needs_shared_data


def test_binary_layout_matches_the_standard():
    assert acquisition_header_dtype.itemsize == 340
    assert image_header_dtype.itemsize == 198
    assert acquisition_header_dtype.fields["idx"][1] == 242  # offset of the encoding counters (packed struct)
    assert acquisition_dtype.names == ("head", "traj", "data")


def test_flags_are_one_based_bits():
    assert flag_mask("IS_NOISE_MEASUREMENT") == np.uint64(1 << 18)
    flags = np.array([1 << 18, 1 << 19, 0], np.uint64)
    assert has_flag(flags, "IS_NOISE_MEASUREMENT").tolist() == [True, False, False]
    assert has_flag(flags, "IS_PARALLEL_CALIBRATION").tolist() == [False, True, False]


def test_bulk_read_equals_the_ismrmrd_package(cpp_phantom):
    reference = ismrmrd.Dataset(str(cpp_phantom), "dataset", create_if_needed=False)
    with MRDFile(cpp_phantom) as mrd:
        block = mrd.read_acquisitions()
        assert len(block) == reference.number_of_acquisitions() == 81
        for i in (0, 1, 40, 80):
            acq = reference.read_acquisition(i)
            np.testing.assert_array_equal(block.data[i], acq.data)
            assert block.headers[i]["idx"]["kspace_encode_step_1"] == acq.idx.kspace_encode_step_1
            assert int(block.headers[i]["flags"]) == acq.flags
    reference.close()


def test_lazy_iteration_yields_every_acquisition_once(cpp_phantom):
    with MRDFile(cpp_phantom) as mrd:
        whole = mrd.read_acquisitions()
        chunks = list(mrd.iter_acquisitions(chunk=10))
    assert [len(c) for c in chunks] == [10] * 8 + [1]
    np.testing.assert_array_equal(np.concatenate([c.stacked() for c in chunks[1:]]), whole.stacked()[10:])
    assert chunks[3].start == 30


def test_written_file_is_read_by_the_cpp_library_and_reconstructs_identically(cpp_phantom, tmp_path):
    ours = tmp_path / "ours.h5"
    with MRDFile(cpp_phantom) as mrd:
        block = mrd.read_acquisitions()
        with MRDWriter(ours, mrd.header) as out:
            out.append_acquisitions(block.headers[:40], block.data[:40])
            out.append_acquisitions(block.headers[40:], block.data[40:])
            out.write_array("phantom", mrd.read_array("phantom")[0])
    reference = tmp_path / "reference.h5"
    shutil.copy(cpp_phantom, reference)
    assert cpp_recon_summary(ours)["Number of acquisitions"] == "81"
    cpp_recon_summary(reference)
    with h5py.File(ours) as a, h5py.File(reference) as b:
        np.testing.assert_array_equal(a["dataset/cpp/data"][()], b["dataset/cpp/data"][()])
    with MRDFile(ours) as mrd:
        np.testing.assert_array_equal(mrd.read_array("phantom"), MRDFile(cpp_phantom).read_array("phantom"))
    python_reader = ismrmrd.Dataset(str(ours), "dataset", create_if_needed=False)
    np.testing.assert_array_equal(python_reader.read_acquisition(7).data, block.data[7])
    python_reader.close()


def test_writer_leaves_nothing_when_it_fails(cpp_phantom, tmp_path):
    target = tmp_path / "out.h5"
    with MRDFile(cpp_phantom) as mrd:
        block = mrd.read_acquisitions()
        with pytest.raises(ValueError, match="samples shaped"), MRDWriter(target, mrd.header) as out:
            out.append_acquisitions(block.headers[:2], [block.data[0][:, :5], block.data[1]])
    assert list(tmp_path.iterdir()) == []


def test_writer_keeps_the_old_file_when_it_fails(cpp_phantom, tmp_path):
    target = tmp_path / "out.h5"
    target.write_bytes(b"previous version")
    with MRDFile(cpp_phantom) as mrd, pytest.raises(RuntimeError), MRDWriter(target, mrd.header):
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_non_ascii_header_text_survives(cpp_phantom, tmp_path):
    with MRDFile(cpp_phantom) as mrd:
        header = mrd.header
    header.acquisitionSystemInformation.institutionName = "Universitätsklinikum Zürich"
    with MRDWriter(tmp_path / "u.h5", header):
        pass
    assert MRDFile(tmp_path / "u.h5").header.acquisitionSystemInformation.institutionName == \
        "Universitätsklinikum Zürich"


@needs_shared_data
def test_real_siemens_file_reads_in_bulk():
    with MRDFile(GRAPPA_FILE) as mrd:
        block = mrd.read_acquisitions()
        assert mrd.number_of_acquisitions == 69
        assert block.stacked().shape == (69, 14, 384)
        assert mrd.header.acquisitionSystemInformation.systemVendor == "SIEMENS"
    reference = ismrmrd.Dataset(str(GRAPPA_FILE), "dataset", create_if_needed=False)
    np.testing.assert_array_equal(block.data[68], reference.read_acquisition(68).data)
    reference.close()


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        MRDFile(tmp_path / "absent.h5")
    with pytest.raises(UsageError, match="is a directory"):
        MRDFile(tmp_path)


def test_not_hdf5_and_truncated_files_are_invalid(cpp_phantom, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not a raw file")
    with pytest.raises(InvalidDataError, match="not an HDF5 file"):
        MRDFile(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(cpp_phantom.read_bytes()[: cpp_phantom.stat().st_size // 2])
    with pytest.raises(InvalidDataError, match="truncated or damaged HDF5"):
        MRDFile(truncated)


def test_hdf5_without_mrd_group_is_invalid(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images"] = np.zeros(3)
    with pytest.raises(InvalidDataError, match=r"no MRD group '/dataset/xml' \(top-level groups: images\)"):
        MRDFile(other)


def test_sample_count_disagreeing_with_header_is_reported(cpp_phantom, tmp_path):
    broken = tmp_path / "broken.h5"
    shutil.copy(cpp_phantom, broken)
    with h5py.File(broken, "r+") as f:
        record = f["dataset/data"][5]
        record["head"]["number_of_samples"] = 100
        f["dataset/data"][5] = record
    with MRDFile(broken) as mrd, pytest.raises(InvalidDataError, match="acquisition 5 holds 512 complex samples"):
        mrd.read_acquisitions()
