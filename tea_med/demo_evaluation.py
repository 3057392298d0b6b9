"""The demo's evaluation stage: teacher, standard classifier and TEA student on every test set."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tea_med.data.phantoms import CLASSES

SPLITS = ("test_biased", "test_unbiased", "test_deceiving")
MODELS = ("teacher", "standard", "student")


def _load_split(
    manifest: Path, split: str, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    from tea_med.data import test_transforms, xray_dataset

    ds = xray_dataset(manifest, split, test_transforms(size, mask_key="mask"), labels=list(CLASSES))
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([torch.as_tensor(it["image"]).as_subclass(torch.Tensor) for it in items]).float()
    m = torch.stack([torch.as_tensor(it["mask"]).as_subclass(torch.Tensor) for it in items]).float()
    y = torch.tensor([int(it["label"]) for it in items])
    names = [Path(str(it["image"].meta.get("filename_or_obj", i))).stem for i, it in enumerate(items)]
    return x, m, y, names


def _models(models: Path) -> dict[str, torch.nn.Module]:
    from tea_med.networks import densenet121, load_teacher, load_weights

    nets: dict[str, torch.nn.Module] = {
        "teacher": load_teacher(str(models / "model.pt"), segmenter_profile="small")
    }
    for name in ("standard", "student"):
        nets[name] = load_weights(densenet121(num_classes=len(CLASSES)), models / name / "model.pt").eval()
    return nets


def _explain(
    name: str, net: torch.nn.Module, x: torch.Tensor, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, LRP-ε heatmaps of the predicted class and the classifier's input."""
    from tea_med.explain import LRPEpsilon

    lrp = LRPEpsilon(eps=1e-2)
    torch.manual_seed(seed)  # the teacher's background noise
    if name == "teacher":
        masked, _ = net.masked_input(x)
        e = lrp.explain(net.classifier, masked, lambda z: z.argmax(1))
        seen = masked
    else:
        e = lrp.explain(net, x, lambda z: z.argmax(1))
        seen = x
    return torch.softmax(e.logits, 1).numpy(), e.heatmap.numpy(), seen.detach().numpy()


