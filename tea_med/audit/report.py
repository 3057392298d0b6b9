"""The audit's outputs: ``audit.json`` (every figure), an HTML page a person can read, and its
figures (the source-by-source swap matrix and example swaps per model)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: the report's headline rows: (label, section, key, how to read it)
HEADLINES = (
    ("background relevance share", "background_share", "share", "lower is better"),
    ("swap: prediction flips", "swap", "flip_rate", "lower is better"),
    ("swap: follows the donor's class", "swap", "following_rate", "lower is better"),
    ("swap: mean |Δp|", "swap", "mean_abs_delta", "lower is better"),
    ("lungs removed: confidence", "lungs_removed", "confidence", "near chance is better"),
    ("lungs removed: prediction kept", "lungs_removed", "kept_rate", "lower is better"),
    ("lungs removed: accuracy", "lungs_removed", "accuracy", "near chance is better"),
    ("markers: prediction flips", "markers", "flip_rate", "lower is better"),
    ("markers: mean |Δp|", "markers", "mean_abs_delta", "lower is better"),
)


def _cell(interval: Mapping[str, Any] | None) -> str:
    if not interval or interval.get("estimate") is None:
        return "n/a"
    est, lo, hi = interval["estimate"], interval["low"], interval["high"]
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]"


def _summary_of(summary: Mapping[str, Any], section: str, key: str) -> Mapping[str, Any] | None:
    part = summary.get(section) or {}
    value = part.get(key)
    return value if isinstance(value, Mapping) else None


def headline_table(summaries: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Rows of ``[metric, reading, model 1 cell, model 2 cell, ...]`` (overall estimates)."""
    rows = []
    for label, section, key, reading in HEADLINES:
        cells = []
        for summary in summaries.values():
            if section == "background_share" and "refused" in (summary.get(section) or {}):
                cells.append("refused (LRP)")
                continue
            found = _summary_of(summary, section, key)
            cells.append(_cell(None if found is None else found["overall"]))
        rows.append([label, reading, *cells])
    return rows


