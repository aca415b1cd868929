"""De-identification of MRD headers with keyed, per-site pseudonyms.

Patient identifiers in the XML header are removed, generalized or replaced by a pseudonym
``HMAC-SHA256(site key, field || value)``: one patient maps to one pseudonym at a site (so longitudinal
studies still link) and to unlinkable pseudonyms at sites with different keys. Raw samples and acquisition
headers are copied bit for bit. What is removed follows the DICOM PS3.15 Basic Application Level
Confidentiality Profile (Annex E) as far as the MRD header has the corresponding fields.

References:
    DICOM PS3.15 Annex E, Attribute Confidentiality Profiles.
    Krawczyk H, Bellare M, Canetti R. HMAC: Keyed-Hashing for Message Authentication. RFC 2104, 1997.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from xsdata.models.datatype import XmlDate

from cloudmri_kernel.config import settings
from cloudmri_kernel.crypto.keyfiles import load_or_create_secret, read_secret
from cloudmri_kernel.errors import UsageError
from cloudmri_kernel.mrd.header import Header
from cloudmri_kernel.mrd.reader import MRDFile
from cloudmri_kernel.mrd.writer import AtomicOutput, copy_with_header

KEY_BYTES = 32


class AnonymizationPolicy(BaseModel):
    """What happens to each kind of identifier. Unknown keys in a policy file are errors.

    Example policy file (YAML)::

        patient_id: pseudonymize
        birthdate: year
        sex: keep
        keep_user_parameters: [EmbeddedRefLinesE1]
    """

    model_config = ConfigDict(extra="forbid")

    patient_name: Literal["remove", "pseudonymize"] = "remove"
    patient_id: Literal["remove", "pseudonymize"] = "pseudonymize"
    birthdate: Literal["remove", "year", "keep"] = "year"
    sex: Literal["remove", "keep"] = "keep"
    weight_height: Literal["remove", "keep"] = "keep"
    institution: Literal["remove", "keep"] = "remove"
    device: Literal["remove", "pseudonymize", "keep"] = "pseudonymize"
    identifiers: Literal["remove", "pseudonymize"] = "pseudonymize"
    referring_physician: Literal["remove", "keep"] = "remove"
    dates: Literal["remove", "year", "keep"] = "keep"
    user_parameters: Literal["scrub", "remove", "keep"] = "scrub"
    keep_user_parameters: list[str] = []

    @classmethod
    def from_file(cls, path: str | Path) -> AnonymizationPolicy:
        path = Path(path)
        if not path.is_file():
            raise UsageError("no such policy file", path)
        try:
            content = yaml.safe_load(path.read_text()) or {}
            return cls.model_validate(content)
        except yaml.YAMLError as exc:
            raise UsageError(f"the policy is not valid YAML ({exc})", path) from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"invalid policy ({problems})", path) from None


def site_key_path(site: str) -> Path:
    config = settings()
    return config.site_key_file or config.data_dir / "keys" / f"{site}.key"


def load_site_key(site: str, create: bool = True) -> bytes:
    """The site's pseudonymization key; created (mode 0600) on first use. Refuses keys others can read."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", site):
        raise UsageError(f"site name '{site}' must be 1-64 letters, digits, '.', '_' or '-'")
    path = site_key_path(site)
    if create:
        return load_or_create_secret(path, KEY_BYTES, what="site key")
    if not path.exists():
        raise UsageError("no key for this site", path)
    return read_secret(path, KEY_BYTES, what="site key")


@dataclass
class Pseudonymizer:
    """Keyed pseudonyms; the field name separates domains so equal values in different fields differ."""

    key: bytes

    def digest(self, domain: str, value: str) -> bytes:
        return hmac.new(self.key, f"{domain}\x00{value}".encode(), hashlib.sha256).digest()

    def token(self, domain: str, value: str, prefix: str = "") -> str:
        return prefix + self.digest(domain, value).hex()[:20].upper()

    def uid(self, value: str) -> str:
        """A valid DICOM UID under the UUID-derived root 2.25 (PS3.5 B.2)."""
        return "2.25." + str(int.from_bytes(self.digest("uid", value)[:16], "big"))

    def number(self, domain: str, value: int) -> int:
        return int.from_bytes(self.digest(domain, str(value))[:6], "big")


_IDENTIFIER_PATTERNS = [
    re.compile(r"\^"),  # DICOM person name
    re.compile(r"\b\d{4}-?\d{2}-?\d{2}\b"),  # dates
    re.compile(r"\b\d+(\.\d+){3,}\b"),  # UIDs
    re.compile(r"\b\d{6,}\b"),  # record numbers
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),  # e-mail addresses
]


def looks_like_identifier(text: str, known: list[str]) -> bool:
    """True for free text that may identify a person: known identifiers or identifier-shaped tokens."""
    lowered = text.lower()
    if any(k and k.lower() in lowered for k in known):
        return True
    return any(p.search(text) for p in _IDENTIFIER_PATTERNS)


@dataclass
class AnonymizationReport:
    """Which header fields were changed and how; never the original values."""

    actions: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, action: str) -> None:
        self.actions[name] = action


def _reduce_date(value: XmlDate | None, how: str) -> XmlDate | None:
    if value is None or how == "keep":
        return value
    return None if how == "remove" else XmlDate(value.year, 1, 1)


