"""MONAI loading transforms: a file path in, a channel-first float32 ``MetaTensor`` out."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple

from tea_med.data.dicom import read_dicom
from tea_med.data.errors import DataError
from tea_med.data.images import RASTER_SUFFIXES, read_raster
from tea_med.data.masks import NIFTI_SUFFIXES, check_mask_shape, read_mask

__all__ = ["LoadMask", "LoadXray", "LoadXrayd"]


#: metadata every loaded image carries (empty where its format has none), so that a batch mixing
#: DICOM and PNG/JPEG keeps them: MONAI's collation keeps only the keys all items share
SHARED_META_KEYS = (
    "sop_instance_uid",
    "sop_class_uid",
    "modality",
    "photometric_interpretation",
    "transfer_syntax",
)


def _to_meta_tensor(values: np.ndarray, meta: dict[str, Any], path: Path) -> MetaTensor:
    """``(rows, cols)`` array -> ``(1, rows, cols)`` MetaTensor whose affine holds the spacing."""
    row, col = meta["pixel_spacing"]
    affine = torch.diag(torch.tensor([row, col, 1.0, 1.0], dtype=torch.float64))
    meta = {
        **dict.fromkeys(SHARED_META_KEYS, ""),
        **meta,
        "filename_or_obj": os.fspath(path),
        "spatial_shape": np.asarray(values.shape),
        "original_channel_dim": "no_channel",
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(values[None])), affine=affine, meta=meta)


class LoadXray(Transform):
    """Load a 2-D X-ray (DICOM, PNG or JPEG) as a ``(1, H, W)`` float32 ``MetaTensor``.

    DICOM goes through the Modality LUT, MONOCHROME1 is inverted (bright = dense), optional VOI;
    see :func:`tea_med.data.dicom.read_dicom`. PNG/JPEG keep their stored 8/16-bit values;
    colour is converted to grey. Files with other endings are read as DICOM (PACS exports
    often have none). The metadata holds ``filename_or_obj``, ``pixel_spacing`` (mm, row and
    column), the affine, and for DICOM the SOP Instance UID; never patient name or ID.

    Args:
        voi: apply the DICOM file's VOI LUT / window (``True`` = first, int = index).
        window: explicit ``(center, width)`` window onto ``[0, 1]`` for DICOM; overrides ``voi``.

    Raises:
        DataError: naming the file and why it cannot be used.
    """

    def __init__(self, *, voi: bool | int = False, window: tuple[float, float] | None = None) -> None:
        self.voi = voi
        self.window = window

    def __call__(self, path: str | os.PathLike[str]) -> MetaTensor:
        path = Path(path)
        name = path.name.lower()
        if name.endswith(NIFTI_SUFFIXES):
            raise DataError(path, "NIfTI is read for masks only; X-ray images must be DICOM, PNG or JPEG")
        if path.suffix.lower() in RASTER_SUFFIXES:
            values, meta = read_raster(path)
        else:
            values, meta = read_dicom(path, voi=self.voi, window=self.window)
        return _to_meta_tensor(values, meta, path)


class LoadMask(Transform):
    """Load a binary lung mask (PNG or NIfTI) as a ``(1, H, W)`` float32 ``MetaTensor`` of 0 / 1."""

    def __call__(self, path: str | os.PathLike[str]) -> MetaTensor:
        path = Path(path)
        values, meta = read_mask(path)
        return _to_meta_tensor(values.astype(np.float32), meta, path)


class LoadXrayd(MapTransform):
    """Dictionary wrapper of :class:`LoadXray` (``keys``) and :class:`LoadMask` (``mask_keys``).

    Each mask must have the spatial shape of the first image key; otherwise a
    :class:`DataError` names both files.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        mask_keys: KeysCollection = (),
        *,
        voi: bool | int = False,
        window: tuple[float, float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_keys = ensure_tuple(mask_keys)
        self.loader = LoadXray(voi=voi, window=window)
        self.mask_loader = LoadMask()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        reference = next((d[k] for k in self.keys if k in d), None)
        for key in self.mask_keys:
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"mask key {key!r} missing from the record; keys: {sorted(map(str, d))}")
            d[key] = self.mask_loader(d[key])
            if reference is not None:
                check_mask_shape(
                    reference.shape[1:],
                    d[key].shape[1:],
                    d[key].meta["filename_or_obj"],
                    reference.meta["filename_or_obj"],
                )
        return d
