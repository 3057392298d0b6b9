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
    """When ``epoch`` starts, add noise of ``scale`` times each tensor's spread to every trainable
    weight of the trainer's network, from a generator of its own (the run's random states stay
    as they were): that epoch validates clearly worse than the ones before."""

    def __init__(self, epoch: int, scale: float = 3.0, seed: int = 0) -> None:
        self.epoch, self.scale, self.seed = epoch, scale, seed

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED(once=self.epoch), self._perturb)

    @torch.no_grad()
    def _perturb(self, engine: Engine) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for p in engine.network.parameters():  # type: ignore[attr-defined]  # a MONAI trainer
            if p.requires_grad and p.numel() > 1:
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.add_(noise.to(p.device) * (self.scale * float(p.std())))
