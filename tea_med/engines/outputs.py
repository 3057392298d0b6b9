"""``output_transform``s that adapt MONAI engine outputs to ignite metrics."""

from __future__ import annotations

from typing import Any

import torch
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
