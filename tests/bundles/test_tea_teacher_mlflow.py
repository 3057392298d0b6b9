"""`--tracking configs/mlflow.yaml --run_name NAME` logs params, losses, metrics, config, best checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.bundles import TEACHER, bundle_cli, cli_configs, config_files, small_overrides
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigWorkflow

pytestmark = pytest.mark.slow  # every test here trains or runs a bundle


def test_classifier_training_is_tracked_in_a_sqlite_store(phantoms: Path, tmp_path: Path) -> None:
    overrides = small_overrides(phantoms, tmp_path)
    overrides["max_epochs"] = 2
    wf = ConfigWorkflow(
        config_file=config_files(TEACHER / "configs", "train_segmenter"),
        logging_file=str(TEACHER / "configs" / "logging.conf"),
        workflow_type="train",
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "segmenter.pt").is_file()

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    args = ["run", "--config_file", cli_configs("train_classifier"), "--tracking", "configs/mlflow.yaml"]
    args += ["--run_name", "teacher-ci", "--tracking_uri", uri]
    for k, v in overrides.items():
        args += [f"--{k}", str(v)]
    bundle_cli(*args)

    client = MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    run = next(r for r in runs if r.info.run_name == "teacher-ci")
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.0001" and run.data.params["segmenter_profile"] == "small"
    assert {"train_loss", "val_auc", "val_acc"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val_auc")) == 2  # one per epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "model.pt" in artifacts, artifacts
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts
    # nothing identifying: parameters come from the config only
    assert not any("patient" in k.lower() for k in run.data.params)
    shutil.rmtree(tmp_path / "models")
