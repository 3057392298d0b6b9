"""The MLflow model registry between training and the workstation.

Training side: :func:`register_checkpoint`, called by
:class:`tea_med.tracking.RegisteringMLFlowHandler` (the student bundle's ``configs/mlflow.yaml``,
key ``registered_model_name``) when training completes: it logs the best checkpoint under the
run's ``registered_model/`` artifacts, creates a new version of the registered model with the
training model card (:func:`card_tags`: classes, input size, weights SHA-256, Device UID,
versions) as tags and points an alias (``champion`` by default) at it.

Workstation side: :func:`fetch_registered` (``tea-med export --from-registry NAME@ALIAS``)
downloads that version's checkpoint into a bundle's ``models/model.pt`` after checking its
SHA-256 against the version's tag.

mlflow is imported only when one of them runs (``pip install 'tea_med[train]'``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tea_med.deploy.bundle import BundleError
from tea_med.deploy.export import device_uid, sha256_of

ARTIFACT_DIR = "registered_model"
DEFAULT_ALIAS = "champion"


def _mlflow_client(tracking_uri: str | None) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise BundleError("the MLflow model registry needs mlflow: pip install 'tea_med[train]'") from err
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise BundleError("no MLflow tracking URI: pass --tracking-uri URI or set MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def card_tags(
    checkpoint: str | os.PathLike[str], class_names: Sequence[str], image_size: int, name: str, version: str
) -> dict[str, str]:
    """The training model card as registry tags (all strings)."""
    import monai
    import torch

    from tea_med import __version__

    weights = sha256_of(checkpoint)
    return {
        "bundle": name,
        "bundle_version": version,
        "class_names": ",".join(class_names),
        "image_size": str(int(image_size)),
        "weights_sha256": weights,
        "device_uid": device_uid(weights),
        "tea_med_version": __version__,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
    }


def register_checkpoint(
    client: Any,
    run_id: str,
    name: str,
    checkpoint: str | os.PathLike[str],
    tags: dict[str, str],
    alias: str = DEFAULT_ALIAS,
) -> str:
    """Log ``checkpoint`` under the run's ``registered_model/`` artifacts, create a new version of
    the registered model ``name`` (created when missing) with ``tags``, move ``alias`` to it and
    return the version number."""
    from mlflow.exceptions import MlflowException

    client.log_artifact(run_id, str(checkpoint), artifact_path=ARTIFACT_DIR)
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_DIR}"
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


@dataclass(frozen=True)
class FetchedModel:
    """A registered model version fetched into a bundle."""

    path: Path
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]


def parse_reference(text: str) -> tuple[str, str]:
    """``"NAME@ALIAS"`` -> ``(NAME, ALIAS)``; a bare number after ``@`` is taken as a version."""
    name, sep, alias = text.partition("@")
    if not sep or not name or not alias:
        raise BundleError(f"--from-registry {text!r} is not NAME@ALIAS (e.g. tea_student@{DEFAULT_ALIAS})")
    return name, alias


def fetch_registered(
    reference: str, bundle_dir: str | os.PathLike[str], *, tracking_uri: str | None = None
) -> FetchedModel:
    """Download the checkpoint of ``NAME@ALIAS`` (or ``NAME@VERSION``) into ``bundle_dir/models/model.pt``.

    The file's SHA-256 must equal the version's ``weights_sha256`` tag; the bundle's previous
    ``model.pt`` is replaced only then.
    """
    name, alias = parse_reference(reference)
    bundle = Path(bundle_dir)
    if not (bundle / "configs").is_dir():
        raise BundleError(
            f"bundle folder {bundle} has no configs/: copy the bundle there first (tea-med bundles --copy)"
        )
    client = _mlflow_client(tracking_uri)
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        version = (
            client.get_model_version(name, alias)
            if alias.isdigit()
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as err:
        raise BundleError(
            f"{reference}: no such registered model version in {client.tracking_uri} ({err.message})"
        ) from err
    tags = dict(version.tags or {})
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            download_artifacts(artifact_uri=version.source, dst_path=tmp, tracking_uri=client.tracking_uri)
        )
        found = next(iter(sorted(local.rglob("*.pt"))), None) if local.is_dir() else local
        if found is None or not found.is_file():
            raise BundleError(
                f"{reference}: version {version.version} holds no checkpoint at {version.source}"
            )
        expected = tags.get("weights_sha256")
        actual = sha256_of(found)
        if expected and actual != expected:
            raise BundleError(
                f"{reference}: the downloaded checkpoint has SHA-256 {actual[:12]}..., the version's tag "
                f"{expected[:12]}...; refusing it"
            )
        target = bundle / "models" / "model.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_suffix(".pt.part")
        shutil.copyfile(found, staged)
        os.replace(staged, target)
    return FetchedModel(target, name, str(version.version), version.run_id, tags)


__all__ = [
    "DEFAULT_ALIAS",
    "FetchedModel",
    "card_tags",
    "fetch_registered",
    "parse_reference",
    "register_checkpoint",
]
