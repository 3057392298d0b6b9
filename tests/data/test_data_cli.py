"""The data commands: `tea-med phantoms` and `tea-med manifest validate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tea_med.cli import main


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ph"
    assert main(["phantoms", str(out), "--n", "3", "--size", "32", "--seed", "4", "--format", "both"]) == 0
    return out


def test_phantoms_command_writes_the_data_set(phantoms: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (phantoms / "datalist_dicom.json").is_file() and (phantoms / "datalist_png.json").is_file()
    assert (phantoms / "examples.png").is_file()
    assert len(list((phantoms / "images").rglob("*.dcm"))) == 15
    assert len(list((phantoms / "masks").rglob("*.png"))) == 15
    # a non-empty OUT is refused with a clear message, and --overwrite allows it
    assert main(["phantoms", str(phantoms), "--n", "1", "--size", "32"]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_phantoms_command_foreground_bias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fg"
    args = ["phantoms", str(out), "--n", "3", "--size", "32", "--format", "png", "--no-grid"]
    assert main([*args, "--bias", "foreground"]) == 0
    assert "foreground bias" in capsys.readouterr().out
    manifest = json.loads((out / "datalist_png.json").read_text())
    assert manifest["metadata"]["bias"] == "foreground"
    assert [r["marker"] for r in manifest["training"]] == ["pacemaker", "electrode", "port"]
    assert [r["marker"] for r in manifest["test_unbiased"]] == ["none", "none", "none"]
    assert not (out / "examples.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--confounding", "1.5"], "argument --confounding: expected a number in [0, 1]"),
        (["--size", "8"], "argument --size: expected a side in pixels (32..4096"),
        (["--n", "0"], "argument --n: expected a whole number >= 1, got 0"),
        (["--format", "tiff"], "argument --format: invalid choice: 'tiff'"),
        (["--bias", "middle"], "argument --bias: invalid choice: 'middle'"),
    ],
)
def test_phantoms_command_names_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["phantoms", str(tmp_path / "x"), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_validate_exit_codes_and_problem_list(phantoms: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = phantoms / "datalist_png.json"
    assert main(["manifest", "validate", str(good), "--require-mask"]) == 0
    assert "valid (training: 3" in capsys.readouterr().out

    manifest = json.loads(good.read_text())
    manifest["training"][0]["label"] = "flu"
    manifest["validation"][1]["image"] = "images/none.png"
    del manifest["test_biased"][2]["mask"]
    bad = phantoms / "bad.json"
    bad.write_text(json.dumps(manifest))
    assert main(["manifest", "validate", str(bad), "--require-mask"]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: 3 problems:" in out
    assert "training[0].label: unknown label 'flu'; allowed: normal, pneumonia, covid [unknown_label]" in out
    assert "validation[1].image: image file not found" in out and "test_biased[2].mask" in out

    assert (
        main(["manifest", "validate", str(bad), "--labels", "normal", "pneumonia", "covid", "flu", "--json"])
        == 1
    )
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is False and [p["code"] for p in result["problems"]] == ["missing_file"]

    assert main(["manifest", "validate", str(phantoms / "nothing.json")]) == 1
    assert "cannot read the manifest" in capsys.readouterr().err


def test_validate_skip_bad_writes_clean_manifest_and_report(phantoms: Path) -> None:
    manifest = json.loads((phantoms / "datalist_dicom.json").read_text())
    manifest["validation"][0]["patient_id"] = manifest["training"][0]["patient_id"]
    bad = phantoms / "leaky.json"
    bad.write_text(json.dumps(manifest))
    assert main(["manifest", "validate", str(bad), "--skip-bad"]) == 0
    clean = json.loads((phantoms / "leaky.clean.json").read_text())
    report = json.loads((phantoms / "leaky.quarantine.json").read_text())
    assert len(clean["validation"]) == 2 and len(clean["training"]) == 3
    assert report["quarantined"][0]["problems"][0]["code"] == "patient_in_two_splits"
    assert main(["manifest", "validate", str(phantoms / "leaky.clean.json")]) == 0


def test_console_script_runs_from_the_installed_entry_point(phantoms: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tea_med.cli", "manifest", "validate", str(phantoms / "datalist_dicom.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
