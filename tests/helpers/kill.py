"""A trainer handler that kills its own process with SIGKILL (for the resume test)."""

from __future__ import annotations

import os
import signal

from ignite.engine import Engine, Events


class KillAtEpoch:
    """SIGKILL the process at the end of ``epoch``, after the handlers listed before it ran."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=self.epoch), self._kill)

    def _kill(self, _: Engine) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
