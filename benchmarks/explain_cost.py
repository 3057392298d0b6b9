"""Cost of trainable LRP-ε on DenseNet121, as ratios measured in one run.

(a) LRPEpsilon heatmap / plain input gradient               target <= 1.2
(b) TEA step / ERM step (same batch)                        target <= 3.0 at 224 px
(c) peak memory of the TEA step / peak memory of the ERM step target <= 3.0
(b') TEA step with the teacher's lung masks computed beforehand (``TEATrainStep(mask_key=...)``)
     / ERM step: what computing the masks once per image leaves

(b) and (c) time the shipped code path: the student bundle's ``TEATrainStep`` (teacher =
``TeacherPipeline``: lung segmenter + DenseNet121, its heatmap on the masked input; student
initialised from the teacher, batch-norm in train mode, SGD + grad-norm clip) driven by MONAI's
``SupervisedTrainer``, against the same ``SupervisedTrainer`` with its default ERM iteration
(forward + cross-entropy + backward + SGD step) on a DenseNet121, as the teacher bundle's
classifier training runs it. One iteration is timed from ``ITERATION_STARTED`` to
``ITERATION_COMPLETED``; the data loader serves the same batch every time.

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
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from tea_med.engines import TEATask, TEATrainStep, tune_cpu_allocator
from tea_med.explain import InputGradient, LRPEpsilon
from tea_med.networks import TeacherPipeline, densenet121, init_student, lung_segmenter

N_CLASSES = 3


def make_batch(batch: int, size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g), torch.randint(0, N_CLASSES, (batch,), generator=g)


def make_teacher(seed: int = 0) -> TeacherPipeline:
    torch.manual_seed(seed)
    teacher = TeacherPipeline(lung_segmenter("paper"), densenet121(num_classes=N_CLASSES))
    return teacher.eval().requires_grad_(False)


def trainer(
    kind: str, size: int, batch: int, reps: int, teacher: TeacherPipeline | None = None, **options: Any
) -> SupervisedTrainer:
    """A one-epoch ``SupervisedTrainer`` of ``reps`` iterations of step ``kind`` on one batch;
    ``options`` go to ``TEATrainStep`` (``precision``, ``channels_last``). ``tea_masks``: the
    TEA step with the teacher's lung masks computed beforehand and served with the images
    (``mask_key``), instead of its segmenter in every step. ``teacher``: instead of
    :func:`make_teacher`'s."""
    x, y = make_batch(batch, size)
    teacher = make_teacher() if teacher is None else teacher
    loader = [{"image": x, "label": y}] * reps
    if kind == "tea_masks":
        loader = [{"image": x, "label": y, "lung_mask": teacher.lung_mask(x)}] * reps
        options = {**options, "mask_key": "lung_mask"}
    if kind in ("tea", "tea_masks"):  # the student bundle's train step
        network = init_student(teacher, mode="copy")
        opt = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        task = TEATask(teacher, network, eps_range=(1e-3, 1e-2), bn_mode="train", seed=0)
        step: dict[str, Any] = {
            "loss_function": task.loss,
            "iteration_update": TEATrainStep(task, opt, 1.0, **options),
        }
    else:  # the teacher bundle's classifier training (ERM): the trainer's own iteration
        network = densenet121(num_classes=N_CLASSES)
        opt = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9)
        step = {"loss_function": torch.nn.CrossEntropyLoss()}
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=opt,
        **step,
    )


class IterationTimer:
    """Wall time of every iteration of an engine."""

    def __init__(self, engine: SupervisedTrainer) -> None:
        self.times: list[float] = []
        self._start = 0.0
        engine.add_event_handler(Events.ITERATION_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _started(self, _: object) -> None:
        self._start = time.perf_counter()

    def _completed(self, _: object) -> None:
        self.times.append(time.perf_counter() - self._start)


def time_steps(size: int, batch: int, reps: int) -> tuple[float, float, float]:
    """Median iteration time of the TEA, the TEA-with-masks and the ERM trainer, run in
    interleaved epochs of one iteration each (after one warm-up iteration each)."""
    engines = {k: trainer(k, size, batch, 1) for k in ("tea", "tea_masks", "erm")}
    timers = {k: IterationTimer(e) for k, e in engines.items()}
    for _ in range(reps + 1):
        for e in engines.values():
            e.run()  # a finished engine starts a new one-iteration run
    t = {k: statistics.median(timer.times[1:]) for k, timer in timers.items()}
    return t["tea"], t["tea_masks"], t["erm"]


def time_heatmaps(size: int, batch: int, reps: int) -> tuple[float, float]:
    teacher = make_teacher().classifier
    x, y = make_batch(batch, size)
    lrp, grad = LRPEpsilon(validate="never"), InputGradient()
    fa, fb = (lambda: lrp(teacher, x, y, eps=1e-2)), (lambda: grad(teacher, x, y))
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(reps):
        for f, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
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
    engine = trainer(kind, size, batch, 1)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _rss_kib("VmRSS:")
    engine.run()
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
    if args.child:  # glibc's defaults: the peak is the step's need, not memory kept for reuse
        peak_memory_child(args.child, args.sizes[0], args.batch)
        return
    tuned = tune_cpu_allocator()  # for the timings, as the training bundles' initialize does

    print(
        f"DenseNet121 (TEA: TEATrainStep under SupervisedTrainer, teacher = segmenter + DenseNet121; "
        f"ERM: SupervisedTrainer's own step), {N_CLASSES} classes, batch {args.batch}, CPU, "
        f"{args.threads} threads, torch {torch.__version__}, glibc allocator tuned for training: {tuned}"
    )
    for size in args.sizes:
        t_lrp, t_grad = time_heatmaps(size, args.batch, args.reps)
        t_tea, t_masks, t_erm = time_steps(size, args.batch, args.reps)
        m_tea = peak_memory("tea", size, args.batch, args.threads)
        m_erm = peak_memory("erm", size, args.batch, args.threads)
        print(
            f"{size:>4} px | (a) LRP {t_lrp * 1e3:7.0f} ms / input-grad {t_grad * 1e3:7.0f} ms = "
            f"{t_lrp / t_grad:4.2f} (<= 1.2) | (b) TEA {t_tea * 1e3:7.0f} ms / ERM {t_erm * 1e3:7.0f} ms = "
            f"{t_tea / t_erm:4.2f} (<= 3.0) | (c) peak TEA {m_tea:6.0f} MiB / ERM {m_erm:6.0f} MiB = "
            f"{m_tea / m_erm:4.2f} (<= 3.0) | (b') TEA, masks given {t_masks * 1e3:7.0f} ms / ERM = "
            f"{t_masks / t_erm:4.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
