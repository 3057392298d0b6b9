"""The MLflow model registry on the workstation: ``tea-med export --from-registry NAME@ALIAS``,
with a real SQLite store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from deploy.conftest import make_student_bundle
from mlflow.tracking import MlflowClient

from tea_med.cli import main
from tea_med.deploy.bundle import BundleError
from tea_med.deploy.registry import card_tags, fetch_registered, register_checkpoint


@pytest.fixture
def registered(tmp_path: Path) -> tuple[str, str, Path]:
    """``(uri, run_id, trained bundle)`` with that bundle's model.pt registered as tea_student v1."""
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("train", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    trained = make_student_bundle(tmp_path / "trained", seed=4)
    ckpt = trained / "models" / "model.pt"
    tags = card_tags(ckpt, ["normal", "pneumonia", "covid"], 32, "tea_student", "0.1.0")
    assert register_checkpoint(client, run_id, "tea_student", ckpt, tags) == "1"
    return uri, run_id, trained


def test_export_from_the_registry_fetches_the_champion_and_records_its_run(
    registered: tuple[str, str, Path], tmp_path: Path
) -> None:
    uri, run_id, trained = registered
    station = make_student_bundle(tmp_path / "station", seed=9)  # other weights before the fetch
    code = main(
        [
            "export",
            "--bundle",
            str(station),
            "--from-registry",
            "tea_student@champion",
            "--tracking-uri",
            uri,
            "--format",
            "torchscript",
        ]
    )
    assert code == 0
    assert (station / "models" / "model.pt").read_bytes() == (trained / "models" / "model.pt").read_bytes()
    card = json.loads((station / "models" / "model_card.json").read_text())
    assert card["mlflow_run_id"] == run_id
    assert (
        card["files"]["model.pt"]["sha256"]
        == MlflowClient(uri).get_model_version("tea_student", "1").tags["weights_sha256"]
    )


def test_a_checkpoint_that_does_not_match_its_tag_is_refused(
    registered: tuple[str, str, Path], tmp_path: Path
) -> None:
    uri, _, _ = registered
    MlflowClient(uri).set_model_version_tag("tea_student", "1", "weights_sha256", "0" * 64)
    station = make_student_bundle(tmp_path / "station", seed=9)
    before = (station / "models" / "model.pt").read_bytes()
    with pytest.raises(BundleError, match="refusing it"):
        fetch_registered("tea_student@1", station, tracking_uri=uri)
    assert (station / "models" / "model.pt").read_bytes() == before


def test_registry_errors_name_what_is_wrong(registered: tuple[str, str, Path], tmp_path: Path) -> None:
    uri, _, trained = registered
    with pytest.raises(BundleError, match="not NAME@ALIAS"):
        fetch_registered("tea_student", trained, tracking_uri=uri)
    with pytest.raises(BundleError, match="no such registered model version"):
        fetch_registered("tea_student@staging", trained, tracking_uri=uri)
    shutil.rmtree(trained / "configs")
    with pytest.raises(BundleError, match="has no configs/"):
        fetch_registered("tea_student@champion", trained, tracking_uri=uri)
