"""DICOM objects a PACS shows for one classified image, written with highdicom.

For each DICOM source image, in the source's study and in new series:

- :func:`structured_report`: a Comprehensive 3D SR holding a TID 1500 measurement report with
  one whole-image measurement group that references the source image: the finding (the
  predicted class, coded, :data:`CLASS_CODES`), one measurement per class (its probability,
  UCUM unit ``1``), the algorithm (name, version, weights SHA-256), observer device tea_med
  with the model's Device UID, Contributing Equipment naming the processing algorithm, and
  Verification Flag ``UNVERIFIED``;
- :func:`secondary_capture`: an RGB Secondary Capture of the image with the LRP-ε heatmap
  overlaid and a burned-in legend (class, probability, "not for diagnostic use"), for viewers
  that only show images.

Identifiers are copied from the source only where the IOD requires them (patient and study
modules, through highdicom); they are never logged. UIDs are derived from the source's SOP
Instance UID and the model's Device UID, so running the same model on the same image again
writes the same objects (a PACS stores them once).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

#: the coded finding of each class name tea_med's bundles use (SNOMED CT); any other class name
#: is coded in the private scheme ``99TEAMED`` with the name as code value and meaning
CLASS_CODES: dict[str, Code] = {
    "normal": Code("17621005", "SCT", "Normal"),
    "pneumonia": Code("233604007", "SCT", "Pneumonia"),
    "covid": Code("840539006", "SCT", "COVID-19"),
    "covid-19": Code("840539006", "SCT", "COVID-19"),
}
#: the other codes the report uses
PROCEDURE = Code("399208008", "SCT", "Plain chest X-ray")
LUNG = Code("39607008", "SCT", "Lung")
UNITLESS = Code("1", "UCUM", "no units")
PRIVATE_SCHEME = "99TEAMED"
#: what every result object says about itself
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
SR_SERIES_DESCRIPTION = "tea_med AI result (not for diagnostic use)"
SC_SERIES_DESCRIPTION = "tea_med heatmap (not for diagnostic use)"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
MANUFACTURER = "tea_med"
#: SOP classes of the images tea_med classifies
ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}


def class_code(name: str) -> Code:
    """The coded concept of a class name (:data:`CLASS_CODES`, else a ``99TEAMED`` code)."""
    found = CLASS_CODES.get(name.lower())
    return found if found is not None else Code(name[:16], PRIVATE_SCHEME, name)


@dataclass(frozen=True)
class AlgorithmIdentity:
    """The model behind a result, as the model card states it."""

    name: str
    version: str
    device_uid: str
    weights_sha256: str
    software_version: str

    def algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=self.name, version=self.version, parameters=[f"weights sha256 {self.weights_sha256}"]
        )

    def equipment(self) -> hd.ContributingEquipment:
        return hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=self.name[:64],
            software_versions=[f"tea_med {self.software_version}", f"model {self.version}"],
            device_serial_number=self.weights_sha256[:16],
            contribution_datetime=_dt.datetime.now(),
            contribution_description=(
                f"classification by {self.name} {self.version}; {NOT_FOR_DIAGNOSIS.lower()}"
            ),
        )


def result_uids(source_uid: str, identity: AlgorithmIdentity, kind: str) -> tuple[str, str]:
    """``(series, instance)`` UIDs of the ``kind`` object (``"sr"``, ``"sc"``) for one source:
    the same source and model always give the same UIDs."""
    entropy = ["tea_med-result", source_uid, identity.device_uid, kind]
    return str(generate_uid(entropy_srcs=[*entropy, "series"])), str(
        generate_uid(entropy_srcs=[*entropy, "instance"])
    )


def structured_report(
    source: Dataset,
    probabilities: Sequence[float],
    class_names: Sequence[str],
    identity: AlgorithmIdentity,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Comprehensive 3D SR of one classified source image (see the module docs)."""
    if len(probabilities) != len(class_names):
        raise ValueError(f"{len(probabilities)} probabilities for {len(class_names)} class names")
    predicted = class_names[int(np.argmax(probabilities))]
    algorithm = identity.algorithm()
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=identity.device_uid,
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=identity.name[:64],
        serial_number=identity.weights_sha256[:16],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    measurements = [
        hd.sr.Measurement(
            name=class_code(name),
            value=round(float(p), 6),
            unit=UNITLESS,
            method=codes.DCM.Probability,
            algorithm_id=algorithm,
        )
        for name, p in zip(class_names, probabilities, strict=True)
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(
                generate_uid(
                    entropy_srcs=["tea_med-tracking", str(source.SOPInstanceUID), identity.device_uid]
                )
            ),
            identifier="whole image classification",
        ),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=LUNG)],
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=class_code(predicted))
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=PROCEDURE, imaging_measurements=[group]
    )
    series_uid, instance_uid = result_uids(str(source.SOPInstanceUID), identity, "sr")
    return hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=identity.name[:64],
        software_versions=f"tea_med {identity.software_version}",
        contributing_equipment=[identity.equipment()],
    )


