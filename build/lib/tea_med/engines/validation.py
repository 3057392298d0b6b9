"""Validation of the final weights, whatever the validation interval."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events


class ValidateLastEpoch:
    """Trainer handler: run ``validator`` after the last epoch when the interval skipped it.

    MONAI's ``ValidationHandler(interval=N)`` validates after epochs N, 2N, ...: when
    ``max_epochs`` is not a multiple of N the final weights are never validated, nor considered
    for the best checkpoint. List this handler right after the ``ValidationHandler`` with the
    same ``validator`` and ``interval`` (and before a :class:`~tea_med.engines.ResumeCheckpoint`,
    so the last epoch's checkpoint includes that validation). Whether the last epoch was
    validated follows from the epoch number alone, so a run resumed at its end behaves the same.

    Args:
        validator: the MONAI evaluator the ``ValidationHandler`` runs.
        interval: the ``ValidationHandler``'s epoch interval.
    """

    def __init__(self, validator: Any, interval: int) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be a positive number of epochs, got {interval!r}")
        self.validator = validator
        self.interval = int(interval)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch == engine.state.max_epochs and epoch % self.interval:
            self.validator.run(epoch)
