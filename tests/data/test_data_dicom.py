"""DICOM reading: numeric round-trips, provenance, and every way a file can be refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import get_encoder
from pydicom.uid import JPEG2000Lossless, RLELossless

from tea_med.data import DataError, LoadXray, read_dicom, write_dicom

RNG = np.random.default_rng(1234)


def _stored(bits: int, signed: bool = False, shape: tuple[int, int] = (37, 53)) -> np.ndarray:
    if signed:
        return RNG.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), shape).astype(np.int16)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return RNG.integers(0, 2**bits, shape).astype(dtype)


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("rescale", [None, (0.5, -1024.0), (2.0, 3.0)])
def test_monochrome2_round_trip_applies_the_modality_lut(tmp_path: Path, bits: int, rescale) -> None:
    stored = _stored(bits)
    slope, intercept = rescale or (None, None)
    path = write_dicom(
        tmp_path / "x.dcm", stored, bits_stored=bits, rescale_slope=slope, rescale_intercept=intercept
    )
    img = LoadXray()(path)
    expected = stored.astype(np.float64) * (slope or 1.0) + (intercept or 0.0)
    assert img.shape == (1, *stored.shape)
    assert img.dtype == np.float32 or str(img.dtype) == "torch.float32"
    np.testing.assert_allclose(img[0].numpy(), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("rescale", [None, (0.5, -1024.0)])
def test_monochrome1_is_inverted_to_the_monochrome2_convention(tmp_path: Path, bits: int, rescale) -> None:
    """The same picture stored as MONOCHROME2 (s) and MONOCHROME1 (max - s) loads identically."""
    stored = _stored(bits)
    top = 2**bits - 1
    slope, intercept = rescale or (None, None)
    common = {"bits_stored": bits, "rescale_slope": slope, "rescale_intercept": intercept}
    mono2 = write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2", **common)
    mono1 = write_dicom(
        tmp_path / "m1.dcm",
        (top - stored.astype(np.int64)).astype(stored.dtype),
        photometric="MONOCHROME1",
        **common,
    )
    a, b = LoadXray()(mono2)[0].numpy(), LoadXray()(mono1)[0].numpy()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-3)
    # brighter stored value in MONOCHROME1 = darker pixel after loading
    i, j = np.unravel_index(np.argmax(stored), stored.shape)
    k, m = np.unravel_index(np.argmin(stored), stored.shape)
    assert b[i, j] > b[k, m]


def test_signed_pixels_and_negative_slope(tmp_path: Path) -> None:
    stored = _stored(12, signed=True)
    path = write_dicom(tmp_path / "s.dcm", stored, bits_stored=12, rescale_slope=-1.5, rescale_intercept=10.0)
    np.testing.assert_allclose(LoadXray()(path)[0].numpy(), stored * -1.5 + 10.0, atol=1e-3)


def test_explicit_and_header_windows(tmp_path: Path) -> None:
    stored = np.array([[0, 100, 200, 300, 400]], dtype=np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, window=(200.0, 201.0))
    # DICOM LINEAR: (x - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1]
    expected = np.clip((stored - 199.5) / 200.0 + 0.5, 0, 1)
    np.testing.assert_allclose(LoadXray(window=(200.0, 201.0))(path)[0].numpy(), expected, atol=1e-6)
    voi = LoadXray(voi=True)(path)[0].numpy()
    assert np.all(np.diff(voi[0]) >= 0) and voi[0, 0] < voi[0, -1]  # monotone VOI output
    raw = LoadXray()(path)[0].numpy()
    np.testing.assert_allclose(raw, stored)  # no VOI unless asked


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode_to_the_same_values(tmp_path: Path, syntax: str) -> None:
    # pylibjpeg-rle and pylibjpeg-openjpeg are declared dependencies: a missing encoder is a failure
    encoder = get_encoder(syntax)
    assert encoder.is_available, f"no encoder for {syntax}: {encoder.missing_dependencies}"
    stored = _stored(12)
    plain = write_dicom(tmp_path / "plain.dcm", stored, bits_stored=12, photometric="MONOCHROME1")
    packed = write_dicom(
        tmp_path / "packed.dcm", stored, bits_stored=12, photometric="MONOCHROME1", transfer_syntax=syntax
    )
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(LoadXray()(packed).numpy(), LoadXray()(plain).numpy())


def test_metadata_is_provenance_without_patient_identity(tmp_path: Path) -> None:
    stored = _stored(12)
    path = write_dicom(
        tmp_path / "p.dcm",
        stored,
        bits_stored=12,
        patient_id="SYN12345",
        pixel_spacing=(0.2, 0.25),
        modality="CR",
    )
    ds = pydicom.dcmread(path)
    img = LoadXray()(path)
    assert img.meta["filename_or_obj"] == str(path)
    assert img.meta["sop_instance_uid"] == ds.SOPInstanceUID
    assert tuple(img.meta["pixel_spacing"]) == (0.2, 0.25)
    np.testing.assert_allclose(img.affine.diagonal()[:2].numpy(), [0.2, 0.25])
    text = repr({k: v for k, v in img.meta.items()})
    assert "SYN12345" not in text and "PHANTOM" not in text
    assert not any("patient" in str(k).lower() for k in img.meta)


def _write_raw(tmp_path: Path, name: str, **changes) -> Path:
    path = write_dicom(tmp_path / name, _stored(12), bits_stored=12)
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_refusals_name_the_file_and_the_reason(tmp_path: Path) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    text = tmp_path / "notes.dcm"
    text.write_text("this is not DICOM at all\n")
    cases["not dicom"] = (text, "not a DICOM file")
    cases["missing"] = (tmp_path / "absent.dcm", "cannot be read")
    cases["no pixels"] = (_write_raw(tmp_path, "nopix.dcm", PixelData=None), "no pixel data")
    cases["photometric"] = (
        _write_raw(tmp_path, "pal.dcm", PhotometricInterpretation="PALETTE COLOR"),
        "unsupported photometric interpretation 'PALETTE COLOR'",
    )
    cases["nan"] = (_write_raw(tmp_path, "inf.dcm", RescaleSlope="1e300", RescaleIntercept="0"), "NaN or Inf")

    truncated = write_dicom(tmp_path / "trunc.dcm", _stored(16, shape=(64, 64)), bits_stored=16)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 1000])
    cases["truncated"] = (truncated, "truncated pixel data")

    ds = pydicom.dcmread(write_dicom(tmp_path / "mf.dcm", _stored(12), bits_stored=12))
    ds.set_pixel_data(np.stack([_stored(12)] * 3), "MONOCHROME2", 12, generate_instance_uid=False)
    ds.save_as(tmp_path / "mf.dcm")
    cases["multi-frame"] = (tmp_path / "mf.dcm", "multi-frame image (3 frames)")

    for name, (path, reason) in cases.items():
        with pytest.raises(DataError) as info:
            LoadXray()(path)
        assert str(path) in str(info.value), name
        assert reason in str(info.value), (name, str(info.value))
        assert isinstance(info.value, ValueError)
        assert info.value.path == str(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about its deliberately odd files
def test_every_pydicom_test_file_loads_or_raises_data_error() -> None:
    files = pydicom.data.get_testdata_files()
    assert files, "pydicom's bundled test files are missing"
    loaded, refused = 0, 0
    for name in files:
        try:
            img = LoadXray()(name)
        except DataError as exc:
            assert exc.path == name
            refused += 1
            continue
        assert img.ndim == 3 and img.shape[0] == 1
        assert str(img.dtype) == "torch.float32"
        assert bool(img.isfinite().all())
        loaded += 1
    # the bundle holds both usable images and files that must be refused
    assert loaded >= 10 and refused >= 10, (loaded, refused)


def test_read_dicom_colour_is_converted_to_grey() -> None:
    local = [f for f in pydicom.data.get_testdata_files("SC_rgb_rle.dcm") if f.endswith("SC_rgb_rle.dcm")]
    assert local, "pydicom's bundled RGB test file SC_rgb_rle.dcm is missing"  # shipped with pydicom
    name = local[0]
    values, meta = read_dicom(name)
    rgb = pydicom.dcmread(name).pixel_array.astype(np.float64)
    np.testing.assert_allclose(values, rgb @ [0.2125, 0.7154, 0.0721], atol=1e-3)
    assert meta["photometric_interpretation"] == "RGB"
