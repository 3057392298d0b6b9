"""pipelines/paper_xray.py: validates the manifest and lays out the paper's recipe as bundle commands."""

from __future__ import annotations

import json
import shlex
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
    configs = """--config_file '["configs/common.yaml","configs/{}.yaml"]'"""
    assert configs.format("train_segmenter") in lines[0] and "--image_size 224" in lines[0]
    assert configs.format("train_classifier") in lines[1]
    assert (
        configs.format("train") in lines[2]
        and "--teacher_ckpt " in lines[2]
        and "--max_epochs 500" in lines[2]
        and "--lr_milestones '[300, 400]'" in lines[2]
    )
    assert all("--eval_split test_unbiased" in line for line in lines[3:])
    assert all(configs.format("evaluate") in line for line in lines[3:])
    # each line is a shell command: its bundle folder, then the argument list
    for line in lines:
        cd, cmd = line.removeprefix("(cd ").removesuffix(")").split(" && ", 1)
        assert (Path(shlex.split(cd)[0]) / "configs" / "common.yaml").is_file()
        argv = shlex.split(cmd)
        assert argv[argv.index("--config_file") + 1].startswith('["configs/common.yaml",')
        assert argv[argv.index("--datalist") + 1] == str(Path(out["datalist_png"]).resolve())
        assert argv[argv.index("--dataset_dir") + 1] == str(Path(out["datalist_png"]).resolve().parent)


def test_bad_manifest_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": "missing.png", "label": "normal"}]}))
    proc = run("--datalist", str(bad), "--ood-split", "test", "--dry-run")
    assert proc.returncode == 1 and "problems" in proc.stderr
    assert run("--datalist", str(tmp_path / "nope.json"), "--ood-split", "x").returncode == 2
