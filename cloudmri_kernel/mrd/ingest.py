"""``cloudmri ingest``: any supported raw format in, one valid (optionally de-identified) MRD file out.

Formats are recognised by content, not only by suffix: Siemens TWIX (``.dat``), fastMRI HDF5 (``kspace`` +
``ismrmrd_header``), NumPy k-space with a geometry sidecar (``.npy``/``.npz``), and MRD itself. The output is
written under a temporary name, validated, and renamed into place only when valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import ismrmrd.xsd as xsd

from cloudmri_kernel.config import settings
from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.anonymize import (
    AnonymizationPolicy,
    AnonymizationReport,
    Pseudonymizer,
    anonymize_header,
    load_site_key,
)
from cloudmri_kernel.mrd.formats import RawContent
from cloudmri_kernel.mrd.header import Header, header_to_xml, schema_errors
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.validate import validate_file
from cloudmri_kernel.mrd.writer import AtomicOutput, MRDWriter, copy_with_header

FORMATS = ("mrd", "fastmri", "twix", "numpy")


@dataclass
class IngestResult:
    output: Path
    source_format: str
    acquisitions: int
    anonymization: AnonymizationReport | None = None
    warnings: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """Which importer reads this file; raises UsageError for unknown kinds."""
    if not path.exists():
        raise UsageError("no such file: check the path", path)
    if path.is_dir():
        raise UsageError("is a directory: give one raw file", path)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return "numpy"
    if suffix == ".dat":
        return "twix"
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                if "kspace" in f and "ismrmrd_header" in f:
                    return "fastmri"
                return "mrd"
        except OSError:
            raise InvalidDataError("truncated or damaged HDF5 file: copy it again from its source", path) from None
    raise UsageError(
        f"unknown raw-data format (suffix '{suffix or 'none'}'): supported are MRD/fastMRI .h5, Siemens TWIX .dat "
        "and NumPy .npy/.npz with a sidecar", path)


def read_content(path: Path, source_format: str, sidecar: Path | None = None) -> RawContent:
    if source_format == "twix":
        from cloudmri_kernel.mrd.formats.twix import read_twix
        return read_twix(path)
    if source_format == "fastmri":
        from cloudmri_kernel.mrd.formats.fastmri import read_fastmri
        return read_fastmri(path)
    if source_format == "numpy":
        from cloudmri_kernel.mrd.formats.numpy_kspace import read_numpy
        return read_numpy(path, sidecar)
    raise UsageError(f"unknown format '{source_format}' (choose from {', '.join(FORMATS)})")


def _stamp_provenance(header: Header, site: str, source_format: str) -> None:
    """Record where the file came from in user parameters (no identifiers)."""
    user = header.userParameters or xsd.userParametersType()
    user.userParameterString = [p for p in user.userParameterString
                                if p.name not in ("cloudmri.site", "cloudmri.source_format")]
    user.userParameterString += [xsd.userParameterStringType(name="cloudmri.site", value=site),
                                 xsd.userParameterStringType(name="cloudmri.source_format", value=source_format)]
    header.userParameters = user


def ingest(
    source: str | Path,
    output: str | Path,
    *,
    anonymize: bool = False,
    site: str | None = None,
    policy: AnonymizationPolicy | None = None,
    sidecar: str | Path | None = None,
    source_format: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Convert ``source`` to a valid MRD file at ``output``; nothing is written unless it is valid.

    Args:
        anonymize: de-identify the header with the site's keyed pseudonyms (see :mod:`.anonymize`).
        site: the site whose key pseudonymizes; default the configured site.
        policy: what de-identification does with each identifier; default :class:`AnonymizationPolicy`.
        sidecar: geometry file for NumPy input; default ``SOURCE.yaml``/``.json`` beside it.
        progress: called with the number of acquisitions written after each block.
    """
    source, output = Path(source), Path(output)
    site = site or settings().site
    fmt = source_format or detect_format(source)
    if source.resolve() == output.resolve():
        raise UsageError("the output must differ from the input: originals are never modified", output)
    pseudonymizer = Pseudonymizer(load_site_key(site)) if anonymize else None
    policy = policy or AnonymizationPolicy()
    staged = AtomicOutput(output)
    report = None
    try:
        if fmt == "mrd":
            findings = [f for f in validate_file(source) if f.severity == "error"]
            if findings:
                raise InvalidDataError("is not valid MRD: " + "; ".join(f.message for f in findings[:3]), source)
            with MRDFile(source) as mrd:
                header = mrd.header
                if pseudonymizer:
                    header, report = anonymize_header(header, policy, pseudonymizer)
                _stamp_provenance(header, site, fmt)
                copy_with_header(mrd, staged.temporary, header)
                count = mrd.number_of_acquisitions
        else:
            content = read_content(source, fmt, Path(sidecar) if sidecar else None)
            header = content.header
            if pseudonymizer:
                header, report = anonymize_header(header, policy, pseudonymizer)
            _stamp_provenance(header, site, fmt)
            errors = schema_errors(header_to_xml(header))
            if errors:
                raise InvalidDataError(f"the {fmt} header does not convert to valid MRD: {errors[0]}", source)
            count = 0
            with MRDWriter(staged.temporary, header) as writer:
                for block in content.blocks:
                    has_traj = any(t.size for t in block.traj)
                    writer.append_acquisitions(block.headers, block.data, block.traj if has_traj else None)
                    count += len(block)
                    if progress:
                        progress(count)
                for name, values in content.arrays.items():
                    writer.write_array(name, values)
        findings = validate_file(staged.temporary)
        errors = [f.message for f in findings if f.severity == "error"]
        if errors:
            raise InvalidDataError(f"conversion from {fmt} gave invalid MRD ({errors[0]}); nothing was written",
                                   source)
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return IngestResult(output, fmt, count, report,
                        [f.message for f in findings if f.severity == "warning"])

