"""What to run inference on: a folder of DICOM/PNG/JPEG files or a manifest split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tea_med.data.errors import DataError

#: file name endings taken from a folder (case-insensitive); DICOM files may lack an ending
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


def inference_datalist(path: str | os.PathLike[str] | None, split: str = "test") -> list[dict[str, Any]]:
    """``[{"image": file}, ...]`` for a folder (searched recursively, sorted) or a manifest JSON.

    For a manifest the records of ``split`` are returned (validated; labels are kept as names
    in ``label_name`` when present). Raises :class:`~tea_med.data.errors.DataError` naming the
    path when nothing can be found, and ``ValueError`` naming the bundles' ``input_path`` when
    ``path`` is ``None`` (their default: what to infer on is always an argument).
    """
    if path is None or not os.fspath(path):
        raise ValueError(
            "input_path is not set: pass --input_path PATH, a folder of DICOM/PNG/JPEG files "
            "(searched recursively) or a manifest .json (with --input_split SPLIT)"
        )
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(p, f"no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, recursively)")
        return [{"image": str(f)} for f in files]
    if p.is_file() and p.suffix.lower() == ".json":
        from tea_med.data.manifest import load_datalist

        records = load_datalist(p, split)
        return [{"image": r["image"], "label_name": r.get("label")} for r in records]
    raise DataError(p, "is neither a folder of images nor a manifest (.json)")
