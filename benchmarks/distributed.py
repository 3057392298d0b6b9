"""TEA training throughput of 2 ``torchrun`` processes against 1 process, on the CPU, as a ratio
measured in one run.

Both time the shipped ``TEATrainStep`` under MONAI's ``SupervisedTrainer`` (the
``explain_cost.py`` set-up: paper-size segmenter + DenseNet121 teacher, student from it) on the
same global batch: one process with ``--threads`` threads on all of it, or ``torchrun
--nproc_per_node 2`` (gloo) with ``--threads / 2`` threads each on half of it, the steps
averaging their gradients over the processes. Throughput is the global batch over the median
iteration time (rank 0's; the gradient averaging makes every rank wait for the slowest).

    python benchmarks/distributed.py [--size 224] [--batch 8] [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_cost import IterationTimer, trainer


def median_step(size: int, batch: int, reps: int) -> float:
    engine = trainer("tea", size, batch, 1)
    timer = IterationTimer(engine)
    for _ in range(reps + 1):
        engine.run()
    return statistics.median(timer.times[1:])


def worker(size: int, batch: int, reps: int, threads: int) -> None:
    """One ``torchrun`` process: its share of the batch; rank 0 prints the median step time."""
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo")
    t = median_step(size, batch // dist.get_world_size(), reps)
    if dist.get_rank() == 0:
        print(json.dumps({"step_s": t}), flush=True)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_processes(size: int, batch: int, reps: int, threads: int) -> float:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), __file__, "--worker", "--size", str(size), "--batch", str(batch),
        "--reps", str(reps), "--threads", str(max(1, threads // 2)),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // 2))}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(json.loads([line for line in out.splitlines() if line.startswith("{")][-1])["step_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.size, args.batch, args.reps, args.threads)
        return
    torch.set_num_threads(args.threads)
    one = median_step(args.size, args.batch, args.reps)
    two = two_processes(args.size, args.batch, args.reps, args.threads)
    print(
        f"TEATrainStep, global batch {args.batch}, {args.size} px, CPU, torch {torch.__version__}: "
        f"1 process x {args.threads} threads {args.batch / one:.2f} images/s, "
        f"2 processes x {max(1, args.threads // 2)} thread(s) {args.batch / two:.2f} images/s: "
        f"2-process / 1-process throughput {one / two:.2f}"
    )


if __name__ == "__main__":
    main()
