"""Reading MRD (ISMRMRD v1 HDF5) files in bulk, without one Python object per acquisition.

The ``ismrmrd`` package reads one acquisition at a time (ismrmrd-python issue #65), which dominates the
time for large files. Here the acquisition headers are read as one structured NumPy array and the samples
in chunks of many acquisitions, so the cost is bound by HDF5's own vlen reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import ismrmrd.constants
import numpy as np
from ismrmrd.hdf5 import acquisition_header_dtype

from cloudmri_kernel.config import settings
from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.header import Header, parse_header

#: MRD acquisition flag bit numbers (1-based, as in the standard) by name, e.g. ``"IS_NOISE_MEASUREMENT"``.
ACQ_FLAGS: dict[str, int] = {
    name.removeprefix("ACQ_"): getattr(ismrmrd.constants, name)
    for name in dir(ismrmrd.constants)
    if name.startswith("ACQ_") and isinstance(getattr(ismrmrd.constants, name), int)
}


def flag_mask(*names: str) -> np.uint64:
    """Bit mask with the named MRD flags set, e.g. ``flag_mask("IS_NOISE_MEASUREMENT")``."""
    mask = 0
    for name in names:
        mask |= 1 << (ACQ_FLAGS[name] - 1)
    return np.uint64(mask)


def has_flag(flags: np.ndarray, name: str) -> np.ndarray:
    """Boolean array: which entries of a flags array carry the named flag."""
    return (np.asarray(flags, dtype=np.uint64) & flag_mask(name)) != 0


@dataclass
class AcquisitionBlock:
    """Consecutive acquisitions: headers as one structured array, samples and trajectories per acquisition."""

    start: int
    headers: np.ndarray  # acquisition_header_dtype, shape (n,)
    data: list[np.ndarray]  # complex64, (active_channels, number_of_samples) each
    traj: list[np.ndarray]  # float32, (number_of_samples, trajectory_dimensions) each; empty when Cartesian

    def __len__(self) -> int:
        return len(self.headers)

    def stacked(self) -> np.ndarray:
        """All samples as one (n, channels, samples) array; requires equal sizes."""
        if not self.data:
            return np.zeros((0, 0, 0), np.complex64)
        shapes = {d.shape for d in self.data}
        if len(shapes) > 1:
            raise InvalidDataError(f"acquisitions have different sizes {sorted(shapes)}; read them one by one")
        return np.stack(self.data)


class MRDFile:
    """An MRD file opened for reading.

    Example:
        >>> with MRDFile("raw.h5") as mrd:  # doctest: +SKIP
        ...     print(mrd.header.encoding[0].encodedSpace.matrixSize.x, mrd.number_of_acquisitions)
    """

    def __init__(self, path: str | Path, dataset: str = "dataset"):
        self.path = Path(path)
        if not self.path.exists():
            raise UsageError("no such file: check the path", self.path)
        if self.path.is_dir():
            raise UsageError("is a directory, not an MRD file", self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            reason = "truncated or damaged HDF5" if h5py.is_hdf5(self.path) else "not an HDF5 file"
            raise InvalidDataError(
                f"cannot be opened as MRD: {reason} ({str(exc).split('(')[0].strip()}); "
                "re-export it from the scanner or run `cloudmri ingest` on the original",
                self.path,
            ) from None
        if dataset not in self._file or "xml" not in self._file[dataset]:
            groups = ", ".join(sorted(self._file.keys())) or "none"
            self._file.close()
            raise InvalidDataError(
                f"no MRD group '/{dataset}/xml' (top-level groups: {groups}): is this an MRD file? "
                "`cloudmri ingest` converts fastMRI, TWIX and NumPy k-space",
                self.path,
            )
        self.dataset_name = dataset
        self._group = self._file[dataset]
        self._header: Header | None = None

    def __enter__(self) -> MRDFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def xml(self) -> bytes:
        try:
            raw = self._group["xml"][0]
        except (OSError, ValueError, IndexError) as exc:
            raise InvalidDataError(f"the XML header cannot be read ({exc})", self.path) from None
        return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")

    @property
    def header(self) -> Header:
        if self._header is None:
            self._header = parse_header(self.xml, self.path)
        return self._header

    @property
    def _acquisitions(self) -> h5py.Dataset | None:
        return self._group.get("data")

    @property
    def number_of_acquisitions(self) -> int:
        ds = self._acquisitions
        return 0 if ds is None else int(ds.shape[0])

    def _records(self, start: int, stop: int) -> np.ndarray:
        """Whole acquisition records (header and samples) in one HDF5 read.

        Reading whole records is several times faster than selecting fields: HDF5 reads the records' variable
        length parts either way when a field is selected out of the compound type.
        """
        try:
            return self._acquisitions[start:stop]
        except (OSError, ValueError, TypeError) as exc:
            raise InvalidDataError(
                f"acquisitions {start}-{stop} cannot be read ({exc}): the file is damaged", self.path
            ) from None

    def _chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first index, records) for consecutive chunks of about ``read_chunk_mb`` MiB."""
        total = self.number_of_acquisitions
        stop = total if stop is None else min(stop, total)
        if start >= stop:
            return
        step = self.chunk_size(np.asarray(self._records(start, start + 1)["head"], acquisition_header_dtype))
        for begin in range(start, stop, step):
            yield begin, self._records(begin, min(stop, begin + step))

    def acquisition_headers(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Acquisition headers in ``[start, stop)`` as one structured array, read chunk by chunk."""
        if self._acquisitions is None:
            return np.zeros(0, acquisition_header_dtype)
        parts = [np.asarray(records["head"], acquisition_header_dtype) for _, records in self._chunks(start, stop)]
        return np.concatenate(parts) if parts else np.zeros(0, acquisition_header_dtype)

    def stored_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Number of float32 values stored per acquisition for samples and for trajectory."""
        data_sizes, traj_sizes = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        if self._acquisitions is not None:
            for _, records in self._chunks():
                data_sizes.append(np.fromiter((a.size for a in records["data"]), np.int64, len(records)))
                traj_sizes.append(np.fromiter((a.size for a in records["traj"]), np.int64, len(records)))
        return np.concatenate(data_sizes), np.concatenate(traj_sizes)

    def read_acquisitions(self, start: int = 0, stop: int | None = None) -> AcquisitionBlock:
        """Acquisitions ``[start, stop)`` with samples shaped (channels, samples); checks every size."""
        ds = self._acquisitions
        if ds is None:
            return AcquisitionBlock(0, np.zeros(0, acquisition_header_dtype), [], [])
        stop = ds.shape[0] if stop is None else min(stop, ds.shape[0])
        return self._block(start, self._records(start, stop))

    def _block(self, start: int, records: np.ndarray) -> AcquisitionBlock:
        headers = np.asarray(records["head"], acquisition_header_dtype)
        data, traj = [], []
        for i, (head, samples, coords) in enumerate(zip(headers, records["data"], records["traj"], strict=True)):
            channels, n = int(head["active_channels"]), int(head["number_of_samples"])
            if samples.size != 2 * channels * n:
                raise InvalidDataError(
                    f"acquisition {start + i} holds {samples.size // 2} complex samples but its header says "
                    f"{channels} channels x {n} samples: the file is damaged",
                    self.path,
                )
            dims = int(head["trajectory_dimensions"])
            if coords.size != dims * n:
                raise InvalidDataError(
                    f"acquisition {start + i} holds {coords.size} trajectory values but its header says "
                    f"{n} samples x {dims} dimensions: the file is damaged",
                    self.path,
                )
            data.append(samples.view(np.complex64).reshape(channels, n))
            traj.append(coords.reshape(n, dims))
        return AcquisitionBlock(start, headers, data, traj)

    def chunk_size(self, headers: np.ndarray) -> int:
        """How many acquisitions fit in the configured read chunk (at least one)."""
        if len(headers) == 0:
            return 1
        per_acq = 8 * int(headers["active_channels"].max()) * int(headers["number_of_samples"].max()) or 1
        return max(1, settings().read_chunk_mb * 2**20 // per_acq)

    def iter_acquisitions(self, chunk: int | None = None) -> Iterator[AcquisitionBlock]:
        """Lazily yield blocks of acquisitions (default: about ``read_chunk_mb`` MiB each), so files larger
        than memory can be streamed."""
        if chunk is None:
            for start, records in self._chunks():
                yield self._block(start, records)
            return
        for start in range(0, self.number_of_acquisitions, chunk):
            yield self.read_acquisitions(start, start + chunk)

    def copy_to(self, group: h5py.Group, skip: tuple[str, ...] = ("xml",)) -> None:
        """Copy this file's datasets and groups (bit for bit, by HDF5) into another file's group."""
        for name, item in self._group.items():
            if name not in skip:
                self._group.copy(item, group, name=name)

    @property
    def array_names(self) -> list[str]:
        """Names of NDArrays and image series stored beside the raw data (e.g. ``phantom``, ``csm``)."""
        return sorted(k for k in self._group if k not in ("xml", "data", "waveforms"))

    def read_array(self, name: str) -> np.ndarray:
        """An NDArray in the layout of the C++ library (first axis: array number); complex if stored so."""
        if name not in self._group or not isinstance(self._group[name], h5py.Dataset):
            raise UsageError(f"no array '{name}' in the file (arrays: {', '.join(self.array_names) or 'none'})",
                             self.path)
        values = self._group[name][()]
        if values.dtype.names == ("real", "imag"):
            values = values["real"] + 1j * values["imag"]
        return values

    def read_images(self, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """An MRD image series: (image headers, data of shape (n, channels, z, y, x), attribute strings)."""
        group = self._group.get(name)
        if not isinstance(group, h5py.Group) or "header" not in group:
            raise UsageError(f"no image series '{name}' in the file", self.path)
        data = group["data"][()]
        if data.dtype.names == ("real", "imag"):
            data = data["real"] + 1j * data["imag"]
        attributes = [a.decode() if isinstance(a, bytes) else str(a) for a in group["attributes"][()]]
        return group["header"][()], data, attributes
