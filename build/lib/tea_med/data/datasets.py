"""MONAI datasets built from a validated manifest split."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from monai.data import CacheDataset, Dataset

from tea_med.data.manifest import load_datalist

__all__ = ["find_datalist", "xray_dataset"]

#: the manifest a data folder holds (``tea-med phantoms DIR`` writes it)
DATALIST_NAME = "datalist_png.json"


def find_datalist(
    dataset_dir: str | os.PathLike[str] | None, filename: str = DATALIST_NAME, key: str = "dataset_dir"
) -> str:
    """``<dataset_dir>/<filename>``, the manifest of a bundle's data folder (its ``datalist``).

    The data are an argument of every bundle, never a default: ``dataset_dir`` ``None`` (the
    configs' default) raises ``ValueError`` naming the config ``key`` and how to pass it, a folder
    without the manifest ``FileNotFoundError``.
    """
    if dataset_dir is None or not os.fspath(dataset_dir):
        raise ValueError(
            f"{key} is not set: pass --{key} DIR, a folder with {filename} (`tea-med phantoms DIR` "
            "writes one), or --datalist FILE.json for a manifest elsewhere"
        )
    path = os.path.join(os.fspath(dataset_dir), filename)
    if not os.path.isfile(path):
        what = "does not exist" if not os.path.isdir(dataset_dir) else f"has no {filename}"
        raise FileNotFoundError(
            f"{key} {os.fspath(dataset_dir)!r} {what}: pass --{key} DIR, a folder with {filename}, "
            "or --datalist FILE.json"
        )
    return path


def xray_dataset(
    manifest: Mapping[str, Any] | str | os.PathLike[str] | None,
    split: str,
    transform: Callable[..., Any] | None = None,
    *,
    cache: bool = False,
    cache_rate: float = 1.0,
    cache_workers: int | None = 1,
    base_dir: str | os.PathLike[str] | None = None,
    labels: Sequence[str] | None = None,
    require_mask: bool | Collection[str] = False,
    check_readable: bool = False,
    skip_bad: bool = False,
    report_path: str | os.PathLike[str] | None = None,
    encode_labels: bool = True,
    progress: bool = False,
) -> Dataset:
    """A ``monai.data.Dataset`` (or ``CacheDataset`` with ``cache=True``) over one split.

    The manifest is validated first (see :func:`~tea_med.data.manifest.load_datalist`): bad
    records raise :class:`~tea_med.data.manifest.ManifestError` listing every problem, or are
    quarantined into a written report with ``skip_bad=True``. Labels are encoded as indices
    by default (the name stays in ``label_name``). ``CacheDataset`` caches the output of the
    deterministic transforms up to the first random one.
    """
    if manifest is None:
        raise ValueError(
            "no manifest: a bundle's datalist is not set (pass --dataset_dir DIR, a folder with "
            f"{DATALIST_NAME}, or --datalist FILE.json)"
        )
    records = load_datalist(
        manifest,
        split,
        base_dir=base_dir,
        labels=labels,
        require_mask=require_mask,
        check_readable=check_readable,
        skip_bad=skip_bad,
        report_path=report_path,
        encode_labels=encode_labels,
        progress=progress,
    )
    if cache:
        return CacheDataset(
            records, transform, cache_rate=cache_rate, num_workers=cache_workers, progress=progress
        )
    return Dataset(records, transform)
