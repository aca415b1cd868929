"""Importer for Siemens TWIX raw data (``.dat``, software lines VB and VD/VE) into MRD.

The file layout (multi-measurement "raid" header of VD/VE files, the protocol buffers ``Config``, ``Dicom``,
``Meas``/``MeasYaps``, one measurement data header (MDH) per readout) is parsed by ``twixtools``; this module
checks the layout first, so that a file that is not TWIX, or one cut short, gives one clear message instead
of a twixtools traceback or silently missing data. Samples are read lazily, a few hundred acquisitions at a
time, so a measurement larger than memory can be converted.

The MRD header and acquisition headers follow the mapping of ``siemens_to_ismrmrd`` (its parameter map
``IsmrmrdParameterMap_Siemens.xsl`` for the header, ``main.cpp`` for acquisitions): protocol values from the
ASCCONV block (``MeasYaps``, called ``MEAS`` there), the ``Meas`` XProtocol (``YAPS``) and ``Dicom``;
counters, flags, time stamps, slice position and orientation (quaternion to direction cosines, with Siemens'
phase/read/slice column order) from each MDH. Unlike ``siemens_to_ismrmrd``, the subject's name, ID, birth
date, sex and weight are carried into ``subjectInformation``, so that de-identification (``cloudmri ingest
--anonymize``) finds and treats them.

References:
    Siemens raw data format as read by twixtools: P. Ehses, https://github.com/pehses/twixtools (v0.24).
    siemens_to_ismrmrd: https://github.com/ismrmrd/siemens_to_ismrmrd.
    Inati SJ et al. ISMRM Raw data format: A proposed standard for MRI raw datasets. MRM 2017;77:411-421.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import ismrmrd.xsd as xsd
import numpy as np
import twixtools
from twixtools.hdr_def import MultiRaidFileHeader
from twixtools.helpers import idea_version_check
from twixtools.mdh_def import mask_dict
from twixtools.quat import quaternion_to_directions
from xsdata.models.datatype import XmlDate

from cloudmri_kernel.errors import InvalidDataError, UsageError
from cloudmri_kernel.mrd.build import GAMMA_H1_HZ_PER_T, new_acquisition_headers
from cloudmri_kernel.mrd.formats import RawContent
from cloudmri_kernel.mrd.reader import AcquisitionBlock, flag_mask

#: Acquisitions per block: a few hundred readouts keep memory small and HDF5 writes large.
BLOCK_SIZE = 256

_COPY_AGAIN = "copy it again from the scanner"
_NOT_TWIX = "is not a Siemens TWIX raw file (.dat, VB or VD/VE)"
# The protocol buffers of a measurement header start with a name, a NUL and a length ("Config\0....");
# twixtools looks for the name within the first 48 bytes after the buffer count.
_BUFFER_NAME = re.compile(rb"\w{4,}\x00")

#: MDH flag -> MRD flags, as siemens_to_ismrmrd sets them (PATREFSCAN is handled apart: it becomes
#: IS_PARALLEL_CALIBRATION only when the line is not also an imaging line). The two phase-stabilisation
#: scans, which siemens_to_ismrmrd leaves unflagged, have MRD flags of exactly their meaning.
_FLAG_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NOISEADJSCAN", ("IS_NOISE_MEASUREMENT",)),
    ("FIRSTSCANINSLICE", ("FIRST_IN_SLICE",)),
    ("LASTSCANINSLICE", ("LAST_IN_SLICE",)),
    ("LASTSCANINMEAS", ("LAST_IN_REPETITION", "LAST_IN_MEASUREMENT")),
    ("RETRO_ENDOFMEAS", ("LAST_IN_MEASUREMENT",)),
    ("PATREFANDIMASCAN", ("IS_PARALLEL_CALIBRATION_AND_IMAGING",)),
    ("REFLECT", ("IS_REVERSE",)),
    ("PHASCOR", ("IS_PHASECORR_DATA",)),
    ("RTFEEDBACK", ("IS_NAVIGATION_DATA", "IS_RTFEEDBACK_DATA")),
    ("HPFEEDBACK", ("IS_HPFEEDBACK_DATA",)),
    ("RETRO_DUMMYSCAN", ("IS_DUMMYSCAN_DATA",)),
    ("RAWDATACORRECTION", ("IS_SURFACECOILCORRECTIONSCAN_DATA",)),
    ("REFPHASESTABSCAN", ("IS_PHASE_STABILIZATION_REFERENCE",)),
    ("PHASESTABSCAN", ("IS_PHASE_STABILIZATION",)),
)

_TRAJECTORIES = {1: "cartesian", 2: "radial", 4: "spiral", 8: "other"}  # 8: PROPELLER, not an MRD trajectory
# sPat.ucRefScanMode: 1 is "undefined"; then the MDH flags tell where the reference lines are.
_CALIBRATION_MODES = {2: "embedded", 4: "separate", 8: "separate", 16: "interleaved", 32: "interleaved",
                      64: "interleaved"}
_INTERLEAVING = {16: "average", 32: "repetition", 64: "phase"}
_GENDERS = {1: "F", 2: "M"}
_DEPENDENCIES = ("RFMap", "SenMap", "Noise")  # order of YAPS.ReconMeasDependencies


@dataclass
class _Measurement:
    """Which measurement of the file is read, and in which software line's layout."""

    index: int
    version_is_ve: bool


