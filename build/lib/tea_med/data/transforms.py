"""Preprocessing transforms and the paper's train / evaluation / test chains (docs/method.md, section 7).

Array transforms do the work; the ``...d`` dictionary transforms only iterate keys. The chain
factories return MONAI ``Compose`` objects over dictionaries (``{"image": path, "mask": path,
...}``), so they plug into ``monai.data.Dataset`` / ``CacheDataset`` and bundle configs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAffine,
    RandAffined,
    RandFlip,
    RandFlipd,
    Randomizable,
    RepeatChannel,
    RepeatChanneld,
    Resize,
    Resized,
    SpatialPad,
    Transform,
)
from monai.utils import TransformBackends, convert_to_tensor

from tea_med.data.loading import LoadXrayd

__all__ = [
    "DEFAULT_SIZE",
    "HistogramEqualize",
    "HistogramEqualized",
    "MaskBackgroundNoise",
    "MaskBackgroundNoised",
    "PadToSquare",
    "PadToSquared",
    "eval_transforms",
    "preprocess_transforms",
    "test_transforms",
    "train_transforms",
]

DEFAULT_SIZE = 224
#: the paper's augmentation at 224 px: translation (px), rotation (degrees), flip probability
PAPER_TRANSLATION_PX = 28.0
PAPER_ROTATION_DEG = 40.0
PAPER_FLIP_PROB = 0.5


def _check_size(size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an int >= 8 (224 default; 32-128 for tests), got {size!r}")
    return size


class HistogramEqualize(Transform):
    """Global histogram equalisation onto ``[minv, maxv]`` (default ``[0, 1]``).

    The same mapping as MONAI's ``HistogramNormalize`` / ``skimage.exposure.equalize_hist``
    (``num_bins`` uniform bins over the image's range, cumulative histogram rescaled to
    ``[minv, maxv]``, linear interpolation between bin centres), computed with torch on uniform
    bins instead of ``np.interp``: about 8x faster on a 2048x2048 radiograph. The lowest pixel
    value maps to ``minv`` and the highest to ``maxv``, so the output is already rescaled; a
    constant image becomes ``minv`` everywhere.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]  # type: ignore[misc]  # MONAI's Transform annotates backend without ClassVar

    def __init__(self, num_bins: int = 256, minv: float = 0.0, maxv: float = 1.0) -> None:
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins, self.min, self.max = int(num_bins), float(minv), float(maxv)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = convert_to_tensor(img, track_meta=get_track_meta(), dtype=torch.float32)
        lo, hi = float(x.min()), float(x.max())
        if not hi > lo:
            return torch.full_like(x, self.min)
        n = self.num_bins
        hist = torch.histc(x.as_tensor() if isinstance(x, MetaTensor) else x, bins=n, min=lo, max=hi)
        cdf = hist.double().cumsum(0)
        cdf = ((cdf - cdf[0]) / (cdf[-1] - cdf[0]) * (self.max - self.min) + self.min).float()
        pos = ((x - lo) * (n / (hi - lo)) - 0.5).clamp_(0, n - 1)  # position among bin centres
        left = pos.floor().long().clamp_(max=n - 2)
        frac = pos - left
        return cdf[left] + frac * (cdf[left + 1] - cdf[left])


class PadToSquare(Transform):
    """Pad a channel-first 2-D image symmetrically to the smallest enclosing square.

    Args:
        value: the fill value; ``None`` fills with the image's minimum, i.e. black in the
            MONOCHROME2 convention whatever the intensity scale (use 0 for masks).
    """

    def __init__(self, value: float | None = None) -> None:
        self.value = value

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        side = max(int(s) for s in img.shape[1:])
        value = float(img.min()) if self.value is None else float(self.value)
        return SpatialPad((side,) * (img.ndim - 1), method="symmetric", mode="constant", value=value)(img)


