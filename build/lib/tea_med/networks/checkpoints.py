"""Loading weights saved by MONAI's ``CheckpointSaver`` (``{"model": state_dict}``) or plain state dicts."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def load_weights(module: nn.Module, path: str | os.PathLike[str], key: str = "model") -> nn.Module:
    """Load ``path`` into ``module`` (strict), with errors that name the file and what to run.

    Accepts a checkpoint dict holding ``key`` (MONAI ``CheckpointSaver``) or a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train it first (for the teacher bundle, from its folder: "
            "`python -m monai.bundle run --config_file "
            "\"['configs/common.yaml','configs/train_segmenter.yaml']\" --dataset_dir DIR` writes "
            "models/segmenter.pt, the same with configs/train_classifier.yaml writes models/model.pt)"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get(key, checkpoint) if isinstance(checkpoint, dict) else checkpoint
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise RuntimeError(
            f"checkpoint {path} does not fit {type(module).__name__} (wrong profile or size?): {err}"
        ) from err
    return module
