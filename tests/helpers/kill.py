"""Trainer handlers for the resume tests: kill the process, spoil an epoch."""

from __future__ import annotations

import os
import signal

import torch
from ignite.engine import Engine, Events


class KillAtEpoch:
    """SIGKILL the process at the end of ``epoch``, after the handlers listed before it ran."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=self.epoch), self._kill)

    def _kill(self, _: Engine) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class PerturbAtEpoch:
    """When ``epoch`` starts, multiply the weight and bias of the trainer network's last
    batch-norm layer by ``scale``: the logits, and with them the LRP-ε heatmaps, grow about that
    much, so that epoch's TEA loss against the teacher's heatmaps (``mean |S - T|`` over
    ``sqrt(mean |S|) sqrt(mean |T|)``, about ``sqrt(mean |S| / mean |T|)`` for a large S) is
    clearly worse than the ones before. No random draw: the run's random states stay as they were."""

    def __init__(self, epoch: int, scale: float = 100.0) -> None:
        self.epoch, self.scale = epoch, scale

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED(once=self.epoch), self._perturb)

    @torch.no_grad()
    def _perturb(self, engine: Engine) -> None:
        norms = [m for m in engine.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # type: ignore[attr-defined]  # a MONAI trainer
        norms[-1].weight.mul_(self.scale)
        norms[-1].bias.mul_(self.scale)
