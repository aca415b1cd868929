"""The MRD XML header: parsing into typed objects, serializing back, and schema validation.

The typed objects are the ``ismrmrd`` package's xsdata dataclasses (``ismrmrd.xsd.ismrmrdHeader``), so code
written against ismrmrd-python reads the same fields here. Schema validation uses the XSD of the same ismrmrd
release, shipped in ``schema/`` (path configurable with ``CLOUDMRI_MRD_SCHEMA``).

References:
    Inati SJ et al. ISMRM Raw data format: A proposed standard for MRI raw datasets. MRM 2017;77:411-421.
"""

from __future__ import annotations

import functools
from pathlib import Path

import ismrmrd.xsd
from lxml import etree

from cloudmri_kernel.config import settings
from cloudmri_kernel.errors import InvalidDataError, UsageError

Header = ismrmrd.xsd.ismrmrdHeader


def parse_header(xml: str | bytes, path: str | Path | None = None) -> Header:
    """Parse an MRD XML header into the ismrmrd dataclasses.

    Raises:
        InvalidDataError: the text is not XML or not an ``ismrmrdHeader`` document.
    """
    text = xml.decode("utf-8", errors="replace") if isinstance(xml, bytes) else xml
    try:
        header = ismrmrd.xsd.CreateFromDocument(text)
    except Exception as exc:  # xsdata raises several unrelated types for malformed documents
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidDataError(
            f"the XML header cannot be parsed ({first_line}): is this an MRD file? "
            "`cloudmri validate FILE` lists the problems",
            path,
        ) from None
    if not isinstance(header, Header):
        raise InvalidDataError("the XML header's root element is not <ismrmrdHeader>", path)
    if not header.encoding:
        raise InvalidDataError(
            "the XML header has no <encoding>: is this an MRD file? `cloudmri validate FILE` lists the problems",
            path,
        )
    return header


def header_to_xml(header: Header) -> str:
    """Serialize the dataclasses back to MRD XML text."""
    return ismrmrd.xsd.ToXML(header)


@functools.lru_cache(maxsize=4)
def _load_schema(schema_path: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(schema_path))


def schema_errors(xml: str | bytes) -> list[str]:
    """Validate the header text against the ISMRMRD XSD; return one message per violation.

    Raises:
        UsageError: the configured XSD does not exist.
    """
    schema_path = settings().mrd_schema
    if not Path(schema_path).is_file():
        raise UsageError(f"the ISMRMRD schema {schema_path} is missing: set CLOUDMRI_MRD_SCHEMA to an ismrmrd.xsd")
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    try:
        document = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        return [f"header is not well-formed XML: {exc}"]
    schema = _load_schema(schema_path)
    if schema.validate(document):
        return []
    return [f"header line {err.line}: {err.message}" for err in schema.error_log]
