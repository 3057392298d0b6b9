"""``tea-med infer``: predictions per image, errors that never stop the batch, three backends."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from tea_med.cli import main
from tea_med.data.dicom_writer import write_dicom
from tea_med.deploy.bundle import BundleError
from tea_med.deploy.infer import collect_inputs, infer, to_source_grid


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predictions_carry_probabilities_model_and_sop_instance_uid(
    exported_student: Path, dicom_phantoms: Path, tmp_path: Path
) -> None:
    folder = dicom_phantoms / "images" / "test_unbiased"
    summary = infer(exported_student, [folder], tmp_path / "out", dicom_results=False)
    dicoms = sorted(folder.glob("*.dcm"))
    pngs = sorted(folder.glob("*.png"))
    assert summary.predicted == len(dicoms) + len(pngs) and summary.errors == 0
    rows = {Path(r["file"]).name: r for r in _rows(tmp_path / "out" / "predictions.csv")}
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    card = json.loads((exported_student / "models" / "model_card.json").read_text())
    for f in dicoms:
        assert rows[f.name]["sop_instance_uid"] == pydicom.dcmread(f).SOPInstanceUID
    for f in pngs:
        assert rows[f.name]["sop_instance_uid"] == ""
    for line in lines:
        probs = np.array(list(line["probabilities"].values()))
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert line["predicted"] == list(line["probabilities"])[int(probs.argmax())]
        assert line["model_sha256"] == card["files"]["model.pt"]["sha256"]
        assert line["model_version"] == card["version"] == "0.1.0"
        row = rows[Path(line["file"]).name]
        assert float(row[f"p_{line['predicted']}"]) == pytest.approx(
            line["probabilities"][line["predicted"]], abs=1e-6
        )


def test_the_three_backends_give_the_same_classes(
    exported_student: Path, dicom_phantoms: Path, tmp_path: Path
) -> None:
    images = dicom_phantoms / "images" / "test_deceiving"
    found = {}
    for backend in ("eager", "torchscript", "onnx"):
        infer(
            exported_student, [images], tmp_path / backend, backend=backend, dicom_results=False, batch_size=3
        )
        found[backend] = _rows(tmp_path / backend / "predictions.csv")
    for backend in ("torchscript", "onnx"):
        assert [r["predicted"] for r in found[backend]] == [r["predicted"] for r in found["eager"]]
        for a, b in zip(found[backend], found["eager"], strict=True):
            for c in ("normal", "pneumonia", "covid"):
                assert float(a[f"p_{c}"]) == pytest.approx(float(b[f"p_{c}"]), abs=1e-4)


def test_bad_inputs_are_listed_with_a_reason_and_the_batch_goes_on(
    exported_student: Path, dicom_phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = sorted((dicom_phantoms / "images" / "test_biased").glob("*.dcm"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.png").write_text("not an image")
    truncated = bad / "truncated.dcm"
    truncated.write_bytes(good[0].read_bytes()[:600])
    ct = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    out = tmp_path / "out"
    code = main(
        [
            "infer",
            "--bundle",
            str(exported_student),
            "--out",
            str(out),
            "--no-progress",
            str(good[0]),
            str(bad),
            str(ct),
            str(good[1]),
        ]
    )
    assert code == 1
    assert "3 input(s) could not be used" in capsys.readouterr().err
    errors = {Path(r["file"]).name: r["reason"] for r in _rows(out / "errors.csv")}
    assert set(errors) == {"notes.png", "truncated.dcm", "CT_small.dcm"}
    assert "not a PNG/JPEG image" in errors["notes.png"]
    assert "unsupported SOP class 1.2.840.10008.5.1.4.1.1.2" in errors["CT_small.dcm"]
    assert "Computed Radiography" in errors["CT_small.dcm"]
    assert [Path(r["file"]).name for r in _rows(out / "predictions.csv")] == [good[0].name, good[1].name]


def test_monochrome1_is_read_with_its_polarity(exported_student: Path, tmp_path: Path) -> None:
    """The same picture stored as MONOCHROME2 and as inverted MONOCHROME1 gets the same answer."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:80, :64]
    picture = (2000 + 1500 * np.sin(yy / 9.0) * np.cos(xx / 7.0) + rng.normal(0, 50, (80, 64))).clip(0, 4095)
    stored = picture.astype(np.uint16)
    write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2", bits_stored=12, modality="CR")
    write_dicom(
        tmp_path / "m1.dcm",
        (4095 - stored).astype(np.uint16),
        photometric="MONOCHROME1",
        bits_stored=12,
        modality="CR",
    )
    infer(exported_student, [tmp_path / "m2.dcm", tmp_path / "m1.dcm"], tmp_path / "out", dicom_results=False)
    m2, m1 = _rows(tmp_path / "out" / "predictions.csv")
    for c in ("normal", "pneumonia", "covid"):
        assert float(m1[f"p_{c}"]) == pytest.approx(float(m2[f"p_{c}"]), abs=1e-5)


