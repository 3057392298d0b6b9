"""What `make demo` runs today (before the end-to-end demo of issue 6 replaces it).

1. Writes a small synthetic mixed-source chest X-ray data set (DICOM + PNG, lung masks,
   manifests, an example grid) where each training class comes from its own hospital.
2. Validates its manifest as `tea-med manifest validate` does.
3. Explains held-out phantoms with trainable LRP-ε on an LRP-ready DenseNet121 (batch-norm
   statistics taken from the phantoms, weights untrained) and checks conservation: with ε -> 0
   and zero biases the heatmap sums to the explained logit.
4. Runs one TEA training step (teacher heatmap, student heatmap with graph, TEA loss, backward)
   and reports how much slower it is than a cross-entropy step on the same batch.

Nothing here trains a useful classifier yet: the teacher, the student bundle and the bias
evaluation arrive with later issues.

    python pipelines/demo.py [--out outputs/demo] [--size 64] [--n 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tea_med.data.manifest import validate_manifest
from tea_med.data.phantom_files import write_phantoms
from tea_med.data.phantoms import iter_phantoms
from tea_med.evaluation import heatmap_grid
from tea_med.explain import LRPEpsilon, sample_eps, sample_targets
from tea_med.losses import TEALoss
from tea_med.networks import densenet121, use_fast_double_backward


def phantoms(n: int, size: int, seed: int, split: str) -> tuple[torch.Tensor, list[str]]:
    data = list(iter_phantoms({split: n}, size=size, seed=seed, splits=(split,)))
    x = torch.from_numpy(np.stack([img for _, img, _ in data]))[:, None].expand(-1, 3, -1, -1).contiguous()
    return x, [f"{spec.label} / {spec.hospital}" for spec, _, _ in data]


def calibrated_densenet(x: torch.Tensor) -> torch.nn.Module:
    """DenseNet121 with batch-norm running statistics measured on ``x`` (weights untrained)."""
    net = densenet121(num_classes=3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for chunk in x.split(8):
            net(chunk)
    return net.eval()


def timed(f, *args) -> float:
    t0 = time.perf_counter()
    f(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/demo"))
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (>= 32, default 64)")
    ap.add_argument("--n", type=int, default=12, help="phantoms per split (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.size < 32:
        ap.error(f"--size must be >= 32 (DenseNet121 downsamples 32x), got {args.size}")
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    print(f"[1/4] writing phantoms to {args.out / 'phantoms'}")
    written = write_phantoms(args.out / "phantoms", n=args.n, size=args.size, seed=args.seed, overwrite=True)
    manifest = written["datalist_dicom"]

    print(f"[2/4] validating {manifest}")
    problems = validate_manifest(manifest, require_mask=True)
    print(f"      {'valid' if not problems else f'{len(problems)} problems'}")

    print("[3/4] LRP-ε heatmaps of held-out phantoms")
    train_x, _ = phantoms(4 * args.n, args.size, args.seed, "training")
    x, titles = phantoms(6, args.size, args.seed + 1, "test_biased")
    net = calibrated_densenet(train_x).double()
    lrp = LRPEpsilon()
    e = lrp.explain(net, x.double(), lambda z: z.argmax(1), eps=1e-2)
    conservative = copy.deepcopy(net)
    for m in conservative.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.zero_()
            m.bias.data.zero_()
        elif isinstance(m, torch.nn.Linear):
            m.bias.data.zero_()
    c = lrp.explain(conservative, x.double(), e.target, eps=1e-12)
    gap = (c.heatmap.flatten(1).sum(1) - c.logits.gather(1, e.target[:, None])[:, 0]).abs().max().item()
    print(f"      conservation (ε=1e-12, zero biases): max |sum(H) - logit| = {gap:.1e}")
    figure = heatmap_grid(
        x.numpy(),
        {"LRP-ε (ε=0.01)": e.heatmap.numpy(), "LRP-ε (ε=1e-12, no biases)": c.heatmap.numpy()},
        args.out / "heatmaps.png",
        row_titles=titles,
        title="LRP-ε heatmaps of an untrained DenseNet121 on phantoms",
    )

    print("[4/4] one TEA step vs one cross-entropy step on the same batch")
    teacher = calibrated_densenet(train_x).requires_grad_(False)
    student = use_fast_double_backward(copy.deepcopy(teacher).requires_grad_(True)).train()
    student.class_layers.out.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(args.seed)
    xb, yb = train_x[:8], torch.randint(0, 3, (8,), generator=gen)

    def tea_step() -> None:
        eps = sample_eps(len(xb), 1e-3, 1e-2, gen)
        t = lrp.explain(teacher, xb, lambda z: sample_targets(z, gen), eps=eps)
        opt.zero_grad(set_to_none=True)
        TEALoss()(lrp(student, xb, t.target, eps=eps, create_graph=True), t.heatmap).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def erm_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(student(xb), yb).backward()
        opt.step()

    tea_step(), erm_step()  # warm-up
    ratio = np.median([timed(tea_step) / timed(erm_step) for _ in range(3)])

    print()
    print(f"  phantoms        {5 * args.n} images, grid: {written['grid']}")
    print(f"  heatmaps        {figure}")
    print(f"  TEA step / ERM  {ratio:.1f}x at {args.size} px (benchmarks/explain_cost.py measures 224 px)")
    print(f"  wall time       {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
