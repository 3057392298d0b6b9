"""PNG / JPEG images and PNG / NIfTI masks, and the image-mask shape check."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from SimpleITK import GetImageFromArray, WriteImage

from tea_med.data import DataError, LoadMask, LoadXray, LoadXrayd, read_mask

RNG = np.random.default_rng(7)


def test_png_8_and_16_bit_keep_their_values(tmp_path: Path) -> None:
    a8 = RNG.integers(0, 256, (20, 30)).astype(np.uint8)
    a16 = RNG.integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    np.testing.assert_array_equal(LoadXray()(tmp_path / "a8.png")[0].numpy(), a8)
    np.testing.assert_array_equal(LoadXray()(tmp_path / "a16.png")[0].numpy(), a16)
    img = LoadXray()(tmp_path / "a16.png")
    assert img.shape == (1, 20, 30) and str(img.dtype) == "torch.float32"
    assert img.meta["filename_or_obj"] == str(tmp_path / "a16.png")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_colour_pngs_become_luminance(tmp_path: Path, mode: str) -> None:
    rgb = RNG.integers(0, 256, (16, 12, 3)).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode == "RGBA":
        img = img.convert("RGBA")
    elif mode == "P":
        img = img.quantize(colors=64)
        rgb = np.asarray(img.convert("RGB"))
    img.save(tmp_path / "c.png")
    expected = rgb.astype(np.float64) @ [0.2125, 0.7154, 0.0721]
    np.testing.assert_allclose(LoadXray()(tmp_path / "c.png")[0].numpy(), expected, atol=1e-3)


def test_grey_jpeg_loads_close_to_the_original(tmp_path: Path) -> None:
    smooth = (np.add.outer(np.arange(40), np.arange(50)) * 2).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "x.jpg", quality=95)
    loaded = LoadXray()(tmp_path / "x.jpg")[0].numpy()
    assert np.abs(loaded - smooth).mean() < 2.0


def test_bad_rasters_raise_data_error(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_bytes(b"definitely not a png")
    Image.fromarray(RNG.integers(0, 256, (64, 64)).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 128)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    expected = {"fake.png": "not a PNG/JPEG", "cut.png": "truncated", "anim.png": "multi-frame"}
    for name, reason in expected.items():
        with pytest.raises(DataError, match=reason) as info:
            LoadXray()(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(DataError, match="NIfTI is read for masks only"):
        LoadXray()(tmp_path / "x.nii.gz")


def test_png_mask_is_binarised(tmp_path: Path) -> None:
    mask = np.zeros((10, 14), np.uint8)
    mask[2:6, 3:9] = 255
    mask[7, 1] = 1
    Image.fromarray(mask).save(tmp_path / "m.png")
    loaded = LoadMask()(tmp_path / "m.png")
    np.testing.assert_array_equal(loaded[0].numpy(), (mask > 0).astype(np.float32))


def test_nifti_mask_follows_the_itk_axis_convention(tmp_path: Path) -> None:
    """A mask written by SimpleITK from a (rows, cols) array loads back as (rows, cols)."""
    mask = np.zeros((12, 20), np.uint8)
    mask[1:5, 2:15] = 1
    mask[8:11, 16:19] = 2  # multi-label masks count any non-zero as lung
    WriteImage(GetImageFromArray(mask), str(tmp_path / "m.nii.gz"))
    assert nib.load(tmp_path / "m.nii.gz").shape[:2] == (20, 12)  # NIfTI stores x first
    loaded = LoadMask()(tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(loaded[0].numpy(), (mask > 0).astype(np.float32))


def test_bad_masks_raise_data_error(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.uint8), np.eye(4)), tmp_path / "vol.nii.gz")
    nan = np.ones((8, 8), np.float32)
    nan[2, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii")
    (tmp_path / "m.tif").write_bytes(b"x")
    for name, reason in {
        "vol.nii.gz": "3-D mask",
        "nan.nii": "NaN or Inf",
        "m.tif": "unsupported mask file",
    }.items():
        with pytest.raises(DataError, match=reason):
            read_mask(tmp_path / name)


def test_mask_shape_must_match_its_image(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((20, 31), np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "ok.png")
    load = LoadXrayd("image", mask_keys="mask")
    out = load({"image": tmp_path / "img.png", "mask": tmp_path / "ok.png", "label": 2})
    assert out["mask"].shape == out["image"].shape and out["label"] == 2
    with pytest.raises(DataError) as info:
        load({"image": tmp_path / "img.png", "mask": tmp_path / "mask.png"})
    message = str(info.value)
    assert "mask.png" in message and "img.png" in message and "(20, 31)" in message and "(20, 30)" in message
