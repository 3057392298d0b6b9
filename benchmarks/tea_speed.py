"""Speed-ups of the TEA step that may change its numbers: bfloat16 autocast, ``channels_last``
and ``torch.compile``, each against the float32 step, as ratios measured in one run.

For every variant of the shipped ``TEATrainStep`` (teacher = the paper-size lung segmenter +
DenseNet121, student initialised from it, batch-norm in train mode, under MONAI's
``SupervisedTrainer``; the ``explain_cost.py`` set-up):

- speed-up: median float32 iteration time / median variant iteration time (interleaved runs;
  the lung-mask rows against a float32 step interleaved with them alone);
- heatmap error: ``mean |H_variant - H_float32| / mean |H_float32|`` of the teacher's and the
  student's heatmaps of the same images, classes and ε, computed as the step computes them
  (its ``prepare`` and ``autocast``), and the cosine between the variant's and float32's
  gradient of the TEA loss (1: the same direction).

A variant is on by default only when both heatmap errors stay within ``TOLERANCE`` (1 %) and the
gradient cosine is at least 0.99. Two rows change only the teacher's lung mask: computed once per
image before the augmentation, and computed in every step by the segmenter under bfloat16
autocast (the classifiers stay float32); their errors are measured with a segmenter trained
briefly on phantoms, since a random one has no mask worth keeping. The last line says how much of
the step the teacher's segmenter takes (the share a lung mask computed once per image would save).

    python benchmarks/tea_speed.py [--size 224] [--batch 8] [--reps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_cost import IterationTimer, make_batch, make_teacher, trainer
from monai.engines import SupervisedTrainer

from tea_med.engines import TEATask, TEATrainStep
from tea_med.networks import init_student

TOLERANCE = 0.01
VARIANTS: dict[str, dict[str, Any]] = {
    "float32 (default)": {},
    "channels_last": {"channels_last": True},
    "bfloat16 autocast": {"precision": "bfloat16"},
    "bfloat16 + channels_last": {"precision": "bfloat16", "channels_last": True},
}


MASKS = "lung masks computed once per image"
BF16_MASKS = "bfloat16 segmenter (lung mask only)"


class AutocastSegmenter(torch.nn.Module):
    """A segmenter that runs under bfloat16 autocast and returns float32 logits."""

    def __init__(self, segmenter: torch.nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.segmenter(x).float()


def _interleaved(engines: dict[str, SupervisedTrainer], reps: int) -> dict[str, float]:
    """Median iteration time of each engine, run in interleaved one-iteration epochs."""
    timers = {name: IterationTimer(e) for name, e in engines.items()}
    for _ in range(reps + 1):
        for e in engines.values():
            e.run()
    return {name: statistics.median(t.times[1:]) for name, t in timers.items()}


def step_times(size: int, batch: int, reps: int) -> dict[str, tuple[float, float]]:
    """``name -> (variant time, float32 time)``, in two groups each interleaved with its own
    float32 step: the precision and layout variants, then the lung-mask variants. Interleaved
    with the bfloat16 and channels_last engines, the step with masks given came out slower than
    the float32 step it saves the segmenter of (0.82 and 0.93 of its speed in two runs), against
    1.19 times faster when the two were timed with each other only."""
    engines = {name: trainer("tea", size, batch, 1, **opts) for name, opts in VARIANTS.items()}
    first = _interleaved(engines, reps)
    teacher = make_teacher()
    teacher.segmenter = AutocastSegmenter(teacher.segmenter)
    masks = {
        "float32": trainer("tea", size, batch, 1),
        MASKS: trainer("tea_masks", size, batch, 1),
        BF16_MASKS: trainer("tea", size, batch, 1, teacher=teacher),
    }
    second = _interleaved(masks, reps)
    base = first["float32 (default)"]
    return {name: (t, base) for name, t in first.items()} | {
        name: (t, second["float32"]) for name, t in second.items() if name != "float32"
    }


def heatmaps_and_gradient(
    size: int, batch: int, **opts: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher heatmap, student heatmap and the TEA loss's gradient, as the step computes them."""
    x, _ = make_batch(batch, size)
    teacher = make_teacher()
    teacher.uniform_background = (
        False  # a black background: the same input in every variant (channels_last lays noise out otherwise)
    )
    student = init_student(teacher, mode="copy")
    with torch.no_grad():  # a student that differs from the teacher, as after some training
        g = torch.Generator().manual_seed(3)
        for p in student.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    task = TEATask(teacher, student, eps_range=(1e-3, 1e-2), seed=0).train()
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.0)
    step = TEATrainStep(task, opt, **opts)
    eps = torch.full((batch,), (1e-3 * 1e-2) ** 0.5)
    torch.manual_seed(0)  # the teacher's background noise
    xs = step.prepare(x)
    with step.autocast("cpu"):
        t = task.explain_teacher(xs, eps, sample=False)
        s = task.explainer.explain(task.student, xs, t.target, eps=eps, create_graph=True)
        loss = task.loss.levels(s.heatmap, t.heatmap).mean()
    params = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss.float(), params)
    return t.heatmap.float().detach(), s.heatmap.float().detach(), torch.cat([g.flatten() for g in grads])


