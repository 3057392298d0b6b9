"""The attributes of a MONAI engine that a training step reads, for calling a step directly."""

from __future__ import annotations

import torch


class FakeEngine:
    class state:  # noqa: N801 - mirrors ignite's Engine.state
        device = torch.device("cpu")
        output = None
        iteration = 1
        epoch = 1

    @staticmethod
    def fire_event(_: object) -> None:
        pass
