"""pipelines/paper_xray.py: validates the manifest and lays out the paper's recipe as bundle commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tea_med.data.phantom_files import write_phantoms

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "pipelines" / "paper_xray.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_dry_run_lists_the_recipe(tmp_path: Path) -> None:
    out = write_phantoms(tmp_path / "ph", n=2, size=32, formats=("png",), grid=False, progress=False)
    proc = run("--datalist", str(out["datalist_png"]), "--ood-split", "test_unbiased", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    assert "train_segmenter.json" in lines[0] and "--image_size 224" in lines[0]
    assert (
        "train.json" in lines[2]
        and "--max_epochs 500" in lines[2]
        and "--lr_milestones '[300, 400]'" in lines[2]
    )
    assert all("--eval_split test_unbiased" in line for line in lines[3:])


def test_bad_manifest_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": "missing.png", "label": "normal"}]}))
    proc = run("--datalist", str(bad), "--ood-split", "test", "--dry-run")
    assert proc.returncode == 1 and "problems" in proc.stderr
    assert run("--datalist", str(tmp_path / "nope.json"), "--ood-split", "x").returncode == 2