def read_twix(path: Path, measurement: int = -1) -> RawContent:
    """Read one measurement of a Siemens TWIX file as MRD content.

    Args:
        path: a ``meas_MID*_FID*.dat`` file, VB or VD/VE (multi-measurement) layout.
        measurement: which measurement of a VD/VE file, counted from 0; negative counts from the end. The
            default, the last one, is the imaging scan (earlier ones are adjustment scans such as the noise
            and coil-sensitivity prescans).

    Returns:
        The MRD header, the acquisitions (image, noise, reference, navigator and phase-correction readouts;
        no sync data) in blocks of :data:`BLOCK_SIZE` read lazily from the file, and ``source_format="twix"``.

    Raises:
        UsageError: the path does not exist or is a directory.
        InvalidDataError: the file is not TWIX, is cut short, has no such measurement, or its protocol
            lacks the matrix or field of view.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError("no such file: check the path", path)
    if path.is_dir():
        raise UsageError("is a directory, not a TWIX file", path)
    size = path.stat().st_size
    where = _locate(path, size, measurement)
    scan = _parse(path, where)
    hdr = scan.get("hdr") or {}
    if not isinstance(hdr.get("MeasYaps"), dict) or not hdr["MeasYaps"]:
        raise InvalidDataError(
            f"measurement {where.index} has no MeasYaps protocol: the file is damaged or {_NOT_TWIX}", path)
    mdbs = scan.get("mdb") or []
    complete = [m for m in mdbs if m.mem_pos + int(m.dma_len) <= size]
    if not complete or len(complete) < len(mdbs) or not complete[-1].is_flag_set("ACQEND"):
        readouts = sum(1 for m in complete if not m.is_flag_set("ACQEND"))
        raise InvalidDataError(
            f"the TWIX file is cut short after {size} bytes: measurement {where.index} stops after "
            f"{readouts} acquisitions, without its end-of-acquisition block (ACQEND); {_COPY_AGAIN}", path)
    readouts = [m for m in complete if _carries_samples(m)]
    header = _make_header(hdr, readouts, path)
    blocks = _TwixBlocks(path, readouts, header.acquisitionSystemInformation.receiverChannels,
                        _sample_time_us(hdr), _protocol_name(hdr), where.version_is_ve)
    return RawContent(header=header, blocks=blocks, source_format="twix")


class _TwixBlocks:
    """The acquisitions of one measurement, read from the file block by block on every iteration."""

    def __init__(self, path: Path, mdbs: list, receiver_channels: int, sample_time_us: float | None,
                 protocol_name: str, version_is_ve: bool):
        self.path = path
        self.mdbs = mdbs
        self.receiver_channels = receiver_channels
        self.sample_time_us = sample_time_us
        self.protocol_name = protocol_name
        self.version_is_ve = version_is_ve

    def __iter__(self) -> Iterator[AcquisitionBlock]:
        with open(self.path, "rb") as handle:
            for start in range(0, len(self.mdbs), BLOCK_SIZE):
                chunk = self.mdbs[start:start + BLOCK_SIZE]
                for mdb in chunk:
                    # twixtools opens and closes the file for every readout whose handle is closed.
                    mdb.fid = handle
                data = [np.array(mdb.data, dtype=np.complex64) for mdb in chunk]
                traj = [np.zeros((d.shape[1], 0), np.float32) for d in data]
                yield AcquisitionBlock(start, self._headers(chunk), data, traj)

    def _headers(self, chunk: list) -> np.ndarray:
        """MRD acquisition headers of a run of readouts, field by field as siemens_to_ismrmrd fills them."""
        mdhs = [m.mdh for m in chunk]
        shapes = [(int(h.UsedChannels), int(h.SamplesInScan)) for h in mdhs]
        heads = np.concatenate([new_acquisition_headers(len(list(run)), channels, samples)
                                for (channels, samples), run in groupby(shapes)])
        heads["measurement_uid"] = _wrapped([h.MeasUID for h in mdhs], np.uint32)
        heads["scan_counter"] = [h.ScanCounter for h in mdhs]
        heads["acquisition_time_stamp"] = [h.TimeStamp for h in mdhs]
        heads["physiology_time_stamp"][:, 0] = [h.PMUTimeStamp for h in mdhs]
        heads["available_channels"] = np.maximum(self.receiver_channels, heads["active_channels"])
        heads["discard_pre"] = [h.CutOff.Pre for h in mdhs]
        heads["discard_post"] = [h.CutOff.Post for h in mdhs]
        heads["center_sample"] = [h.CenterCol for h in mdhs]

        masks = np.array([h.EvalInfoMask for h in mdhs], dtype=np.uint64)
        flags = np.zeros(len(chunk), np.uint64)
        for siemens, mrd in _FLAG_MAP:
            flags[_bit_set(masks, siemens)] |= flag_mask(*mrd)
        calibration_only = _bit_set(masks, "PATREFSCAN") & ~_bit_set(masks, "PATREFANDIMASCAN")
        flags[calibration_only] |= flag_mask("IS_PARALLEL_CALIBRATION")
        heads["flags"] = flags

        noise = _bit_set(masks, "NOISEADJSCAN")
        samples = heads["number_of_samples"].astype(float)
        heads["sample_time_us"] = self.sample_time_us or 0.0
        heads["sample_time_us"][noise] = [self._noise_sample_time_us(n) for n in samples[noise]]

        heads["position"] = [(h.SliceData.SlicePos.Sag, h.SliceData.SlicePos.Cor, h.SliceData.SlicePos.Tra)
                             for h in mdhs]
        # Siemens stores (w, x, y, z); the rotation's columns are phase, read, slice (siemens_to_ismrmrd).
        quaternions = np.array([h.SliceData.Quaternion for h in mdhs], dtype=np.float64)
        unique, inverse = np.unique(quaternions, axis=0, return_inverse=True)
        columns = np.array([quaternion_to_directions([x, y, z, w]) for w, x, y, z in unique], np.float32)
        inverse = inverse.reshape(-1)
        heads["phase_dir"] = columns[inverse, 0]
        heads["read_dir"] = columns[inverse, 1]
        heads["slice_dir"] = columns[inverse, 2]
        if self.version_is_ve:
            heads["patient_table_position"] = [(h.PTABPosX, h.PTABPosY, h.PTABPosZ) for h in mdhs]

        idx = heads["idx"]
        for mrd, counter in (("kspace_encode_step_1", "Lin"), ("kspace_encode_step_2", "Par"),
                             ("average", "Ave"), ("slice", "Sli"), ("contrast", "Eco"), ("phase", "Phs"),
                             ("repetition", "Rep"), ("set", "Set"), ("segment", "Seg")):
            idx[mrd] = [getattr(h.Counter, counter) for h in mdhs]
        idx["user"][:, :5] = [(h.Counter.Ida, h.Counter.Idb, h.Counter.Idc, h.Counter.Idd, h.Counter.Ide)
                              for h in mdhs]
        idx["user"][:, 5] = [h.CenterLin for h in mdhs]
        idx["user"][:, 6] = [h.CenterPar for h in mdhs]

        ice = np.array([h.IceProgramPara for h in mdhs], dtype=np.int64)  # 24 values on VD/VE, 4 on VB
        used = min(7, ice.shape[1])
        heads["user_int"][:, :used] = ice[:, :used]
        heads["user_int"][:, 7] = _wrapped([h.TimeSinceLastRF for h in mdhs], np.int32)
        heads["user_float"][:, :max(0, min(8, ice.shape[1] - 8))] = ice[:, 8:16]
        return heads

    def _noise_sample_time_us(self, samples: float) -> float:
        """Dwell time of a noise readout, which the protocol does not give (siemens_to_ismrmrd's rule)."""
        if self.protocol_name in ("AdjCoilSens", "AdjQuietCoilSens"):
            return 5.0
        if not self.version_is_ve:
            return 1e6 / samples / 130.0
        return int(76800.0 / samples) / 10.0


def _wrapped(values: list[int], dtype: type) -> np.ndarray:
    """Integers converted as C assignment converts them (signed MDH fields into unsigned MRD ones)."""
    return np.array(values, np.int64).astype(dtype)


def _bit_set(masks: np.ndarray, name: str) -> np.ndarray:
    """Which of the MDH evaluation masks have the named twixtools flag set."""
    return (masks >> np.uint64(mask_dict[name])) & np.uint64(1) == 1


def _carries_samples(mdb) -> bool:
    """A readout that becomes an MRD acquisition: not sync data or the end marker, and not empty."""
    return (not mdb.is_flag_set("ACQEND") and not mdb.is_flag_set("SYNCDATA")
            and mdb.mdh.UsedChannels > 0 and mdb.mdh.SamplesInScan > 0)


def _locate(path: Path, size: int, measurement: int) -> _Measurement:
    """Check the file's layout up to the requested measurement's protocol, before twixtools parses it."""
    with open(path, "rb") as handle:
        head = handle.read(MultiRaidFileHeader.itemsize)
        if len(head) < 8:
            raise InvalidDataError(f"{_NOT_TWIX}: it holds only {size} bytes", path)
        version_is_ve, _ = idea_version_check(handle)
        if version_is_ve:
            if len(head) < MultiRaidFileHeader.itemsize:
                raise InvalidDataError(
                    f"the TWIX file is cut short after {size} of at least {MultiRaidFileHeader.itemsize} bytes "
                    f"(its measurement directory is incomplete), or it {_NOT_TWIX}; {_COPY_AGAIN}", path)
            raid = np.frombuffer(head, MultiRaidFileHeader)[0]
            count = int(raid["hdr"]["count_"])
            if not 1 <= count <= 64:
                raise InvalidDataError(f"{_NOT_TWIX}: its measurement directory lists {count} measurements",
                                       path)
            entries = [(int(e["off_"]), int(e["len_"])) for e in raid["entry"][:count]]
        else:
            count, entries = 1, [(0, size)]
        if not -count <= measurement < count:
            raise InvalidDataError(
                f"measurement {measurement} does not exist: the file holds {count} "
                f"(give 0 to {count - 1}, or -1 for the last)", path)
        index = measurement % count
        offset, length = entries[index]
        if length == 0 and count == 1:
            length = size - offset  # scanners write 0 here for single-measurement files; twixtools does the same
        if offset < (MultiRaidFileHeader.itemsize if version_is_ve else 0) or offset >= size:
            raise InvalidDataError(
                f"measurement {index} starts at byte {offset}, outside the file's {size} bytes: the file is cut "
                f"short or {_NOT_TWIX}; {_COPY_AGAIN}", path)
        handle.seek(offset)
        start = handle.read(56)
    hdr_len, n_buffers = np.frombuffer(start[:8], "<u4") if len(start) >= 8 else (0, 0)
    if not 1 <= n_buffers <= 64 or not _BUFFER_NAME.search(start[8:]):
        where = f"measurement {index} at byte {offset}" if version_is_ve else "the file"
        raise InvalidDataError(f"{_NOT_TWIX}: {where} does not start with a TWIX protocol header "
                               f"(first bytes: {start[:16]!r})", path)
    if offset + length > size:
        raise InvalidDataError(f"the TWIX file is cut short after {size} of {offset + length} bytes: {_COPY_AGAIN}",
                               path)
    if offset + int(hdr_len) > size:
        raise InvalidDataError(
            f"the TWIX file is cut short after {size} of at least {offset + int(hdr_len)} bytes "
            f"(inside the protocol of measurement {index}): {_COPY_AGAIN}", path)
    return _Measurement(index, bool(version_is_ve))


def _parse(path: Path, where: _Measurement) -> dict:
    """Run twixtools on one measurement, with its console output silenced and its exceptions explained."""
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.ExitStack() as stack:
            name = str(path)
            if not path.suffix:
                # twixtools appends ".dat" to a name without an extension; a link that has one avoids that.
                folder = stack.enter_context(tempfile.TemporaryDirectory())
                name = os.path.join(folder, "measurement.dat")
                os.symlink(path.resolve(), name)
            scans = twixtools.read_twix(name, include_scans=[where.index], verbose=False, keep_acqend=True,
                                        keep_syncdata=False, parse_pmu=False, parse_geometry=False)
    except Exception as exc:  # twixtools raises whatever its parsing meets (ValueError, KeyError, struct.error...)
        warning = next((line for line in output.getvalue().splitlines() if "WARNING" in line), "")
        raise InvalidDataError(
            f"twixtools cannot read measurement {where.index} ({type(exc).__name__}: {exc}"
            f"{'; ' + warning.strip() if warning else ''}): the file is damaged or {_NOT_TWIX}", path) from None
    if not scans:
        raise InvalidDataError(f"twixtools found no measurement {where.index}: the file is damaged", path)
    return scans[0]


def _get(tree, *keys):
    """``tree[k0][k1]...`` of a parsed protocol, or None where a level is missing or the value is empty."""
    for key in keys:
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError):
            return None
    if tree is None or (isinstance(tree, str) and not tree.strip()):
        return None
    return tree


