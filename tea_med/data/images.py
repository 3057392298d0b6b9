"""Reading PNG / JPEG exports (8- or 16-bit grey, colour converted to grey) as float arrays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage.color import rgb2gray

from tea_med.data.errors import DataError

__all__ = ["RASTER_SUFFIXES", "read_raster"]

#: file name endings read with Pillow (anything else is tried as DICOM)
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "1")


def read_raster(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG or JPEG image as a 2-D float32 array of its stored grey values.

    8-bit files keep 0..255, 16-bit files 0..65535 (no rescaling). Colour images (RGB, RGBA,
    palette, CMYK, ...) are converted to luminance (``skimage.color.rgb2gray`` weights on the
    stored values); alpha is ignored. The pixel spacing of exports is unknown: ``(1.0, 1.0)``.

    Raises:
        DataError: unreadable or not an image, truncated, animated / multi-page, or non-finite.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames != 1:
                raise DataError(path, f"multi-frame image ({frames} frames) where one 2-D image is expected")
            img.load()
            mode = img.mode
            if mode in _GREY_MODES:
                values = np.asarray(img)
            elif mode == "LA":
                values = np.asarray(img.getchannel("L"))
            else:
                rgb = np.asarray(img if mode in ("RGB", "RGBA") else img.convert("RGB"))[..., :3]
                values = rgb2gray(rgb.astype(np.float32))
            fmt = img.format or path.suffix.lstrip(".").upper()
    except DataError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except UnidentifiedImageError as exc:
        raise DataError(path, "not a PNG/JPEG image (Pillow cannot identify it)") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's truncated / corrupt-data errors
        raise DataError(path, f"corrupt or truncated image ({exc})") from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # any other decoder failure (e.g. a decompression bomb)
        raise DataError(path, f"cannot be decoded ({type(exc).__name__}: {exc})") from exc
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise DataError(path, f"{values.ndim}-D pixel array of shape {values.shape} where 2-D is expected")
    if not np.isfinite(values).all():
        raise DataError(path, "pixel values contain NaN or Inf")
    meta: dict[str, Any] = {
        "source_format": str(fmt).lower(),
        "mode": mode,
        "pixel_spacing": (1.0, 1.0),
        "pixel_spacing_source": "default",
    }
    return values, meta
