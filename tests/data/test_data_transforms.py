"""Preprocessing chains (docs/method.md, section 7) and the teacher's background-noise transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import HistogramNormalize, RandAffined
from PIL import Image

from tea_med.data import (
    HistogramEqualize,
    MaskBackgroundNoise,
    PadToSquare,
    eval_transforms,
    preprocess_transforms,
    test_transforms,
    train_transforms,
    write_dicom,
)

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("shape", [(1, 64, 48), (1, 300, 200)])
def test_histogram_equalize_matches_monai(shape: tuple[int, ...]) -> None:
    x = (RNG.gamma(2.0, 300.0, shape) - 400).astype(np.float32)
    ours = HistogramEqualize()(MetaTensor(torch.from_numpy(x)))
    reference = HistogramNormalize(num_bins=256, min=0, max=1)(x)
    np.testing.assert_allclose(ours.numpy(), np.asarray(reference), atol=1e-4)
    assert float(ours.min()) == 0.0 and float(ours.max()) == 1.0
    assert isinstance(ours, MetaTensor)


def test_histogram_equalize_flattens_the_histogram() -> None:
    x = torch.from_numpy(RNG.exponential(1.0, (1, 128, 128)).astype(np.float32))
    counts = torch.histc(HistogramEqualize()(x), bins=8, min=0, max=1)
    assert counts.min() / counts.max() > 0.6  # near uniform (the input is very skewed)
    assert torch.all(HistogramEqualize()(torch.full((1, 4, 4), 5.0)) == 0)


def test_pad_to_square_centres_the_image_on_black() -> None:
    img = torch.arange(2 * 6, dtype=torch.float32).reshape(1, 2, 6) + 10
    out = PadToSquare()(img)
    assert out.shape == (1, 6, 6)
    torch.testing.assert_close(out[:, 2:4, :], img)
    assert torch.all(out[:, :2] == 10) and torch.all(out[:, 4:] == 10)  # the image minimum = black
    assert torch.all(PadToSquare(value=0)(img)[:, :2] == 0)


def _files(tmp_path: Path, rows: int = 80, cols: int = 120) -> dict[str, str]:
    stored = RNG.integers(100, 4000, (rows, cols)).astype(np.uint16)
    write_dicom(tmp_path / "x.dcm", stored, bits_stored=12, photometric="MONOCHROME1")
    mask = np.zeros((rows, cols), np.uint8)
    mask[20:60, 30:90] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    return {"image": str(tmp_path / "x.dcm"), "mask": str(tmp_path / "m.png"), "label": 1}


@pytest.mark.parametrize("factory", [train_transforms, eval_transforms, test_transforms])
@pytest.mark.parametrize("size", [32, 64])
def test_chains_output_three_channel_unit_range_tensors(tmp_path: Path, factory, size: int) -> None:
    chain = factory(size, mask_key="mask")
    chain.set_random_state(0)
    out = chain(_files(tmp_path))
    image, mask = out["image"], out["mask"]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    torch.testing.assert_close(image[0], image[2])
    assert mask.shape == (1, size, size)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    assert out["label"] == 1


def test_test_chain_pads_to_square_first(tmp_path: Path) -> None:
    record = _files(tmp_path, rows=40, cols=120)  # wide: padded top and bottom
    padded = test_transforms(60, mask_key="mask")(record)
    stretched = eval_transforms(60, mask_key="mask")(record)
    assert torch.all(padded["image"][:, :15] == 0) and torch.all(padded["image"][:, -15:] == 0)
    assert float(stretched["image"][:, :15].mean()) > 0.2
    # the mask keeps its aspect: 20 of 40 rows -> 10 of 60 output rows when padded
    assert int(padded["mask"][0, :, 30].sum()) == pytest.approx(10, abs=1)
    assert int(stretched["mask"][0, :, 30].sum()) == pytest.approx(30, abs=1)


def test_augmentation_ranges_follow_the_paper_and_the_resolution() -> None:
    for size in (224, 112):
        affine = next(t for t in train_transforms(size).transforms if isinstance(t, RandAffined))
        params = affine.rand_affine.rand_affine_grid
        # MONAI reads a scalar range r as U(-r, r) per axis
        assert tuple(params.translate_range) == pytest.approx((28 * size / 224,) * 2)
        assert tuple(params.rotate_range) == pytest.approx((np.deg2rad(40),))
    assert not any(isinstance(t, RandAffined) for t in eval_transforms(224).transforms)


def test_augmentation_keeps_the_mask_aligned_and_is_seeded(tmp_path: Path) -> None:
    stored = np.full((64, 64), 100, np.uint16)
    stored[16:48, 10:40] = 3000  # bright block = the mask
    write_dicom(tmp_path / "b.dcm", stored, bits_stored=12)
    mask = ((stored > 1000) * 255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "b.png")
    record = {"image": str(tmp_path / "b.dcm"), "mask": str(tmp_path / "b.png")}
    outs = []
    for seed in (0, 0, 1):
        chain = train_transforms(64, mask_key="mask")
        chain.set_random_state(seed)
        outs.append(chain(record))
    for out in outs:
        bright = out["image"][0] > 0.5
        agree = (bright == out["mask"][0].bool()).float().mean()
        assert agree > 0.97
    torch.testing.assert_close(outs[0]["image"], outs[1]["image"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])


def test_horizontal_flip_happens_about_half_the_time() -> None:
    img = torch.zeros(1, 32, 32)
    img[:, :, :4] = 1.0  # a stripe on the left
    chain = preprocess_transforms(32, augment=True, translation=0.0, rotation=0.0, channels=1)
    chain.set_random_state(5)
    flips = 0
    for _ in range(200):
        out = chain(img)
        flips += float(out[0, :, -8:].mean()) > float(out[0, :, :8].mean())
    assert 70 < flips < 130


def test_mask_background_noise_keeps_the_lungs_and_fills_the_rest() -> None:
    img = torch.full((3, 50, 50), 0.25)
    mask = torch.zeros(1, 50, 50)
    mask[:, 10:30, 10:40] = 1
    noise = MaskBackgroundNoise()
    noise.set_random_state(0)
    out = noise(img, mask)
    inside, outside = mask.expand_as(img).bool(), ~mask.expand_as(img).bool()
    assert torch.all(out[inside] == 0.25)
    assert float(out[outside].min()) >= 0.0 and float(out[outside].max()) <= 1.0
    assert abs(float(out[outside].mean()) - 0.5) < 0.02 and abs(float(out[outside].var()) - 1 / 12) < 0.01
    assert not torch.equal(out[0], out[1])  # independent per channel, like torch.rand_like
    assert not torch.equal(noise(img, mask), out)
    with pytest.raises(ValueError, match="mask spatial shape"):
        noise(img, torch.ones(1, 49, 50))


def test_background_noise_in_a_chain_needs_a_mask(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mask_key"):
        train_transforms(64, background_noise=True)
    record = _files(tmp_path)
    out = eval_transforms(32, mask_key="mask", background_noise=True)(record)
    plain = eval_transforms(32, mask_key="mask")(record)
    inside = out["mask"].expand_as(out["image"]).bool()
    torch.testing.assert_close(out["image"][inside], plain["image"][inside])
    assert not torch.equal(out["image"][~inside], plain["image"][~inside])


def test_size_is_validated() -> None:
    with pytest.raises(ValueError, match="size must be an int"):
        train_transforms(4)