def stacked(items: list[dict[str, Any]], key: str) -> torch.Tensor:
    """The ``key`` entries of data-set items as one plain batch tensor."""
    return torch.stack([torch.as_tensor(t[key]).as_subclass(torch.Tensor) for t in items])


def relative_l1(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().mean() / ref.abs().mean())


def mask_variant_errors(size: int, n: int = 8) -> tuple[dict[str, tuple[float, float, float]], float]:
    """What each way of getting the teacher's lung mask other than its float32 segmenter in every
    step changes, with a lung segmenter trained briefly on phantoms: the share of lung pixels
    whose label differs, the teacher heatmap error and the TEA gradient's cosine, over augmented
    training batches served by the shipped chain and datalist. ``MASKS``: segmented once per
    image before the augmentation and carried through it; ``BF16_MASKS``: segmented in the step
    under bfloat16 autocast. Also returns the segmenter's Dice on its augmented training images."""
    import tempfile

    from monai.losses import DiceCELoss

    from tea_med.data import train_transforms, xray_dataset
    from tea_med.data.phantom_files import write_phantoms
    from tea_med.engines import teacher_mask_datalist
    from tea_med.networks import TeacherPipeline, densenet121, explained_input, lung_segmenter

    with tempfile.TemporaryDirectory() as tmp:
        write_phantoms(
            tmp, n=n, size=size, seed=5, formats=("png",), grid=False, overwrite=True, progress=False
        )
        datalist = f"{tmp}/datalist_png.json"
        torch.manual_seed(0)
        seg = lung_segmenter("small")
        train = xray_dataset(datalist, "training", train_transforms(size, mask_key="mask"))
        opt, loss = torch.optim.Adam(seg.parameters(), 1e-2), DiceCELoss(sigmoid=True)
        for _ in range(100):  # 200 steps: Dice about 0.98 (40 steps left it near 0.76, and unstable)
            for i in range(0, len(train), 4):
                items = [train[j] for j in range(i, min(i + 4, len(train)))]
                x = stacked(items, "image")
                y = stacked(items, "mask")
                opt.zero_grad()
                loss(seg(x), y).backward()
                opt.step()
        teacher = TeacherPipeline(seg.eval(), densenet121(num_classes=3), background="zero").eval()
        teacher.requires_grad_(False)
        items = [train[j] for j in range(len(train))]
        x = stacked(items, "image")
        y = stacked(items, "mask")
        m = teacher.lung_mask(x)
        dice = float(2 * (m * y).sum() / (m.sum() + y.sum()))
        derived = teacher_mask_datalist(datalist, teacher, f"{tmp}/masks", image_size=size, progress=False)
        data = xray_dataset(derived, "training", train_transforms(size, mask_key="teacher_mask"))
        data.transform.set_random_state(seed=1)  # type: ignore[attr-defined]
        items = [data[i % len(data)] for i in range(2 * len(data))]  # two augmentations per image
        x = stacked(items, "image")
        step_mask = teacher.lung_mask(x)
        bf16_teacher = TeacherPipeline(AutocastSegmenter(seg), teacher.classifier, teacher.threshold)
        masks = {
            MASKS: stacked(items, "teacher_mask"),
            BF16_MASKS: bf16_teacher.lung_mask(x),
        }
        student = init_student(teacher, mode="copy")
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            for p in student.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        task = TEATask(teacher, student, eps_range=(3e-3, 3e-3), seed=0).train()
        eps = torch.full((len(x),), 3e-3)
        t_step = task.explain_teacher(x, eps, sample=False)
        s_ = task.explainer.explain(student, x, t_step.target, eps=eps, create_graph=True)
        params = [p for p in student.parameters() if p.requires_grad]
        g_step = torch.autograd.grad(
            task.loss.levels(s_.heatmap, t_step.heatmap).mean(), params, retain_graph=True
        )
        out = {}
        for name, mask in masks.items():
            disagreement = float((mask != step_mask).sum() / step_mask.sum().clamp(min=1))
            network, seen, _ = explained_input(teacher, x, mask)
            t_alt = task.explainer.explain(network, seen, t_step.target, eps=eps)
            g_alt = torch.autograd.grad(
                task.loss.levels(s_.heatmap, t_alt.heatmap).mean(), params, retain_graph=True
            )
            flat = [torch.cat([v.flatten() for v in gs]).double() for gs in (g_step, g_alt)]
            cos = float(torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0))
            err = relative_l1(t_alt.heatmap.detach(), t_step.heatmap.detach())
            out[name] = (disagreement, err, cos)
        return out, dice


