"""The lung segmenter: MONAI ``UNet`` (2-D) with one lung-foreground logit per pixel."""

from __future__ import annotations

import os
from typing import Any

from monai.networks.nets import UNet

#: ``paper``: 31.07M parameters, matching the paper's 31M-parameter U-Net (its teacher has 39M
#: parameters with an 8M DenseNet121). MONAI's residual ``UNet`` is not Ronneberger's U-Net, so the
#: classic widths 64..1024 are scaled by 1.09 to match the count: 64..1024 with two residual
#: units gives 25.97M, three units 38.54M;
#: ``small``: about 52k parameters, for tests and the CPU demo.
SEGMENTER_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"channels": (70, 140, 280, 560, 1120), "strides": (2, 2, 2, 2), "num_res_units": 2},
    "small": {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 1},
}


def lung_segmenter(profile: str = "paper", in_channels: int = 3, **overrides: Any) -> UNet:
    """A 2-D MONAI ``UNet`` that outputs one lung-foreground logit per pixel (``[B, 1, H, W]``).

    Args:
        profile: ``"paper"`` or ``"small"`` (see :data:`SEGMENTER_PROFILES`).
        in_channels: channels of the preprocessed image (3: the grey image replicated).
        overrides: any other ``monai.networks.nets.UNet`` argument (e.g. ``channels``).

    The input side must be divisible by ``2 ** len(strides)`` (16 for ``paper``, 8 for ``small``).
    """
    if profile not in SEGMENTER_PROFILES:
        raise ValueError(f"profile must be one of {sorted(SEGMENTER_PROFILES)}, got {profile!r}")
    kwargs = {**SEGMENTER_PROFILES[profile], **overrides}
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=1, **kwargs)


def frozen_segmenter(ckpt_path: str | os.PathLike[str], profile: str = "paper") -> UNet:
    """The trained lung segmenter of ``ckpt_path``, frozen (no gradients, eval mode) for the
    teacher's classifier training, which keeps it so (:meth:`TeacherPipeline.train`)."""
    from tea_med.networks.checkpoints import load_weights

    net = lung_segmenter(profile)
    load_weights(net, ckpt_path)
    net.requires_grad_(False)
    return net.eval()
