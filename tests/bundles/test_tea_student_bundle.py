"""The student bundle: TEA training, resume after SIGKILL, warm-up co-training, evaluation,
inference, export."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.bundles import (
    REPO,
    SCHEMA,
    SIZE,
    STUDENT,
    bundle_cli,
    cli_configs,
    config_files,
    initialized_workflow,
)
from ignite.engine import Events
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigWorkflow

from tea_med.networks import densenet121

pytestmark = pytest.mark.slow  # every test here trains or runs a bundle

CONFIGS = STUDENT / "configs"


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
    """3 epochs validated every 2: epoch 2 by MONAI's ValidationHandler, epoch 3 because it is the last."""
    work = tmp_path_factory.mktemp("student")
    wf = workflow("train", "train", **overrides(phantoms, teacher_ckpt, work, max_epochs=3, val_interval=2))
    wf.run()
    wf.finalize()
    state = wf.parser.get_parsed_content("validate#evaluator").state
    (work / "validated.json").write_text(json.dumps([state.epoch, state.best_metric_epoch]))
    return work


def test_training_writes_resumable_and_best_checkpoints_and_figures(trained: Path) -> None:
    resume = torch.load(trained / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    assert set(resume) == {"student", "optimizer", "lr_scheduler", "rng", "best", "trainer"}
    assert resume["trainer"]["iteration"] // resume["trainer"]["epoch_length"] == 3  # ignite: iterations
    assert resume["best"]["best_metric_epoch"] in (2, 3)
    best = torch.load(trained / "models" / "model.pt", weights_only=True)
    densenet121(num_classes=3).load_state_dict(best)  # the student is a plain DenseNet121
    figures = sorted((trained / "eval" / "heatmaps").glob("validation_*.png"))
    assert [f.name for f in figures] == ["validation_001.png", "validation_002.png"]  # one per validation


def test_the_last_epoch_is_validated_off_the_interval(trained: Path) -> None:
    last_validated, _ = json.loads((trained / "validated.json").read_text())
    assert last_validated == 3  # max_epochs 3 is no multiple of val_interval 2


def test_warmup_co_trains_the_teacher_classifier_not_its_segmenter(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    wf = workflow("train", "train", **overrides(phantoms, teacher_ckpt, tmp_path, warmup_epochs=1))
    wf.run()
    wf.finalize()
    before = torch.load(teacher_ckpt, weights_only=True)
    teacher = wf.parser.get_parsed_content("teacher")
    for name, p in teacher.segmenter.state_dict().items():
        # bit-exact: a frozen segmenter's weights are never written, so nothing can round
        torch.testing.assert_close(p, before[f"segmenter.{name}"], rtol=0, atol=0, msg=name)
    params = teacher.classifier.named_parameters()
    moved = [n for n, p in params if not torch.equal(p, before[f"classifier.{n}"])]
    assert moved, "the co-trained teacher classifier's weights did not change"
    assert all(p.requires_grad for p in teacher.classifier.parameters())
    assert not any(p.requires_grad for p in teacher.segmenter.parameters())
    resume = torch.load(tmp_path / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"teacher", "teacher_optimizer"} <= set(resume)  # co-training resumes exactly too


@pytest.mark.parametrize("teacher_masks", [False, True])
def test_with_teacher_masks_the_segmenter_runs_once_per_image_before_training(
    teacher_masks: bool, phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    ov = overrides(phantoms, teacher_ckpt, tmp_path, max_epochs=2, teacher_masks=teacher_masks)
    ov["teacher_masks_dir"] = str(tmp_path / "masks")
    wf = workflow("train", "train", **ov)
    calls = {"in_steps": 0, "before": 0}
    phase = ["before"]
    trainer = wf.parser.get_parsed_content("train#trainer")
    segmenter = wf.parser.get_parsed_content("task").teacher.segmenter
    segmenter.register_forward_hook(lambda *_: calls.__setitem__(phase[0], calls[phase[0]] + 1))
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: phase.__setitem__(0, "in_steps"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: phase.__setitem__(0, "before"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "checkpoint_epoch=2.pt").is_file()
    if teacher_masks:  # 4 training images: masks computed once, before training; no step segments
        assert calls["in_steps"] == 0
        assert len(list((tmp_path / "masks" / "masks").glob("*.png"))) == 4
    else:  # the segmenter in each step: 4 images in batches of 4, 2 epochs
        assert calls["in_steps"] == trainer.state.iteration > 0
        assert not (tmp_path / "masks").exists()


def test_evaluate_and_inference_without_the_teacher(trained: Path, phantoms: Path) -> None:
    common: dict[str, object] = {
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
wf = ConfigWorkflow(config_file={config_files(CONFIGS, "inference")!r}, workflow_type="infer",
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
        "--config_file", cli_configs("inference"), cwd=STUDENT,
    )  # fmt: skip
    ts = trained / "models" / "model.ts"
    ckpt = str(trained / "models" / "model.pt")
    bundle_cli(
        "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", ckpt,
        "--meta_file", "configs/metadata.json", "--config_file", cli_configs("inference"), cwd=STUDENT,
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


def _run(ov: dict[str, object], *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    files = ",".join(config_files(CONFIGS, "train"))
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "run_bundle.py"), files, json.dumps(ov), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _runs(uri: str, name: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return [r for r in runs if r.info.run_name == name]


def test_killed_run_resumes_to_the_same_weights_and_best_model_in_the_same_mlflow_run(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    """Killed after epoch 2, resumed into an epoch 3 that validates worse (its weights are
    scrambled when it starts, in both runs): the final weights match an uninterrupted run's, and
    so does models/model.pt, the best of all validations, chosen before the kill."""
    # one thread and num_workers 0: the condition under which the bundle promises bit-identical
    # weights after kill + resume (README, student bundle docs), so the comparisons below are exact
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    worse = ["--perturb-at-epoch", "3"]
    straight = overrides(phantoms, teacher_ckpt, tmp_path / "straight", max_epochs=3)
    done = _run(straight, *worse, "--tracking-uri", uri, "--run-name", "student-straight", env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    tracked = ["--tracking-uri", uri, "--run-name", "student-resume"]
    resumed = overrides(phantoms, teacher_ckpt, tmp_path / "resumed", max_epochs=3)
    killed = _run(resumed, *worse, "--kill-at-epoch", "2", *tracked, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL
    assert (tmp_path / "resumed" / "models" / "checkpoint_epoch=2.pt").is_file()
    again = _run(resumed, *worse, *tracked, env=env)
    assert again.returncode == 0, again.stderr[-3000:]

    a = torch.load(tmp_path / "straight" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 3 * a["trainer"]["epoch_length"]
    for k, v in a["student"].items():
        torch.testing.assert_close(b["student"][k], v, rtol=0, atol=0, msg=k)

    (straight_run,) = _runs(uri, "student-straight")
    logged = MlflowClient(tracking_uri=uri).get_metric_history(straight_run.info.run_id, "val_tea_loss")
    history = [m.value for m in sorted(logged, key=lambda m: m.step)]
    assert len(history) == 3 and history[2] > min(history[:2])  # epoch 3 is worse than the best before it
    assert a["best"] == b["best"] and a["best"]["best_metric_epoch"] == 1 + history.index(min(history))
    best_a = torch.load(tmp_path / "straight" / "models" / "model.pt", weights_only=True)
    best_b = torch.load(tmp_path / "resumed" / "models" / "model.pt", weights_only=True)
    assert best_a.keys() == best_b.keys()
    for k, v in best_a.items():
        torch.testing.assert_close(best_b[k], v, rtol=0, atol=0, msg=k)
    assert any(not torch.equal(best_b[k], v) for k, v in b["student"].items())  # not the last epoch's

    named = _runs(uri, "student-resume")
    assert len(named) == 1 and named[0].info.status == "FINISHED"
    assert {"train_tea_loss", "val_tea_loss", "val_agreement", "val_auc"} <= set(named[0].data.metrics)
    params = named[0].data.params
    assert params["batch_size"] == str(resumed["batch_size"]) and params["image_size"] == str(SIZE)
    artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(named[0].info.run_id)}
    figures = {f.name for f in (tmp_path / "resumed" / "eval" / "heatmaps").glob("validation_*.png")}
    assert figures and figures <= artifacts and "model.pt" in artifacts, artifacts
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts


def test_a_killed_group_dro_run_resumes_with_its_group_weights(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    """group_dro's hospital weights live outside the student: a resumed run restores them, so its
    last epoch's weights and group weights equal an uninterrupted run's."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    setting = {"max_epochs": 3, "method": "group_dro", "group_dro_step_size": 0.5}
    done = _run(overrides(phantoms, teacher_ckpt, tmp_path / "straight", **setting), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = overrides(phantoms, teacher_ckpt, tmp_path / "resumed", **setting)
    killed = _run(resumed, "--kill-at-epoch", "2", env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = _run(resumed, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    groups = a["method"]["weights"]
    assert len(a["method"]["groups"]) >= 2 and not torch.allclose(
        groups, torch.full_like(groups, groups.mean())
    )
    assert a["method"]["groups"] == b["method"]["groups"]
    torch.testing.assert_close(b["method"]["weights"], groups, rtol=0, atol=0)
    for k, v in a["student"].items():
        torch.testing.assert_close(b["student"][k], v, rtol=0, atol=0, msg=k)
