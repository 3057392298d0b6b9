"""MLflow wiring beyond what MONAI's ``--tracking mlflow`` does.

``python -m monai.bundle run ... --tracking mlflow`` attaches MONAI ``MLFlowHandler``s to the
trainer and the evaluators: losses, validation metrics and the executed config reach MLflow.
:class:`MLflowRunExtras`, listed in a bundle's ``train#handlers``, adds the bundle's
hyper-parameters as run parameters and the best checkpoint as an artifact, on the very run
MONAI's handler opened. Without tracking it does nothing.

Never log identifying data here: parameters come from bundle configs, not from DICOM headers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


def find_mlflow_handler(engine: Engine) -> Any | None:
    """The ``monai.handlers.MLFlowHandler`` attached to ``engine``, if any."""
    from monai.handlers import MLFlowHandler

    for handlers in engine._event_handlers.values():
        for func, *_ in handlers:
            owner = getattr(func, "__self__", None)
            if isinstance(owner, MLFlowHandler):
                return owner
    return None


class MLflowRunExtras:
    """Log ``params`` once the run exists, and ``artifacts`` (files that exist) at completion.

    Args:
        params: flat mapping of hyper-parameters (values are stringified by MLflow).
        artifacts: files to upload when the engine completes (e.g. the best checkpoint).
        config_dir: the bundle's ``output_dir``, where MONAI writes the executed config
            (``config_<time>.json``). When ``--output_dir`` is overridden with a plain path,
            MONAI 1.6's tracking patch builds the config's artifact path as a string that is
            not evaluated, so the executed config would silently go unlogged; in that case
            the newest ``config_*.json`` found here is logged instead.
    """

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        artifacts: Sequence[str] = (),
        config_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.params = dict(params or {})
        self.artifacts = [os.fspath(a) for a in artifacts]
        self.config_dir = None if config_dir is None else os.fspath(config_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._schedule_params)
        engine.add_event_handler(Events.COMPLETED, self._log_artifacts)

    def _schedule_params(self, engine: Engine) -> None:
        # Registered during STARTED, so it runs after MLFlowHandler.start has opened the run.
        engine.add_event_handler(Events.ITERATION_STARTED(once=engine.state.iteration + 1), self._log_params)

    def _log_params(self, engine: Engine) -> None:
        handler = find_mlflow_handler(engine)
        if handler is None or handler.cur_run is None or not self.params:
            return
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in self.params.items() if v is not None]
        handler.client.log_batch(handler.cur_run.info.run_id, params=params)

    def _log_artifacts(self, engine: Engine) -> None:
        handler = find_mlflow_handler(engine)
        if handler is None or handler.cur_run is None:
            return
        paths = list(self.artifacts)
        monai_logs_config = any(os.path.isfile(str(a)) for a in handler.artifacts if a)
        if self.config_dir and not monai_logs_config and os.path.isdir(self.config_dir):
            configs = sorted(
                (
                    f
                    for f in os.scandir(self.config_dir)
                    if f.name.startswith("config_") and f.name.endswith(".json")
                ),
                key=lambda f: f.stat().st_mtime,
            )
            paths += [configs[-1].path] if configs else []
        for path in paths:
            if os.path.isfile(path):
                handler.client.log_artifact(handler.cur_run.info.run_id, path)
            else:
                logger.warning("MLflow artifact %s does not exist; not logged", path)


class HeatmapFigureLogger:
    """At the end of every validation: the same validation images' teacher and student LRP-ε
    heatmaps side by side, written to ``<output_dir>/heatmaps/validation_<n>.png`` and, when a
    MONAI ``MLFlowHandler`` is attached to the evaluator, logged to its run under ``heatmaps/``.

    Args:
        task: a :class:`tea_med.engines.TEATask` (its ``validation_losses`` draws the maps).
        output_dir: the bundle's output folder.
        n_images: how many images of the first validation batch to show.
    """

    def __init__(self, task: Any, output_dir: str | os.PathLike[str], n_images: int = 4) -> None:
        self.task = task
        self.dir = os.path.join(os.fspath(output_dir), "heatmaps")
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
        path = heatmap_grid(
            self.images.numpy(),
            {
                "teacher LRP-ε": out["teacher_heatmap"].cpu().numpy(),
                "student LRP-ε": out["student_heatmap"].cpu().numpy(),
            },
            os.path.join(self.dir, f"validation_{self.count:03d}.png"),
            row_titles=titles,
            title=f"validation {self.count}: TEA loss {float(out['loss_per_sample'].mean()):.3f}",
        )
        handler = find_mlflow_handler(engine)
        if handler is not None and handler.cur_run is not None:
            handler.client.log_artifact(handler.cur_run.info.run_id, str(path), artifact_path="heatmaps")
