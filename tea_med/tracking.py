"""MLflow tracking of the bundles' workflows, on MONAI's own ``MLFlowHandler``.

Each bundle ships ``configs/mlflow.yaml``, MONAI's ``--tracking mlflow`` settings plus what a
training workflow names for its run::

    python -m monai.bundle run --config_file "['configs/common.yaml','configs/train.yaml']" ... \\
        --tracking configs/mlflow.yaml --run_name student-v1

``tracking_params`` (a workflow's hyper-parameters) become the run's parameters (MONAI's
``experiment_param``); ``tracking_artifacts`` (the best checkpoint, and for the student the
folder of validation heatmap figures) and the executed config are logged when training completes
(MONAI's ``artifacts``). Without tracking none of it is read and nothing is logged.
:class:`HeatmapFigureLogger` draws the student's validation figures into that folder.

Never log identifying data here: parameters come from bundle configs, not from DICOM headers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler


def sqlite_artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: ``mlruns/`` beside
    the database (MLflow's own default is ``./mlruns`` of whatever folder a command runs in).
    ``None`` for any other store (a tracking server decides for itself)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri.removeprefix(prefix)).resolve()
    return (database.parent / "mlruns").as_uri()


def executed_config(path: str | None, output_dir: str | os.PathLike[str]) -> str | None:
    """The executed config that MONAI's tracking wrote for this run, or ``None`` if none was.

    Args:
        path: the workflow's ``save_execute_config`` after MONAI's tracking patch (``None`` when
            the executed config is not saved). When ``--output_dir`` is overridden with a plain
            path, MONAI 1.6 builds this value as text that names no file, so the executed config
            would silently go unlogged; the newest ``config_*.json`` in ``output_dir`` (the one
            MONAI has just written there) is returned instead.
        output_dir: the workflow's ``output_dir``.
    """
    if not path:
        return None
    if os.path.isfile(path):
        return path
    if not os.path.isdir(output_dir):
        return None
    configs = [f for f in os.scandir(output_dir) if f.name.startswith("config_") and f.name.endswith(".json")]
    return max(configs, key=lambda f: f.stat().st_mtime).path if configs else None


class HeatmapFigureLogger:
    """At the end of every validation: the same validation images' teacher and student LRP-ε
    heatmaps side by side, written to ``<directory>/validation_<n>.png``.

    With tracking, the student bundle lists ``directory`` among its ``tracking_artifacts``, so
    the figures reach the MLflow run when training completes.

    Args:
        task: a :class:`tea_med.engines.TEATask` (its ``validation_losses`` draws the maps).
        directory: where the figures go (the student bundle's ``heatmap_dir``).
        n_images: how many images of the first validation batch to show.
    """

    def __init__(self, task: Any, directory: str | os.PathLike[str], n_images: int = 4) -> None:
        self.task = task
        self.dir = os.fspath(directory)
        self.n_images = n_images
        self.images: Any = None
        self.count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self._capture)
        engine.add_event_handler(Events.COMPLETED, self._draw)

    def _capture(self, engine: Engine) -> None:
        if self.images is None:  # the same images at every validation
            import torch

            batch: Any = engine.state.batch
            items = batch if isinstance(batch, list) else [{"image": im} for im in batch["image"]]
            self.images = torch.stack(
                [torch.as_tensor(it["image"]).as_subclass(torch.Tensor) for it in items]
            )
            self.images = self.images[: self.n_images].detach().cpu()

    def _draw(self, engine: Engine) -> None:
        if self.images is None:
            return
        from tea_med.evaluation.figures import heatmap_grid

        self.count += 1
        device = next(self.task.student.parameters()).device
        self.task.eval()
        out = self.task.validation_losses(self.images.to(device))
        names = list(getattr(self.task, "class_names", None) or [])
        titles = [
            f"teacher: {names[i] if i < len(names) else i}" for i in out["teacher_logits"].argmax(1).tolist()
        ]
        heatmap_grid(
            self.images.numpy(),
            {
                "teacher LRP-ε": out["teacher_heatmap"].cpu().numpy(),
                "student LRP-ε": out["student_heatmap"].cpu().numpy(),
            },
            os.path.join(self.dir, f"validation_{self.count:03d}.png"),
            row_titles=titles,
            title=f"validation {self.count}: TEA loss {float(out['loss_per_sample'].mean()):.3f}",
        )


class RegisteringMLFlowHandler(MLFlowHandler):
    """MONAI's ``MLFlowHandler`` that, when training completes and after its artifacts are
    logged, registers the best checkpoint in the MLflow model registry
    (:func:`tea_med.deploy.registry.register_checkpoint`): a new version of
    ``registered_model_name`` with the training model card as tags and ``registered_model_alias``
    moved to it. With ``registered_model_name=None`` it is exactly MONAI's handler.

    Args:
        registered_model_name: the registered model; ``None`` registers nothing.
        checkpoint: the best checkpoint (the bundle's ``models/model.pt``).
        class_names, image_size: recorded as tags.
        metadata_file: the bundle's ``configs/metadata.json``: its ``name`` and ``version`` are
            recorded as tags.
        registered_model_alias: the alias the workstation reads (``champion``).
        **kwargs: MONAI ``MLFlowHandler`` arguments.
    """

    def __init__(
        self,
        *,
        registered_model_name: str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] = (),
        image_size: int = 224,
        metadata_file: str | os.PathLike[str] | None = None,
        registered_model_alias: str = "champion",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if registered_model_name and checkpoint is None:
            raise ValueError("registered_model_name needs checkpoint (the best checkpoint's path)")
        self.registered_model_name = registered_model_name or None
        self.checkpoint = checkpoint
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.metadata_file = metadata_file
        self.registered_model_alias = registered_model_alias
        #: the registered version, once training completed
        self.registered_version: str | None = None

    def complete(self) -> None:
        super().complete()
        if not self.registered_model_name or self.cur_run is None or self.checkpoint is None:
            return
        from tea_med.deploy.registry import card_tags, register_checkpoint

        if not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(
                f"cannot register {self.registered_model_name}: the best checkpoint {self.checkpoint} "
                "does not exist"
            )
        metadata: dict[str, Any] = {}
        if self.metadata_file is not None and os.path.isfile(self.metadata_file):
            with open(self.metadata_file) as fh:
                metadata = json.load(fh)
        name, version = str(metadata.get("name", "")), str(metadata.get("version", ""))
        tags = card_tags(self.checkpoint, self.class_names, self.image_size, name, version)
        self.registered_version = register_checkpoint(
            self.client,
            self.cur_run.info.run_id,
            self.registered_model_name,
            self.checkpoint,
            tags,
            alias=self.registered_model_alias,
        )