def _number(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _first(*values):
    return next((v for v in values if v is not None), None)


def _integer_text(value) -> str | None:
    """Protocol numbers as text without a spurious ``.0`` (twixtools reads some integers as floats)."""
    number = _number(value)
    if number is not None and number.is_integer():
        return str(int(number))
    return None if value is None else str(value)


def _protocol_name(hdr: dict) -> str:
    return str(_first(_get(hdr, "MeasYaps", "tProtocolName"), _get(hdr, "Dicom", "tProtocolName"),
                      _get(hdr, "Config", "ProtocolName"), ""))


def _sample_time_us(hdr: dict) -> float | None:
    """Dwell time of the first contrast (``sRXSPEC.alDwellTime[0]``, in ns) in microseconds."""
    dwell_ns = _number(_first(_get(hdr, "MeasYaps", "sRXSPEC", "alDwellTime", 0),
                              _get(hdr, "Meas", "alDwellTime", 0)))
    return None if not dwell_ns else dwell_ns / 1000.0


def _required(value, what: str, path: Path) -> float:
    number = _number(value)
    if number is None:
        raise InvalidDataError(f"the TWIX protocol has no {what}: the file is damaged or not an imaging scan", path)
    return number


def _counter_maxima(readouts: list) -> dict[str, int]:
    """Largest loop counters of the imaging and reference readouts (noise and navigators do not count)."""
    names = ("Lin", "Par", "Sli", "Ave", "Eco", "Phs", "Rep", "Set", "Seg")
    maxima = dict.fromkeys(names, 0)
    for mdb in readouts:
        if mdb.is_image_scan() or mdb.is_flag_set("PATREFSCAN"):
            counter = mdb.mdh.Counter
            for name in names:
                maxima[name] = max(maxima[name], int(getattr(counter, name)))
    return maxima


def _make_header(hdr: dict, readouts: list, path: Path) -> xsd.ismrmrdHeader:
    """The MRD header from the protocol, as siemens_to_ismrmrd's parameter map builds it."""
    dicom, config = hdr.get("Dicom") or {}, hdr.get("Config") or {}
    # The imaging readouts' channel count where there are some: validation holds the data to it.
    receiver_channels = int(_first(max((m.mdh.UsedChannels for m in readouts if m.is_image_scan()), default=None),
                                   _number(_get(hdr, "Meas", "iMaxNoOfRxChannels")),
                                   max((m.mdh.UsedChannels for m in readouts), default=0)))
    field_t = _number(_first(_get(hdr, "Meas", "flMagneticFieldStrength"), _get(dicom, "flMagneticFieldStrength"),
                             _get(hdr, "MeasYaps", "sProtConsistencyInfo", "flNominalB0")))
    frequency = _number(_first(_get(dicom, "lFrequency"),
                               _get(hdr, "MeasYaps", "sTXSPEC", "asNucleusInfo", 0, "lFrequency")))
    if frequency is None:
        frequency = GAMMA_H1_HZ_PER_T * (field_t or 0.0)
    system = xsd.acquisitionSystemInformationType(
        systemVendor=str(_first(_get(dicom, "Manufacturer"), "SIEMENS")),
        systemModel=_get(dicom, "ManufacturersModelName"),
        systemFieldStrength_T=field_t,
        relativeReceiverNoiseBandwidth=0.793,  # siemens_to_ismrmrd's constant for Siemens receivers
        receiverChannels=receiver_channels,
        coilLabel=_coil_labels(hdr),
        institutionName=_get(dicom, "InstitutionName"),
        deviceSerialNumber=_integer_text(_get(dicom, "DeviceSerialNumber")),
    )
    return xsd.ismrmrdHeader(
        subjectInformation=_subject(dicom, config),
        measurementInformation=_measurement_information(hdr, readouts),
        acquisitionSystemInformation=system,
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=int(round(frequency))),
        encoding=[_encoding(hdr, readouts, path)],
        sequenceParameters=_sequence_parameters(hdr),
        userParameters=_user_parameters(hdr),
    )


