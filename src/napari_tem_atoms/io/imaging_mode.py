"""How an image was recorded (HRTEM, or STEM with which detector), read from the file's metadata.

The networks are trained on simulated HRTEM images. A STEM image looks different (HAADF:
bright columns on a dark background, no contrast reversals; ABF: dark columns), and a model
trained on HRTEM finds wrong columns in it; so the mode is read where a format records it:

* Velox EMD: the detector that recorded the image (``BinaryResult`` → ``Detectors``: a
  ``ScanningDetector`` such as ``HAADF``, ``DF4``, ``ABF``, ``BF``, or a camera), else the
  illumination (``Optics/IlluminationMode``: ``Probe`` or ``Parallel``).
* DM3/DM4: ``Microscope Info`` (``Illumination Mode``, ``Imaging Mode``, ``Operation Mode``),
  DigiScan tags (a scanned image) and the image's name (the detector's).
* SER/EMI (TIA): ``ExperimentalDescription/Mode`` of the EMI file (``" STEM nP SA Zoom
  Diffraction"``, ``" TEM uP SA Zoom Image"``); a SER file read on its own takes it from the
  EMI file beside it.
* Berkeley/NCEM EMD: a mode or detector attribute of the ``microscope`` group, or a dataset
  named after a STEM detector (``HAADF``, ``ABF``).
* HSPY: HyperSpy's ``Acquisition_instrument.TEM.acquisition_mode`` (``STEM``, ``TEM``), else
  the original metadata of the file it was converted from.
* TIFF: JEOL SightX tags (``EosMode``). Other TIFF, MRC and NPY files do not record it.

Conservative: the mode is ``"unknown"`` unless the metadata says it plainly, and the source
says where it was read, or why it is unknown. A diffraction pattern is never called an image
of either mode.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import TEMAtomsError

__all__ = [
    "IMAGING_MODES",
    "STEM_MODES",
    "USER_MODES",
    "ImagingMode",
    "detector_mode",
    "digital_micrograph_mode",
    "hyperspy_mode",
    "is_stem",
    "ncem_emd_mode",
    "parse_imaging_mode",
    "read_imaging_mode",
    "tia_mode",
    "tiff_mode",
    "velox_mode",
]

#: Every value of :attr:`TEMImage.imaging_mode <napari_tem_atoms.io.TEMImage.imaging_mode>`.
#: ``"STEM"``: scanned (the metadata says so) with a detector that is not named or not one of
#: the three. ``"STEM-HAADF"`` covers every annular dark-field detector (HAADF, MAADF, ADF, DF).
IMAGING_MODES = ("HRTEM", "STEM-HAADF", "STEM-ABF", "STEM-BF", "STEM", "unknown")
STEM_MODES = ("STEM-HAADF", "STEM-ABF", "STEM-BF", "STEM")
#: What users type (``tem-atoms detect --mode``), lower case, to the mode.
USER_MODES = {"hrtem": "HRTEM", "stem-haadf": "STEM-HAADF", "stem-adf": "STEM-HAADF",
              "stem-abf": "STEM-ABF", "stem-bf": "STEM-BF"}

#: A detector's name as a token of its own: "HAADF", "Fei HAADF", "DF4", "BF-S", not "EDF".
_DETECTOR_TOKEN = re.compile(r"(?<![A-Z])(HAADF|MAADF|LAADF|ADF|DF|ABF|BF)(?![A-Z])")
_DETECTOR_MODES = {"HAADF": "STEM-HAADF", "MAADF": "STEM-HAADF", "LAADF": "STEM-HAADF",
                   "ADF": "STEM-HAADF", "DF": "STEM-HAADF", "ABF": "STEM-ABF", "BF": "STEM-BF"}
#: Names that say STEM by themselves (BF and DF are also TEM bright and dark field).
_STEM_ONLY_DETECTORS = ("HAADF", "MAADF", "LAADF", "ADF", "ABF")
#: Most bytes of an EMI file searched for a SER file's metadata (they are kilobytes).
_MAX_EMI_BYTES = 64_000_000


class ImagingMode(NamedTuple):
    """An imaging mode and where it was read (or why it is unknown).

    Attributes
    ----------
    mode : str
        One of :data:`IMAGING_MODES`.
    source : str
        Where it came from, in words (``"Velox metadata: detector HAADF"``), or why it is
        unknown.
    """

    mode: str
    source: str


def is_stem(mode: str | None) -> bool:
    """True for a STEM mode (any detector)."""
    return mode in STEM_MODES


def parse_imaging_mode(text: str) -> str:
    """A mode as a user types it (``"stem-haadf"``, ``"ADF"``), as in :data:`IMAGING_MODES`.

    Raises
    ------
    TEMAtomsError
        Naming the modes that can be given.
    """
    key = str(text).strip().lower().replace("_", "-").replace(" ", "-")
    key = {"haadf": "stem-haadf", "adf": "stem-haadf", "abf": "stem-abf", "bf": "stem-bf",
           "tem": "hrtem"}.get(key, key)
    if key in USER_MODES:
        return USER_MODES[key]
    canonical = {mode.lower(): mode for mode in IMAGING_MODES}
    if key in canonical:
        return canonical[key]
    raise TEMAtomsError(f"unknown imaging mode {text!r}: give one of "
                        f"{', '.join(USER_MODES)} (or auto: what the file says)")


def detector_mode(name: object) -> str | None:
    """The STEM mode a detector's name says (``"DF4"`` → ``"STEM-HAADF"``), else None."""
    match = _DETECTOR_TOKEN.search(str(name or "").upper())
    return _DETECTOR_MODES[match.group(1)] if match else None


