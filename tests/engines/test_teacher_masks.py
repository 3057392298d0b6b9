"""The teacher's lung masks computed once per training image: saved in the image's geometry so
that the training chain's nearest-neighbour resize gives back the segmenter's mask exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Resized

from tea_med.data import train_transforms
from tea_med.data.phantom_files import write_phantoms
from tea_med.engines.teacher_masks import teacher_mask_datalist, upsample_for_nearest
from tea_med.networks import TeacherPipeline, densenet121, lung_segmenter


@pytest.mark.parametrize("shape", [(37, 50), (300, 224), (32, 32), (129, 33)])
def test_an_enlarged_mask_resizes_back_to_itself(shape: tuple[int, int]) -> None:
    mask = (np.random.default_rng(0).random((32, 32)) > 0.5).astype(np.uint8)
    big = upsample_for_nearest(mask, shape)
    assert big.shape == shape
    back = Resized("m", (32, 32), mode="nearest")({"m": torch.as_tensor(big)[None].float()})["m"]
    np.testing.assert_array_equal(np.asarray(back[0]), mask)  # MONAI's resize undoes it exactly


@pytest.fixture
def phantoms(tmp_path: Path) -> Path:
    write_phantoms(
        tmp_path / "ph", n=4, size=48, seed=3, formats=("png",), grid=False, overwrite=True, progress=False
    )
    return tmp_path / "ph"


def test_masks_are_the_teachers_on_the_training_chains_images_and_are_reused(
    phantoms: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    teacher = TeacherPipeline(lung_segmenter("small"), densenet121(num_classes=3)).eval()
    datalist = phantoms / "datalist_png.json"
    out = tmp_path / "masks"
    derived = Path(teacher_mask_datalist(datalist, teacher, out, image_size=32, progress=False))
    manifest = json.loads(derived.read_text())
    original = json.loads(datalist.read_text())
    assert all("teacher_mask" in r for r in manifest["training"])
    assert not any("teacher_mask" in r for r in manifest["validation"])
    assert [len(manifest[s]) for s in original if s != "labels"] == [
        len(v) for k, v in original.items() if k != "labels"
    ]

    chain = train_transforms(32, mask_key="teacher_mask", augment=False)  # the bundle's chain, unaugmented
    plain = train_transforms(32, augment=False)
    for rec in manifest["training"]:
        carried = chain(dict(rec))["teacher_mask"]
        x = torch.as_tensor(plain(dict(rec))["image"]).as_subclass(torch.Tensor)[None]
        with torch.no_grad():
            expected = (torch.sigmoid(teacher.segmenter(x)) > teacher.threshold).float()[0]
        assert 0 < float(expected.mean()) < 1  # lung and background: a mask worth carrying
        torch.testing.assert_close(
            torch.as_tensor(carried).as_subclass(torch.Tensor), expected, rtol=0, atol=0
        )

    written = {p: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    assert teacher_mask_datalist(datalist, teacher, out, image_size=32, progress=False) == str(derived)
    assert {p: p.stat().st_mtime_ns for p in (out / "masks").iterdir()} == written  # reused, not rewritten
    with torch.no_grad():
        next(teacher.segmenter.parameters()).mul_(-1)  # another segmenter: recomputed
    teacher_mask_datalist(datalist, teacher, out, image_size=32, progress=False)
    assert any(p.stat().st_mtime_ns != t for p, t in written.items())
    assert teacher_mask_datalist(datalist, teacher, out, image_size=32, enabled=False) == str(datalist)