def _coil_labels(hdr: dict) -> list[xsd.coilLabelType]:
    """One label per receive channel, ``coil:element``, in the order of the ADC channels (= data order)."""
    selected = _first(_get(hdr, "MeasYaps", "sCoilSelectMeas", "aRxCoilSelectData", 0, "asList"),
                      _get(hdr, "MeasYaps", "asCoilSelectMeas", 0, "asList"))  # VD/VE, then VB
    elements = []
    for element in selected if isinstance(selected, list) else []:
        adc = _number(_get(element, "lADCChannelConnected"))
        coil, name = _get(element, "sCoilElementID", "tCoilID"), _get(element, "sCoilElementID", "tElement")
        if adc is not None and coil is not None and _get(element, "lElementSelected") != 0:
            elements.append((adc, f"{coil}:{name}" if name is not None else str(coil)))
    return [xsd.coilLabelType(coilNumber=i, coilName=name) for i, (_, name) in enumerate(sorted(elements))]


def _subject(dicom: dict, config: dict) -> xsd.subjectInformationType | None:
    """Patient identity as the scanner recorded it; de-identification removes or pseudonymizes it later."""
    name = _first(_get(dicom, "tPatientName"), _get(config, "tPatientName"), _get(config, "PatientName"))
    patient_id = _first(_get(config, "PatientID"), _get(dicom, "PatientID"))
    birth = _first(_get(config, "PatientBirthDay"), _get(dicom, "PatientBirthDay"))
    try:
        born = datetime.datetime.strptime(str(birth), "%Y%m%d").date() if birth is not None else None
    except ValueError:  # anonymized on the scanner ("xxxxxxxx"): nothing a date can hold
        born = None
    sex = _number(_first(_get(dicom, "lPatientSex"), _get(config, "PatientSex")))
    weight = _number(_first(_get(dicom, "flUsedPatientWeight"), _get(config, "flUsedPatientWeight")))
    subject = xsd.subjectInformationType(
        patientName=None if name is None else str(name),
        patientWeight_kg=weight if weight and weight > 0 else None,
        patientID=None if patient_id is None else str(patient_id),
        patientBirthdate=XmlDate(born.year, born.month, born.day) if born else None,
        patientGender=None if sex is None else _GENDERS.get(int(sex), "O"),
    )
    return subject if any(vars(subject).values()) else None