def evaluate_demo(
    data: Path,
    models: Path,
    out: Path,
    runs: Any,
    *,
    size: int,
    seed: int,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Scores, metrics with intervals, bias gaps, background relevance, figures and the report."""
    from tea_med.evaluation import (
        background_relevance_share,
        balanced_accuracy,
        classification_report,
        confusion_matrix_plot,
        heatmap_grid,
        roc_curves,
    )

    manifest = data / "datalist_png.json"
    nets = _models(models)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {m: {} for m in MODELS}
    reports: dict[str, Any] = {}
    grid_images: dict[str, np.ndarray] = {}
    for split in SPLITS:
        x, mask, y, names = _load_split(manifest, split, size)
        for name, net in nets.items():
            probs, heat, _ = _explain(name, net, x, seed)
            pred = probs.argmax(1)
            rows[name][f"acc_{split}"] = float(balanced_accuracy(y.numpy(), pred, n_classes=len(CLASSES)))
            share = background_relevance_share(heat, mask.numpy())
            rows[name][f"background_{split}"] = float(np.nanmean(share))
            if split == "test_unbiased":
                reports[name] = classification_report(y.numpy(), probs, list(CLASSES), seed=seed)
                roc_curves(y.numpy(), probs, list(CLASSES), figures / f"roc_{name}.png")
                confusion_matrix_plot(y.numpy(), pred, list(CLASSES), figures / f"confusion_{name}.png")
            if split == "test_deceiving":
                grid_images["image"] = x[:6].numpy()
                grid_images[name] = heat[:6]
        if split == "test_deceiving":
            grid_titles = [f"{CLASSES[int(c)]} ({n})" for c, n in zip(y[:6].tolist(), names[:6], strict=True)]
    for name in MODELS:
        r = rows[name]
        r["gap"] = abs(r["acc_test_biased"] - r["acc_test_deceiving"])
        macro = reports[name].macro
        r["auc_unbiased"], r["auc_low"], r["auc_high"] = macro.auc.estimate, macro.auc.low, macro.auc.high
    heatmap_grid(
        grid_images["image"],
        {f"{m} LRP-ε": grid_images[m] for m in MODELS},
        figures / "heatmaps_deceiving.png",
        row_titles=grid_titles,
        title="test_deceiving: where each model looks (red = evidence for its prediction)",
    )
    targets = {
        "student_gap_at_most_a_third_of_standard": rows["student"]["gap"] <= rows["standard"]["gap"] / 3,
        "student_deceiving_within_10_points_of_teacher": abs(
            rows["student"]["acc_test_deceiving"] - rows["teacher"]["acc_test_deceiving"]
        )
        <= 0.10,
    }
    summary = {"rows": rows, "targets": targets, "reports": {m: reports[m].to_dict() for m in MODELS}}
    report = write_report(out, rows, reports, targets, figures)
    run_id = runs.child("evaluation")
    from mlflow.entities import Metric

    now = int(__import__("time").time() * 1000)
    metrics = [Metric(f"{m}_{k}", float(v), now, 0) for m, r in rows.items() for k, v in r.items()]
    runs.client.log_batch(run_id, metrics=metrics)
    for path in [report, *sorted(figures.glob("*.png"))]:
        runs.client.log_artifact(run_id, str(path))
    runs.client.log_artifact(runs.parent_id, str(report))
    runs.client.set_terminated(run_id)
    return json.loads(json.dumps(summary, default=float))


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """The printed table: balanced accuracy per test set, the generalisation gap, OOD AUC."""
    head = (
        f"{'model':<9} {'biased':>7} {'unbiased':>9} {'deceiving':>10} {'gap':>6} "
        f"{'AUC (unbiased) [95% CI]':>26} {'bg rel.':>8}"
    )
    lines = [head, "-" * len(head)]
    for m, r in rows.items():
        auc = f"{r['auc_unbiased']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]"
        lines.append(
            f"{m:<9} {r['acc_test_biased']:>7.3f} {r['acc_test_unbiased']:>9.3f} "
            f"{r['acc_test_deceiving']:>10.3f} {r['gap']:>6.3f} {auc:>26} "
            f"{r['background_test_deceiving']:>8.3f}"
        )
    return "\n".join(lines)


def write_report(
    out: Path,
    rows: dict[str, dict[str, Any]],
    reports: dict[str, Any],
    targets: dict[str, bool],
    figures: Path,
) -> Path:
    """A self-contained HTML page (figures referenced relatively) a person can read."""

    def img(name: str, alt: str) -> str:
        alt = html.escape(alt)
        return f'<figure><img src="figures/{name}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'

    table = "".join(
        f"<tr><td>{m}</td><td>{r['acc_test_biased']:.3f}</td><td>{r['acc_test_unbiased']:.3f}</td>"
        f"<td>{r['acc_test_deceiving']:.3f}</td><td><b>{r['gap']:.3f}</b></td>"
        f"<td>{r['auc_unbiased']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]</td>"
        f"<td>{r['background_test_deceiving']:.3f}</td></tr>"
        for m, r in rows.items()
    )
    checks = "".join(
        f"<li>{'✅' if ok else '❌'} {html.escape(k.replace('_', ' '))}</li>" for k, ok in targets.items()
    )
    per_class = "".join(f"<h3>{m}</h3>{reports[m].to_html()}" for m in MODELS)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tea_med demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}figure{{display:inline-block;margin:.5em}}img{{max-width:520px}}</style></head><body>
<h1>tea_med demo: training with explanations alone</h1>
<p>Synthetic chest X-ray phantoms: in training, each class comes from its own hospital, whose markings sit
outside the lungs. <i>teacher</i>: lung segmenter + DenseNet121 on segmented images. <i>standard</i>: the same
DenseNet121 trained with cross-entropy on whole images. <i>student</i>: DenseNet121 trained only to reproduce
the teacher's LRP-ε heatmaps, run on whole images without a segmenter.</p>
<h2>Bias</h2><p>Balanced accuracy; gap = |biased − deceiving| (smaller is better); AUC on hospitals never seen
in training (macro, DeLong 95% CI); share of positive relevance outside the lungs on test_deceiving.</p>
<table><tr><th>model</th><th>biased</th><th>unbiased</th><th>deceiving</th><th>gap</th><th>AUC unbiased</th>
<th>background relevance</th></tr>{table}</table><ul>{checks}</ul>
{img("heatmaps_deceiving.png", "LRP-ε heatmaps on test_deceiving (class-hospital pairing permuted)")}
<h2>Out-of-distribution test set (test_unbiased)</h2>
<p>Per-class sensitivity, specificity and F1 with 95% credible intervals (posterior of the confusion matrix);
AUC with DeLong 95% confidence intervals.</p>{per_class}
{"".join(img(f"roc_{m}.png", f"ROC curves, {m}") for m in MODELS)}
{"".join(img(f"confusion_{m}.png", f"confusion matrix, {m}") for m in MODELS)}
<h2>Data</h2>{img("../phantoms/examples.png", "example phantoms per split")}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
