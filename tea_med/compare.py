"""``tea-med compare``: TEA against the paper's baselines and its own ablations, on one data set,
with one teacher, one student initialisation, one budget and one evaluation.

Stages (each training an MLflow run nested under one parent run in ``<out>/mlruns.db``; a stage
whose output exists is reused unless ``force``):

1. ``phantoms``: the comparison's data set (``phantoms/``) with a ``background`` or a
   ``foreground`` shortcut (:mod:`tea_med.data.phantoms`), and a second one for the group
   methods (``phantoms_groups/``: the same generator with ``group_confounding``, so groups and
   classes are not the same partition, as the paper trains its group-robustness methods on 80-95%
   bias). With a foreground shortcut the teacher learns on a third data set without markers
   (``phantoms_teacher/``): the "teacher trained elsewhere", since no segmenter removes a marker
   inside the lungs;
2. ``segmenter`` and ``teacher``: the teacher bundle, as in the demo;
3. one stage per method: the student bundle with ``method`` (and, for TEA's ablations, its
   explainer, heatmap loss or fixed ε), from the same initialisation (the teacher's classifier)
   for the same epochs, then its evaluation on ``test_biased`` / ``test_unbiased`` /
   ``test_deceiving`` of ``phantoms/`` (:func:`tea_med.evaluation.report.evaluate_on_bias_splits`);
4. the table: ``comparison.md``, ``comparison.csv`` and ``comparison.png`` (generalisation gap
   against deceiving-set accuracy per method), also logged to the parent run.

Every method's result is kept in ``results/<method>.json``, so an interrupted comparison resumes
with the next method.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tea_med.demo import (
    DemoRuns,
    DemoSettings,
    _configs,
    _workflow,
    check_settings,
    segmenter_overrides,
    student_overrides,
    teacher_overrides,
)
from tea_med.networks.student import STUDENT_INITS

logger = logging.getLogger(__name__)

EXPERIMENT = "tea_med_compare"

#: the paper's baselines (Tables 2-4), as student-bundle overrides
BASELINES: dict[str, dict[str, Any]] = {
    "tea": {},
    "erm": {"method": "erm"},
    "kd": {"method": "kd"},
    "rep_kd": {"method": "rep_kd"},
    "gradcam_kd": {"method": "gradcam_kd"},
    "rrr": {"method": "rrr"},
    "gain": {"method": "gain"},
    "isnet": {"method": "isnet"},
    "group_dro": {"method": "group_dro"},
    "irm": {"method": "irm"},
}
#: TEA's ablations (Table 5): explainer, heatmap loss, fixed ε, explanations not alone
ABLATIONS: dict[str, dict[str, Any]] = {
    "tea_gradient_x_input": {"explainer": "gradient_x_input"},
    "tea_input_gradient": {"explainer": "input_gradient"},
    "tea_gradcam": {"explainer": "gradcam"},
    "tea_attention": {"explainer": "attention"},
    "tea_l1": {"heatmap_loss": "l1"},
    "tea_l2": {"heatmap_loss": "l2"},
    "tea_single_resolution": {"heatmap_loss": "single_resolution"},
    "tea_eps_0.1": {"eps_lo": 0.1, "eps_hi": 0.1},
    "tea_eps_0.01": {"eps_lo": 0.01, "eps_hi": 0.01},
    "tea_eps_0.001": {"eps_lo": 0.001, "eps_hi": 0.001},
    "tea+kd": {"method": "tea+kd"},
    "tea+rep_kd": {"method": "tea+rep_kd"},
}
METHODS: dict[str, dict[str, Any]] = BASELINES | ABLATIONS
#: methods trained on the data set whose groups (source hospitals) are not the classes
GROUP_METHODS = ("group_dro", "irm")
BIASES = ("background", "foreground")
#: what ``--methods`` accepts besides names
METHOD_SETS = {"all": tuple(METHODS), "baselines": tuple(BASELINES), "ablations": tuple(ABLATIONS)}
TEST_SPLITS = ("test_biased", "test_unbiased", "test_deceiving")
#: how the table's note names each student initialisation
INIT_TEXT = {
    "copy": "every method starts as a copy of the teacher's classifier",
    "random": "every method starts re-initialised, except the last layer copied from the teacher",
}


def parse_methods(text: str) -> tuple[str, ...]:
    """``all``, ``baselines``, ``ablations`` or comma-separated names, in the given order."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        chosen = METHOD_SETS.get(part, (part,))
        unknown = [n for n in chosen if n not in METHODS]
        if unknown:
            raise ValueError(
                f"--methods: unknown method {unknown[0]!r}; choose all, baselines, ablations or names "
                f"from {', '.join(METHODS)}"
            )
        names += [n for n in chosen if n not in names]
    if not names:
        raise ValueError("--methods: name at least one method (or all, baselines, ablations)")
    return tuple(names)