def _font(size: int) -> Any:  # PIL's font classes differ per backend
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, legend: Sequence[str]) -> np.ndarray:
    """``(rows, cols, 3)`` uint8: the grey image (1st-99th percentile onto black..white) with the
    signed heatmap over it (red: relevance for the class, blue: against; opacity grows with
    |relevance| up to its 99.5th percentile) and ``legend`` burned in on a black band on top."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    grey = np.clip((img - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != grey.shape:
        raise ValueError(f"heatmap shape {heat.shape} differs from the image's {grey.shape}")
    lim = float(np.percentile(np.abs(heat), 99.5)) or float(np.abs(heat).max()) or 1.0
    colour = colormaps["bwr"](np.clip(heat / lim, -1.0, 1.0) * 0.5 + 0.5)[..., :3]
    alpha = np.clip(np.abs(heat) / lim, 0.0, 1.0)[..., None] * 0.7
    rgb = grey[..., None] * (1.0 - alpha) + colour * alpha
    out = Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")
    rows, cols = grey.shape
    size = max(10, min(rows, cols) // 28)
    band = (size + size // 3) * len(legend) + size // 2
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, cols, min(rows, band)), fill=(0, 0, 0))
    font = _font(size)
    for i, line in enumerate(legend):
        draw.text((size // 2, size // 4 + i * (size + size // 3)), line, fill=(255, 255, 0), font=font)
    return np.asarray(out)


def secondary_capture(
    source: Dataset,
    pixels: np.ndarray,
    identity: AlgorithmIdentity,
) -> hd.sc.SCImage:
    """An RGB Secondary Capture of ``pixels`` (:func:`overlay_rgb`) in the source's study."""
    series_uid, instance_uid = result_uids(str(source.SOPInstanceUID), identity, "sc")
    orientation = source.get("PatientOrientation")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(pixels, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=tuple(orientation) if orientation and len(orientation) == 2 else ("", ""),
        contributing_equipment=[identity.equipment()],
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=identity.name[:64],
        software_versions=f"tea_med {identity.software_version}",
    )
    sc.BurnedInAnnotation = "YES"
    # the chest is an unpaired body part, so General Series Laterality (Type 2C) stays absent
    sc.BodyPartExamined = source.get("BodyPartExamined") or "CHEST"
    laterality = source.get("Laterality") or source.get("ImageLaterality")
    if laterality:
        sc.Laterality = laterality
    sc.ImageComments = (
        f"LRP-epsilon heatmap of {identity.name} {identity.version}; {NOT_FOR_DIAGNOSIS.lower()}"
    )
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "CLASS_CODES",
    "AlgorithmIdentity",
    "class_code",
    "overlay_rgb",
    "result_uids",
    "secondary_capture",
    "structured_report",
]
