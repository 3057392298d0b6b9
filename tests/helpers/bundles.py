"""Paths and helpers shared by the bundle tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[2]
TEACHER = REPO / "bundles" / "tea_teacher"
STUDENT = REPO / "bundles" / "tea_student"
SCHEMA = REPO / "bundles" / "schema" / "meta_schema.json"
SIZE = 32


def config_files(configs: Path, name: str) -> list[str]:
    """The workflow ``name`` of a bundle: ``configs/common.yaml`` then ``configs/<name>.yaml``."""
    return [str(configs / "common.yaml"), str(configs / f"{name}.yaml")]


def cli_configs(name: str) -> str:
    """``--config_file`` of the workflow ``name`` as the docs write it (run from the bundle folder)."""
    return f"['configs/common.yaml','configs/{name}.yaml']"


def initialized_workflow(configs: Path, name: str, workflow_type: str, **overrides: object) -> ConfigWorkflow:
    """The workflow ``name`` as a MONAI ``ConfigWorkflow``, initialised, its properties checked."""
    wf = ConfigWorkflow(
        config_file=config_files(configs, name),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    wf.initialize()
    assert wf.check_properties() == []
    return wf


def small_overrides(phantoms: Path, work: Path) -> dict[str, object]:
    """Overrides that make a teacher config run in seconds on the tiny phantoms."""
    return {
        "bundle_root": str(TEACHER),
        "dataset_dir": str(phantoms),
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "image_size": SIZE,
        "segmenter_profile": "small",
        "max_epochs": 1,
        "batch_size": 4,
        "num_workers": 0,
    }


def bundle_cli(*args: str, cwd: Path = TEACHER) -> subprocess.CompletedProcess[str]:
    """``python -m monai.bundle ARGS`` in ``cwd``; fails the test with the output on error."""
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (
        f"monai.bundle {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain (MONAI wraps a config's errors in ``RuntimeError``s)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err