def anonymize_header(header: Header, policy: AnonymizationPolicy, pseudonymizer: Pseudonymizer
                     ) -> tuple[Header, AnonymizationReport]:
    """A de-identified copy of the header, and what was done to it."""
    out = copy.deepcopy(header)
    report = AnonymizationReport()
    known: list[str] = []

    subject = out.subjectInformation
    if subject is not None:
        known += [v for v in (subject.patientName, subject.patientID) if v]
        if subject.patientName is not None:
            subject.patientName = (None if policy.patient_name == "remove"
                                   else pseudonymizer.token("patient", subject.patientID or subject.patientName,
                                                            "ANON^"))
            report.record("patientName", policy.patient_name)
        if subject.patientID is not None:
            subject.patientID = (None if policy.patient_id == "remove"
                                 else pseudonymizer.token("patient", subject.patientID, "P-"))
            report.record("patientID", policy.patient_id)
        if subject.patientBirthdate is not None:
            subject.patientBirthdate = _reduce_date(subject.patientBirthdate, policy.birthdate)
            report.record("patientBirthdate", policy.birthdate)
        if subject.patientGender is not None and policy.sex == "remove":
            subject.patientGender = None
            report.record("patientGender", "remove")
        if policy.weight_height == "remove" and (subject.patientWeight_kg or subject.patientHeight_m):
            subject.patientWeight_kg = subject.patientHeight_m = None
            report.record("patientWeight_kg/patientHeight_m", "remove")

    def replace_id(value: str | None, name: str) -> str | None:
        if value is None:
            return None
        report.record(name, policy.identifiers)
        return None if policy.identifiers == "remove" else pseudonymizer.token("id", value, "ID-")

    def replace_uid(value: str | None, name: str) -> str | None:
        if value is None:
            return None
        report.record(name, policy.identifiers)
        return None if policy.identifiers == "remove" else pseudonymizer.uid(value)

    study = out.studyInformation
    if study is not None:
        study.studyID = replace_id(study.studyID, "studyID")
        study.studyInstanceUID = replace_uid(study.studyInstanceUID, "studyInstanceUID")
        if study.accessionNumber is not None:
            study.accessionNumber = (None if policy.identifiers == "remove"
                                     else pseudonymizer.number("accession", study.accessionNumber))
            report.record("accessionNumber", policy.identifiers)
        if study.referringPhysicianName is not None and policy.referring_physician == "remove":
            study.referringPhysicianName = None
            report.record("referringPhysicianName", "remove")
        if study.studyDate is not None and policy.dates != "keep":
            study.studyDate = _reduce_date(study.studyDate, policy.dates)
            report.record("studyDate", policy.dates)
        if study.studyDescription and looks_like_identifier(study.studyDescription, known):
            study.studyDescription = None
            report.record("studyDescription", "remove")

    measurement = out.measurementInformation
    if measurement is not None:
        # Siemens measurement IDs embed the scanner serial and patient/study numbers; dependencies
        # (noise, sensitivity maps) refer to them, so the same keyed mapping keeps those links intact.
        measurement.measurementID = replace_id(measurement.measurementID, "measurementID")
        for dependency in measurement.measurementDependency:
            dependency.measurementID = replace_id(dependency.measurementID, "measurementDependency")
            if dependency.measurementID is None:
                dependency.measurementID = ""
        measurement.frameOfReferenceUID = replace_uid(measurement.frameOfReferenceUID, "frameOfReferenceUID")
        measurement.seriesInstanceUIDRoot = replace_uid(measurement.seriesInstanceUIDRoot,
                                                        "seriesInstanceUIDRoot")
        if measurement.referencedImageSequence is not None:
            references = measurement.referencedImageSequence.referencedSOPInstanceUID
            measurement.referencedImageSequence.referencedSOPInstanceUID = [
                u for u in (replace_uid(r, "referencedSOPInstanceUID") for r in references) if u]
        if measurement.seriesDate is not None and policy.dates != "keep":
            measurement.seriesDate = _reduce_date(measurement.seriesDate, policy.dates)
            report.record("seriesDate", policy.dates)
        for name in ("protocolName", "seriesDescription", "sequenceName"):
            text = getattr(measurement, name)
            if text and known and looks_like_identifier(text, known):
                setattr(measurement, name, None)
                report.record(name, "remove")

    system = out.acquisitionSystemInformation
    if system is not None:
        if system.institutionName is not None and policy.institution == "remove":
            system.institutionName = None
            report.record("institutionName", "remove")
        if system.stationName is not None and policy.device != "keep":
            system.stationName = None
            report.record("stationName", "remove")
        for name in ("deviceID", "deviceSerialNumber"):
            value = getattr(system, name)
            if value is not None and policy.device != "keep":
                setattr(system, name,
                        None if policy.device == "remove" else pseudonymizer.token("device", value, "DEV-"))
                report.record(name, policy.device)

    user = out.userParameters
    if user is not None and policy.user_parameters != "keep":
        kept = set(policy.keep_user_parameters)
        before = len(user.userParameterString) + len(user.userParameterBase64)
        user.userParameterString = [
            p for p in user.userParameterString
            if p.name in kept or (policy.user_parameters == "scrub" and not looks_like_identifier(p.value, known))]
        user.userParameterBase64 = [p for p in user.userParameterBase64 if p.name in kept]
        removed = before - len(user.userParameterString) - len(user.userParameterBase64)
        if removed:
            report.record("userParameters", f"removed {removed} free-text parameter(s)")
    return out, report


def anonymize_file(source: str | Path, target: str | Path, site: str | None = None,
                   policy: AnonymizationPolicy | None = None) -> AnonymizationReport:
    """Write a de-identified copy of an MRD file; everything but the XML header is copied bit for bit."""
    policy = policy or AnonymizationPolicy()
    site = site or settings().site
    pseudonymizer = Pseudonymizer(load_site_key(site))
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise UsageError("the output must differ from the input: originals are never modified", target)
    with MRDFile(source) as mrd:
        header, report = anonymize_header(mrd.header, policy, pseudonymizer)
        output = AtomicOutput(target)
        try:
            copy_with_header(mrd, output.temporary, header)
            output.commit()
        except BaseException:
            output.discard()
            raise
    return report