def _measurement_information(hdr: dict, readouts: list) -> xsd.measurementInformationType:
    config, meas = hdr.get("Config") or {}, hdr.get("Meas") or {}

    def loid_number(value) -> str | None:
        return None if value is None else str(value).rsplit(".", 1)[-1]

    # siemens_to_ismrmrd's measurement ID: scanner serial, patient and study numbers, measurement UID.
    prefix = [part for part in (_integer_text(_get(hdr, "Dicom", "DeviceSerialNumber")),
                                loid_number(_first(_get(config, "PatientLOID"), _get(meas, "PatientLOID"))),
                                loid_number(_first(_get(config, "StudyLOID"), _get(meas, "StudyLOID"))))
              if part]
    meas_uid = _integer_text(_first(_get(config, "MeasUID"), readouts[0].mdh.MeasUID if readouts else None))
    dependencies = []
    listed = _get(meas, "ReconMeasDependencies")
    uids = listed if isinstance(listed, list) else str(listed or "").split()
    for kind, uid in zip(_DEPENDENCIES, uids, strict=False):
        if _number(uid):
            dependencies.append(xsd.measurementDependencyType(dependencyType=kind,
                                                              measurementID="_".join([*prefix, _integer_text(uid)])))
    position = _first(_get(meas, "tPatientPosition"), _get(config, "PatientPosition"),
                      _get(hdr, "Dicom", "tPatientPosition"))
    try:
        patient_position = xsd.patientPositionType(str(position))
    except ValueError:  # absent (the MRD schema requires one): Siemens' default table position
        patient_position = xsd.patientPositionType.HFS
    return xsd.measurementInformationType(
        measurementID="_".join([*prefix, meas_uid]) if meas_uid else None,
        patientPosition=patient_position,
        protocolName=_protocol_name(hdr) or None,
        measurementDependency=dependencies,
        frameOfReferenceUID=_first(_get(meas, "tFrameOfReference"), _get(config, "FrameOfReference")),
    )


