"""Reading one 2-D DICOM X-ray into a float array in the MONOCHROME2 convention.

Only non-identifying provenance is returned: the file path, the SOP Instance UID and technical
attributes. Patient Name / Patient ID are never read into the metadata, logged or printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import get_expected_length
from skimage.color import rgb2gray

from tea_med.data.errors import DataError

__all__ = ["COLOUR_PHOTOMETRIC", "GREY_PHOTOMETRIC", "read_dicom", "stored_value_range"]

#: photometric interpretations whose values are used as they are (MONOCHROME1 is inverted)
GREY_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
#: colour encodings accepted and converted to grey (pydicom decodes YBR to RGB first)
COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_SUPPORTED_BITS = (8, 16)


def _open(path: Path) -> Dataset:
    """Parse the file; files without the 128-byte preamble are accepted if they hold an image."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise DataError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    # legacy files without preamble / meta header: accept only if they parse into an image header
    try:
        ds = pydicom.dcmread(path, force=True)
        looks_like_image = "PixelData" in ds or ("Rows" in ds and "Columns" in ds)
    except Exception as exc:
        raise DataError(path, f"not a DICOM file ({type(exc).__name__}: {exc})") from exc
    if not looks_like_image:
        raise DataError(path, "not a DICOM file (no DICOM preamble and no image attributes)")
    return ds


def _transfer_syntax(ds: Dataset) -> pydicom.uid.UID | None:
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID")


