"""DICOM results of ``tea-med infer``: a TID 1500 SR and a heatmap Secondary Capture per DICOM
input, read back with pydicom and highdicom and validated with dicom3tools' ``dciodvfy``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tea_med.deploy.infer import infer

#: the codes the SR must carry, written down from SNOMED CT / DICOM PS3.16 (not from tea_med)
FINDING_CODES = {"normal": "17621005", "pneumonia": "233604007", "covid": "840539006"}
PHI = ("PatientName", "PatientID", "PatientBirthDate")


@pytest.fixture(scope="module")
def results(exported_student: Path, dicom_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = sorted((dicom_phantoms / "images" / "test_unbiased").glob("*.dcm"))
    out = tmp_path_factory.mktemp("results")
    summary = infer(exported_student, sources, out)
    assert summary.dicom_objects == 2 * len(sources) and summary.errors == 0
    return out


def _content(items: pydicom.Sequence, value_type: str) -> list[pydicom.Dataset]:
    found = []
    for item in items:
        if item.ValueType == value_type:
            found.append(item)
        if "ContentSequence" in item:
            found.extend(_content(item.ContentSequence, value_type))
    return found


def test_the_sr_reports_each_probability_and_the_coded_finding(results: Path, exported_student: Path) -> None:
    card = json.loads((exported_student / "models" / "model_card.json").read_text())
    for line in (results / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        source = pydicom.dcmread(row["file"])
        sr_path = next(p for p in row["dicom_results"] if p.endswith("_sr.dcm"))
        ds = pydicom.dcmread(sr_path)
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)  # highdicom parses it as a Comprehensive 3D SR
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.VerificationFlag == "UNVERIFIED" and ds.CompletionFlag == "COMPLETE"
        assert "not for diagnostic use" in ds.SeriesDescription.lower()
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        template = ds.ContentTemplateSequence[0]
        assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "1500")
        numbers = _content(ds.ContentSequence, "NUM")
        assert len(numbers) == 3
        by_code = {n.ConceptNameCodeSequence[0].CodeValue: n.MeasuredValueSequence[0] for n in numbers}
        for name, code in FINDING_CODES.items():
            value = by_code[code]
            assert float(value.NumericValue) == pytest.approx(row["probabilities"][name], abs=1e-6)
            unit = value.MeasurementUnitsCodeSequence[0]
            assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("1", "UCUM")
        findings = [
            c
            for c in _content(ds.ContentSequence, "CODE")
            if c.ConceptNameCodeSequence[0].CodeValue == "121071"
        ]
        assert [f.ConceptCodeSequence[0].CodeValue for f in findings] == [FINDING_CODES[row["predicted"]]]
        uids = [u.UID for u in _content(ds.ContentSequence, "UIDREF")]
        assert card["device_uid"] in uids  # observer device = the model's Device UID
        ours = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "tea_med"]
        assert len(ours) == 1
        processing = ours[0]
        assert processing.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
        assert card["version"] in " ".join(processing.SoftwareVersions)
        assert sr.SOPInstanceUID == ds.SOPInstanceUID


def test_the_secondary_capture_shows_the_image_with_a_burned_in_legend(results: Path) -> None:
    for line in (results / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        source = pydicom.dcmread(row["file"])
        sc = pydicom.dcmread(next(p for p in row["dicom_results"] if p.endswith("_sc.dcm")))
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert sc.StudyInstanceUID == source.StudyInstanceUID
        assert (sc.Rows, sc.Columns) == (source.Rows, source.Columns)
        assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
        assert sc.BurnedInAnnotation == "YES"
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        rgb = sc.pixel_array
        band = rgb[:8]
        assert (band[..., 2] < 40).mean() > 0.8  # the legend band: black with yellow text (no blue)
        assert (band[..., 0] > 200).any()
        body = rgb[rgb.shape[0] // 2 :].astype(int)
        assert (np.abs(body[..., 0] - body[..., 2]) > 30).any()  # red or blue heatmap colour


def test_the_same_image_and_model_give_the_same_objects(
    results: Path, exported_student: Path, tmp_path: Path
) -> None:
    row = json.loads((results / "predictions.jsonl").read_text().splitlines()[0])
    infer(exported_student, [row["file"]], tmp_path)
    for first in row["dicom_results"]:
        again = pydicom.dcmread(tmp_path / "dicom" / Path(first).name)
        assert again.SOPInstanceUID == pydicom.dcmread(first).SOPInstanceUID


def test_no_identifier_of_the_source_reaches_the_text_outputs(results: Path) -> None:
    rows = [json.loads(line) for line in (results / "predictions.jsonl").read_text().splitlines()]
    planted = {str(pydicom.dcmread(r["file"]).get(k, "")) for r in rows for k in PHI} - {""}
    assert planted
    for name in ("predictions.csv", "predictions.jsonl", "errors.csv"):
        text = (results / name).read_text()
        assert not [v for v in planted if v in text], name


@pytest.mark.integration
def test_dciodvfy_finds_no_errors(results: Path) -> None:
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy (Debian package dicom3tools) is needed: apt-get install dicom3tools"
    files = sorted((results / "dicom").glob("*.dcm"))
    assert len(files) >= 4
    for f in files:
        done = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True)
        report = done.stdout + done.stderr
        assert "Error" not in report, f"{f.name}:\n{report}"
        assert ("Comprehensive3DSR" if f.name.endswith("_sr.dcm") else "SCImage") in report
