"""Corrupt files never escape ``LoadXray`` as anything but a ``DataError``.

Seeded mutations of pydicom's bundled test files and of CR/DX files written with pydicom: byte
flips in the header and in the pixel data, truncation, and edited Rows / Columns / Bits /
Photometric / Rescale / frame attributes. Each mutated file must either load as a finite
``(1, H, W)`` image or be refused with a ``DataError`` naming it. A Rust decoder's panic
(``pyo3_runtime.PanicException``, a ``BaseException``) or a ``NotImplementedError`` from a
corrupted big-endian file would fail the test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from tea_med.data import LoadXray
from tea_med.data.dicom_writer import write_dicom
from tea_med.data.errors import DataError

#: pydicom's bundled files: uncompressed little/big endian, RLE, JPEG, JPEG-LS, JPEG 2000, no meta
PYDICOM_FILES = (
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "ExplVR_BigEnd.dcm",
    "CT_small.dcm",
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPGExtended.dcm",
    "SC_rgb_rle.dcm",
    "no_meta.dcm",
)
#: attribute edits: keyword -> values a corrupt or hostile file may carry
EDITS: dict[str, tuple[object, ...]] = {
    "Rows": (0, 1, 3, 65535),
    "Columns": (0, 1, 7, 65535),
    "BitsAllocated": (0, 1, 12, 32, 64),
    "BitsStored": (0, 1, 17, 40),
    "HighBit": (0, 31),
    "PixelRepresentation": (1, 2),
    "SamplesPerPixel": (0, 3, 4),
    "PhotometricInterpretation": ("MONOCHROME3", "PALETTE COLOR", "RGB", "", "YBR_FULL"),
    "RescaleSlope": (0, -1, 1e308, "nan"),
    "RescaleIntercept": (1e308, -1e308, "inf"),
    "NumberOfFrames": (0, 2, 1000),
    "PlanarConfiguration": (1, 2),
}
MUTATIONS = 2400


def _sources(folder: Path) -> list[Path]:
    sources = []
    for name in PYDICOM_FILES:
        found = get_testdata_file(name, download=False)
        if found is not None:
            sources.append(Path(str(found)))
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 4096, size=(48, 40), dtype=np.uint16)
    sources.append(
        write_dicom(
            folder / "cr_mono1.dcm",
            pixels,
            photometric="MONOCHROME1",
            bits_stored=12,
            rescale_slope=0.5,
            rescale_intercept=-100.0,
            modality="CR",
        )
    )
    sources.append(write_dicom(folder / "dx_rle.dcm", pixels, bits_stored=12, transfer_syntax=RLELossless))
    return sources


def _pixel_offset(data: bytes) -> int:
    """Where the Pixel Data element starts (little or big endian), else the middle."""
    for tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        at = data.rfind(tag)
        if at > 0:
            return at
    return len(data) // 2


def _mutate(source: Path, data: bytes, rng: np.random.Generator, out: Path) -> str | None:
    """Write one mutation of ``source`` to ``out``; returns its description (None: not writable)."""
    kind = rng.choice(["flip_header", "flip_pixels", "truncate", "edit", "edit"])
    split = _pixel_offset(data)
    if kind in ("flip_header", "flip_pixels"):
        lo, hi = (0, split) if kind == "flip_header" else (split, len(data))
        if hi - lo < 1:
            return None
        buf = bytearray(data)
        positions = rng.integers(lo, hi, size=int(rng.integers(1, 9)))
        for at in positions:
            buf[at] ^= int(rng.integers(1, 256))
        out.write_bytes(bytes(buf))
        return f"{source.name}: {kind} at {sorted(int(a) for a in positions)}"
    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        out.write_bytes(data[:cut])
        return f"{source.name}: truncated to {cut} bytes"
    keyword = str(rng.choice(list(EDITS)))
    values = EDITS[keyword]
    value = values[int(rng.integers(len(values)))]
    try:
        ds = pydicom.dcmread(source, force=True)
        setattr(ds, keyword, value)
        ds.save_as(out, enforce_file_format=False)
    except Exception:  # some edits cannot be encoded for this file (e.g. a VR that refuses the value)
        return None
    return f"{source.name}: {keyword} = {value!r}"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every corrupt element
def test_every_corrupt_file_is_loaded_or_refused_with_a_data_error(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    assert len(sources) >= 8, sources  # the bundled pydicom files must be found
    loader = LoadXray()
    rng = np.random.default_rng(20261201)
    outcomes: Counter[str] = Counter()
    escaped: list[str] = []
    datas = {s: s.read_bytes() for s in sources}
    for i in range(MUTATIONS):
        source = sources[i % len(sources)]
        path = tmp_path / f"m{i:05d}.dcm"
        what = _mutate(source, datas[source], rng, path)
        if what is None:
            outcomes["not written"] += 1
            continue
        try:
            image = loader(path)
        except DataError as err:
            assert str(path) in str(err), f"{what}: the error does not name the file: {err}"
            outcomes["DataError"] += 1
        except BaseException as err:
            escaped.append(f"{what}: {type(err).__module__}.{type(err).__name__}: {err}"[:300])
        else:
            assert image.ndim == 3 and image.shape[0] == 1, f"{what}: shape {tuple(image.shape)}"
            assert bool(np.isfinite(image.numpy()).all()), f"{what}: non-finite values loaded"
            outcomes["loaded"] += 1
        path.unlink()
    assert not escaped, f"{len(escaped)} mutations escaped as other exceptions:\n" + "\n".join(escaped[:20])
    # the mutations must exercise both outcomes, or the test proves nothing
    assert outcomes["loaded"] > MUTATIONS // 20, outcomes
    assert outcomes["DataError"] > MUTATIONS // 4, outcomes


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_panicking_rust_decoder_becomes_a_data_error(tmp_path: Path) -> None:
    """With Columns edited to 7, pylibjpeg-rle indexes past its row buffer and panics
    (``pyo3_runtime.PanicException``, which ``except Exception`` does not catch)."""
    ds = pydicom.dcmread(Path(str(get_testdata_file("MR_small_RLE.dcm", download=False))))
    ds.Columns = 7
    path = tmp_path / "bad_rle.dcm"
    ds.save_as(path)
    with pytest.raises(DataError, match=r"bad_rle\.dcm.*cannot decode pixel data.*PanicException"):
        LoadXray()(path)
