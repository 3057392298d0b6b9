"""``tea-med compare``: method selection, the three outputs, and a miniature comparison end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tea_med.cli import main
from tea_med.compare import ABLATIONS, BASELINES, EXPERIMENT, METHODS, parse_methods, write_comparison


def test_methods_are_parsed_from_sets_and_names_in_order() -> None:
    assert parse_methods("all") == tuple(METHODS)
    assert len(METHODS) == 22 and set(METHODS) == set(BASELINES) | set(ABLATIONS)
    assert parse_methods("erm, tea,erm") == ("erm", "tea")
    assert parse_methods("baselines")[:3] == ("tea", "erm", "kd")
    assert parse_methods("tea+kd,ablations")[0] == "tea+kd" and len(parse_methods("tea+kd,ablations")) == 12
    with pytest.raises(
        ValueError, match=r"--methods: unknown method 'pgi'; choose all, baselines, ablations"
    ):
        parse_methods("tea,pgi")
    with pytest.raises(ValueError, match="name at least one method"):
        parse_methods(" , ")


def _row(biased: float, unbiased: float, deceiving: float) -> dict[str, float]:
    row = {"acc_test_biased": biased, "acc_test_unbiased": unbiased, "acc_test_deceiving": deceiving}
    for split, v in list(row.items()):
        row[f"{split}_low"], row[f"{split}_high"] = v - 0.05, v + 0.04
    return row | {
        "gap": abs(biased - deceiving),
        "auc_unbiased": 0.8,
        "auc_low": 0.7,
        "auc_high": 0.9,
        "background_test_deceiving": 0.25,
    }


def test_the_comparison_is_written_as_markdown_csv_and_a_figure(tmp_path: Path) -> None:
    rows = {"teacher": _row(0.9, 0.88, 0.87), "erm": _row(1.0, 0.4, 0.0), "tea": _row(0.8, 0.75, 0.72)}
    out = write_comparison(
        tmp_path, rows, {"erm": 60.0, "tea": 300.0}, bias="background", methods=("tea", "erm")
    )
    md = out["markdown"].read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| teacher (reference)", "| tea", "| erm"]
    # hand-formatted: 100 * (0.8, 0.75, 0.72), intervals -5 / +4 points, gap 8 points, 5 minutes
    assert (
        "| tea | 80.0 [75.0, 84.0] | 75.0 [70.0, 79.0] | 72.0 [67.0, 76.0] | 8.0 | 0.800 [0.700, 0.900]" in md
    )
    assert lines[-1].endswith("| 0.25 | 1.0 |") and "Bias: background" in md
    with out["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["teacher", "tea", "erm"]
    assert float(table[2]["acc_test_deceiving"]) == 0.0 and float(table[2]["gap"]) == 1.0
    assert float(table[1]["train_minutes"]) == 5.0 and math.isnan(float(table[0]["train_minutes"]))
    assert out["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["figure"].stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "tea,pgi"], "unknown method 'pgi'"),
        (["--size", "30"], "--size must be a multiple of 8"),
        (["--bias", "middle"], None),  # argparse: invalid choice
        (["--group-confounding", "1.5"], None),
        (["--student-init", "warm"], None),  # argparse: invalid choice
    ],
)
def test_bad_arguments_are_named(
    args: list[str], message: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["compare", "--out", str(tmp_path / "c"), *args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message is None or message in err
    assert not (tmp_path / "c" / "models").exists()  # refused before any stage ran


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    args = [
        "--methods",
        "tea,erm,group_dro",
        "--size",
        "32",
        "--n",
        "6",
        "--epochs",
        "0.05",
        "--out",
        str(out),
    ]
    assert main(["compare", *args]) == 0
    return out


@pytest.mark.slow
def test_a_tiny_comparison_writes_every_output_and_one_child_run_per_method(tiny: Path) -> None:
    md = (tiny / "comparison.md").read_text()
    for name in ("teacher (reference)", "| tea |", "| erm |", "| group_dro |"):
        assert name in md
    assert (tiny / "comparison.png").is_file() and (tiny / "comparison.csv").is_file()
    for method in ("tea", "erm", "group_dro"):
        saved = json.loads((tiny / "results" / f"{method}.json").read_text())
        assert saved["train_seconds"] > 0 and 0 <= saved["row"]["acc_test_deceiving"] <= 1
        assert (tiny / "models" / method / "model.pt").is_file()
    # group methods train on data whose hospitals are not the classes
    groups = json.loads((tiny / "phantoms_groups" / "datalist_png.json").read_text())
    assert groups["metadata"]["confounding"] == 0.9
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.info.run_name.rsplit("_", 1)[0]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert set(children) == {"segmenter", "teacher", "tea", "erm", "group_dro"}
    assert children["erm"].data.params["method"] == "erm"
    assert "eval_acc_test_deceiving" in children["erm"].data.metrics
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"comparison.md", "comparison.csv", "comparison.png"} <= artifacts


@pytest.mark.slow
def test_a_second_comparison_reuses_every_finished_stage(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    args = ["--methods", "tea,erm", "--size", "32", "--n", "6", "--epochs", "0.05", "--out", str(tiny)]
    assert main(["compare", *args]) == 0
    printed = capsys.readouterr().out
    assert "[segmenter] up to date" in printed and "[teacher] up to date" in printed
    assert "[1/2 tea] up to date, reused" in printed and "[2/2 erm] up to date, reused" in printed
    assert "[1/2 tea] training" not in printed
    assert "| group_dro |" not in printed  # the table holds the methods asked for


@pytest.mark.slow
def test_a_foreground_comparison_trains_its_teacher_elsewhere(tmp_path: Path) -> None:
    args = ["--methods", "tea", "--bias", "foreground", "--size", "32", "--n", "6", "--epochs", "0.05"]
    assert main(["compare", *args, "--out", str(tmp_path)]) == 0
    student = json.loads((tmp_path / "phantoms" / "datalist_png.json").read_text())
    teacher = json.loads((tmp_path / "phantoms_teacher" / "datalist_png.json").read_text())
    assert student["metadata"]["bias"] == "foreground" and teacher["metadata"]["bias"] == "background"
    assert {r["marker"] for r in student["training"]} == {"pacemaker", "electrode", "port"}
    assert all("marker" not in r for r in teacher["training"])
    assert teacher["metadata"]["confounding"] == 0.0
    assert "Bias: foreground" in (tmp_path / "comparison.md").read_text()


@pytest.mark.slow
def test_force_retrains_what_a_comparison_would_reuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = ["--size", "32", "--n", "6", "--epochs", "0.05", "--out", str(tmp_path)]
    assert main(["compare", "--methods", "tea,erm", *sizes]) == 0
    before = json.loads((tmp_path / "results" / "erm.json").read_text())["train_seconds"]
    capsys.readouterr()
    assert main(["compare", "--methods", "erm", *sizes, "--force"]) == 0
    printed = capsys.readouterr().out
    assert "up to date" not in printed and "[segmenter] training" in printed
    assert "[1/1 erm] training 2 epochs on phantoms" in printed
    assert json.loads((tmp_path / "results" / "erm.json").read_text())["train_seconds"] != before
    # a new teacher: the students of the old one are gone, not reused later
    assert not (tmp_path / "results" / "tea.json").exists() and not (tmp_path / "models" / "tea").exists()


@pytest.mark.slow
def test_students_start_as_asked_and_another_start_is_retrained_not_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    sizes = ["--methods", "erm", "--size", "32", "--n", "6", "--epochs", "0.05", "--out", str(tmp_path)]
    teacher_ckpt, student_ckpt = tmp_path / "models" / "model.pt", tmp_path / "models" / "erm" / "model.pt"

    def distance_to_teacher() -> tuple[float, float]:
        """Relative distance of the student's first convolution from the teacher classifier's, and
        the largest difference of their last layers (frozen copies in both starts)."""
        t = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)
        s = torch.load(student_ckpt, map_location="cpu", weights_only=True)
        first = (s["features.conv0.weight"] - t["classifier.features.conv0.weight"]).norm()
        last = (s["class_layers.out.weight"] - t["classifier.class_layers.out.weight"]).abs().max()
        return float(first / t["classifier.features.conv0.weight"].norm()), float(last)

    assert main(["compare", *sizes, "--student-init", "random"]) == 0
    moved, last = distance_to_teacher()
    assert moved > 0.5 and last == 0.0  # a fresh first layer: 1.08 here; two Adam steps move a copy 0.011
    md = (tmp_path / "comparison.md").read_text()
    assert "every method starts re-initialised, except the last layer" in md
    assert json.loads((tmp_path / "results" / "erm.json").read_text())["student_init"] == "random"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    erm = [r for r in runs if r.info.run_name.startswith("erm_")]
    assert erm[0].data.params["student_init"] == "random"
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["student_init"] == "random"

    capsys.readouterr()
    assert main(["compare", *sizes]) == 0  # the default start: the random student is not reused
    printed = capsys.readouterr().out
    assert "[teacher] up to date" in printed and "[1/1 erm] training" in printed
    moved, last = distance_to_teacher()
    assert moved < 0.1 and last == 0.0
    assert (
        "every method starts as a copy of the teacher's classifier"
        in (tmp_path / "comparison.md").read_text()
    )