def compile_row(size: int, batch: int) -> str:
    """torch.compile of the student inside the TEA step: whether it runs at all."""
    x, _ = make_batch(2, min(size, 64))
    teacher = make_teacher()
    student = init_student(teacher, mode="copy")
    task = TEATask(teacher, torch.compile(student), eps_range=(1e-3, 1e-2), seed=0).train()  # type: ignore[arg-type]
    try:
        task(x)["loss"].backward()
    except Exception as err:  # the row reports whatever torch raises
        return f"fails: {type(err).__name__}: {str(err).splitlines()[0][:100]}"
    return "runs"


def segmenter_share(size: int, batch: int, reps: int, tea_time: float) -> tuple[float, float]:
    x, _ = make_batch(batch, size)
    seg = make_teacher().segmenter
    times = []
    with torch.no_grad():
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            seg(x)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times[1:])
    return t, t / tea_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"TEATrainStep under SupervisedTrainer, teacher = paper-size segmenter + DenseNet121, "
        f"{args.size} px, batch {args.batch}, CPU, {args.threads} threads, torch {torch.__version__}; "
        f"heatmap tolerance {TOLERANCE:.0%}, gradient cosine >= 0.99"
    )
    times = step_times(args.size, args.batch, args.reps)
    base = times["float32 (default)"][1]
    ref = heatmaps_and_gradient(args.size, args.batch)
    print(
        "| variant | step ms | speed-up | teacher heatmap err. | student heatmap err. | grad. cosine | on |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, opts in VARIANTS.items():
        t, s, g = heatmaps_and_gradient(args.size, args.batch, **opts) if opts else ref
        et, es = relative_l1(t, ref[0]), relative_l1(s, ref[1])
        cos = float(torch.nn.functional.cosine_similarity(g.double(), ref[2].double(), dim=0))
        ok = et <= TOLERANCE and es <= TOLERANCE and cos >= 0.99
        default = "yes" if not opts else ("could be" if ok else "no: outside the tolerance")
        step, ref_step = times[name]
        if opts and ok and step >= ref_step:
            default = "no: slower here"
        row = f"| {name} | {step * 1e3:.0f} | {ref_step / step:.2f} | {et:.2%} | {es:.2%} | {cos:.4f}"
        print(f"{row} | {default} |", flush=True)
    errors, dice = mask_variant_errors(args.size)
    for name, option in ((MASKS, "teacher_masks"), (BF16_MASKS, "not an option")):
        _, et, cos = errors[name]
        ok = et <= TOLERANCE and cos >= 0.99
        step, ref_step = times[name]
        row = f"| {name} | {step * 1e3:.0f} | {ref_step / step:.2f} | {et:.2%} | 0 (unmasked) | {cos:.4f}"
        print(f"{row} | {'could be' if ok else 'no: outside the tolerance'} ({option}) |")
    print(f"| torch.compile (student) | - | - | - | - | - | no: {compile_row(args.size, args.batch)} |")
    print(
        f"\nlung pixels that change side (a segmenter trained briefly on phantoms, Dice "
        f"{dice:.3f} on its augmented training images; black background): "
        f"{errors[MASKS][0]:.2%} when segmented before the augmentation instead of after it, "
        f"{errors[BF16_MASKS][0]:.2%} when segmented under bfloat16 autocast"
    )
    seg_t, share = segmenter_share(args.size, args.batch, args.reps, base)
    print(
        f"\nthe teacher's segmenter takes {seg_t * 1e3:.0f} ms of the {base * 1e3:.0f} ms float32 step "
        f"({share:.0%}); a mask computed once per image would leave {(base - seg_t) * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
