"""Cost of trainable LRP-ε on DenseNet121, as ratios measured in one run (issue 2).

(a) LRPEpsilon heatmap / plain input gradient               target <= 1.2
(b) TEA step / ERM step (same batch, same student)           target <= 4.0 at 224 px
(c) peak memory of the TEA step / peak memory of the ERM step target <= 3.0

TEA step = teacher heatmap without graph (eval, frozen) + student heatmap with graph
(create_graph=True, batch-norm in train mode) + TEALoss + backward + grad-norm clip + SGD step.
ERM step = forward + cross-entropy + backward + grad-norm clip + SGD step (train mode).

Timings are medians of interleaved repetitions; peak memory is measured in a fresh process
per step kind as the growth of the resident set (VmHWM after resetting it) during one step.

    python benchmarks/explain_cost.py [--sizes 64 224] [--batch 8] [--reps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tea_med.engines import sample_eps, sample_targets
from tea_med.explain import InputGradient, LRPEpsilon
from tea_med.losses import TEALoss
from tea_med.networks import densenet121, use_fast_double_backward

N_CLASSES = 3
FAST_BN = True


def make_models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    teacher = densenet121(num_classes=N_CLASSES).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = densenet121(num_classes=N_CLASSES)
    student.load_state_dict(teacher.state_dict())
    student.class_layers.out.requires_grad_(False)  # TEA freezes the last linear layer
    if FAST_BN:
        use_fast_double_backward(student)
    return teacher, student.train()


def make_batch(batch: int, size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g), torch.randint(0, N_CLASSES, (batch,), generator=g)


def steps(teacher: torch.nn.Module, student: torch.nn.Module) -> dict[str, Callable]:
    lrp = LRPEpsilon(validate="never")
    grad = InputGradient()
    tea_loss = TEALoss()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(2)

    def heat_lrp(x: torch.Tensor, y: torch.Tensor) -> None:
        lrp(teacher, x, y, eps=1e-2)

    def heat_grad(x: torch.Tensor, y: torch.Tensor) -> None:
        grad(teacher, x, y)

    def erm(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(student(x), y).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def tea(x: torch.Tensor, y: torch.Tensor) -> None:
        eps = sample_eps(x.shape[0], 1e-3, 1e-2, gen)
        t = lrp.explain(teacher, x, lambda logits: sample_targets(logits, gen), eps=eps)
        opt.zero_grad(set_to_none=True)
        s = lrp(student, x, t.target, eps=eps, create_graph=True)
        tea_loss(s, t.heatmap).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return {"lrp": heat_lrp, "input_grad": heat_grad, "erm": erm, "tea": tea}


def time_pairs(fa: Callable, fb: Callable, x, y, reps: int) -> tuple[float, float]:
    fa(x, y)
    fb(x, y)  # warm-up
    ta, tb = [], []
    for _ in range(reps):
        for f, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f(x, y)
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(kind: str, size: int, batch: int) -> None:
    """Runs in a fresh process: one step of `kind`, prints the peak RSS growth in MiB."""
    teacher, student = make_models()
    x, y = make_batch(batch, size)
    f = steps(teacher, student)[kind]
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _rss_kib("VmRSS:")
    f(x, y)
    print(json.dumps({"peak_mib": (_rss_kib("VmHWM:") - base) / 1024}))


def peak_memory(kind: str, size: int, batch: int, threads: int) -> float:
    cmd = [sys.executable, __file__, "--child", kind, "--sizes", str(size), "--batch", str(batch)]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return float(json.loads(out)["peak_mib"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--child", choices=["erm", "tea"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        peak_memory_child(args.child, args.sizes[0], args.batch)
        return

    print(
        f"DenseNet121, {N_CLASSES} classes, batch {args.batch}, CPU, {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    rows = []
    for size in args.sizes:
        teacher, student = make_models()
        x, y = make_batch(args.batch, size)
        f = steps(teacher, student)
        t_lrp, t_grad = time_pairs(f["lrp"], f["input_grad"], x, y, args.reps)
        t_tea, t_erm = time_pairs(f["tea"], f["erm"], x, y, args.reps)
        m_tea = peak_memory("tea", size, args.batch, args.threads)
        m_erm = peak_memory("erm", size, args.batch, args.threads)
        rows.append((size, t_lrp, t_grad, t_tea, t_erm, m_tea, m_erm))
        print(
            f"{size:>4} px | (a) LRP {t_lrp * 1e3:7.0f} ms / input-grad {t_grad * 1e3:7.0f} ms = "
            f"{t_lrp / t_grad:4.2f} (<= 1.2) | (b) TEA {t_tea * 1e3:7.0f} ms / ERM {t_erm * 1e3:7.0f} ms = "
            f"{t_tea / t_erm:4.2f} (<= 4.0) | (c) peak TEA {m_tea:6.0f} MiB / ERM {m_erm:6.0f} MiB = "
            f"{m_tea / m_erm:4.2f} (<= 3.0)",
            flush=True,
        )


if __name__ == "__main__":
    main()
