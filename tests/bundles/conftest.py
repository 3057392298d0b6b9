"""A tiny phantom data set shared by the bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bundles import SIZE

from tea_med.data.phantom_files import write_phantoms


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, n=4, size=SIZE, seed=3, formats=("png",), grid=False, overwrite=True, progress=False)
    return out