def stored_value_range(ds: Dataset) -> tuple[int, int]:
    """The smallest and largest stored pixel value allowed by BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _check_header(path: Path, ds: Dataset) -> str:
    """Refuse what cannot be a single 2-D grey image; return the photometric interpretation."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DataError(path, "has float pixel data; only integer Pixel Data (8-16 bit) is supported")
        raise DataError(path, "no pixel data (Pixel Data element (7FE0,0010) is absent)")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise DataError(path, "no Photometric Interpretation (0028,0004)")
    if photometric not in GREY_PHOTOMETRIC + COLOUR_PHOTOMETRIC:
        allowed = ", ".join(GREY_PHOTOMETRIC + COLOUR_PHOTOMETRIC)
        raise DataError(path, f"unsupported photometric interpretation {photometric!r}; allowed: {allowed}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(path, f"multi-frame image ({frames} frames) where a single 2-D image is expected")
    bits = ds.get("BitsAllocated")
    if bits not in _SUPPORTED_BITS:
        raise DataError(path, f"unsupported Bits Allocated {bits}; supported: 8 or 16")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise DataError(path, f"invalid image size Rows={rows} Columns={cols}")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected_samples = 1 if photometric in GREY_PHOTOMETRIC else 3
    if samples != expected_samples:
        raise DataError(path, f"{photometric} with Samples per Pixel {samples}; expected {expected_samples}")
    tsyntax = _transfer_syntax(ds)
    if tsyntax is not None and not tsyntax.is_compressed:
        expected = get_expected_length(ds, unit="bytes")
        found = len(ds.PixelData)
        if found < expected:
            raise DataError(path, f"truncated pixel data: {found} of {expected} bytes present")
    return photometric


#: exceptions that stop the process on purpose and are never turned into a :class:`DataError`
_INTERRUPTS = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    try:
        return ds.pixel_array
    except _INTERRUPTS:
        raise
    # decoder plugins raise assorted types, and a Rust decoder's panic (pyo3's PanicException)
    # derives from BaseException only: every one of them means these pixel data cannot be used
    except BaseException as exc:
        name = getattr(_transfer_syntax(ds), "name", "unknown transfer syntax")
        raise DataError(path, f"cannot decode pixel data ({name}): {type(exc).__name__}: {exc}") from exc


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM LINEAR window (PS3.3 C.11.2.1.2.1) onto [0, 1]."""
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if np.isfinite([row, col]).all() and row > 0 and col > 0:
            return (row, col), keyword
    return (1.0, 1.0), "default"


def read_dicom(
    path: str | os.PathLike[str],
    *,
    voi: bool | int = False,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a single-frame DICOM image as a 2-D float32 array, bright = dense (MONOCHROME2).

    The Modality LUT (or Rescale Slope/Intercept) is always applied. MONOCHROME1 images are
    inverted within the range the stored bit depth allows after the Modality (and VOI) LUT, so
    values keep their scale. Colour encodings are decoded to RGB and converted to luminance.

    Args:
        path: the DICOM file.
        voi: apply the file's VOI LUT or window (``True`` = the first, an int = that index).
        window: an explicit ``(center, width)`` LINEAR window onto ``[0, 1]``; overrides ``voi``.

    Returns:
        ``(array, meta)``: the ``(rows, columns)`` float32 array and non-identifying metadata
        (``pixel_spacing`` (row, column) in mm, ``sop_instance_uid``, ``modality``, ...).

    Raises:
        DataError: the file is unreadable, not DICOM, has no or truncated pixel data, is
            multi-frame, has an unsupported photometric interpretation or bit depth, or gives
            non-finite values; every failure of pydicom or of a pixel decoder on a corrupt file
            (including a Rust decoder's panic) becomes a ``DataError`` too.
    """
    path = Path(path)
    try:
        return _read(path, voi, window)
    except (DataError, *_INTERRUPTS):
        raise
    except BaseException as exc:  # a corrupt element can fail anywhere it is first accessed
        raise DataError(path, f"malformed DICOM file ({type(exc).__name__}: {exc})") from exc


def _read(
    path: Path, voi: bool | int, window: tuple[float, float] | None
) -> tuple[np.ndarray, dict[str, Any]]:
    ds = _open(path)
    try:
        photometric = _check_header(path, ds)
    except DataError:
        raise
    except Exception as exc:  # a malformed element only fails when it is accessed
        raise DataError(path, f"malformed DICOM header ({type(exc).__name__}: {exc})") from exc
    pixels = _decode(path, ds)

    if photometric in COLOUR_PHOTOMETRIC:
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise DataError(path, f"colour pixel array of shape {pixels.shape}; expected (rows, cols, 3)")
        values = rgb2gray(pixels.astype(np.float32))
        value_range = (float(values.min()), float(values.max()))
    else:
        if pixels.ndim != 2:
            raise DataError(path, f"{pixels.ndim}-D pixel array {pixels.shape} where 2-D is expected")
        # a corrupt slope or intercept overflows to inf or nan, which is refused below
        with np.errstate(over="ignore", invalid="ignore"):
            lo_stored, hi_stored = stored_value_range(ds)
            try:
                values = apply_modality_lut(pixels, ds)
                # the value range after the LUT, for the MONOCHROME1 inversion
                full = apply_modality_lut(np.arange(lo_stored, hi_stored + 1, dtype=np.int64), ds)
            except Exception as exc:
                raise DataError(
                    path, f"invalid Modality LUT / rescale ({type(exc).__name__}: {exc})"
                ) from exc
            value_range = (float(np.min(full)), float(np.max(full)))
            if window is not None:
                values = _window(np.asarray(values, dtype=np.float64), float(window[0]), float(window[1]))
                value_range = (0.0, 1.0)
            elif voi is not False:
                index = 0 if voi is True else int(voi)
                try:
                    values = apply_voi_lut(values, ds, index=index)
                    ends = apply_voi_lut(np.asarray(value_range, dtype=np.float64), ds, index=index)
                except Exception as exc:
                    raise DataError(path, f"invalid VOI LUT / window ({type(exc).__name__}: {exc})") from exc
                value_range = (float(np.min(ends)), float(np.max(ends)))
            if photometric == "MONOCHROME1":
                values = (value_range[0] + value_range[1]) - np.asarray(values, dtype=np.float64)

    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
        values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise DataError(path, "pixel values contain NaN or Inf after the Modality/VOI LUT")
    spacing, spacing_source = _spacing(ds)
    meta: dict[str, Any] = {
        "source_format": "dicom",
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "modality": str(ds.get("Modality", "")),
        "photometric_interpretation": photometric,
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        "transfer_syntax": str(_transfer_syntax(ds) or ""),
        "pixel_spacing": spacing,
        "pixel_spacing_source": spacing_source,
        "value_range": value_range,
    }
    return values, meta
