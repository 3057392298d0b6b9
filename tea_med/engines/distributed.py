"""Data-parallel training of every tea_med step over ``torch.distributed`` processes (``torchrun``).

TEA differentiates the student's heatmap, which is itself a gradient (``torch.autograd.grad``
with ``create_graph=True``). ``DistributedDataParallel``'s reducer does not see those
gradients: measured with two gloo processes, each rank kept its own gradients after the TEA
loss's backward. So the steps average the gradients themselves, after the backward and before
clipping and the optimiser step: every rank then takes the same step, which with equal per-rank
batches and a frozen-statistics (or no) batch-norm is the step of the global batch.

With batch-norm in training mode each rank normalises with its own batch's statistics, as under
every data-parallel batch-norm without synchronisation; the averaged gradient is then that of the
per-rank normalised losses, not of the global batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """The number of processes of the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace every parameter's gradient by its mean over the processes (a no-op in one process).
    Parameters without a gradient on every rank stay without one."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (a no-op in one process)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


__all__ = ["average_gradients", "broadcast_parameters", "world_size"]