def _stem_only_detector(name: object) -> str | None:
    """Like :func:`detector_mode`, for names that exist only in STEM (not BF or DF)."""
    match = _DETECTOR_TOKEN.search(str(name or "").upper())
    return (_DETECTOR_MODES[match.group(1)]
            if match and match.group(1) in _STEM_ONLY_DETECTORS else None)


def _get(tree: Any, *keys: str) -> Any:
    """``tree[k1][k2]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(tree, Mapping):
            return None
        tree = tree.get(key)
    return tree


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _stem_with_detector(names: list[Any], evidence: str) -> ImagingMode:
    """A STEM image: its detector from the first name that says one."""
    for name in names:
        mode = detector_mode(name)
        if mode:
            return ImagingMode(mode, f"{evidence}, detector {_text(name)}")
    return ImagingMode("STEM", f"{evidence}; the detector is not named")


# --- formats ---------------------------------------------------------------------------------


def _velox_detector(om: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``Detectors`` entry of the detector that recorded this image, if it is named."""
    detectors = om.get("Detectors")
    if not isinstance(detectors, Mapping):
        return None
    name = _get(om, "BinaryResult", "Detector")
    if name:
        for entry in detectors.values():
            if isinstance(entry, Mapping) and entry.get("DetectorName") == name:
                return entry
    index = _get(om, "BinaryResult", "DetectorIndex")
    if index is not None:
        entry = detectors.get(f"Detector-{index}")
        if isinstance(entry, Mapping):
            return entry
    entry = om.get("DetectorMetadata")  # RosettaSciIO's copy of the entry, when it found it
    return entry if isinstance(entry, Mapping) and entry.get("DetectorName") else None


def velox_mode(om: Mapping[str, Any]) -> ImagingMode:
    """The mode of a Velox EMD image, from its detector, else its illumination.

    Every detector of the microscope is listed in ``Detectors`` (a TEM image lists the HAADF
    detector too, retracted): only the one in ``BinaryResult`` recorded this image.
    """
    illumination = _text(_get(om, "Optics", "IlluminationMode"))
    detector = _velox_detector(om)
    if detector is not None:
        name, kind = _text(detector.get("DetectorName")), _text(detector.get("DetectorType"))
        if kind == "ScanningDetector":
            mode = detector_mode(name)
            return ImagingMode(mode or "STEM", f"Velox metadata: detector {name}"
                               + ("" if mode else ", a scanning detector other than HAADF, "
                                  "ABF or BF"))
        if kind == "ImagingDetector":
            if illumination == "Probe":  # a camera under a focused probe: a diffraction pattern
                return ImagingMode("unknown", f"Velox metadata: camera {name} under a focused "
                                   "probe (a diffraction pattern?)")
            return ImagingMode("HRTEM", f"Velox metadata: camera {name}")
        if kind:
            return ImagingMode("unknown", f"Velox metadata: recorded by {name}, a {kind}")
    if illumination == "Probe":
        return ImagingMode("STEM", "Velox metadata: illumination Probe; the detector is not "
                                   "named")
    if illumination == "Parallel":
        return ImagingMode("HRTEM", "Velox metadata: illumination Parallel")
    return ImagingMode("unknown", "the Velox metadata name neither the detector nor the "
                                  "illumination")


