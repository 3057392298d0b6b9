"""Terminal output of a long training run: one progress bar and one line per epoch."""

from __future__ import annotations

import numbers

from ignite.engine import Engine, Events


class EpochProgress:
    """Trainer handler: an ignite ``ProgressBar`` over each epoch's iterations and, when an epoch
    ends, one line with the epoch's metrics (the trainer's, plus the validator's when it ran that
    epoch). Attach it after the trainer's own handlers, so validation has run by then.

    Args:
        desc: the stage's name, shown before the bar and each line.
        validator: the evaluator a ``ValidationHandler`` runs, if any.
    """

    def __init__(self, desc: str, validator: Engine | None = None) -> None:
        from ignite.handlers import ProgressBar

        self.desc = desc
        self.validator = validator
        self.bar = ProgressBar(desc=desc, persist=False)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._line)

    def line(self, engine: Engine) -> str:
        """``"<desc> epoch e/E: name value, ..."``: the numbers that reach MLflow this epoch."""
        metrics = dict(engine.state.metrics)
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            metrics |= self.validator.state.metrics
        shown = ", ".join(
            f"{k} {v:.4g}"
            for k, v in metrics.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)
        )
        return f"{self.desc} epoch {engine.state.epoch}/{engine.state.max_epochs}" + (
            f": {shown}" if shown else ""
        )

    def _line(self, engine: Engine) -> None:
        self.bar.log_message(self.line(engine))