class PadToSquared(MapTransform):
    """Dictionary wrapper of :class:`PadToSquare` (one fill rule for all ``keys``)."""

    def __init__(self, keys: KeysCollection, value: float | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.pad = PadToSquare(value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.pad(d[key])
        return d


class HistogramEqualized(MapTransform):
    """Dictionary wrapper of :class:`HistogramEqualize`."""

    def __init__(
        self,
        keys: KeysCollection,
        num_bins: int = 256,
        minv: float = 0.0,
        maxv: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.equalize = HistogramEqualize(num_bins, minv, maxv)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.equalize(d[key])
        return d


class MaskBackgroundNoise(Randomizable, Transform):
    """The teacher's input: ``x * mask + U(low, high) * (1 - mask)`` (docs/method.md, section 5).

    The noise is drawn independently for every element of ``img`` (all channels), like
    ``torch.rand_like``; ``mask`` (``(1, H, W)`` or ``img``'s shape, values in [0, 1]) broadcasts
    over channels. Seed with ``set_random_state``.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        if not high > low:
            raise ValueError(f"need low < high for the background noise, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)
        self._noise: np.ndarray | None = None

    def randomize(self, data: tuple[int, ...]) -> None:
        self._noise = self.R.uniform(self.low, self.high, size=data).astype(np.float32)

    def __call__(  # type: ignore[override]  # takes the mask besides Transform.__call__'s data
        self, img: torch.Tensor, mask: torch.Tensor, randomize: bool = True
    ) -> torch.Tensor:
        if tuple(mask.shape[1:]) != tuple(img.shape[1:]):
            raise ValueError(f"mask spatial shape {tuple(mask.shape[1:])} != image {tuple(img.shape[1:])}")
        if randomize or self._noise is None or self._noise.shape != tuple(img.shape):
            self.randomize(tuple(img.shape))
        noise = torch.as_tensor(self._noise, dtype=img.dtype, device=img.device)
        m = torch.as_tensor(mask, dtype=img.dtype, device=img.device)
        return img * m + noise * (1 - m)


class MaskBackgroundNoised(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`MaskBackgroundNoise`: ``keys`` are images, ``mask_key`` their mask."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        low: float = 0.0,
        high: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.mask_key = mask_key
        self.noise = MaskBackgroundNoise(low, high)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> MaskBackgroundNoised:
        super().set_random_state(seed, state)
        self.noise.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # the array transform draws its own noise
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.noise(d[key], d[self.mask_key])
        return d


def _augment_ranges(size: int, translation: float, rotation: float) -> dict[str, Any]:
    shift = translation * size / DEFAULT_SIZE  # ±28 px at 224, scaled with the resolution
    return {"rotate_range": (math.radians(rotation),), "translate_range": (shift, shift)}


def preprocess_transforms(
    size: int = DEFAULT_SIZE,
    *,
    pad_square: bool = False,
    augment: bool = False,
    channels: int = 3,
    num_bins: int = 256,
    translation: float = PAPER_TRANSLATION_PX,
    rotation: float = PAPER_ROTATION_DEG,
    flip_prob: float = PAPER_FLIP_PROB,
) -> Compose:
    """The array chain for one already loaded ``(1, H, W)`` image (no mask).

    ``[pad to square] -> histogram equalisation -> rescale [0, 1] -> resize -> [augment]
    -> replicate to ``channels``. Use it for single images (inference, demos); datasets use
    the dictionary factories below, which keep a mask aligned.
    """
    _check_size(size)
    chain: list[Any] = [PadToSquare()] if pad_square else []
    chain += [
        HistogramEqualize(num_bins=num_bins),  # onto [0, 1]: equalise + rescale
        Resize((size, size), mode="area"),
    ]
    if augment:
        chain += [
            RandAffine(prob=1.0, padding_mode="zeros", **_augment_ranges(size, translation, rotation)),
            RandFlip(prob=flip_prob, spatial_axis=1),
        ]
    if channels != 1:
        chain.append(RepeatChannel(repeats=channels))
    return Compose(chain)


def _dict_chain(
    size: int,
    *,
    image_key: str,
    mask_key: str | None,
    load: bool,
    pad_square: bool,
    augment: bool,
    background_noise: bool,
    channels: int,
    num_bins: int,
    translation: float,
    rotation: float,
    flip_prob: float,
    voi: bool | int,
    window: tuple[float, float] | None,
) -> Compose:
    _check_size(size)
    if background_noise and mask_key is None:
        raise ValueError("background_noise=True needs mask_key (the lung mask to keep)")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    keys = [image_key] if mask_key is None else [image_key, mask_key]
    chain: list[Any] = []
    if load:
        chain.append(LoadXrayd(image_key, () if mask_key is None else (mask_key,), voi=voi, window=window))
    if pad_square:
        chain.append(PadToSquared(image_key))  # black = the image's minimum
        if mask_key is not None:
            chain.append(PadToSquared(mask_key, value=0.0))
    chain += [
        HistogramEqualized(image_key, num_bins=num_bins),  # onto [0, 1]: equalise + rescale
        Resized(keys, (size, size), mode=["area", "nearest"][: len(keys)]),
    ]
    if augment:
        chain += [
            RandAffined(
                keys,
                prob=1.0,
                mode=["bilinear", "nearest"][: len(keys)],
                padding_mode="zeros",
                **_augment_ranges(size, translation, rotation),
            ),
            RandFlipd(keys, prob=flip_prob, spatial_axis=1),
        ]
    if channels != 1:
        chain.append(RepeatChanneld(image_key, repeats=channels))
    if background_noise:
        chain.append(MaskBackgroundNoised(image_key, mask_key=mask_key))  # type: ignore[arg-type]  # checked not None above
    chain.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(chain)


def train_transforms(
    size: int = DEFAULT_SIZE,
    *,
    image_key: str = "image",
    mask_key: str | None = None,
    load: bool = True,
    augment: bool = True,
    background_noise: bool = False,
    channels: int = 3,
    num_bins: int = 256,
    translation: float = PAPER_TRANSLATION_PX,
    rotation: float = PAPER_ROTATION_DEG,
    flip_prob: float = PAPER_FLIP_PROB,
    voi: bool | int = False,
    window: tuple[float, float] | None = None,
) -> Compose:
    """Training chain: load, equalise, rescale, resize, augment, replicate (docs/method.md, section 7).

    Args:
        size: output side in pixels (224 default; 32-128 for tests and the demo).
        image_key, mask_key: dictionary keys; the mask (optional) follows every spatial step
            with nearest-neighbour interpolation and stays 0 / 1.
        load: start with :class:`~tea_med.data.loading.LoadXrayd` (set False when the
            dictionary already holds tensors).
        augment: the paper's augmentation: translation up to ±``translation`` px at 224
            (scaled with ``size``), rotation up to ±``rotation`` degrees, horizontal flip
            with probability ``flip_prob``; empty space is black (0).
        background_noise: end with the teacher's ``x * mask + U(0, 1) * (1 - mask)``.
        channels: replicate the grey channel to this many (3 for ImageNet-style networks).
        num_bins: histogram bins for the global equalisation.
        voi, window: passed to the DICOM reader.
    """
    return _dict_chain(
        size,
        image_key=image_key,
        mask_key=mask_key,
        load=load,
        pad_square=False,
        augment=augment,
        background_noise=background_noise,
        channels=channels,
        num_bins=num_bins,
        translation=translation,
        rotation=rotation,
        flip_prob=flip_prob,
        voi=voi,
        window=window,
    )


def eval_transforms(
    size: int = DEFAULT_SIZE,
    *,
    image_key: str = "image",
    mask_key: str | None = None,
    load: bool = True,
    pad_square: bool = False,
    background_noise: bool = False,
    channels: int = 3,
    num_bins: int = 256,
    voi: bool | int = False,
    window: tuple[float, float] | None = None,
) -> Compose:
    """Evaluation (validation) chain: :func:`train_transforms` without augmentation
    (``pad_square=True``: :func:`test_transforms`)."""
    return _dict_chain(
        size,
        image_key=image_key,
        mask_key=mask_key,
        load=load,
        pad_square=pad_square,
        augment=False,
        background_noise=background_noise,
        channels=channels,
        num_bins=num_bins,
        translation=0.0,
        rotation=0.0,
        flip_prob=0.0,
        voi=voi,
        window=window,
    )


def test_transforms(size: int = DEFAULT_SIZE, **kwargs: Any) -> Compose:
    """Test chain: pad to the smallest enclosing square with black first, then as evaluation
    (same keyword arguments as :func:`eval_transforms`)."""
    return eval_transforms(size, pad_square=True, **kwargs)


# keep pytest from collecting the factory as a test when a test module imports it by name
test_transforms.__test__ = False  # type: ignore[attr-defined]  # a plain attribute pytest reads
