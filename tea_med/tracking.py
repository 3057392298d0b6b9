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
        handler._log_params({k: v for k, v in self.params.items() if v is not None})

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