def swap_matrix_figure(summary: Mapping[str, Any], path: Path, title: str) -> Path:
    """The flip rate of swaps from each source's lungs (rows) onto each source's background (columns)."""
    from matplotlib.figure import Figure

    matrix = summary["swap"]["matrix"]
    sources = matrix["sources"]
    rate = np.array([[np.nan if v is None else v for v in row] for row in matrix["flip_rate"]], dtype=float)
    fig = Figure(figsize=(1.2 * len(sources) + 2.5, 1.0 * len(sources) + 2))
    ax = fig.subplots()
    im = ax.imshow(rate, vmin=0.0, vmax=1.0, cmap="Reds")
    for i in range(len(sources)):
        for j in range(len(sources)):
            n = matrix["n"][i][j]
            text = "" if n == 0 else f"{rate[i, j]:.2f}\n(n={n})"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(sources)), sources)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("background from")
    ax.set_ylabel("lungs from")
    ax.set_title(f"{title}: prediction flips after a background swap")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def examples_figure(summaries: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Example swaps (lungs, background donor, swapped image) with each model's prediction before
    and after; ``None`` when no model kept examples."""
    from matplotlib.figure import Figure

    first = next((s for s in summaries.values() if s.get("examples")), None)
    if first is None:
        return None
    examples = first["examples"]
    fig = Figure(figsize=(7.5, 2.5 * len(examples)))
    axes = fig.subplots(len(examples), 3, squeeze=False)
    for r, ex in enumerate(examples):
        for c, key in enumerate(("original", "donor", "swapped")):
            ax = axes[r][c]
            ax.imshow(ex[key], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_title(f"lungs: {ex['sources'].split(' on ')[0]}", fontsize=8)
        axes[r][1].set_title(f"background: {ex['sources'].split(' on ')[1]}", fontsize=8)
        lines = [
            f"{name}: {s['examples'][r]['before']} -> {s['examples'][r]['after']}"
            for name, s in summaries.items()
        ]
        axes[r][2].set_title("\n".join(lines), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def heatmaps_figure(summaries: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """The first images with each model's LRP-ε heatmap (models LRP refused are left out)."""
    from tea_med.evaluation.figures import heatmap_grid

    explained = {n: s["heatmaps"] for n, s in summaries.items() if s.get("heatmaps")}
    if not explained:
        return None
    first = next(iter(explained.values()))
    count = min(len(h) for h in explained.values())
    return heatmap_grid(
        [image for image, _ in first[:count]],
        {f"{name} LRP-ε": [h for _, h in maps[:count]] for name, maps in explained.items()},
        path,
        title="where each model looks (red: evidence for its prediction)",
    )


def _json_ready(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("examples", "heatmaps")}


def _breakdown(summary: Mapping[str, Any], by: str) -> str:
    heads = ["swap flips", "lungs removed: kept", "marker flips", "background share"]
    picks = [
        ("swap", "flip_rate"),
        ("lungs_removed", "kept_rate"),
        ("markers", "flip_rate"),
        ("background_share", "share"),
    ]
    groups: list[str] = []
    for section, key in picks:
        found = _summary_of(summary, section, key)
        if found is not None:
            groups += [g for g in found.get(by, {}) if g not in groups]
    body = []
    for g in groups:
        cells = []
        for section, key in picks:
            found = _summary_of(summary, section, key)
            cells.append(_cell(None if found is None else found.get(by, {}).get(g)))
        body.append("<tr><td>" + html.escape(g) + "</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f"<th>{h}</th>" for h in ["", *heads])
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_audit(
    out: Path, summaries: Mapping[str, Mapping[str, Any]], *, title: str, context: Mapping[str, Any]
) -> dict[str, Path]:
    """``audit.json``, ``report.html`` and the figures under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    for name, summary in summaries.items():
        figures[f"swap_matrix_{name}"] = swap_matrix_figure(summary, out / f"swap_matrix_{name}.png", name)
    examples = examples_figure(summaries, out / "swap_examples.png")
    if examples is not None:
        figures["swap_examples"] = examples
    heatmaps = heatmaps_figure(summaries, out / "heatmaps.png")
    if heatmaps is not None:
        figures["heatmaps"] = heatmaps
    data = {"context": dict(context), "models": {n: _json_ready(s) for n, s in summaries.items()}}
    audit_json = out / "audit.json"
    audit_json.write_text(json.dumps(data, indent=2, default=float) + "\n")
    names = list(summaries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["probe", "reading", *names])
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in headline_table(summaries)
    )
    sections = []
    for name, summary in summaries.items():
        refused = (summary.get("background_share") or {}).get("refused")
        note = f"<p>LRP refused this network: {html.escape(refused)}</p>" if refused else ""
        sections.append(
            f"<h2>{html.escape(name)}</h2>{note}<h3>per source</h3>{_breakdown(summary, 'by_source')}"
            f"<h3>per class</h3>{_breakdown(summary, 'by_class')}"
            f'<img src="swap_matrix_{html.escape(name)}.png" alt="swap matrix of {html.escape(name)}">'
        )
    chance = next(iter(summaries.values())).get("chance", math.nan)
    ctx = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in context.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><ul>{ctx}</ul>
<p>Does the classifier read the lungs or the background? Each probe edits the images outside (or
inside) the lung masks; a model that reads only the lungs does not react to background edits, and
falls to chance ({chance:.3f}) when its lungs are removed. Figures: estimate [95% interval]
(Jeffreys for rates, bootstrap for means).</p>
<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
{'<img src="swap_examples.png" alt="example swaps">' if examples is not None else ""}
{'<img src="heatmaps.png" alt="LRP-ε heatmaps">' if heatmaps is not None else ""}
{"".join(sections)}</body></html>"""
    report = out / "report.html"
    report.write_text(page)
    return {"json": audit_json, "report": report, **figures}


__all__ = ["HEADLINES", "headline_table", "write_audit"]
