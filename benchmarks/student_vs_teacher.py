"""Inference cost of the TEA student against its teacher, as ratios measured in one run.

student = DenseNet121 (3 classes), no segmenter
teacher = TeacherPipeline: lung segmenter (MONAI UNet, ``paper`` profile) -> mask (0.4) -> noise
          outside the lungs -> DenseNet121 (3 classes)

(a) student images/s / teacher images/s      target >= 2.0 (paper: 2.08 on an RTX 3080 GPU)
(b) teacher parameters / student parameters  target >= 5   (paper: 39M / 8M)

Both in eval mode under ``torch.inference_mode``, float32, random weights (speed does not depend on
them), one batch of random images, in two forms: eager PyTorch and TorchScript
(``torch.jit.script`` then ``torch.jit.freeze``; ``--no-freeze`` skips the freeze). Timings are
medians of interleaved repetitions (every repetition runs all four models once, in turn) after
warm-up runs that also let the TorchScript profiling executor optimise its graphs.

    python benchmarks/student_vs_teacher.py [--batch 10] [--size 224] [--reps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from tea_med.networks import TeacherPipeline, densenet121, lung_segmenter

N_CLASSES = 3
PROFILE = "paper"
WARMUP = 3


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_models(seed: int = 0) -> tuple[nn.Module, TeacherPipeline]:
    torch.manual_seed(seed)
    student = densenet121(num_classes=N_CLASSES).eval()
    teacher = TeacherPipeline(lung_segmenter(PROFILE), densenet121(num_classes=N_CLASSES)).eval()
    return student, teacher


def script(module: nn.Module, freeze: bool) -> torch.jit.ScriptModule:
    scripted = torch.jit.script(module.eval())
    return torch.jit.freeze(scripted) if freeze else scripted


def check_scripted(eager: nn.Module, scripted: Callable, x: torch.Tensor, name: str) -> float:
    """Largest logit difference between the eager and TorchScript forms (same noise seed)."""
    with torch.inference_mode():
        torch.manual_seed(3)
        a = eager(x)
        torch.manual_seed(3)
        b = scripted(x)
    diff = float((a - b).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"TorchScript {name} differs from eager by {diff:.2e}")
    return diff


def time_interleaved(models: dict[str, Callable], x: torch.Tensor, reps: int) -> dict[str, float]:
    """Median seconds per forward pass of each model; repetitions interleave the models."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(WARMUP):
            for model in models.values():
                model(x)
        for _ in range(reps):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--size", type=int, default=224, help="image side; divisible by 16 (default 224)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-freeze", action="store_true", help="TorchScript without torch.jit.freeze")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    freeze = not args.no_freeze

    student, teacher = make_models()
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    p_student, p_teacher, p_seg = n_params(student), n_params(teacher), n_params(teacher.segmenter)
    jit_student, jit_teacher = script(student, freeze), script(teacher, freeze)
    diffs = (
        check_scripted(student, jit_student, x, "student"),
        check_scripted(teacher, jit_teacher, x, "teacher"),
    )

    jit_name = "torch.jit.script + torch.jit.freeze" if freeze else "torch.jit.script (not frozen)"
    print(
        f"student DenseNet121 vs teacher ({PROFILE} lung UNet + DenseNet121), {N_CLASSES} classes, "
        f"batch {args.batch}, {args.size} px, float32, CPU, {args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"TorchScript = {jit_name}; max |eager - TorchScript| logits: "
        f"student {diffs[0]:.1e}, teacher {diffs[1]:.1e} (same noise seed)"
    )
    print(
        f"parameters   | student {p_student / 1e6:6.2f}M | teacher {p_teacher / 1e6:6.2f}M "
        f"(segmenter {p_seg / 1e6:.2f}M + classifier {(p_teacher - p_seg) / 1e6:.2f}M) | "
        f"(b) teacher / student = {p_teacher / p_student:4.2f} (>= 5)",
        flush=True,
    )
    t = time_interleaved(
        {"student": student, "teacher": teacher, "jit_student": jit_student, "jit_teacher": jit_teacher},
        x,
        args.reps,
    )
    for label, key in (("eager", ""), ("TorchScript", "jit_")):
        ts, tt = t[f"{key}student"], t[f"{key}teacher"]
        print(
            f"{label:<12} | student {args.batch / ts:6.1f} img/s ({ts * 1e3:6.0f} ms/batch) | "
            f"teacher {args.batch / tt:6.1f} img/s ({tt * 1e3:6.0f} ms/batch) | "
            f"(a) student / teacher = {tt / ts:4.2f} (>= 2.0)",
            flush=True,
        )
    print(f"medians of {args.reps} interleaved repetitions after {WARMUP} warm-up runs")


if __name__ == "__main__":
    main()
