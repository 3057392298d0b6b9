"""One TEA step per ``torchrun`` process on its half of a fixed global batch; saves the student's
gradients after the step's backward, averaging and clipping to ``OUT/rank<r>.pt``.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_tea_step.py OUT METHOD
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from helpers.fake_engine import FakeEngine
from tea_med.engines import TEATask, TEATrainStep
from tea_med.engines.distributed import finish_distributed, init_distributed
from tea_med.engines.methods import training_step
from tea_med.networks import densenet121

GLOBAL_BATCH = 4


def build(rank: int) -> TEATask:
    torch.manual_seed(0)
    teacher, student = densenet121(num_classes=3).eval(), densenet121(num_classes=3)
    # one generator per rank: rank r draws what a single process draws for the r-th half
    return TEATask(teacher, student, eps_range=(0.01, 0.01), bn_mode="frozen", seed=10 + rank)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {"image": torch.rand(GLOBAL_BATCH, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 2, 0])}


Engine = FakeEngine


def step(task: TEATask, method: str) -> TEATrainStep:
    opt = torch.optim.SGD(task.student.parameters(), lr=0.0)
    return training_step(method, task, opt, max_grad_norm=1.0)  # type: ignore[no-any-return]


def grads(task: TEATask) -> list[torch.Tensor]:
    return [
        torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in task.student.parameters()
    ]


if __name__ == "__main__":
    out, method = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    init_distributed("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    task = build(rank)
    half = GLOBAL_BATCH // world
    b = {k: v[rank * half : (rank + 1) * half] for k, v in batch().items()}
    step(task, method)(Engine(), b)
    torch.save(grads(task), out / f"rank{rank}.pt")
    finish_distributed()  # the bundles' finalize: every rank meets, then leaves the group
    assert not dist.is_initialized()
