"""The TEA teacher for background bias: lung segmenter -> mask -> classifier on the lungs only.

``TeacherPipeline(segmenter, classifier)(x)`` segments the lungs, thresholds the probability
(default 0.4), replaces everything outside the mask by uniform noise over the preprocessed
intensity range ``[0, 1]`` (docs/method.md, section 5) and returns the classifier's logits. Its
heatmap is taken through the classifier only, on :meth:`TeacherPipeline.masked_input`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

BACKGROUNDS = ("uniform", "zero")


class TeacherPipeline(nn.Module):
    """Segmenter + classifier that only ever sees the lungs. TorchScript-exportable.

    Args:
        segmenter: ``[B, C, H, W] -> [B, 1, H, W]`` lung-foreground logits.
        classifier: ``[B, C, H, W] -> [B, K]`` logits (LRP-ready for explanations).
        threshold: probability above which a pixel is lung.
        background: ``"uniform"`` (noise in ``[low, high]``, the paper's choice) or ``"zero"``.
        low, high: range of the background noise (the preprocessed intensity range).
    """

    def __init__(
        self,
        segmenter: nn.Module,
        classifier: nn.Module,
        threshold: float = 0.4,
        background: str = "uniform",
        low: float = 0.0,
        high: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if not low < high:
            raise ValueError(f"need low < high for the background noise, got low={low}, high={high}")
        self.segmenter = segmenter
        self.classifier = classifier
        self.threshold = float(threshold)
        self.uniform_background = background == "uniform"
        self.low = float(low)
        self.high = float(high)

    def freeze_segmenter(self) -> TeacherPipeline:
        """Freeze the segmenter (no gradients, always eval mode) while the classifier trains."""
        self.segmenter.requires_grad_(False)
        self.segmenter.eval()
        return self

    def train(self, mode: bool = True) -> TeacherPipeline:
        super().train(mode)
        if not any(p.requires_grad for p in self.segmenter.parameters()):
            self.segmenter.eval()  # a frozen segmenter never switches to training mode
        return self

    def lung_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Binary lung mask ``[B, 1, H, W]`` (float 0/1, no gradient)."""
        with torch.no_grad():
            prob = torch.sigmoid(self.segmenter(x))
        return (prob > self.threshold).to(x.dtype)

    def apply_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x * mask + background * (1 - mask)``; the mask broadcasts over channels."""
        if self.uniform_background:
            background = torch.rand_like(x) * (self.high - self.low) + self.low
        else:
            background = torch.zeros_like(x)
        return x * mask + background * (1.0 - mask)

    def masked_input(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's input and the mask it was built with: ``(masked_x, mask)``.

        ``mask`` (``[B, 1, H, W]``, 0/1) is a lung mask computed earlier, e.g. once per training
        image and carried through the augmentation; ``None`` runs the segmenter on ``x``.
        """
        if mask is None:
            mask = self.lung_mask(x)
        elif (
            mask.dim() != 4
            or mask.shape[0] != x.shape[0]
            or mask.shape[1] != 1
            or mask.shape[2:] != x.shape[2:]
        ):
            raise ValueError(
                "a lung mask for images of shape " + str(list(x.shape)) + " must have shape [B, 1, H, W] "
                "of the same B, H and W, got " + str(list(mask.shape))
            )
        mask = mask.to(dtype=x.dtype, device=x.device)
        return self.apply_mask(x, mask), mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masked, _ = self.masked_input(x)
        return self.classifier(masked)


def teacher_classifier(teacher: nn.Module) -> nn.Module:
    """The classifier inside a :class:`TeacherPipeline`, or ``teacher`` itself."""
    return teacher.classifier if isinstance(teacher, TeacherPipeline) else teacher


def explained_input(
    model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[nn.Module, torch.Tensor, torch.Tensor | None]:
    """What is explained when ``model`` is explained on ``x``: ``(network, input, mask)``.

    A :class:`TeacherPipeline` is explained through its classifier on its masked input (the
    background noise is drawn from the global torch RNG; ``mask`` is the ``[B, 1, H, W]`` lung
    mask, the given one or else the segmenter's); any other model on ``x`` itself, with ``mask``
    ``None``.
    """
    if isinstance(model, TeacherPipeline):
        masked, mask = model.masked_input(x, mask)
        return model.classifier, masked, mask
    return model, x, None


def load_teacher(
    ckpt_path: str | os.PathLike[str] | None,
    num_classes: int = 3,
    segmenter_profile: str = "paper",
    threshold: float = 0.4,
    background: str = "uniform",
) -> TeacherPipeline:
    """The frozen teacher saved by the ``tea_teacher`` bundle (``models/model.pt``), in eval mode.

    ``segmenter_profile``, ``threshold`` and ``background`` must be those it was trained with
    (the bundle's keys of the same names); the checkpoint holds weights only.
    """
    from tea_med.networks.checkpoints import load_weights
    from tea_med.networks.classifiers import densenet121
    from tea_med.networks.segmenter import lung_segmenter

    if ckpt_path is None or not os.fspath(ckpt_path):
        raise ValueError(
            "teacher_ckpt is not set: pass the teacher bundle's checkpoint, e.g. "
            "--teacher_ckpt path/to/tea_teacher/models/model.pt"
        )
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"teacher_ckpt {os.fspath(ckpt_path)!r} does not exist: train the teacher bundle first "
            "(configs/train_segmenter.yaml, then configs/train_classifier.yaml, each after "
            "configs/common.yaml) or point --teacher_ckpt at its "
            "models/model.pt"
        )
    teacher = TeacherPipeline(
        lung_segmenter(segmenter_profile),
        densenet121(num_classes=num_classes),
        threshold,
        background=background,
    )
    load_weights(teacher, ckpt_path)
    return teacher.eval().requires_grad_(False)
