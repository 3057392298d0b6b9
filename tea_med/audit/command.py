"""``tea-med audit``: audit one or more bundles on a manifest split, write the report, track it,
and gate on it (``--fail-above METRIC=VALUE``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tea_med.audit.report import write_audit
from tea_med.audit.run import GATE_METRICS, AuditData, AuditSettings, audit_model, gate_value

EXPERIMENT = "tea_med_audit"


def parse_gate(text: str) -> tuple[str, float]:
    """``METRIC=VALUE`` of ``--fail-above``."""
    metric, sep, value = text.partition("=")
    metric = metric.strip()
    if not sep or metric not in GATE_METRICS:
        raise ValueError(
            f"--fail-above {text!r}: expected METRIC=VALUE with METRIC one of {', '.join(GATE_METRICS)}"
        )
    try:
        return metric, float(value)
    except ValueError:
        raise ValueError(f"--fail-above {text!r}: VALUE must be a number, got {value!r}") from None


@dataclass
class AuditOutcome:
    summaries: dict[str, dict[str, Any]]
    outputs: dict[str, Path]
    #: ``"model: metric = value > limit"`` for every gate exceeded
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_id: str | None = None


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _segmenter_masks(segmenter_bundle: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    from tea_med.deploy.bundle import BundleError, load_bundle_network
    from tea_med.networks.teacher import TeacherPipeline

    teacher = load_bundle_network(segmenter_bundle).network
    if not isinstance(teacher, TeacherPipeline):
        raise BundleError(
            f"--segmenter-bundle {segmenter_bundle}: its network is a {type(teacher).__name__}, not a "
            "segmenter + classifier (the tea_teacher bundle)"
        )

    def masks(x: torch.Tensor) -> torch.Tensor:
        return teacher.lung_mask(x)

    return masks


def track(outcome: AuditOutcome, tracking_uri: str, context: Mapping[str, Any]) -> str:
    """One MLflow run in ``tea_med_audit``: parameters, every model's overall estimates, the files."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from tea_med.tracking import sqlite_artifact_location

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        exp_id = exp.experiment_id
    else:
        artifacts = sqlite_artifact_location(tracking_uri)
        exp_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    run = client.create_run(exp_id, run_name=f"audit_{time.strftime('%Y%m%d_%H%M%S')}")
    now = int(time.time() * 1000)
    metrics = []
    for name, summary in outcome.summaries.items():
        for metric in GATE_METRICS:
            value = gate_value(summary, metric)
            if value is not None:
                metrics.append(Metric(f"{name}.{metric}", value, now, 0))
    params = [Param(k, str(v)[:500]) for k, v in context.items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    for path in outcome.outputs.values():
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED" if not outcome.failures else "FAILED")
    return str(run.info.run_id)


def run_audit(
    bundles: Sequence[str | Path],
    manifest: str | Path,
    out: str | Path,
    *,
    split: str = "test_unbiased",
    segmenter_bundle: str | Path | None = None,
    settings: AuditSettings | None = None,
    fail_above: Sequence[tuple[str, float]] = (),
    tracking_uri: str | None = None,
    say: Callable[[str], None] = print,
) -> AuditOutcome:
    """Audit every bundle's network on ``split`` of ``manifest`` (masks from the manifest, or from
    ``segmenter_bundle``'s segmenter); writes ``audit.json``, ``report.html`` and figures to ``out``."""
    from tea_med.deploy.bundle import load_bundle_network

    s = settings or AuditSettings(split=split)
    s.split = split
    started = time.perf_counter()
    masks: Any = "manifest" if segmenter_bundle is None else _segmenter_masks(segmenter_bundle)
    names = _unique([Path(b).resolve().name for b in bundles])
    summaries: dict[str, dict[str, Any]] = {}
    for name, bundle_dir in zip(names, bundles, strict=True):
        bundle = load_bundle_network(bundle_dir)
        data = AuditData(Path(manifest), split, bundle.image_size, list(bundle.class_names), masks, s.batch)
        say(f"[audit] {name}: {split} of {manifest} at {bundle.image_size} px")
        t0 = time.perf_counter()
        summaries[name] = audit_model(bundle.network, data, s, eps=bundle.heatmap_eps)
        n = summaries[name]["n_images"]
        say(f"[audit] {name}: {n} images in {time.perf_counter() - t0:.1f} s")
    context = {
        "manifest": str(manifest),
        "split": split,
        "masks": "manifest" if segmenter_bundle is None else f"segmenter of {segmenter_bundle}",
        "bundles": ", ".join(str(b) for b in bundles),
        "seed": s.seed,
    }
    outputs = write_audit(Path(out), summaries, title="tea_med shortcut audit", context=context)
    failures = []
    for name, summary in summaries.items():
        for metric, limit in fail_above:
            value = gate_value(summary, metric)
            if value is not None and value > limit:
                failures.append(f"{name}: {metric} = {value:.3f} > {limit:g}")
    outcome = AuditOutcome(summaries, outputs, failures, time.perf_counter() - started)
    if tracking_uri is not None:
        outcome.run_id = track(outcome, tracking_uri, context)
    return outcome


__all__ = ["AuditOutcome", "parse_gate", "run_audit", "track"]
