"""The student bundle: TEA training, resume after SIGKILL, evaluation, inference, export."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.bundles import REPO, SCHEMA, SIZE, bundle_cli, initialized_workflow
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigWorkflow

from tea_med.networks import TeacherPipeline, densenet121, lung_segmenter

pytestmark = pytest.mark.slow  # every test here trains or runs a bundle

STUDENT = REPO / "bundles" / "tea_student"
CONFIGS = STUDENT / "configs"


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (random-weight) small-profile teacher saved as the teacher bundle saves it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    torch.save(TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)).state_dict(), path)
    return path


def overrides(phantoms: Path, teacher_ckpt: Path, work: Path, **extra: object) -> dict[str, object]:
    return {
        "bundle_root": str(STUDENT),
        "dataset_dir": str(phantoms),
        "teacher_ckpt": str(teacher_ckpt),
        "teacher_segmenter_profile": "small",
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "image_size": SIZE,
        "batch_size": 4,
        "num_workers": 0,
        "max_epochs": 2,
        **extra,
    }


def workflow(name: str, workflow_type: str, **kw: object) -> ConfigWorkflow:
    return initialized_workflow(CONFIGS, name, workflow_type, **kw)


@pytest.fixture(scope="module")
def trained(phantoms: Path, teacher_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("student")
    wf = workflow("train", "train", **overrides(phantoms, teacher_ckpt, work))
    wf.run()
    wf.finalize()
    return work


def test_training_writes_resumable_and_best_checkpoints_and_figures(trained: Path) -> None:
    resume = torch.load(trained / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert set(resume) == {"student", "optimizer", "lr_scheduler", "rng", "trainer"}
    assert resume["trainer"]["iteration"] // resume["trainer"]["epoch_length"] == 2  # ignite: iterations
    best = torch.load(trained / "models" / "model.pt", weights_only=True)
    densenet121(num_classes=3).load_state_dict(best)  # the student is a plain DenseNet121
    figures = sorted((trained / "eval" / "heatmaps").glob("validation_*.png"))
    assert len(figures) == 2  # one per validation


def test_evaluate_and_inference_without_the_teacher(trained: Path, phantoms: Path) -> None:
    common = {
        "bundle_root": str(STUDENT),
        "image_size": SIZE,
        "num_workers": 0,
        "ckpt_dir": str(trained / "models"),
    }
    wf = workflow("evaluate", "infer", dataset_dir=str(phantoms), output_dir=str(trained / "ev"), **common)
    wf.run()
    wf.finalize()
    with open(trained / "ev" / "metrics.csv") as fh:
        assert set(dict(csv.reader(fh))) == {"auc", "accuracy"}
    # inference in a fresh process: neither tea_med's segmenter nor its teacher is imported
    script = f"""
import json, sys
from monai.bundle import ConfigWorkflow
wf = ConfigWorkflow(config_file={str(CONFIGS / "inference.json")!r}, workflow_type="infer",
                    input_path={str(phantoms / "images" / "test_deceiving")!r},
                    output_dir={str(trained / "inf")!r}, save_heatmaps=True, **{json.dumps(common)!s})
wf.initialize(); wf.run(); wf.finalize()
print(json.dumps(sorted(m for m in sys.modules if m.startswith("tea_med"))))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "tea_med.networks.classifiers" in modules
    assert not {"tea_med.networks.teacher", "tea_med.networks.segmenter", "tea_med.engines"} & set(modules)
    with open(trained / "inf" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list((phantoms / "images" / "test_deceiving").glob("*.png")))
    assert len(list((trained / "inf" / "heatmaps").glob("*_heatmap.png"))) == len(rows)


def test_metadata_and_torchscript_inference_alone(trained: Path) -> None:
    bundle_cli(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA), cwd=STUDENT
    )
    bundle_cli(
        "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json", cwd=STUDENT,
    )  # fmt: skip
    ts = trained / "models" / "model.ts"
    ckpt = str(trained / "models" / "model.pt")
    bundle_cli(
        "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", ckpt,
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", cwd=STUDENT,
    )  # fmt: skip
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.save(x, trained / "x.pt")
    eager = densenet121(num_classes=3)
    eager.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    expected = eager.eval()(x)
    script = f"""
import sys, torch
m = torch.jit.load({str(ts)!r})
out = m(torch.load({str(trained / "x.pt")!r}))
assert not any(k.startswith(("tea_med", "monai")) for k in sys.modules), "imported more than torch"
torch.save(out, {str(trained / "y.pt")!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(trained / "y.pt"), expected)


def _run(
    config: str, ov: dict[str, object], *extra: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "run_bundle.py"), config, json.dumps(ov), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_killed_run_resumes_to_the_same_weights_in_the_same_mlflow_run(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    config = str(CONFIGS / "train.json")
    straight = overrides(phantoms, teacher_ckpt, tmp_path / "straight", max_epochs=3)
    assert _run(config, straight, env=env).returncode == 0

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracked = ["--tracking-uri", uri, "--run-name", "student-resume"]
    resumed = overrides(phantoms, teacher_ckpt, tmp_path / "resumed", max_epochs=3)
    killed = _run(config, resumed, "--kill-at-epoch", "2", *tracked, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL
    assert (tmp_path / "resumed" / "models" / "checkpoint_epoch=2.pt").is_file()
    again = _run(config, resumed, *tracked, env=env)
    assert again.returncode == 0, again.stderr[-3000:]

    a = torch.load(tmp_path / "straight" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 3 * a["trainer"]["epoch_length"]
    for k, v in a["student"].items():
        torch.testing.assert_close(b["student"][k], v, rtol=0, atol=0, msg=k)

    client = MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    named = [r for r in runs if r.info.run_name == "student-resume"]
    assert len(named) == 1 and named[0].info.status == "FINISHED"
    assert {"train_tea_loss", "val_tea_loss", "val_agreement", "val_auc"} <= set(named[0].data.metrics)
    artifacts = {a.path for a in client.list_artifacts(named[0].info.run_id)}
    assert "heatmaps" in artifacts and "model.pt" in artifacts
