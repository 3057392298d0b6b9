"""tea_med installed from its wheel, in a fresh environment, in an empty folder outside the checkout:
the demo runs, and the shipped bundles copy out and train with their own commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(python of a fresh venv with the wheel installed, an empty working folder)``."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)], cwd=root)
    (wheel,) = dist.glob("tea_med-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tea_med/bundles/tea_student/configs/metadata.json" in names
    assert not any(n.endswith((".pt", ".ts", ".onnx")) for n in names), "weights must not ship"
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "--quiet", "torch==2.13.0"], cwd=root)
    _run([str(py), "-m", "pip", "install", "--quiet", f"{wheel}[train]"], cwd=root)
    work = root / "work"
    work.mkdir()
    return py, work


def test_demo_runs_from_the_wheel_outside_the_checkout(installed: tuple[Path, Path]) -> None:
    py, work = installed
    tea_med = py.parent / "tea-med"
    where = _run([str(py), "-c", "import tea_med; print(tea_med.__file__)"], cwd=work).stdout.strip()
    assert not Path(where).is_relative_to(REPO), where  # the installed copy, not the checkout
    out = _run([str(tea_med), "demo", "--size", "32", "--n", "8", "--epochs", "0.05"], cwd=work)
    assert "target " in out.stdout and "student" in out.stdout
    summary = json.loads((work / "outputs" / "demo" / "summary.json").read_text())
    assert set(summary["rows"]) == {"teacher", "standard", "student"}
    assert (work / "outputs" / "demo" / "report.html").is_file()


def test_shipped_bundles_copy_out_and_train(installed: tuple[Path, Path]) -> None:
    py, work = installed
    tea_med = py.parent / "tea-med"
    _run(
        [str(tea_med), "phantoms", "data", "--n", "6", "--size", "32", "--format", "png", "--no-grid"],
        cwd=work,
    )
    _run([str(tea_med), "bundles", "--copy", "bundles"], cwd=work)
    teacher = work / "bundles" / "tea_teacher"
    assert (teacher / "docs" / "README.md").is_file() and not (teacher / "models" / "segmenter.pt").exists()
    configs = "['configs/common.yaml','configs/train_segmenter.yaml']"
    args = ["--dataset_dir", str(work / "data"), "--image_size", "32", "--max_epochs", "1"]
    args += ["--segmenter_profile", "small", "--batch_size", "4"]
    _run([str(py), "-m", "monai.bundle", "run", "--config_file", configs, *args], cwd=teacher)
    assert (teacher / "models" / "segmenter.pt").is_file()
    verify = ["--meta_file", "configs/metadata.json", "--filepath", "../schema/meta_schema.json"]
    _run([str(py), "-m", "monai.bundle", "verify_metadata", *verify], cwd=teacher)


def test_a_bundle_without_data_says_which_argument_is_missing(installed: tuple[Path, Path]) -> None:
    py, work = installed
    _run([str(py.parent / "tea-med"), "bundles", "--copy", "fresh"], cwd=work)
    configs = "['configs/common.yaml','configs/train_segmenter.yaml']"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(py), "-m", "monai.bundle", "run", "--config_file", configs],
        cwd=work / "fresh" / "tea_teacher",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "dataset_dir" in proc.stderr + proc.stdout
