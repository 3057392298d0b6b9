"""TEA and its baselines under ``torchrun``: two gloo processes on CPU take the step of the global
batch for a student with frozen batch-norm statistics: every rank the same step to the bit, and
that step the single-process one up to float32 summation order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.ddp_tea_step import GLOBAL_BATCH, Engine, batch, build, grads, step
from node.conftest import free_port

from tea_med.engines.distributed import data_parallel, handlers_of_this_rank, init_distributed

REPO = Path(__file__).resolve().parents[2]


def _single_process_reference(method: str) -> list[torch.Tensor]:
    """The mean of the two halves' gradients, clipped like the step clips: what the global batch gives."""
    halves = []
    for rank in range(2):
        task = build(rank)
        b = {k: v[rank * 2 : (rank + 1) * 2] for k, v in batch().items()}
        s = step(task, method)
        s.max_grad_norm = float("inf")  # one process, one half: its raw gradient
        s(Engine(), b)
        halves.append(grads(task))
    mean = [(a + b) / 2 for a, b in zip(*halves, strict=True)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in mean]))
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule, max norm 1
    return [g * scale for g in mean]


def test_one_process_runs_every_handler_and_needs_torchrun_for_a_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handlers = [object(), object()]
    assert handlers_of_this_rank(handlers) == handlers
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match=r"multi_gpu_train\.json runs under torchrun, which sets RANK"):
        init_distributed()
    net = torch.nn.Linear(2, 2)
    assert data_parallel(net, torch.device("cpu")) is net  # one process: nothing to wrap


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tea", "erm"])
def test_two_torchrun_processes_take_the_global_batch_step(method: str, tmp_path: Path) -> None:
    assert GLOBAL_BATCH == 4
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(REPO / "tests" / "helpers" / "ddp_tea_step.py"),
        str(tmp_path), method,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    reference = _single_process_reference(method)
    for r0, r1, ref in zip(*ranks, reference, strict=True):
        torch.testing.assert_close(r0, r1, rtol=0, atol=0)  # every rank takes the same step
        # the reference runs with this process's thread count, so its sums are ordered differently
        torch.testing.assert_close(r0, ref, rtol=1e-4, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in reference)