@dataclass
class CompareSettings:
    """What to compare and on what. ``base`` holds the sizes, epochs and student optimiser shared
    with the demo (every method trains ``base.student_epochs`` epochs with Adam at
    ``base.student_lr`` and the demo's schedule)."""

    base: DemoSettings = field(default_factory=lambda: DemoSettings(out=Path("outputs/compare")))
    methods: tuple[str, ...] = tuple(METHODS)
    bias: str = "background"
    #: share of the group methods' training images whose hospital (background) or marker
    #: (foreground) is the class's
    group_confounding: float = 0.9
    #: every method's student starts as a ``copy`` of the teacher's classifier (the paper's X-ray
    #: setting) or ``random`` (re-initialised except the copied last layer; the paper's
    #: foreground settings, whose students are not the teacher's architecture)
    student_init: str = "copy"

    @property
    def out(self) -> Path:
        return self.base.out


def check_compare_settings(c: CompareSettings) -> None:
    check_settings(c.base)
    if c.bias not in BIASES:
        raise ValueError(f"--bias must be one of {', '.join(BIASES)}, got {c.bias!r}")
    if not 0.0 <= c.group_confounding < 1.0:
        raise ValueError(f"--group-confounding must be in [0, 1), got {c.group_confounding!r}")
    if c.student_init not in STUDENT_INITS:
        raise ValueError(f"--student-init must be one of {', '.join(STUDENT_INITS)}, got {c.student_init!r}")
    unknown = [m for m in c.methods if m not in METHODS]
    if unknown or not c.methods:
        raise ValueError(f"methods must be names from {', '.join(METHODS)}, got {list(c.methods)!r}")


@dataclass
class Paths:
    out: Path

    @property
    def data(self) -> Path:
        return self.out / "phantoms"

    @property
    def group_data(self) -> Path:
        return self.out / "phantoms_groups"

    @property
    def teacher_data(self) -> Path:
        return self.out / "phantoms_teacher"

    @property
    def models(self) -> Path:
        return self.out / "models"

    @property
    def results(self) -> Path:
        return self.out / "results"

    def manifest(self, data: Path) -> Path:
        return data / "datalist_png.json"


def _write_data(c: CompareSettings, p: Paths, say: Callable[[str], None]) -> None:
    from tea_med.data.phantom_files import write_phantoms

    s = c.base
    sets = [(p.data, c.bias, 1.0, s.seed), (p.group_data, c.bias, c.group_confounding, s.seed)]
    if c.bias == "foreground":  # the teacher learns elsewhere: no markers, no hospital-class pairing
        sets.append((p.teacher_data, "background", 0.0, s.seed + 1))
    for folder, bias, confounding, seed in sets:
        if p.manifest(folder).is_file() and not s.force:
            continue
        if folder.exists():
            shutil.rmtree(folder)
        say(f"[phantoms] {folder.name}: {bias} bias, confounding {confounding:g}, seed {seed}")
        write_phantoms(
            folder,
            n=s.n,
            size=s.size,
            seed=seed,
            confounding=confounding,
            bias=bias,
            formats=("png",),
            grid=folder == p.data,
            progress=s.progress,
        )


def _forget_students(p: Paths) -> None:
    """Remove every method's student and result: they depend on the teacher just retrained."""
    for result in p.results.glob("*.json"):
        result.unlink()
    for method in METHODS:
        if (p.models / method).is_dir():
            shutil.rmtree(p.models / method)


def _same_init(saved: dict[str, Any], c: CompareSettings) -> bool:
    """Whether a saved student (its result, or its checkpoint folder's ``student_init.json``)
    started as ``c`` asks; records without the key were copies of the teacher."""
    return saved.get("student_init", "copy") == c.student_init


