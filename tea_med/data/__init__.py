"""tea_med.data: X-ray loading, preprocessing, manifests and synthetic phantoms.

- Loading: :class:`LoadXray` / :class:`LoadXrayd` (DICOM, PNG, JPEG), :class:`LoadMask`
  (PNG, NIfTI); bad input raises :class:`DataError` naming the file and the reason.
- Preprocessing (METHOD.md §7): :func:`train_transforms`, :func:`eval_transforms`,
  :func:`test_transforms`, :func:`preprocess_transforms`, and the teacher's
  :class:`MaskBackgroundNoise`.
- Manifests: :func:`validate_manifest` (every problem at once), :func:`load_datalist`
  (``skip_bad`` quarantines into a report), :func:`xray_dataset`, :func:`split_by_patient`.
- Phantoms: :func:`generate_phantom`, :func:`iter_phantoms`, :func:`write_phantoms`.

Imports are lazy (PEP 562): ``tea_med.data.manifest`` works without loading torch or MONAI, so
``tea-med manifest validate`` starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tea_med.data.datasets import xray_dataset
    from tea_med.data.dicom import read_dicom
    from tea_med.data.dicom_writer import write_dicom
    from tea_med.data.errors import DataError
    from tea_med.data.images import read_raster
    from tea_med.data.loading import LoadMask, LoadXray, LoadXrayd
    from tea_med.data.manifest import (
        ManifestError,
        Problem,
        load_datalist,
        manifest_schema,
        quarantine,
        read_manifest,
        validate_manifest,
        write_quarantine_report,
    )
    from tea_med.data.masks import check_mask_shape, read_mask
    from tea_med.data.phantom_files import save_example_grid, write_phantoms
    from tea_med.data.phantoms import (
        CLASSES,
        HOSPITALS,
        SPLITS,
        Hospital,
        PhantomSpec,
        generate_phantom,
        iter_phantoms,
        plan_phantoms,
        render_phantom,
    )
    from tea_med.data.splitting import split_by_patient
    from tea_med.data.transforms import (
        HistogramEqualize,
        HistogramEqualized,
        MaskBackgroundNoise,
        MaskBackgroundNoised,
        PadToSquare,
        PadToSquared,
        eval_transforms,
        preprocess_transforms,
        test_transforms,
        train_transforms,
    )

_EXPORTS: dict[str, str] = {
    "xray_dataset": "tea_med.data.datasets",
    "read_dicom": "tea_med.data.dicom",
    "write_dicom": "tea_med.data.dicom_writer",
    "DataError": "tea_med.data.errors",
    "read_raster": "tea_med.data.images",
    "LoadMask": "tea_med.data.loading",
    "LoadXray": "tea_med.data.loading",
    "LoadXrayd": "tea_med.data.loading",
    "ManifestError": "tea_med.data.manifest",
    "Problem": "tea_med.data.manifest",
    "load_datalist": "tea_med.data.manifest",
    "manifest_schema": "tea_med.data.manifest",
    "quarantine": "tea_med.data.manifest",
    "read_manifest": "tea_med.data.manifest",
    "validate_manifest": "tea_med.data.manifest",
    "write_quarantine_report": "tea_med.data.manifest",
    "check_mask_shape": "tea_med.data.masks",
    "read_mask": "tea_med.data.masks",
    "save_example_grid": "tea_med.data.phantom_files",
    "write_phantoms": "tea_med.data.phantom_files",
    "CLASSES": "tea_med.data.phantoms",
    "HOSPITALS": "tea_med.data.phantoms",
    "Hospital": "tea_med.data.phantoms",
    "PhantomSpec": "tea_med.data.phantoms",
    "SPLITS": "tea_med.data.phantoms",
    "generate_phantom": "tea_med.data.phantoms",
    "iter_phantoms": "tea_med.data.phantoms",
    "plan_phantoms": "tea_med.data.phantoms",
    "render_phantom": "tea_med.data.phantoms",
    "split_by_patient": "tea_med.data.splitting",
    "HistogramEqualize": "tea_med.data.transforms",
    "HistogramEqualized": "tea_med.data.transforms",
    "MaskBackgroundNoise": "tea_med.data.transforms",
    "MaskBackgroundNoised": "tea_med.data.transforms",
    "PadToSquare": "tea_med.data.transforms",
    "PadToSquared": "tea_med.data.transforms",
    "eval_transforms": "tea_med.data.transforms",
    "preprocess_transforms": "tea_med.data.transforms",
    "test_transforms": "tea_med.data.transforms",
    "train_transforms": "tea_med.data.transforms",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tea_med.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "CLASSES",
    "HOSPITALS",
    "SPLITS",
    "DataError",
    "HistogramEqualize",
    "HistogramEqualized",
    "Hospital",
    "LoadMask",
    "LoadXray",
    "LoadXrayd",
    "ManifestError",
    "MaskBackgroundNoise",
    "MaskBackgroundNoised",
    "PadToSquare",
    "PadToSquared",
    "PhantomSpec",
    "Problem",
    "check_mask_shape",
    "eval_transforms",
    "generate_phantom",
    "iter_phantoms",
    "load_datalist",
    "manifest_schema",
    "plan_phantoms",
    "preprocess_transforms",
    "quarantine",
    "read_dicom",
    "read_manifest",
    "read_mask",
    "read_raster",
    "render_phantom",
    "save_example_grid",
    "split_by_patient",
    "test_transforms",
    "train_transforms",
    "validate_manifest",
    "write_dicom",
    "write_phantoms",
    "write_quarantine_report",
    "xray_dataset",
]