def _encoding(hdr: dict, readouts: list, path: Path) -> xsd.encodingType:
    yaps, meas, config = hdr["MeasYaps"], hdr.get("Meas") or {}, hdr.get("Config") or {}
    kspace, first_slice = _get(yaps, "sKSpace") or {}, _get(yaps, "sSliceArray", "asSlice", 0) or {}
    trajectory = _TRAJECTORIES.get(int(_number(_get(kspace, "ucTrajectory")) or 1), "other")
    base = int(_required(_get(kspace, "lBaseResolution"), "sKSpace.lBaseResolution", path))
    lines = int(_required(_get(kspace, "lPhaseEncodingLines"), "sKSpace.lPhaseEncodingLines", path))
    partitions = int(_number(_get(kspace, "lPartitions")) or 1)
    read_fov = _required(_get(first_slice, "dReadoutFOV"), "readout field of view", path)
    phase_fov = _required(_get(first_slice, "dPhaseFOV"), "phase field of view", path)
    thickness = _required(_get(first_slice, "dThickness"), "slice thickness", path)
    ft_3d = _number(_get(meas, "i3DFTLength"))
    is_3d = ft_3d > 1 if ft_3d is not None else _number(_get(kspace, "ucDimension")) == 4

    image_columns = int(_first(_number(_get(meas, "ImageColumns")), _number(_get(config, "ImageColumns")), base))
    image_lines = int(_first(_number(_get(meas, "ImageLines")), _number(_get(config, "ImageLines")), lines))
    samples = max((int(m.mdh.SamplesInScan) for m in readouts if m.is_image_scan()), default=0)
    if trajectory == "cartesian":
        encoded_x = max(int(_number(_get(meas, "iNoOfFourierColumns")) or 0), samples) or 2 * base
        oversampling = _first(_number(_get(meas, "flReadoutOSFactor")), encoded_x / base)
        encoded_fov_x = read_fov * oversampling
    else:
        encoded_x, encoded_fov_x = image_columns, read_fov
    phase_os = _number(_get(meas, "phaseOversampling")) or 0.0
    slice_os = _number(_get(kspace, "dSliceOversamplingForDialog")) or 0.0

    seen = _counter_maxima(readouts)
    fourier_lines = int(_number(_get(meas, "iNoOfFourierLines")) or lines)
    fourier_partitions = int(_number(_get(meas, "iNoOfFourierPartitions")) or partitions)
    centre = next((m.mdh for m in readouts if m.is_image_scan()), None)
    centre_line = centre.CenterLin if centre is not None else lines // 2 - (lines - fourier_lines)
    centre_partition = centre.CenterPar if centre is not None else partitions // 2 - (partitions - fourier_partitions)

    def limit(maximum: float | None, counter: str, center: int = 0) -> xsd.limitType:
        return xsd.limitType(minimum=0, maximum=max(int(maximum or 0), seen[counter]), center=int(center))

    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=limit(fourier_lines - 1, "Lin", centre_line if trajectory == "cartesian" else 0),
        kspace_encoding_step_2=limit(fourier_partitions - 1 if is_3d else 0, "Par",
                                     centre_partition if is_3d and trajectory == "cartesian" else 0),
        slice=limit((_number(_get(yaps, "sSliceArray", "lSize")) or 1) - 1, "Sli"),
        set=limit((_number(_get(meas, "iNSet")) or 1) - 1, "Set"),
        phase=limit((_number(_get(yaps, "sPhysioImaging", "lPhases")) or 1) - 1, "Phs"),
        repetition=limit(_number(_get(yaps, "lRepetitions")), "Rep"),  # lRepetitions counts from 0
        segment=limit((_number(_get(yaps, "sFastImaging", "lSegments")) or 1) - 1, "Seg"),
        contrast=limit((_number(_get(yaps, "lContrasts")) or 1) - 1, "Eco"),
        average=limit((_number(_get(yaps, "lAverages")) or 1) - 1, "Ave"),
    )
    return xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=encoded_x, y=lines, z=partitions if is_3d else 1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=encoded_fov_x, y=phase_fov * (1 + phase_os),
                                             z=thickness * (1 + slice_os)),
        ),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(
                x=image_columns, y=image_lines,
                z=int(_number(_get(kspace, "lImagesPerSlab")) or partitions) if is_3d else 1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=read_fov, y=phase_fov, z=thickness),
        ),
        encodingLimits=limits,
        trajectory=xsd.trajectoryType(trajectory),
        parallelImaging=_parallel_imaging(yaps, readouts),
    )


