"""Manifests: schema, every problem reported at once, quarantine, patient-level splits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tea_med.data import (
    DataError,
    ManifestError,
    load_datalist,
    manifest_schema,
    split_by_patient,
    validate_manifest,
    xray_dataset,
)

REPO = Path(__file__).resolve().parents[2]


def _png(path: Path, shape: tuple[int, int] = (16, 16)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 255, shape).astype(np.uint8)).save(path)
    return path.name if path.parent.name == "" else str(path.relative_to(path.parents[1]))


def _record(i: int, label: str = "normal", patient: str | None = None, mask: bool = True) -> dict:
    rec = {"image": f"img/{i}.png", "label": label, "source": "H1", "patient_id": patient or f"P{i:03d}"}
    if mask:
        rec["mask"] = f"img/{i}_mask.png"
    return rec


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(10):
        _png(tmp_path / "img" / f"{i}.png")
        _png(tmp_path / "img" / f"{i}_mask.png")
    return tmp_path


def _write(folder: Path, manifest: dict, name: str = "datalist.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(manifest))
    return path


def _valid() -> dict:
    return {
        "labels": ["normal", "pneumonia", "covid"],
        "training": [_record(0), _record(1, "pneumonia"), _record(2, "covid")],
        "validation": [_record(3)],
        "test_biased": [_record(4, "covid")],
    }


def test_schema_file_in_data_manifests_is_the_packaged_one() -> None:
    on_disk = json.loads((REPO / "data_manifests" / "datalist.schema.json").read_text())
    assert on_disk == manifest_schema()


def test_the_template_follows_the_schema() -> None:
    template = REPO / "data_manifests" / "template.datalist.json"
    assert validate_manifest(template, check_files=False) == []


def test_errors_survive_pickling_for_dataloader_workers() -> None:
    import pickle

    from tea_med.data import Problem

    err = pickle.loads(pickle.dumps(DataError("/x.dcm", "no pixel data")))
    assert (err.path, err.reason, str(err)) == ("/x.dcm", "no pixel data", "/x.dcm: no pixel data")
    many = pickle.loads(pickle.dumps(ManifestError("/m.json", [Problem("schema", "bad", "training", 0)])))
    assert many.problems == [Problem("schema", "bad", "training", 0)] and "training[0]" in str(many)


def test_a_valid_manifest_has_no_problems_and_loads(folder: Path) -> None:
    path = _write(folder, _valid())
    assert validate_manifest(path, require_mask=True, check_readable=True) == []
    records = load_datalist(path, "training", encode_labels=True)
    assert [r["label"] for r in records] == [0, 1, 2]
    assert [r["label_name"] for r in records] == ["normal", "pneumonia", "covid"]
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in records)
    assert Path(records[0]["mask"]).is_file()


def test_every_problem_is_reported_at_once(folder: Path) -> None:
    manifest = {
        "labels": ["normal", "pneumonia", "covid"],
        "training": [
            _record(0),
            {**_record(1), "image": "img/missing.png"},  # missing_file
            _record(2, "pneumona"),  # unknown_label
            _record(3, patient="SHARED"),
            _record(5, mask=False),  # missing_mask
            {**_record(6), "label": 7},  # label index out of range
        ],
        "validation": [
            _record(4, patient="SHARED"),  # patient_in_two_splits
            {**_record(0), "patient_id": "P900"},  # duplicate_image (same file as training[0])
            {"image": "img/8.png", "label": "normal", "patient_id": "Doe^John"},  # schema x2
        ],
    }
    problems = validate_manifest(_write(folder, manifest), require_mask=True)
    found = {(p.code, p.location) for p in problems}
    expected = {
        ("missing_file", "training[1].image"),
        ("unknown_label", "training[2].label"),
        ("missing_mask", "training[4].mask"),
        ("unknown_label", "training[5].label"),
        ("patient_in_two_splits", "validation[0].patient_id"),
        ("duplicate_image", "validation[1].image"),
        ("schema", "validation[2].source"),
        ("schema", "validation[2].patient_id"),
        ("missing_mask", "validation[2].mask"),
    }
    assert found == expected, sorted(found ^ expected)
    messages = {p.location: p.message for p in problems}
    assert (
        "pneumona" in messages["training[2].label"]
        and "allowed: normal, pneumonia, covid" in messages["training[2].label"]
    )
    assert "'training'" in messages["validation[0].patient_id"]
    assert "training[0]" in messages["validation[1].image"]
    assert str(folder / "img" / "missing.png") in messages["training[1].image"]


def test_labels_argument_overrides_and_manifest_level_problems(folder: Path) -> None:
    manifest = _valid()
    assert {p.code for p in validate_manifest(_write(folder, manifest), labels=["normal", "covid"])} == {
        "unknown_label"
    }
    bad = {"labels": "normal", "name": 3}
    problems = validate_manifest(_write(folder, bad, "bad.json"))
    assert {p.location for p in problems} == {"(manifest)", "labels", "name"}
    (folder / "broken.json").write_text('{"training": [}')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        validate_manifest(folder / "broken.json")


def test_unreadable_files_and_mask_shapes_are_found_on_request(folder: Path) -> None:
    (folder / "img" / "1.png").write_bytes(b"garbage")
    _png(folder / "img" / "2_mask.png", (16, 17))
    problems = validate_manifest(_write(folder, _valid()), check_readable=True)
    assert {(p.code, p.location) for p in problems} == {
        ("unreadable", "training[1].image"),
        ("unreadable", "training[2].mask"),
    }
    assert validate_manifest(folder / "datalist.json") == []  # not decoded unless asked


def test_loading_fails_with_the_full_list_by_default(folder: Path) -> None:
    manifest = _valid()
    manifest["training"][1]["image"] = "img/nope.png"
    manifest["validation"][0]["label"] = "flu"
    path = _write(folder, manifest)
    with pytest.raises(ManifestError) as info:
        load_datalist(path, "training")
    assert len(info.value.problems) == 2
    assert "training[1].image" in str(info.value) and "validation[0].label" in str(info.value)
    with pytest.raises(DataError, match="no split 'test'"):
        load_datalist(path, "test")


def test_skip_bad_quarantines_into_a_report(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = _valid()
    manifest["training"][1]["image"] = "img/nope.png"
    manifest["validation"].append(_record(5, patient="P000"))  # patient of training[0]
    path = _write(folder, manifest)
    with caplog.at_level(logging.WARNING):
        records = load_datalist(path, "training", skip_bad=True)
    assert [Path(r["image"]).name for r in records] == ["0.png", "2.png"]
    report = json.loads((folder / "datalist.quarantine.json").read_text())
    assert report["n_quarantined"] == 2
    assert {(q["split"], q["index"]) for q in report["quarantined"]} == {("training", 1), ("validation", 1)}
    assert report["quarantined"][0]["record"]["image"] == "img/nope.png"
    assert report["quarantined"][0]["problems"][0]["code"] == "missing_file"
    assert "quarantined 2 record(s)" in caplog.text
    assert len(load_datalist(path, "validation", skip_bad=True, report_path=folder / "r.json")) == 1
    assert (folder / "r.json").is_file()


def test_xray_dataset_yields_preprocessed_items(folder: Path) -> None:
    from tea_med.data import eval_transforms

    path = _write(folder, _valid())
    for cache in (False, True):
        ds = xray_dataset(path, "training", eval_transforms(32, mask_key="mask"), cache=cache)
        item = ds[1]
        assert item["image"].shape == (3, 32, 32) and item["label"] == 1 and item["label_name"] == "pneumonia"


def test_split_by_patient_keeps_patients_whole_and_is_deterministic() -> None:
    records = [
        {"image": f"{p}_{k}.png", "label": ["normal", "covid"][p % 2], "source": "H1", "patient_id": f"P{p}"}
        for p in range(40)
        for k in range(1 + p % 3)
    ]
    splits = split_by_patient(records, {"training": 0.75, "validation": 0.25}, seed=3)
    assert sum(len(v) for v in splits.values()) == len(records)
    patients = {name: {r["patient_id"] for r in recs} for name, recs in splits.items()}
    assert not patients["training"] & patients["validation"]
    assert len(patients["validation"]) == 10
    val_labels = [r["label"] for r in splits["validation"] if r["image"].endswith("_0.png")]
    assert val_labels.count("normal") == val_labels.count("covid") == 5  # stratified
    assert split_by_patient(records, {"training": 0.75, "validation": 0.25}, seed=3) == splits
    assert split_by_patient(records, {"training": 0.75, "validation": 0.25}, seed=4) != splits
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_patient(records, {"training": 0.7, "validation": 0.2})
    with pytest.raises(ValueError, match="record 0 has no 'patient_id'"):
        split_by_patient([{"image": "x"}], {"training": 1.0})
