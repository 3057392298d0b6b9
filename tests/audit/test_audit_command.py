"""``tea-med audit`` on a real bundle: report, JSON, MLflow run, gates and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from deploy.conftest import SIZE, make_student_bundle
from mlflow.tracking import MlflowClient

from tea_med.audit.command import EXPERIMENT, parse_gate
from tea_med.cli import main
from tea_med.data.phantom_files import write_phantoms


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audit_cli")
    bundle = make_student_bundle(root / "tea_student")
    written = write_phantoms(root / "ph", n=6, size=SIZE, formats=("png",), grid=False, progress=False)
    return bundle, written["datalist_png"]


def test_an_audit_writes_its_report_json_and_mlflow_run(setup: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, manifest = setup
    out = tmp_path / "audit"
    args = [
        "audit",
        "--bundle",
        str(bundle),
        "--bundle",
        str(bundle),
        "--data",
        str(manifest),
        "--out",
        str(out),
    ]
    assert main([*args, "--tracking", "mlflow", "--batch", "4"]) == 0
    data = json.loads((out / "audit.json").read_text())
    assert list(data["models"]) == ["tea_student", "tea_student_2"]  # one column per bundle
    first = data["models"]["tea_student"]
    assert first["n_images"] == 6 and "examples" not in first
    assert data["models"]["tea_student_2"]["swap"] == first["swap"]  # same seed, same model: same figures
    page = (out / "report.html").read_text()
    assert "swap: prediction flips" in page and "swap_matrix_tea_student.png" in page
    assert (out / "swap_matrix_tea_student.png").is_file() and (out / "swap_examples.png").is_file()
    assert (out / "heatmaps.png").is_file() and "heatmaps.png" in page and "heatmaps" not in first
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert "tea_student.swap_flip_rate" in run.data.metrics
    assert {"audit.json", "report.html"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # the artifacts lie beside the database, not in ./mlruns of the folder the command ran in
    stored = out / "mlruns" / run.info.run_id / "artifacts" / "audit.json"
    assert json.loads(stored.read_text()) == data


def test_a_gate_above_a_metric_exits_3_and_names_it(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, manifest = setup
    args = ["audit", "--bundle", str(bundle), "--data", str(manifest), "--out", str(tmp_path / "a")]
    assert main([*args, "--fail-above", "lungs_removed_confidence=0.0"]) == 3
    assert "gate failed: tea_student: lungs_removed_confidence = " in capsys.readouterr().err
    assert main([*args, "--fail-above", "lungs_removed_confidence=1.0"]) == 0
    assert (tmp_path / "a" / "report.html").is_file()  # written whether or not the gate passes


def test_bad_inputs_are_named(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, manifest = setup
    not_a_bundle = tmp_path / "empty"
    (not_a_bundle / "configs").mkdir(parents=True)
    args = ["audit", "--data", str(manifest), "--out", str(tmp_path / "o")]
    assert main([*args, "--bundle", str(not_a_bundle)]) == 2
    assert "configs/inference.yaml does not exist" in capsys.readouterr().err
    assert main([*args, "--bundle", str(bundle), "--fail-above", "flips=0.2"]) == 2
    assert "METRIC one of background_share" in capsys.readouterr().err
    assert main([*args, "--bundle", str(bundle), "--split", "holdout"]) == 2
    assert "holdout" in capsys.readouterr().err
    with pytest.raises(ValueError, match="VALUE must be a number, got 'high'"):
        parse_gate("swap_flip_rate=high")


def test_masks_can_come_from_a_teacher_bundles_segmenter(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from tea_med.bundled import copy_bundles, set_common_values
    from tea_med.networks import TeacherPipeline, densenet121, lung_segmenter

    bundle, manifest = setup
    (teacher,) = copy_bundles(tmp_path, names=("tea_teacher",))
    set_common_values(teacher, {"image_size": SIZE, "segmenter_profile": "small"})
    torch.manual_seed(3)
    pipeline = TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3))
    torch.save({"model": pipeline.state_dict()}, teacher / "models" / "model.pt")
    out = tmp_path / "audit"
    args = ["audit", "--bundle", str(bundle), "--data", str(manifest), "--out", str(out)]
    assert main([*args, "--segmenter-bundle", str(teacher)]) == 0
    data = json.loads((out / "audit.json").read_text())
    assert data["context"]["masks"] == f"segmenter of {teacher}"
    assert data["models"]["tea_student"]["n_images"] == 6
    # a classifier bundle is not a segmenter
    assert main([*args, "--segmenter-bundle", str(bundle)]) == 2
