"""The teacher bundle: every workflow builds, trains or infers, and is tracked in MLflow."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.bundles import (
    SCHEMA,
    SIZE,
    TEACHER,
    bundle_cli,
    cli_configs,
    initialized_workflow,
    root_cause,
    small_overrides,
)
from monai.bundle import ConfigWorkflow
from PIL import Image

from tea_med.networks import TeacherPipeline, densenet121, load_weights, lung_segmenter

pytestmark = pytest.mark.slow  # every test here trains or runs a bundle

CONFIGS = TEACHER / "configs"
META = CONFIGS / "metadata.json"


def workflow(name: str, workflow_type: str, phantoms: Path, work: Path, **extra: object) -> ConfigWorkflow:
    return initialized_workflow(CONFIGS, name, workflow_type, **{**small_overrides(phantoms, work), **extra})


@pytest.fixture(scope="module")
def trained(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Segmenter then classifier, one epoch each; returns the work folder with models/."""
    work = tmp_path_factory.mktemp("teacher")
    for name in ("train_segmenter", "train_classifier"):
        wf = workflow(name, "train", phantoms, work)
        wf.run()
        wf.finalize()
    return work


def test_training_writes_both_checkpoints(trained: Path) -> None:
    # MONAI's CheckpointSaver stores a single object's state dict as it is
    seg = torch.load(trained / "models" / "segmenter.pt", weights_only=True)
    teacher = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert seg and any(k.startswith("classifier.") for k in teacher)
    # the classifier was trained with the segmenter frozen: the teacher holds the segmenter's weights
    for k, v in seg.items():
        torch.testing.assert_close(teacher[f"segmenter.{k}"], v)


def test_classifier_training_needs_the_segmenter(phantoms: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the error of a config expression
        workflow("train_classifier", "train", phantoms, tmp_path)
    assert "segmenter.pt does not exist; train it first" in str(root_cause(err.value))


def test_evaluate_writes_metrics(trained: Path, phantoms: Path) -> None:
    wf = workflow("evaluate", "infer", phantoms, trained, eval_split="test_biased")
    wf.run()
    wf.finalize()
    with open(trained / "eval" / "metrics.csv") as fh:
        rows = dict(csv.reader(fh))
    assert set(rows) == {"auc", "accuracy"}
    assert 0.0 <= float(rows["auc"]) <= 1.0 and 0.0 <= float(rows["accuracy"]) <= 1.0


def test_inference_on_a_folder_writes_probabilities_and_masks(trained: Path, phantoms: Path) -> None:
    folder = phantoms / "images" / "test_unbiased"
    out = trained / "inference"
    wf = workflow("inference", "infer", phantoms, trained, input_path=str(folder), output_dir=str(out))
    wf.run()
    wf.finalize()
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    images = sorted(folder.glob("*.png"))
    assert [Path(r["file"]).name for r in rows] == [p.name for p in images]
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in ("normal", "pneumonia", "covid")]
        assert abs(sum(probs) - 1) < 1e-4
        assert r["predicted"] == ("normal", "pneumonia", "covid")[probs.index(max(probs))]
    masks = sorted((out / "masks").glob("*_mask.png"))
    assert len(masks) == len(images)
    with Image.open(masks[0]) as m:
        assert m.size == (SIZE, SIZE)
        assert set(m.getdata()) <= {0, 255}


def test_inference_refuses_an_empty_folder(trained: Path, phantoms: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        workflow("inference", "infer", phantoms, trained, input_path=str(tmp_path))
    assert "no images found" in str(root_cause(err.value))


def test_metadata_network_shapes_and_torchscript_export(trained: Path) -> None:
    bundle_cli("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA))
    bundle_cli(
        "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", cli_configs("inference"), "--segmenter_profile", "small",
    )  # fmt: skip
    ts = trained / "models" / "model.ts"
    ckpt = str(trained / "models" / "model.pt")
    bundle_cli(
        "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", ckpt,
        "--meta_file", "configs/metadata.json", "--config_file", cli_configs("inference"),
        "--segmenter_profile", "small", "--key_in_ckpt", "model",
    )  # fmt: skip
    scripted = torch.jit.load(str(ts))
    eager = load_weights(
        TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)), trained / "models" / "model.pt"
    )
    x = torch.rand(2, 3, SIZE, SIZE)
    torch.manual_seed(7)
    a = eager.eval()(x)
    torch.manual_seed(7)
    b = scripted(x)
    torch.testing.assert_close(a, b)


def test_metadata_schema_rejects_missing_keys(tmp_path: Path) -> None:
    meta = json.loads(META.read_text())
    del meta["network_data_format"]["outputs"]["pred"]["dtype"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    cmd = ["-m", "monai.bundle", "verify_metadata", "--meta_file", str(bad), "--filepath", str(SCHEMA)]
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "dtype" in proc.stdout + proc.stderr
