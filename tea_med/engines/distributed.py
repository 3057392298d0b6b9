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

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

#: handlers that take part in collective operations or keep every rank's state in step: they run
#: on every process; every other handler (logging, figures, best-model saving, MLflow) on rank 0
EVERY_RANK_HANDLERS = (
    "LrScheduleHandler",
    "ValidationHandler",
    "ValidateLastEpoch",
    "ResumeCheckpoint",
    "BatchNormRecalibration",
    "TeacherTrainingStatistics",
)


def world_size() -> int:
    """The number of processes of the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the ``torchrun`` process group and return this process's device.

    ``nccl`` and ``cuda:<LOCAL_RANK>`` when CUDA is available, ``gloo`` and the CPU otherwise
    (``backend`` overrides the choice). Called by the bundles' ``configs/multi_gpu_train.json``.
    """
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    missing = [k for k in launcher if k not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(
            f"multi_gpu_train.json runs under torchrun, which sets {', '.join(missing)}: start it as "
            "`torchrun --nproc_per_node N -m monai.bundle run "
            "--config_file \"[..., 'configs/multi_gpu_train.json']\"`"
        )
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if dist.get_rank() > 0:  # one log: the engines' progress messages of rank 0 only
        logging.getLogger("ignite").setLevel(logging.WARNING)
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def finish_distributed() -> None:
    """Leave the process group (every rank at once; a no-op without one).

    With gloo the ranks meet in ``monitored_barrier``, not ``barrier``. gloo's worker threads
    outlive ``destroy_process_group`` (the networks still hold the group), and a ``barrier``
    keeps the collective that ran just before it (here the last epoch's gathered checkpoint
    state, tensors made in Python) until the barrier's own work is freed, which a worker does
    after ``barrier`` has returned. When that falls into the interpreter's shutdown, the
    worker cannot take the GIL to free the tensors and the process aborts ("terminate called
    without an active exception"): seen in about 3 of 100 two-process runs on a loaded
    2-core machine. ``monitored_barrier`` exchanges a tensor made in C++ over direct
    send/receive and keeps no earlier collective alive, so the workers free the last
    collective's tensors right after it completes, while the run is still going.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            dist.monitored_barrier()
        else:
            dist.barrier()
        dist.destroy_process_group()


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device`` wrapped in ``DistributedDataParallel`` (one device per process).

    For the networks trained by plain back-propagation (the teacher's segmenter and classifier).
    The TEA student is not wrapped: its loss differentiates a heatmap that is itself a gradient,
    which DDP's reducer does not see, so the steps average its gradients themselves
    (:func:`average_gradients`) and :func:`broadcast_parameters` makes every rank start alike.
    """
    module = module.to(device)
    if world_size() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def same_start(module: nn.Module) -> nn.Module:
    """``module`` with rank 0's parameters and buffers on every process (for configs)."""
    broadcast_parameters(module)
    return module


def handlers_of_this_rank(
    handlers: Sequence[Any], every_rank: Sequence[str] = EVERY_RANK_HANDLERS
) -> list[Any]:
    """The engine handlers this process runs: all of them on rank 0, on the others only those
    whose class is named in ``every_rank`` (the ones that take part in collective operations,
    such as validation, or keep the ranks in step, such as the learning-rate schedule)."""
    if rank() == 0:
        return list(handlers)
    return [h for h in handlers if type(h).__name__ in every_rank]


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


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm statistics) to every process (a no-op in one process)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in module.buffers():
            dist.broadcast(t.data, src)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in one process); a collective call."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


__all__ = [
    "EVERY_RANK_HANDLERS",
    "average_gradients",
    "broadcast_buffers",
    "broadcast_parameters",
    "data_parallel",
    "finish_distributed",
    "gather_objects",
    "handlers_of_this_rank",
    "init_distributed",
    "rank",
    "same_start",
    "world_size",
]