def _started_as(ckpt: Path) -> dict[str, Any]:
    """The start recorded in a method's checkpoint folder (``{}`` for folders without one)."""
    marker = ckpt / "student_init.json"
    return json.loads(marker.read_text()) if marker.is_file() else {}


def _method_data(c: CompareSettings, p: Paths, method: str) -> Path:
    return p.group_data if method in GROUP_METHODS else p.data


def _evaluate(c: CompareSettings, p: Paths, nets: dict[str, Any]) -> dict[str, dict[str, float]]:
    from tea_med.data.phantoms import CLASSES
    from tea_med.evaluation.report import evaluate_on_bias_splits

    s = c.base
    evaluation = evaluate_on_bias_splits(
        nets,
        p.manifest(p.data),
        size=s.size,
        class_names=CLASSES,
        eps=(s.eps_lo * s.eps_hi) ** 0.5,
        seed=s.seed,
    )
    return evaluation.rows()


def _log_metrics(runs: DemoRuns, run_id: str, row: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"eval_{k}", v, now, 0) for k, v in row.items() if not math.isnan(v)]
    runs.client.log_batch(run_id, metrics=metrics)


def _train_method(c: CompareSettings, p: Paths, runs: DemoRuns, method: str) -> float:
    """Train ``method``'s student; returns its wall time (kept in ``models/<method>/train_time.json``)."""
    from tea_med.bundled import bundle_dir

    s = c.base
    ckpt = p.models / method
    if ckpt.exists() and (s.force or not _same_init(_started_as(ckpt), c)):
        shutil.rmtree(ckpt)  # a checkpoint to resume from must have started as this run asks
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "student_init.json").write_text(json.dumps({"student_init": c.student_init}) + "\n")
    ov = student_overrides(s, _method_data(c, p, method), ckpt, p.models / "model.pt") | METHODS[method]
    ov["output_dir"] = str(p.out / "eval" / method)
    ov["student_init"] = c.student_init
    started = time.perf_counter()
    _workflow(_configs(bundle_dir("tea_student"), "train"), ov, runs, method, s)
    seconds = time.perf_counter() - started
    (ckpt / "train_time.json").write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def _teacher(c: CompareSettings, p: Paths) -> Any:
    from tea_med.data.phantoms import CLASSES
    from tea_med.networks import load_teacher

    return load_teacher(
        p.models / "model.pt",
        num_classes=len(CLASSES),
        segmenter_profile="small",
        background=c.base.teacher_background,
    )


def _student(p: Paths, method: str) -> Any:
    from tea_med.data.phantoms import CLASSES
    from tea_med.networks import densenet121, load_weights

    return load_weights(densenet121(num_classes=len(CLASSES)), p.models / method / "model.pt").eval()


def _line(name: str, row: dict[str, float], seconds: float | None) -> str:
    took = "" if seconds is None else f" ({seconds / 60:.1f} min)"
    return (
        f"{name}: biased {row['acc_test_biased']:.3f}, unbiased {row['acc_test_unbiased']:.3f}, "
        f"deceiving {row['acc_test_deceiving']:.3f}, gap {row['gap']:.3f}{took}"
    )


