"""What inference runs on: folders (recursive, sorted) and manifests; clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tea_med.data.errors import DataError
from tea_med.data.phantom_files import write_phantoms
from tea_med.deploy import inference_datalist


def test_folder_is_searched_recursively_and_sorted(tmp_path: Path) -> None:
    for rel in ("b/2.PNG", "a/1.dcm", "a/notes.txt", "c.jpeg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [Path(r["image"]).relative_to(tmp_path).as_posix() for r in inference_datalist(tmp_path)]
    assert found == ["a/1.dcm", "b/2.PNG", "c.jpeg"]


def test_manifest_split(tmp_path: Path) -> None:
    out = write_phantoms(tmp_path / "ph", n=2, size=32, formats=("png",), grid=False, progress=False)
    records = inference_datalist(out["datalist_png"], "test_unbiased")
    assert len(records) == 2 and all(Path(r["image"]).is_file() for r in records)
    assert {r["label_name"] for r in records} <= {"normal", "pneumonia", "covid"}


def test_empty_folder_and_other_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images found"):
        inference_datalist(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match=r"x\.txt.*neither a folder of images nor a manifest"):
        inference_datalist(tmp_path / "x.txt")
