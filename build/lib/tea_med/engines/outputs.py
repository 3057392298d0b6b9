"""``output_transform``s that adapt MONAI engine outputs to ignite metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.metrics import Average
from monai.handlers import from_engine


def class_scores_and_index(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [B, K], class index [B])`` from decollated ``pred`` and (one-hot or index) ``label``.

    For ignite's multiclass ``Accuracy`` when the post-processing one-hot encodes labels for
    MONAI's ``ROCAUC``.
    """
    pred, label = from_engine(["pred", "label"])(output)
    scores = torch.stack([torch.as_tensor(p).reshape(-1) for p in pred])
    labels = torch.stack([torch.as_tensor(y).reshape(-1) for y in label])
    index = labels.argmax(1) if labels.shape[1] > 1 else labels[:, 0].long()
    return scores, index


def per_item(key: str) -> Callable[[Any], torch.Tensor]:
    """``output_transform`` giving ``key`` of every decollated item as a ``[B, 1]`` tensor, the
    shape ignite's ``Average`` reads as B samples (see :class:`ItemAverage`)."""

    def transform(output: Any) -> torch.Tensor:
        return torch.stack([torch.as_tensor(item[key], dtype=torch.float64).reshape(1) for item in output])

    return transform


class ItemAverage(Average):
    """ignite ``Average`` over items that reports a float (MONAI compares key metrics as numbers)."""

    def compute(self) -> float:
        return float(torch.as_tensor(super().compute()).reshape(-1)[0])


def student_scores_and_teacher_class(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student scores [B, K], teacher's class [B])``: ignite ``Accuracy`` then measures agreement."""
    scores = torch.stack([torch.as_tensor(item["pred"]).reshape(-1) for item in output])
    teacher = torch.stack([torch.as_tensor(item["teacher"]).reshape(-1) for item in output])
    return scores, teacher.argmax(1)
