"""A small student bundle with weights (random, seeded) and its verified export, shared by the
deploy tests; and DICOM/PNG phantoms to run it on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tea_med.bundled import bundle_dir
from tea_med.data.phantom_files import write_phantoms
from tea_med.networks import densenet121

SIZE = 32


def make_student_bundle(folder: Path, seed: int = 0) -> Path:
    """A copy of the shipped tea_student bundle at ``SIZE`` px with seeded random weights."""
    shutil.copytree(bundle_dir("tea_student"), folder)
    common = folder / "configs" / "common.yaml"
    text = common.read_text()
    assert "\nimage_size: 224 " in text
    common.write_text(text.replace("\nimage_size: 224 ", f"\nimage_size: {SIZE} ", 1))
    torch.manual_seed(seed)
    net = densenet121(num_classes=3)
    (folder / "models").mkdir(exist_ok=True)
    torch.save({"model": net.state_dict()}, folder / "models" / "model.pt")
    return folder


@pytest.fixture(scope="session")
def exported_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The student bundle after ``export_bundle`` (TorchScript, ONNX, model card)."""
    from tea_med.deploy.export import export_bundle

    bundle = make_student_bundle(tmp_path_factory.mktemp("exported") / "tea_student")
    export_bundle(bundle)
    return bundle


@pytest.fixture(scope="session")
def dicom_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tea-med phantoms`` output (DICOM and PNG, 2 images per split, 64 px)."""
    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, n=2, size=64, seed=3, formats=("dicom", "png"), grid=False, progress=False)
    return out
