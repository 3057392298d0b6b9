"""Writing plausible 2-D projection-radiography DICOM files (phantoms, tests, benchmarks).

Everything written is synthetic: patient IDs and names are made-up opaque strings.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = ["SOP_CLASS_BY_MODALITY", "write_dicom"]

#: the SOP class written for each supported modality
SOP_CLASS_BY_MODALITY: dict[str, UID] = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}


def write_dicom(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale_slope: float | None = None,
    rescale_intercept: float | None = None,
    modality: str = "DX",
    pixel_spacing: Sequence[float] = (0.143, 0.143),
    window: tuple[float, float] | None = None,
    patient_id: str = "ANON0000",
    sop_instance_uid: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    institution: str = "",
    transfer_syntax: str = ExplicitVRLittleEndian,
    attributes: Mapping[str, Any] | None = None,
) -> Path:
    """Write one single-frame CR or DX image with proper file meta information.

    Args:
        path: output file.
        pixels: ``(rows, cols)`` stored values, dtype uint8, uint16 or int16 (written as is).
        photometric: ``"MONOCHROME1"`` or ``"MONOCHROME2"``.
        bits_stored: defaults to the dtype's width; values must fit in it.
        rescale_slope, rescale_intercept: written when either is given (Modality LUT).
        modality: ``"CR"`` or ``"DX"`` (selects the SOP class).
        pixel_spacing: (row, column) in mm, written as Imager and (for DX) Pixel Spacing.
        window: optional (center, width) VOI window.
        patient_id: a synthetic, opaque identifier; also used as the (synthetic) name.
        sop_instance_uid, study_instance_uid, series_instance_uid: generated when omitted.
        institution: the synthetic site name.
        transfer_syntax: Explicit VR Little Endian by default; compressed syntaxes are encoded
            with the installed pydicom encoders (e.g. RLE Lossless, JPEG 2000 Lossless).
        attributes: extra keyword -> value pairs set last.

    Returns:
        The written path.
    """
    modality = modality.upper()
    if modality not in SOP_CLASS_BY_MODALITY:
        raise ValueError(f"modality must be one of {sorted(SOP_CLASS_BY_MODALITY)}, got {modality!r}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be 'MONOCHROME1' or 'MONOCHROME2', got {photometric!r}")
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"pixels must be 2-D uint8/uint16/int16, got {pixels.dtype} {pixels.shape}")
    bits = int(bits_stored or pixels.dtype.itemsize * 8)
    sop_class = SOP_CLASS_BY_MODALITY[modality]
    sop_uid = UID(sop_instance_uid) if sop_instance_uid else generate_uid()
    now = _dt.datetime(2024, 1, 1, 12, 0, 0)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "tea_med synthetic phantom"
    ds.InstitutionName = institution
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.BurnedInAnnotation = "YES"
    ds.ImagerPixelSpacing = [float(v) for v in pixel_spacing]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    if rescale_slope is not None or rescale_intercept is not None:
        ds.RescaleSlope = float(1.0 if rescale_slope is None else rescale_slope)
        ds.RescaleIntercept = float(0.0 if rescale_intercept is None else rescale_intercept)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
        ds.VOILUTFunction = "LINEAR"
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    if UID(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
