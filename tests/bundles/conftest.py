"""A tiny phantom data set and a random-weight teacher checkpoint shared by the bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.bundles import SIZE

from tea_med.data.phantom_files import write_phantoms
from tea_med.networks import TeacherPipeline, densenet121, lung_segmenter


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, n=4, size=SIZE, seed=3, formats=("png",), grid=False, overwrite=True, progress=False)
    return out


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (random-weight) small-profile teacher saved as the teacher bundle saves it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    torch.save(TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)).state_dict(), path)
    return path