def _dm_image_tags(om: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The ``ImageTags`` and name of the image RosettaSciIO read from a DM file."""
    images = om.get("ImageList")
    if not isinstance(images, Mapping):
        return {}, ""
    # The image read is the last of the list (the first is the thumbnail in DM3 files).
    for group in reversed(list(images.values())):
        if isinstance(group, Mapping) and isinstance(group.get("ImageTags"), Mapping):
            return group["ImageTags"], _text(group.get("Name"))
    return {}, ""


def digital_micrograph_mode(om: Mapping[str, Any], title: str = "") -> ImagingMode:
    """The mode of a DM3/DM4 image, from ``Microscope Info`` and DigiScan tags.

    ``Imaging Mode`` is ``DIFFRACTION`` in STEM too (the projector is in diffraction mode
    while the probe scans), so it only tells a TEM diffraction pattern from a TEM image.
    ``Session Info/Detector`` is left aside: it is what the session was last set to (a STEM
    image of HyperSpy's test files says "GIF CCD").
    """
    tags, name = _dm_image_tags(om)
    info = tags.get("Microscope Info") if isinstance(tags.get("Microscope Info"), Mapping) else {}
    illumination = _text(info.get("Illumination Mode")).upper()
    imaging = _text(info.get("Imaging Mode")).upper()
    operation = _text(info.get("Operation Mode")).upper()
    digiscan = "DigiScan" in tags or _text(_get(tags, "DataBar", "Device Name")) == "DigiScan"
    if illumination.startswith("SEM") or operation.startswith("SEM"):
        return ImagingMode("unknown", f"DM tags: Illumination Mode {illumination} (a scanning "
                                      "electron microscope)")
    if illumination == "TEM" and digiscan and "SCANNING" not in operation:
        return ImagingMode("unknown", "DM tags disagree: Illumination Mode TEM, but DigiScan "
                                      "tags (a scanned image)")
    if "STEM" in illumination or "SCANNING" in operation or digiscan:
        evidence = [part for part, present in (
            ("DigiScan", digiscan), (f"Illumination Mode {illumination}", "STEM" in illumination),
            (f"Operation Mode {operation}", "SCANNING" in operation)) if present]
        names = [title, name, _get(tags, "QuickSaved", "original name")]
        return _stem_with_detector(names, "DM tags: " + ", ".join(evidence))
    if illumination == "TEM":
        if "DIFFRACTION" in imaging or "DIFFRACTION" in operation:
            return ImagingMode("unknown", "DM tags: TEM in diffraction mode (a diffraction "
                                          "pattern, not an image)")
        said = f", Imaging Mode {imaging}" if imaging else ""
        return ImagingMode("HRTEM", f"DM tags: Illumination Mode TEM{said}")
    if illumination:
        return ImagingMode("unknown", f"DM tags: Illumination Mode {illumination} (neither "
                                      "TEM nor STEM)")
    return ImagingMode("unknown", "the DM tags hold no Microscope Info illumination mode and "
                                  "no DigiScan tags")


def _emi_object_info(ser: Path) -> Mapping[str, Any] | None:
    """The ``ObjectInfo`` of a SER file, from the EMI file beside it (``X_1.ser`` → ``X.emi``).

    Only what :func:`tia_mode` reads: ``ExperimentalDescription/Mode`` and
    ``AcquireInfo/CameraNamePath``. None when there is no EMI file or it cannot be read.
    """
    match = re.fullmatch(r"(.+)_(\d+)", ser.stem)
    if not match:
        return None
    emi = next((path for path in (ser.with_name(match[1] + ".emi"),
                                  ser.with_name(match[1] + ".EMI")) if path.is_file()), None)
    if emi is None:
        return None
    try:
        with open(emi, "rb") as stream:
            raw = stream.read(_MAX_EMI_BYTES)
        chunks = re.findall(rb"<ObjectInfo>.*?</ObjectInfo>", raw, flags=re.DOTALL)
        # The n-th SER file's metadata is the n-th ObjectInfo (as RosettaSciIO pairs them).
        root = ET.fromstring(chunks[int(match[2]) - 1].decode("utf-8", errors="replace"))
    except (OSError, IndexError, ET.ParseError):
        return None
    info: dict[str, Any] = {"ExperimentalDescription": {}, "AcquireInfo": {}}
    for data in root.iter("Data"):
        if _text(data.findtext("Label")) == "Mode":
            info["ExperimentalDescription"]["Mode"] = data.findtext("Value")
    camera = root.findtext("AcquireInfo/CameraNamePath")
    if camera:
        info["AcquireInfo"]["CameraNamePath"] = camera
    return info


def tia_mode(om: Mapping[str, Any], path: Path | None = None) -> ImagingMode:
    """The mode of a TIA image, from the EMI file's ``Mode`` (``" TEM uP SA Zoom Image"``).

    A SER file read on its own has no ``ObjectInfo``: it is looked for in the EMI file beside
    it. STEM with a camera (``CameraNamePath``) is a diffraction pattern.
    """
    info = om.get("ObjectInfo")
    if not isinstance(info, Mapping) and path is not None and path.suffix.lower() == ".ser":
        info = _emi_object_info(path)
    if not isinstance(info, Mapping):
        return ImagingMode("unknown", "TIA metadata not found (a SER file says it only through "
                                      "the EMI file saved with it: keep them side by side)")
    mode = _text(_get(info, "ExperimentalDescription", "Mode"))
    words = mode.upper().split()
    camera = _text(_get(info, "AcquireInfo", "CameraNamePath"))
    said = f"TIA metadata: Mode '{mode}'"
    if words[:1] == ["STEM"]:
        if camera:
            return ImagingMode("unknown", f"{said}, camera {camera} (a diffraction pattern)")
        names = [_get(info, "DetectorName"), _get(info, "AcquireInfo", "DetectorName")]
        return _stem_with_detector(names, said)
    if words[:1] == ["TEM"]:
        if "DIFFRACTION" in words:
            return ImagingMode("unknown", f"{said} (a diffraction pattern)")
        return ImagingMode("HRTEM", said)
    return ImagingMode("unknown", f"{said} (neither TEM nor STEM)" if mode else
                       "the TIA metadata hold no Mode")


#: Attributes of a Berkeley EMD's microscope group that may say the mode or the detector.
_NCEM_MODE_KEYS = ("mode", "imaging_mode", "acquisition_mode", "illumination_mode",
                   "detector", "detector_name")


def ncem_emd_mode(om: Mapping[str, Any], title: str = "") -> ImagingMode:
    """The mode of a Berkeley/NCEM EMD image: a ``microscope`` attribute, or the dataset's name.

    The format has no field for it; a mode or detector attribute is read when a writer added
    one, and a dataset named after a detector that exists only in STEM (HAADF, ADF, ABF).
    """
    microscope = om.get("microscope")
    found = {str(key).lower(): _text(value) for key, value in microscope.items()
             } if isinstance(microscope, Mapping) else {}
    for key in _NCEM_MODE_KEYS:
        value = found.get(key, "")
        if "STEM" in value.upper() or _stem_only_detector(value):
            names = [found.get("detector"), found.get("detector_name"), value, title]
            return _stem_with_detector(names, f"Berkeley EMD: microscope {key} {value!r}")
        if value.upper() in ("TEM", "HRTEM"):
            return ImagingMode("HRTEM", f"Berkeley EMD: microscope {key} {value!r}")
    mode = _stem_only_detector(title)
    if mode:
        return ImagingMode(mode, f"Berkeley EMD: the dataset is named {title!r}")
    return ImagingMode("unknown", "the Berkeley EMD file does not say (no mode or detector in "
                                  "its microscope group)")


def hyperspy_mode(metadata: Mapping[str, Any], om: Mapping[str, Any],
                  title: str = "") -> ImagingMode:
    """The mode of an HSPY signal: ``Acquisition_instrument.TEM.acquisition_mode``.

    When HyperSpy's metadata do not say, the original metadata of the file it was converted
    from (DM, Velox, TIA) are read as that format's.
    """
    tem = _get(metadata, "Acquisition_instrument", "TEM")
    acquisition = _text(_get(tem, "acquisition_mode")).upper()
    if acquisition == "STEM":
        detectors = _get(tem, "Detector")
        names = [title, *(detectors.keys() if isinstance(detectors, Mapping) else [])]
        return _stem_with_detector(names, "HyperSpy metadata: acquisition_mode STEM")
    if acquisition == "TEM":
        return ImagingMode("HRTEM", "HyperSpy metadata: acquisition_mode TEM")
    for marker, reader in (("ImageList", lambda: digital_micrograph_mode(om, title)),
                           ("Detectors", lambda: velox_mode(om)),
                           ("ObjectInfo", lambda: tia_mode(om))):
        if marker in om:
            found = reader()
            if found.mode != "unknown":
                return ImagingMode(found.mode, f"{found.source} (kept in the HSPY file)")
    return ImagingMode("unknown", "the HyperSpy metadata hold no acquisition_mode")


def tiff_mode(om: Mapping[str, Any]) -> ImagingMode:
    """The mode of a TIFF image: JEOL SightX tags (``EosMode``); other TIFFs do not say."""
    tags = om.get("tags") if isinstance(om.get("tags"), Mapping) else {}
    description = tags.get("ImageDescription")
    if isinstance(description, str) and "TemReporter" in description:
        try:  # as RosettaSciIO reads it: control characters around each line
            root = ET.fromstring("".join(line.strip(" \r\n\t\x01\x00")
                                         for line in description.split("\n")))
        except ET.ParseError:
            root = None
        eos = _text(root.findtext(".//EosMode")) if root is not None else ""
        forming = root.find(".//ImageFormingSystem") if root is not None else None
        if eos == "eosASID":
            scanning = _text(forming.findtext("ScanningImageFormingMode")
                             if forming is not None else "")
            # RosettaSciIO drops a 4-letter prefix of the value to name the detector
            return _stem_with_detector([scanning[4:], scanning],
                                       "JEOL TIFF tags: EosMode eosASID (STEM)")
        if eos == "eosTEM":
            selector = _text(forming.findtext("ModeString") if forming is not None else "")
            if selector == "MAG":
                return ImagingMode("HRTEM", "JEOL TIFF tags: EosMode eosTEM, MAG")
            return ImagingMode("unknown", f"JEOL TIFF tags: EosMode eosTEM, {selector or 'no'} "
                                          "mode (not an image at a magnification)")
    return ImagingMode("unknown", "TIFF tags do not record it")


#: Why formats without the information are unknown.
_SILENT_FORMATS = {
    "MRC": "MRC headers do not record it",
    "NPY": "an NPY file carries no metadata",
}


def read_imaging_mode(file_format: str, original_metadata: Mapping[str, Any] | None, *,
                      metadata: Mapping[str, Any] | None = None, title: str = "",
                      path: str | Path | None = None,
                      calibration_kind: str | None = None) -> ImagingMode:
    """The imaging mode a file's metadata say, or ``"unknown"`` and why.

    Parameters
    ----------
    file_format : str
        What the file was read as (``"EMD"``, ``"DM4"``, ``"TIFF (ImageJ)"``...).
    original_metadata : mapping, optional
        The file's metadata tree (:attr:`TEMImage.original_metadata
        <napari_tem_atoms.io.TEMImage.original_metadata>`).
    metadata : mapping, optional
        RosettaSciIO's (HyperSpy's) metadata of the signal; read for HSPY files.
    title : str, optional
        The signal's title (a Velox or DM STEM image is named after its detector).
    path : str or pathlib.Path, optional
        The file (a SER file's metadata are in the EMI file beside it).
    calibration_kind : str, optional
        The calibration's kind: ``"reciprocal"`` is a diffraction pattern, of neither mode.

    Returns
    -------
    ImagingMode
        ``(mode, source)``.
    """
    om = original_metadata if isinstance(original_metadata, Mapping) else {}
    path = Path(path) if path is not None else None
    if calibration_kind == "reciprocal":
        return ImagingMode("unknown", "a diffraction pattern (its pixels are in reciprocal "
                                      "units), not an image")
    label = file_format.split()[0].upper()
    try:
        if label == "EMD":  # Velox and Berkeley files, told apart by their metadata
            if "Detectors" in om or "Optics" in om or "BinaryResult" in om:
                return velox_mode(om)
            return ncem_emd_mode(om, title)
        if label in ("DM3", "DM4"):
            return digital_micrograph_mode(om, title)
        if label in ("SER", "EMI"):
            return tia_mode(om, path)
        if label == "HSPY":
            return hyperspy_mode(metadata or {}, om, title)
        if label == "TIFF":
            return tiff_mode(om)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # odd metadata
        return ImagingMode("unknown", f"the {label} metadata could not be read for it ({exc})")
    return ImagingMode("unknown", _SILENT_FORMATS.get(label, f"{file_format} files do not "
                                                              "record it"))
