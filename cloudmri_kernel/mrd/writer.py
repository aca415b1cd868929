"""Writing MRD (ISMRMRD v1 HDF5) files atomically, in the layout the C++ reference library reads.

A file is written under a temporary name in the target directory, flushed with fsync, and renamed over the
target only when the ``with`` block ends without error: a crash or a bad input leaves either the old file
or none, never half a file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype, image_header_dtype

from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.header import Header, header_to_xml

_COMPLEX64 = np.dtype([("real", "<f4"), ("imag", "<f4")])
_COMPLEX128 = np.dtype([("real", "<f8"), ("imag", "<f8")])


def _as_storable(values: np.ndarray) -> np.ndarray:
    """Complex arrays become the (real, imag) compound the C++ library uses."""
    if np.iscomplexobj(values):
        compound = _COMPLEX128 if values.dtype == np.complex128 else _COMPLEX64
        out = np.empty(values.shape, compound)
        out["real"], out["imag"] = values.real, values.imag
        return out
    return values


def write_header_dataset(group: h5py.Group, header: Header | str) -> None:
    """Store the XML header as the C++ library expects: one ASCII variable-length string.

    XML character references keep non-ASCII text (e.g. a coil name with an umlaut) intact.
    """
    xml = header if isinstance(header, str) else header_to_xml(header)
    group.create_dataset("xml", (1,), dtype=h5py.string_dtype("ascii"))
    group["xml"][0] = xml.encode("ascii", errors="xmlcharrefreplace")


def copy_with_header(source, path: str | Path, header: Header) -> None:
    """Write the open MRD file ``source`` to ``path`` with a new XML header; everything else (acquisitions,
    arrays, images) is copied bit for bit by HDF5. Not atomic by itself: give it an :class:`AtomicOutput`'s
    temporary path."""
    with h5py.File(path, "w") as out:
        group = out.create_group(source.dataset_name)
        source.copy_to(group, skip=("xml",))
        write_header_dataset(group, header)


class AtomicOutput:
    """A temporary path beside ``target`` that replaces it on :meth:`commit` and vanishes on :meth:`discard`."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        if self.target.is_dir():
            raise UsageError("is a directory: give a file name for the output", self.target)
        if not self.target.parent.is_dir():
            raise UsageError("the output's directory does not exist", self.target)
        self.temporary = self.target.with_name(f".{self.target.name}.{os.getpid()}.partial")

    def commit(self) -> None:
        with open(self.temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temporary, self.target)
        directory = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


class MRDWriter:
    """Write an MRD file: header, acquisitions (in bulk), NDArrays and image series.

    Example:
        >>> with MRDWriter("out.h5", header) as out:  # doctest: +SKIP
        ...     out.append_acquisitions(headers, samples)
        ...     out.write_array("phantom", ground_truth)
    """

    def __init__(self, path: str | Path, header: Header | str, dataset: str = "dataset"):
        self._output = AtomicOutput(path)
        self.path = self._output.target
        self._file = h5py.File(self._output.temporary, "w")
        self._group = self._file.create_group(dataset)
        write_header_dataset(self._group, header)

    def __enter__(self) -> MRDWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None:
            self._output.commit()
        else:
            self._output.discard()

    def append_acquisitions(
        self,
        headers: np.ndarray,
        data: Sequence[np.ndarray] | np.ndarray,
        traj: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> None:
        """Append acquisitions in one HDF5 write.

        Args:
            headers: structured array of ``ismrmrd.hdf5.acquisition_header_dtype``, shape (n,).
            data: n complex arrays of shape (channels, samples), or one (n, channels, samples) array.
            traj: n float arrays of shape (samples, dims), or None for Cartesian data.
        """
        headers = np.asarray(headers, dtype=acquisition_header_dtype)
        n = len(headers)
        if len(data) != n or (traj is not None and len(traj) != n):
            raise ValueError(f"{n} headers but {len(data)} sample arrays")
        records = np.empty(n, dtype=acquisition_dtype)
        records["head"] = headers
        samples = np.empty(n, dtype=object)
        coords = np.empty(n, dtype=object)
        for i in range(n):
            block = np.ascontiguousarray(data[i], dtype=np.complex64)
            channels, count = int(headers[i]["active_channels"]), int(headers[i]["number_of_samples"])
            if block.shape != (channels, count):
                raise ValueError(f"acquisition {i}: samples shaped {block.shape}, header says {(channels, count)}")
            samples[i] = block.view(np.float32).ravel()
            dims = int(headers[i]["trajectory_dimensions"])
            path = np.zeros((count, dims), np.float32) if traj is None else np.asarray(traj[i], np.float32)
            if path.shape != (count, dims):
                raise ValueError(f"acquisition {i}: trajectory shaped {path.shape}, header says {(count, dims)}")
            coords[i] = np.ascontiguousarray(path).ravel()
        records["data"] = samples
        records["traj"] = coords
        if "data" not in self._group:
            self._group.create_dataset("data", (0,), maxshape=(None,), dtype=acquisition_dtype,
                                       chunks=(max(1, min(n, 1024)),))
        dataset = self._group["data"]
        first = dataset.shape[0]
        dataset.resize(first + n, axis=0)
        dataset[first:first + n] = records

    def write_array(self, name: str, values: np.ndarray) -> None:
        """Store an NDArray as the C++ library does: one array along a leading, extendable axis."""
        stored = _as_storable(np.asarray(values))[np.newaxis]
        self._group.create_dataset(name, data=stored, maxshape=(None, *stored.shape[1:]))

    def write_images(self, name: str, headers: np.ndarray, data: np.ndarray,
                     attributes: Sequence[str] | None = None) -> None:
        """Store an image series: headers (n,), data (n, channels, z, y, x) and XML attribute strings."""
        headers = np.asarray(headers, dtype=image_header_dtype)
        data = np.asarray(data)
        if data.ndim != 5 or data.shape[0] != len(headers):
            raise ValueError(f"image data must be (n, channels, z, y, x) with n={len(headers)}, got {data.shape}")
        group = self._group.create_group(name)
        group.create_dataset("header", data=headers, maxshape=(None,))
        strings = list(attributes) if attributes is not None else [""] * len(headers)
        group.create_dataset("attributes", data=np.array(strings, dtype=object),
                             dtype=h5py.string_dtype("utf-8"), maxshape=(None,))
        group.create_dataset("data", data=_as_storable(data), maxshape=(None, *data.shape[1:]))