def _parallel_imaging(yaps: dict, readouts: list) -> xsd.parallelImagingType:
    """Acceleration from ``sPat``; the calibration mode from ``ucRefScanMode`` or, if undefined, the flags."""
    mode_code = int(_number(_get(yaps, "sPat", "ucRefScanMode")) or 1)
    mode = _CALIBRATION_MODES.get(mode_code)
    if mode is None:
        if any(m.is_flag_set("PATREFANDIMASCAN") for m in readouts):
            mode = "embedded"
        elif any(m.is_flag_set("PATREFSCAN") for m in readouts):
            mode = "separate"
    interleaving = _INTERLEAVING.get(mode_code)
    return xsd.parallelImagingType(
        accelerationFactor=xsd.accelerationFactorType(
            kspace_encoding_step_1=int(_number(_get(yaps, "sPat", "lAccelFactPE")) or 1),
            kspace_encoding_step_2=int(_number(_get(yaps, "sPat", "lAccelFact3D")) or 1)),
        calibrationMode=xsd.calibrationModeType(mode) if mode else None,
        interleavingDimension=xsd.interleavingDimensionType(interleaving) if interleaving else None,
    )


def _sequence_parameters(hdr: dict) -> xsd.sequenceParametersType:
    """TR, TE (one per contrast), TI in ms (the protocol has µs) and the flip angle in degrees."""
    yaps = hdr["MeasYaps"]

    def milliseconds(key: str, count: int | None = None) -> list[float]:
        values = [v for v in (_number(x) for x in (_get(yaps, key) or [])) if v and v > 0]
        return [v / 1000.0 for v in values[:count]]

    flip = _number(_first(_get(hdr, "Dicom", "adFlipAngleDegree", 0), _get(yaps, "adFlipAngleDegree", 0)))
    return xsd.sequenceParametersType(
        TR=milliseconds("alTR"),
        TE=milliseconds("alTE", int(_number(_get(yaps, "lContrasts")) or 1)),
        TI=milliseconds("alTI"),
        flipAngle_deg=[flip] if flip is not None else [],
    )


def _user_parameters(hdr: dict) -> xsd.userParametersType | None:
    """The embedded reference lines of parallel imaging, as siemens_to_ismrmrd names them."""
    lines = [xsd.userParameterLongType(name=name, value=int(value))
             for name, value in (("EmbeddedRefLinesE1", _number(_get(hdr, "MeasYaps", "sPat", "lRefLinesPE"))),
                                 ("EmbeddedRefLinesE2", _number(_get(hdr, "MeasYaps", "sPat", "lRefLines3D"))))
             if value]
    return xsd.userParametersType(userParameterLong=lines) if lines else None
