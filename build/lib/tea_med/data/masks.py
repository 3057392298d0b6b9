"""Reading binary lung masks from PNG or NIfTI and checking them against their image."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tea_med.data.errors import DataError
from tea_med.data.images import RASTER_SUFFIXES, read_raster

__all__ = ["MASK_SUFFIXES", "NIFTI_SUFFIXES", "check_mask_shape", "read_mask"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MASK_SUFFIXES = (".png", *NIFTI_SUFFIXES)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _read_nifti(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        # a SpatialImage (Nifti1Image, ...) for NIfTI; nibabel annotates load() with FileBasedImage and
        # types .header as FileBasedHeader, which has no get_zooms()
        img: Any = nib.load(path)
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:2])
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise DataError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    # drop trailing singleton axes (x, y, 1) -> (x, y); anything else beyond 2-D is refused
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise DataError(path, f"{data.ndim}-D mask of shape {data.shape} where a 2-D mask is expected")
    # NIfTI / ITK order is (x = column, y = row): transpose to (rows, columns)
    meta = {"source_format": "nifti", "pixel_spacing": (zooms[1], zooms[0]), "pixel_spacing_source": "nifti"}
    return np.asarray(data).T, meta


def read_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a lung mask as a ``(rows, columns)`` uint8 array of 0 / 1 (any non-zero is lung).

    PNG masks are read in image order. NIfTI masks follow the NIfTI/ITK convention that array
    axis 0 is x (columns) and axis 1 is y (rows), as written by SimpleITK, ITK-SNAP or MONAI's
    ``SaveImage``; they are transposed to ``(rows, columns)``.

    Raises:
        DataError: unreadable, unsupported file type, 3-D, or non-finite values.
    """
    path = Path(path)
    if _is_nifti(path):
        values, meta = _read_nifti(path)
    elif path.suffix.lower() in RASTER_SUFFIXES:
        values, meta = read_raster(path)
    else:
        allowed = ", ".join(MASK_SUFFIXES)
        raise DataError(path, f"unsupported mask file type {path.suffix!r}; allowed: {allowed}")
    values = np.asarray(values)
    if not np.isfinite(values).all():
        raise DataError(path, "mask contains NaN or Inf")
    return (values != 0).astype(np.uint8), meta


def check_mask_shape(
    image_shape: Sequence[int],
    mask_shape: Sequence[int],
    mask_path: str | os.PathLike[str] | None,
    image_path: str | os.PathLike[str] | None = None,
) -> None:
    """Raise :class:`DataError` naming both files unless the spatial shapes are equal."""
    if tuple(image_shape) != tuple(mask_shape):
        against = f" of image {os.fspath(image_path)}" if image_path is not None else ""
        raise DataError(
            mask_path,
            f"mask shape {tuple(mask_shape)} differs from the shape {tuple(image_shape)}{against}",
        )
