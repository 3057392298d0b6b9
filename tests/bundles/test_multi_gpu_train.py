"""``configs/multi_gpu_train.json`` of both bundles under ``torchrun --nproc_per_node 2`` on CPU
(gloo): training runs, validation metrics cover every rank's images, resumption restores every
rank, and the checkpoints load in one process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.bundles import SIZE, STUDENT, TEACHER, config_files
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigWorkflow
from node.conftest import free_port
from sklearn.metrics import roc_auc_score

from tea_med.networks import TeacherPipeline, densenet121, load_weights, lung_segmenter

pytestmark = pytest.mark.slow  # every test here trains under torchrun


def torchrun(bundle: Path, workflow: str, **overrides: object) -> str:
    """``torchrun --nproc_per_node 2 -m monai.bundle run`` of ``workflow`` + multi_gpu_train.json,
    as the bundle docs write it; returns the output (both ranks)."""
    files = [*config_files(bundle / "configs", workflow), str(bundle / "configs" / "multi_gpu_train.json")]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "monai.bundle", "run", "--config_file", repr(files),
    ]  # fmt: skip
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=900, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def student_overrides(phantoms: Path, teacher_ckpt: Path, work: Path, **extra: object) -> dict[str, object]:
    return {
        "dataset_dir": phantoms,
        "teacher_ckpt": teacher_ckpt,
        "teacher_segmenter_profile": "small",
        "ckpt_dir": work / "models",
        "output_dir": work / "eval",
        "image_size": SIZE,
        "batch_size": 2,  # per process: the 4 training images are one step of 2 + 2
        "num_workers": 0,
        **extra,
    }


def test_a_resumed_two_process_student_run_ends_with_the_weights_of_an_uninterrupted_one(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    def run(work: str, epochs: int) -> str:
        return torchrun(
            STUDENT, "train", **student_overrides(phantoms, teacher_ckpt, tmp_path / work, max_epochs=epochs)
        )

    assert "Saved checkpoint at epoch: 2" in run("a", 2)
    run("b", 1)
    resumed = run("b", 2)  # the same command with more epochs: continues from checkpoint_epoch=1.pt
    assert "Restored all variables from" in resumed  # rank 0's log; rank 1 restoring too is what
    # makes the weights below match: the steps average both ranks' gradients

    a = torch.load(tmp_path / "a" / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    for k, v in a["student"].items():
        torch.testing.assert_close(b["student"][k], v, rtol=0, atol=0, msg=k)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 2 * a["trainer"]["epoch_length"]
    # each rank has random states of its own, saved and restored per rank
    ranks = b["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["task"], ranks[1]["task"])
    best_a, best_b = (torch.load(tmp_path / w / "models" / "model.pt", weights_only=True) for w in "ab")
    for k, v in best_a.items():
        torch.testing.assert_close(best_b[k], v, rtol=0, atol=0, msg=k)


def test_two_process_validation_scores_every_validation_image(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    """Each rank validates half the images; the AUC rank 0 reports, in its log and its MLflow run
    (the only one), is that of all of them, as one process computes it (sklearn) from the saved
    student. With frozen batch-norm statistics the
    student's outputs do not depend on any draw."""
    work = tmp_path / "s"
    ov = student_overrides(phantoms, teacher_ckpt, work, max_epochs=1, bn_mode="frozen")
    ov |= {"teacher_masks": True, "teacher_masks_dir": tmp_path / "masks"}  # written by rank 0, read by both
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    out = torchrun(STUDENT, "train", **ov, tracking="configs/mlflow.yaml", tracking_uri=uri, run_name="ddp")
    reported = [float(m) for m in re.findall(r"Epoch\[1\] Metrics --.*?val_auc: ([0-9.]+)", out)]
    assert len(reported) == 1, out[-3000:]  # logged by rank 0 only
    client = MlflowClient(tracking_uri=uri)
    (run,) = [
        r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    ]  # rank 0's
    assert run.info.run_name == "ddp" and run.info.status == "FINISHED"
    assert run.data.metrics["val_auc"] == pytest.approx(reported[0], abs=6e-5)
    assert len(list((tmp_path / "masks" / "masks").glob("*.png"))) == 4

    wf = ConfigWorkflow(config_file=config_files(STUDENT / "configs", "train"), workflow_type="train",
                        **{k: str(v) if isinstance(v, Path) else v for k, v in ov.items()})  # fmt: skip
    wf.initialize()
    student = densenet121(num_classes=3)
    saved = torch.load(work / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    student.load_state_dict(saved["student"])
    student.eval()
    dataset = wf.parser.get_parsed_content("validate#dataset")
    assert len(dataset) == 4
    with torch.no_grad():
        probs = np.stack([torch.softmax(student(item["image"][None]), 1)[0].numpy() for item in dataset])
    labels = np.array([int(item["label"]) for item in dataset])
    expected = roc_auc_score(np.eye(3)[labels], probs, average="macro")
    assert reported[0] == pytest.approx(expected, abs=6e-5)  # the log prints 4 decimals


def test_the_teacher_trains_under_torchrun_and_its_checkpoints_load_in_one_process(
    phantoms: Path, tmp_path: Path
) -> None:
    ov = {
        "dataset_dir": phantoms, "ckpt_dir": tmp_path / "models", "output_dir": tmp_path / "eval",
        "image_size": SIZE, "segmenter_profile": "small", "max_epochs": 1, "batch_size": 2, "num_workers": 0,
    }  # fmt: skip
    for workflow in ("train_segmenter", "train_classifier"):
        out = torchrun(TEACHER, workflow, **ov)
        assert out.count("Key metric:") >= 1 and "Engine run finished" in out
    models = tmp_path / "models"
    seg = load_weights(lung_segmenter("small"), models / "segmenter.pt")  # strict: no DDP 'module.' prefix
    teacher = load_weights(
        TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)), models / "model.pt"
    )
    # the classifier trained under DDP with the segmenter frozen: the teacher holds segmenter.pt
    for (k, v), w in zip(seg.state_dict().items(), teacher.segmenter.state_dict().values(), strict=True):
        torch.testing.assert_close(w, v, rtol=0, atol=0, msg=k)
