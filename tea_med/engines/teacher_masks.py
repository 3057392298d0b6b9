"""The teacher's lung masks computed once per training image, before TEA training.

The teacher explains its classifier on the masked image, so every TEA step used to run the
teacher's lung segmenter on the augmented batch (15 % of a step at 224 px with the paper-size
U-Net). :func:`teacher_mask_datalist` runs it once per training image instead, on the
un-augmented image as the training chain prepares it (load, equalise, resize, replicate), and
writes each mask as a PNG in the image's own geometry, so that the training chain loads it with
the image and carries it through the same resize, affine and flip (nearest neighbour): the
student bundle's ``teacher_masks: true``. ``TEATrainStep(mask_key=...)`` then hands the mask to
the teacher instead of running the segmenter.

The mask is saved so that the chain's nearest-neighbour resize gives back exactly the mask the
segmenter computed (:func:`upsample_for_nearest`). What changes against the per-step segmenter
is only where the segmentation happens: before the augmentation instead of after it
(``benchmarks/tea_speed.py`` measures what that does to the teacher's heatmaps).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tea_med.engines.distributed import rank, world_size

logger = logging.getLogger(__name__)

#: the record key of the teacher's lung mask in the derived datalist
MASK_KEY = "teacher_mask"


def _source_index(n_in: int, n_out: int) -> torch.Tensor:
    """The input index that torch's nearest-neighbour resize (MONAI ``Resized(mode="nearest")``)
    reads for each of the ``n_out`` output indices."""
    idx = torch.arange(n_in, dtype=torch.float64).view(1, 1, n_in)
    return F.interpolate(idx, size=n_out, mode="nearest").view(-1).round().long()


def upsample_for_nearest(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``mask`` (``size x size``) enlarged to ``shape`` so that a nearest-neighbour resize back to
    the mask's size returns ``mask`` exactly (when ``shape`` is at least the mask's size; for a
    smaller ``shape`` the result is the nearest-neighbour approximation)."""
    out_axes = []
    for n_in, n_out in zip(shape, mask.shape, strict=True):
        src = _source_index(int(n_in), int(n_out)).numpy()
        # each original index takes the last output index that reads at or before it
        out_axes.append(np.clip(np.searchsorted(src, np.arange(n_in), side="right") - 1, 0, n_out - 1))
    return mask[np.ix_(out_axes[0], out_axes[1])]


def _fingerprint(datalist: str, teacher: nn.Module, image_size: int, num_bins: int, split: str) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [os.path.abspath(datalist), os.path.getmtime(datalist), image_size, num_bins, split]
        ).encode()
    )
    h.update(repr(float(getattr(teacher, "threshold", 0.0))).encode())
    for name, t in getattr(teacher, "segmenter", teacher).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def teacher_mask_datalist(
    datalist: str | os.PathLike[str],
    teacher: nn.Module,
    directory: str | os.PathLike[str],
    *,
    image_size: int,
    num_bins: int = 256,
    split: str = "training",
    batch_size: int = 16,
    enabled: bool = True,
    progress: bool = True,
) -> str:
    """A datalist whose ``split`` records carry the teacher's lung mask (``teacher_mask``).

    Args:
        datalist: the manifest the bundle trains on.
        teacher: a ``TeacherPipeline`` (its ``lung_mask``: segmenter, sigmoid, threshold).
        directory: where ``masks/NNNNNN.png``, ``datalist.json`` (every split, absolute paths)
            and ``fingerprint.json`` go. Masks are reused while the datalist file, the
            segmenter's weights, its threshold, ``image_size``, ``num_bins`` and ``split`` are
            unchanged (a resumed run does not recompute them), and recomputed otherwise. Under
            ``torchrun`` rank 0 writes them while the other ranks wait.
        image_size, num_bins: those of the training chain.
        enabled: ``False`` returns ``datalist`` itself (masks off: the segmenter runs per step).

    Returns:
        the path of the datalist to train on.
    """
    if not enabled:
        return os.fspath(datalist)
    if not hasattr(teacher, "lung_mask"):
        raise TypeError(
            f"teacher_masks needs a TeacherPipeline (with a lung segmenter), got {type(teacher).__name__}"
        )
    datalist = os.fspath(datalist)
    out = Path(directory)
    if world_size() > 1:  # under torchrun rank 0 writes the masks while the other ranks wait
        if rank() == 0:
            _write_masks(datalist, teacher, out, image_size, num_bins, split, batch_size, progress)
        dist.barrier()
    else:
        _write_masks(datalist, teacher, out, image_size, num_bins, split, batch_size, progress)
    return os.fspath(out / "datalist.json")


def _write_masks(
    datalist: str,
    teacher: nn.Module,
    out: Path,
    image_size: int,
    num_bins: int,
    split: str,
    batch_size: int,
    progress: bool,
) -> None:
    from tea_med.data import LoadXrayd, train_transforms
    from tea_med.data.manifest import load_datalist, read_manifest, split_names

    target = out / "datalist.json"
    stamp = out / "fingerprint.json"
    fingerprint = _fingerprint(datalist, teacher, image_size, num_bins, split)
    if (
        target.is_file()
        and stamp.is_file()
        and json.loads(stamp.read_text()).get("fingerprint") == fingerprint
    ):
        logger.info("teacher lung masks: reusing %s", target)
        return

    manifest = read_manifest(datalist)
    derived: dict[str, Any] = {k: v for k, v in manifest.items() if k not in split_names(manifest)}
    for name in split_names(manifest):  # every split with absolute paths, so the copy works from anywhere
        derived[name] = load_datalist(datalist, name)
    load = LoadXrayd("image")
    prepare = train_transforms(image_size, load=False, augment=False, num_bins=num_bins)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    records = derived[split]
    device = next(teacher.parameters()).device
    from tqdm.auto import tqdm

    bar = tqdm(total=len(records), desc="teacher lung masks", unit="image", disable=not progress)
    was_training = teacher.training
    teacher.eval()
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            shapes, images = [], []
            for rec in chunk:
                loaded = load({"image": rec["image"]})
                shapes.append(tuple(loaded["image"].shape[1:]))
                images.append(torch.as_tensor(prepare(loaded)["image"]).as_subclass(torch.Tensor))
            with torch.no_grad():
                masks = teacher.lung_mask(torch.stack(images).to(device))  # type: ignore[operator]
            for i, (rec, shape) in enumerate(zip(chunk, shapes, strict=True)):
                mask = masks[i, 0].cpu().numpy().astype(np.uint8)
                path = out / "masks" / f"{start + i:06d}.png"
                Image.fromarray(upsample_for_nearest(mask, shape) * np.uint8(255)).save(path)
                rec[MASK_KEY] = os.fspath(path.absolute())
            bar.update(len(chunk))
    finally:
        teacher.train(was_training)
        bar.close()
    target.write_text(json.dumps(derived, indent=1))
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "datalist": os.path.abspath(datalist)}))
    logger.info("teacher lung masks: %d written to %s", len(records), out / "masks")


__all__ = ["MASK_KEY", "teacher_mask_datalist", "upsample_for_nearest"]