def test_missing_inputs_and_unexported_backends_are_refused_up_front(
    exported_student: Path, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match=r"input .*nowhere\.png does not exist"):
        collect_inputs([tmp_path / "nowhere.png"])
    from deploy.conftest import make_student_bundle

    fresh = make_student_bundle(tmp_path / "fresh")
    png = tmp_path / "x.png"
    __import__("PIL.Image").Image.fromarray(np.zeros((40, 40), np.uint8)).save(png)
    with pytest.raises(BundleError, match=r"model_card\.json does not exist: run `tea-med export"):
        infer(fresh, [png], tmp_path / "out", backend="onnx")
    # an exported file that changed after the export is refused
    tampered = tmp_path / "tampered"
    __import__("shutil").copytree(exported_student, tampered)
    with open(tampered / "models" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="changed after the export"):
        infer(tampered, [png], tmp_path / "out2", backend="onnx")


def test_heatmap_overlays_are_written_on_request(
    exported_student: Path, dicom_phantoms: Path, tmp_path: Path
) -> None:
    images = sorted((dicom_phantoms / "images" / "validation").glob("*.png"))
    summary = infer(exported_student, images, tmp_path / "out", heatmaps=True)
    pngs = sorted((tmp_path / "out" / "heatmaps").glob("*_lrp.png"))
    assert summary.heatmaps == len(images) == len(pngs)
    assert all(p.stat().st_size > 1000 for p in pngs)


def test_to_source_grid_undoes_padding_and_scaling() -> None:
    # a 60 x 30 image is padded to 60 x 60 (15 columns each side), then scaled to 6 x 6: network
    # pixel (2, 3) covers rows 20..29 and padded columns 30..39, i.e. image columns 15..24
    heat = torch.zeros(6, 6)
    heat[2, 3] = 1.0
    grid = to_source_grid(heat, 60, 30)
    assert grid.shape == (60, 30)
    assert grid.sum() == pytest.approx(1.0, rel=1e-6)  # relevance is kept
    rows, cols = np.nonzero(grid > grid.max() / 2)
    assert 20 <= rows.mean() <= 29 and 15 <= cols.mean() <= 24


def test_the_inference_path_imports_no_training_code(
    exported_student: Path, dicom_phantoms: Path, tmp_path: Path
) -> None:
    image = sorted((dicom_phantoms / "images" / "test_unbiased").glob("*.dcm"))[0]
    out = tmp_path / "o"
    code = (
        "import sys\n"
        "from tea_med.deploy.infer import infer\n"
        f"infer({str(exported_student)!r}, [{str(image)!r}], {str(out)!r}, backend='onnx', heatmaps=True)\n"
        "training = ('tea_med.engines', 'tea_med.losses', 'tea_med.tracking')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(training))\n"
        "print('LOADED', bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in done.stdout, done.stdout + done.stderr


def test_the_bundle_inference_workflow_writes_sop_instance_uids(
    exported_student: Path, dicom_phantoms: Path, tmp_path: Path
) -> None:
    """``python -m monai.bundle run`` with the student's inference workflow (PredictionWriter)."""
    from monai.bundle import ConfigWorkflow

    folder = dicom_phantoms / "images" / "test_unbiased"
    workflow = ConfigWorkflow(
        config_file=[str(exported_student / "configs" / f) for f in ("common.yaml", "inference.yaml")],
        workflow_type="infer",
        bundle_root=str(exported_student),
        input_path=str(folder),
        output_dir=str(tmp_path),
        logging_file=False,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = {Path(r["file"]).name: r for r in _rows(tmp_path / "predictions.csv")}
    dicoms = sorted(folder.glob("*.dcm"))
    assert dicoms
    for f in dicoms:
        assert rows[f.name]["sop_instance_uid"] == pydicom.dcmread(f).SOPInstanceUID
