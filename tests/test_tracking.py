"""MLflow tracking through the bundles' ``configs/mlflow.yaml``: MONAI's settings plus the run's
parameters and artifacts, on a small train workflow with a real SQLite store; without tracking
nothing is logged."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.bundles import STUDENT, TEACHER, config_files
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

from tea_med.tracking import executed_config

SETTINGS = STUDENT / "configs" / "mlflow.yaml"
LEARNING_RATE = 0.05
MAX_EPOCHS = 2
BATCH_SIZE = 2


def _squeezed(config: Any) -> Any:
    """``config`` with every run of white space in its strings made one space."""
    if isinstance(config, dict):
        return {k: _squeezed(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_squeezed(v) for v in config]
    return " ".join(config.split()) if isinstance(config, str) else config


def test_both_bundles_ship_monai_defaults_plus_the_run_parameters_and_artifacts() -> None:
    student = ConfigParser.load_config_file(SETTINGS)
    assert ConfigParser.load_config_file(TEACHER / "configs" / "mlflow.yaml") == student
    expected = copy.deepcopy(DEFAULT_MLFLOW_SETTINGS)
    configs: dict[str, Any] = expected["configs"]  # type: ignore[assignment]
    configs["tracking_params"] = {}
    configs["tracking_artifacts"] = []
    configs["executed_config_file"] = {
        "_target_": "tea_med.tracking.executed_config",
        "path": "@save_execute_config",
        "output_dir": "@output_dir",
    }
    configs["trainer"]["experiment_param"] = "@tracking_params"
    configs["trainer"]["artifacts"] = "$list(@tracking_artifacts) + [@executed_config_file]"
    # the trainer's handler is MONAI's plus the model registry (off while the name is null)
    configs["registered_model_name"] = None
    configs["registered_model_alias"] = "champion"
    configs["trainer"] |= {
        "_target_": "tea_med.tracking.RegisteringMLFlowHandler",
        "registered_model_name": "@registered_model_name",
        "registered_model_alias": "@registered_model_alias",
        "checkpoint": "@ckpt_path",
        "class_names": "@class_names",
        "image_size": "@image_size",
        "metadata_file": "$@bundle_root + '/configs/metadata.json'",
    }
    configs["evaluator"]["artifacts"] = "@executed_config_file"
    assert _squeezed(student) == _squeezed(expected)


def test_executed_config_is_the_saved_file_or_the_newest_one_in_the_output_dir(tmp_path: Path) -> None:
    # the names sort the other way round: only the times say which is newer
    newer, older, other = (tmp_path / n for n in ("config_1.json", "config_2.json", "metrics.json"))
    for f, t in ((older, 1_000_000), (newer, 1_000_100), (other, 1_000_200)):  # other: not a config
        f.write_text("{}")
        os.utime(f, (t, t))
    assert executed_config(str(older), tmp_path) == str(older)
    # what MONAI 1.6 sets save_execute_config to when --output_dir is a plain path
    assert executed_config(f"{tmp_path} + '/config_3.json'", tmp_path) == str(newer)
    assert executed_config(None, tmp_path) is None
    assert executed_config(f"{tmp_path} + '/config_3.json'", tmp_path / "absent") is None
    assert executed_config(f"{tmp_path / 'empty'} + '/config_3.json'", tmp_path / "empty") is None


def _workflow(work: Path, **overrides: Any) -> ConfigWorkflow:
    """A tiny train workflow laid out like the bundles': the best checkpoint by validation accuracy
    -> ``models/best.pt``, validation heatmap figures -> ``eval/heatmaps``."""
    config = {
        "bundle_root": str(work),
        "output_dir": "$@bundle_root + '/eval'",
        "ckpt_dir": "$@bundle_root + '/models'",
        "ckpt_path": "$@ckpt_dir + '/best.pt'",
        "class_names": ["a", "b"],
        "image_size": 2,
        "learning_rate": LEARNING_RATE,
        "batch_size": BATCH_SIZE,
        "tracking_params": {"learning_rate": "@learning_rate", "batch_size": "@batch_size", "unused": None},
        "tracking_artifacts": ["@ckpt_path", "@heatmap_dir"],
        "heatmap_dir": "$@output_dir + '/heatmaps'",
        "device": "$torch.device('cpu')",
        "network": "$torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))",
        "data": "$[{'image': torch.full((1, 2, 2), i / 4), 'label': torch.tensor([i % 2])}"
        " for i in range(4)]",
        "dataloader": {"_target_": "DataLoader", "dataset": "@data", "batch_size": "@batch_size"},
        "task": {"_target_": "helpers.tracking.StubTask", "student": "@network"},
        "train": {
            "handlers": [
                {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "interval": 1}
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "max_epochs": MAX_EPOCHS,
                "device": "@device",
                "train_data_loader": "@dataloader",
                "network": "@network",
                "optimizer": {
                    "_target_": "torch.optim.SGD",
                    "params": "$@network.parameters()",
                    "lr": "@learning_rate",
                },
                "loss_function": "$lambda pred, label: torch.nn.functional.cross_entropy(pred, label[:, 0])",
                "train_handlers": "@train#handlers",
            },
        },
        "validate": {
            "handlers": [
                {
                    "_target_": "CheckpointSaver",
                    "save_dir": "@ckpt_dir",
                    "save_dict": {"model": "@network"},
                    "save_key_metric": True,
                    "key_metric_filename": "best.pt",
                },
                {
                    "_target_": "tea_med.tracking.HeatmapFigureLogger",
                    "task": "@task",
                    "directory": "@heatmap_dir",
                },
            ],
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@dataloader",
                "network": "@network",
                "key_val_metric": {
                    "val_acc": {
                        "_target_": "ignite.metrics.Accuracy",
                        "output_transform": {
                            "_target_": "tea_med.engines.class_scores_and_index",
                            "_mode_": "callable",
                        },
                    }
                },
                "val_handlers": "@validate#handlers",
            },
        },
        "run": ["$@train#trainer.run()"],
    }
    path = work / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    wf = ConfigWorkflow(
        config_file=str(path), meta_file=None, logging_file=False, workflow_type="train", **overrides
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def test_a_tracked_run_gets_the_parameters_best_checkpoint_executed_config_and_figures(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    (tmp_path / "store").mkdir()
    out = tmp_path / "out"  # a plain --output_dir, as the demo and the bundle tests pass it
    _workflow(tmp_path, tracking=str(SETTINGS), output_dir=str(out), tracking_uri=uri, run_name="tracked")

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("monai_experiment").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["learning_rate"] == str(LEARNING_RATE) and params["batch_size"] == str(BATCH_SIZE)
    assert params["unused"] == "None" and params["max_epochs"] == str(MAX_EPOCHS)
    assert {"train_loss", "val_acc"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {f"validation_{n:03d}.png" for n in range(1, MAX_EPOCHS + 1)}  # one per validation
    assert {"best.pt", *figures} <= artifacts, artifacts
    (config_name,) = [a for a in artifacts if a.startswith("config_") and a.endswith(".json")]
    downloaded = client.download_artifacts(run.info.run_id, config_name, str(tmp_path))
    logged = json.loads(Path(downloaded).read_text())
    assert logged["output_dir"] == str(out) and logged["tracking_params"]["learning_rate"] == "@learning_rate"
    assert {f.name for f in (out / "heatmaps").iterdir()} == figures


def test_without_tracking_the_run_logs_nothing_and_still_writes_checkpoint_and_figures(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    _workflow(tmp_path, output_dir=str(out))
    assert (tmp_path / "models" / "best.pt").is_file()
    assert sorted(f.name for f in (out / "heatmaps").iterdir()) == [
        "validation_001.png",
        "validation_002.png",
    ]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(("mlruns", "config_"))]
    assert leftovers == []


@pytest.mark.parametrize(
    ("bundle", "workflow", "artifacts"),
    [
        (TEACHER, "train_segmenter", ["models/segmenter.pt"]),
        (TEACHER, "train_classifier", ["models/model.pt"]),
        (STUDENT, "train", ["models/model.pt", "eval/heatmaps"]),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_each_training_workflow_names_its_parameters_and_artifacts(
    bundle: Path, workflow: str, artifacts: list[str]
) -> None:
    parser = ConfigParser()
    parser.read_config(config_files(bundle / "configs", workflow))
    params = parser.get("tracking_params")  # the workflow's own keys, by reference
    assert params and all(v == f"@{k}" or v.startswith("$") for k, v in params.items())
    parser.update({"bundle_root": "B"})
    assert [os.path.relpath(p, "B") for p in parser.get_parsed_content("tracking_artifacts")] == artifacts


def test_a_tracked_run_registers_its_best_checkpoint_when_asked(tmp_path: Path) -> None:
    import hashlib

    from tea_med.deploy.registry import fetch_registered

    uri = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    (tmp_path / "store").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps({"name": "tiny", "version": "1.2.3"}))
    for run_name in ("first", "second"):
        _workflow(
            tmp_path,
            tracking=str(SETTINGS),
            output_dir=str(tmp_path / "out"),
            tracking_uri=uri,
            run_name=run_name,
            registered_model_name="tiny_student",
        )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    best = (tmp_path / "models" / "best.pt").read_bytes()
    champion = client.get_model_version_by_alias("tiny_student", "champion")
    assert str(champion.version) == "2"  # the alias follows the newest registration
    (run,) = client.search_runs(
        [client.get_experiment_by_name("monai_experiment").experiment_id], "attributes.run_name = 'second'"
    )
    assert champion.run_id == run.info.run_id
    tags = champion.tags
    assert tags["weights_sha256"] == hashlib.sha256(best).hexdigest()
    assert (tags["class_names"], tags["image_size"]) == ("a,b", "2")
    assert (tags["bundle"], tags["bundle_version"]) == ("tiny", "1.2.3")
    assert tags["device_uid"].startswith("2.25.")
    # the workstation fetches it into a bundle folder
    bundle = tmp_path / "workstation"
    (bundle / "configs").mkdir(parents=True)
    fetched = fetch_registered("tiny_student@champion", bundle, tracking_uri=uri)
    assert fetched.version == "2" and fetched.run_id == run.info.run_id
    assert (bundle / "models" / "model.pt").read_bytes() == best