def run_compare(c: CompareSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns ``{"rows": {method: row}, "outputs": {...}, ...}``."""
    from mlflow.entities import Param

    from tea_med.bundled import bundle_dir

    check_compare_settings(c)
    s = c.base
    p = Paths(s.out)
    s.out.mkdir(parents=True, exist_ok=True)
    p.results.mkdir(exist_ok=True)
    runs = DemoRuns(s.out, experiment=EXPERIMENT, prefix=f"compare_{c.bias}")
    params = {k: v for k, v in asdict(s).items() if k not in ("out", "extra", "progress", "verbose", "force")}
    params |= {
        "bias": c.bias,
        "group_confounding": c.group_confounding,
        "student_init": c.student_init,
        "methods": ",".join(c.methods),
    }
    runs.client.log_batch(runs.parent_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
    t0 = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    try:
        say("[phantoms] " + ("up to date" if p.manifest(p.data).is_file() and not s.force else "writing"))
        _write_data(c, p, say)
        teacher_data = p.teacher_data if c.bias == "foreground" else p.data
        teacher_dir = bundle_dir("tea_teacher")
        for stage, target, overrides, workflow in (
            ("segmenter", p.models / "segmenter.pt", segmenter_overrides, "train_segmenter"),
            ("teacher", p.models / "model.pt", teacher_overrides, "train_classifier"),
        ):
            if target.is_file() and not s.force:
                say(f"[{stage}] up to date, reused (use --force to redo)")
                continue
            say(f"[{stage}] training on {teacher_data.name}")
            _workflow(_configs(teacher_dir, workflow), overrides(s, teacher_data, p.models), runs, stage, s)
            _forget_students(p)  # every student learned from (or was judged against) the old teacher
        teacher_result = p.results / "teacher.json"
        if teacher_result.is_file() and not s.force:
            rows["teacher"] = json.loads(teacher_result.read_text())["row"]
        else:
            rows["teacher"] = _evaluate(c, p, {"teacher": _teacher(c, p)})["teacher"]
            teacher_result.write_text(json.dumps({"row": rows["teacher"]}, indent=2) + "\n")
        say(_line("teacher (reference)", rows["teacher"], None))
        for i, method in enumerate(c.methods, 1):
            result = p.results / f"{method}.json"
            tag = f"[{i}/{len(c.methods)} {method}]"
            saved = json.loads(result.read_text()) if result.is_file() and not s.force else None
            if saved is not None and _same_init(saved, c):
                rows[method], times[method] = saved["row"], saved["train_seconds"]
                say(f"{tag} up to date, reused: " + _line(method, rows[method], times[method]))
                continue
            time_file = p.models / method / "train_time.json"
            model_ready = (p.models / method / "model.pt").is_file() and time_file.is_file()
            if model_ready and not s.force and _same_init(_started_as(p.models / method), c):
                seconds = float(json.loads(time_file.read_text())["seconds"])
                say(f"{tag} trained model reused; evaluating")
            else:
                say(f"{tag} training {s.student_epochs} epochs on {_method_data(c, p, method).name}")
                seconds = _train_method(c, p, runs, method)
            rows[method] = _evaluate(c, p, {method: _student(p, method)})[method]
            times[method] = seconds
            run_id = runs.adopt(method)
            if run_id is not None:
                _log_metrics(runs, run_id, rows[method] | {"train_seconds": seconds})
            saved = {"row": rows[method], "train_seconds": seconds, "student_init": c.student_init}
            result.write_text(json.dumps(saved, indent=2) + "\n")
            say(f"{tag} " + _line(method, rows[method], seconds))
        outputs = write_comparison(
            s.out, rows, times, bias=c.bias, methods=c.methods, student_init=c.student_init
        )
        for path in outputs.values():
            runs.client.log_artifact(runs.parent_id, str(path))
        runs.finish()
    except BaseException:
        runs.finish("FAILED")
        raise
    return {
        "rows": rows,
        "train_seconds": times,
        "outputs": {k: str(v) for k, v in outputs.items()},
        "wall_time_s": time.perf_counter() - t0,
        "mlflow_uri": runs.uri,
        "parent_run_id": runs.parent_id,
    }


# --------------------------------------------------------------------------- the outputs

#: the table's columns: (header, row key or None for computed cells)
CSV_COLUMNS = (
    "method",
    "acc_test_biased",
    "acc_test_biased_low",
    "acc_test_biased_high",
    "acc_test_unbiased",
    "acc_test_unbiased_low",
    "acc_test_unbiased_high",
    "acc_test_deceiving",
    "acc_test_deceiving_low",
    "acc_test_deceiving_high",
    "gap",
    "auc_unbiased",
    "auc_low",
    "auc_high",
    "background_test_deceiving",
    "train_minutes",
)


def _pct(row: dict[str, float], key: str) -> str:
    v, lo, hi = row.get(key, math.nan), row.get(f"{key}_low", math.nan), row.get(f"{key}_high", math.nan)
    if math.isnan(v):
        return "n/a"
    return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if not math.isnan(lo) else f"{100 * v:.1f}"


def comparison_markdown(
    rows: dict[str, dict[str, float]],
    times: dict[str, float],
    *,
    bias: str,
    methods: Sequence[str],
    student_init: str = "copy",
) -> str:
    """The Table-2-style comparison: balanced accuracy per test set (95% interval), gap, AUC,
    background relevance share and training time per method, the teacher first."""
    head = (
        "| method | biased | unbiased | deceiving | gap | AUC (unbiased) | background relevance | "
        "train min |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for name in ("teacher", *methods):
        if name not in rows:
            continue
        r = rows[name]
        auc = r.get("auc_unbiased", math.nan)
        auc_cell = "n/a" if math.isnan(auc) else f"{auc:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]"
        bg = r.get("background_test_deceiving", math.nan)
        minutes = "" if name not in times else f"{times[name] / 60:.1f}"
        label = "teacher (reference)" if name == "teacher" else name
        lines.append(
            f"| {label} | {_pct(r, 'acc_test_biased')} | {_pct(r, 'acc_test_unbiased')} | "
            f"{_pct(r, 'acc_test_deceiving')} | {100 * r['gap']:.1f} | {auc_cell} | "
            f"{'n/a' if math.isnan(bg) else f'{bg:.2f}'} | {minutes} |"
        )
    note = (
        f"\n\nBias: {bias}. Students: {INIT_TEXT[student_init]}. "
        "Balanced accuracy in percent [95% credible interval of the mean recall, "
        "posterior of the confusion matrix]; gap = |biased - deceiving| (points; smaller is better); AUC: "
        "macro one-vs-rest on test_unbiased [95% DeLong interval]; background relevance: share of "
        "positive LRP-ε relevance outside the lungs on test_deceiving; train min: the method's "
        "training wall time.\n"
    )
    return "\n".join(lines) + note


def comparison_figure(
    rows: dict[str, dict[str, float]], methods: Sequence[str], path: Path, *, bias: str
) -> Path:
    """Generalisation gap against deceiving-set accuracy, one labelled point per method (with its
    95% interval on the deceiving set); the teacher as a reference star. Best: bottom right."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    for name in ("teacher", *methods):
        if name not in rows:
            continue
        r = rows[name]
        x, y = r["acc_test_deceiving"], r["gap"]
        lo, hi = r.get("acc_test_deceiving_low", math.nan), r.get("acc_test_deceiving_high", math.nan)
        # the credible interval need not contain the observed value on tiny test sets
        err = None if math.isnan(lo) else [[max(x - lo, 0.0)], [max(hi - x, 0.0)]]
        style: dict[str, Any] = {"marker": "o"}
        if name == "teacher":
            style = {"marker": "*", "markersize": 14, "color": "black"}
        elif name == "tea":
            style["color"] = "tab:red"
        ax.errorbar(x, y, xerr=err, linestyle="none", capsize=3, **style)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("balanced accuracy on test_deceiving (95% interval)")
    ax.set_ylabel("generalisation gap: |biased - deceiving|")
    ax.set_title(f"{bias} bias: bias reliance against accuracy (best: bottom right)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_comparison(
    out: Path,
    rows: dict[str, dict[str, float]],
    times: dict[str, float],
    *,
    bias: str,
    methods: Sequence[str],
    student_init: str = "copy",
) -> dict[str, Path]:
    """``comparison.md``, ``comparison.csv`` and ``comparison.png`` under ``out``."""
    md = out / "comparison.md"
    md.write_text(
        f"# TEA and its baselines: {bias} bias\n\n"
        + comparison_markdown(rows, times, bias=bias, methods=methods, student_init=student_init)
    )
    table = out / "comparison.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for name in ("teacher", *methods):
            if name not in rows:
                continue
            r = rows[name]
            minutes = times[name] / 60 if name in times else math.nan
            writer.writerow([name, *(r.get(k, math.nan) for k in CSV_COLUMNS[1:-1]), minutes])
    figure = comparison_figure(rows, methods, out / "comparison.png", bias=bias)
    return {"markdown": md, "csv": table, "figure": figure}


__all__ = [
    "ABLATIONS",
    "BASELINES",
    "GROUP_METHODS",
    "METHODS",
    "CompareSettings",
    "comparison_markdown",
    "parse_methods",
    "run_compare",
    "write_comparison",
]
