"""The TEA task (docs/method.md, sections 3, 4 and 6): teacher, student, explainer and loss as one
module whose forward returns a dict of losses and logits (the timm ``task/`` pattern).

No loss term ever reads the student's outputs or features: the student's only training
signal is the TEA loss between its LRP-ε heatmap and the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tea_med.engines.sampling import sample_eps, sample_targets
from tea_med.explain import Explainer, LRPEpsilon
from tea_med.explain.base import Explanation
from tea_med.losses import HeatmapLoss, TEALoss
from tea_med.networks.teacher import TeacherPipeline, explained_input, teacher_classifier

BN_MODES = ("train", "frozen")


class TEATask(nn.Module):
    """Teacher + student + explainer + loss. ``forward(x, label=None, warmup=False) -> dict``.

    Args:
        teacher: a :class:`TeacherPipeline` (explained through its classifier, on its masked
            input) or any frozen classifier (e.g. for foreground bias).
        student: the classifier being trained (see :func:`tea_med.networks.init_student`).
        explainer: default :class:`LRPEpsilon`.
        loss: default :class:`TEALoss`.
        eps_range: per-image ε is ``10 ** U(log10 lo, log10 hi)``.
        bn_mode: the student's batch-norm during TEA: ``"train"`` (batch statistics, the
            reference's choice) or ``"frozen"`` (running statistics).
        seed: seeds the task's own generator (classes and ε per image).
        teacher_ce_weight: ``None`` keeps the teacher frozen. A number co-trains the teacher's
            classifier with cross-entropy at this weight (needs labels and a teacher optimiser
            over the classifier's parameters, which are then made trainable; a
            :class:`TeacherPipeline`'s segmenter stays frozen).
        warmup_epochs: with co-training, epochs during which the teacher is trained with
            ``0.1 * CE + TEA loss`` (the TEA gradient reaches the teacher); afterwards CE alone.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        explainer: Explainer | None = None,
        loss: HeatmapLoss | None = None,
        eps_range: Sequence[float] = (1e-3, 1e-2),
        bn_mode: str = "train",
        seed: int = 0,
        teacher_ce_weight: float | None = None,
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if len(eps_range) != 2 or not 0 < eps_range[0] <= eps_range[1]:
            raise ValueError(f"eps_range must be (lo, hi) with 0 < lo <= hi, got {eps_range!r}")
        if warmup_epochs and teacher_ce_weight is None:
            raise ValueError("warmup_epochs needs teacher_ce_weight (warm-up co-trains the teacher)")
        if any(isinstance(m, nn.SyncBatchNorm) for m in student.modules()):
            raise ValueError(
                "the student has SyncBatchNorm layers, whose backward (batch_norm_backward_reduce, "
                "batch_norm_backward_elemt and an all_reduce) has no derivative, so TEA's double "
                "backward through them is not exact: keep the student's BatchNorm2d (per-process "
                "batch statistics under torchrun) or train with bn_mode='frozen'"
            )
        self.teacher = teacher
        self.student = student
        self.explainer = explainer or LRPEpsilon()
        self.loss = loss or TEALoss()
        self.eps_range = (float(eps_range[0]), float(eps_range[1]))
        self.bn_mode = bn_mode
        self.generator = torch.Generator().manual_seed(seed)
        self.teacher_ce_weight = teacher_ce_weight
        self.warmup_epochs = int(warmup_epochs)
        if teacher_ce_weight is None:
            self.teacher.requires_grad_(False)
        else:  # co-training: the teacher's classifier learns (a loaded one comes frozen), its segmenter never
            teacher_classifier(self.teacher).requires_grad_(True)
            if isinstance(self.teacher, TeacherPipeline):
                self.teacher.segmenter.requires_grad_(False)

    def train(self, mode: bool = True) -> TEATask:
        super().train(mode)
        cotrain = mode and self.teacher_ce_weight is not None
        self.teacher.train(cotrain)  # a frozen teacher always runs in eval mode
        if isinstance(self.teacher, TeacherPipeline):
            self.teacher.segmenter.eval()
        if mode and self.bn_mode == "frozen":
            for m in self.student.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def explain_teacher(
        self,
        x: torch.Tensor,
        eps: torch.Tensor,
        create_graph: bool = False,
        sample: bool = True,
        mask: torch.Tensor | None = None,
    ) -> Explanation:
        """The teacher's heatmap of a class drawn per image (argmax w.p. 0.5, else another), or
        of its argmax class with ``sample=False``. ``mask``: the teacher's lung mask of ``x``
        computed earlier (``[B, 1, H, W]``), instead of running its segmenter."""
        choose = (lambda z: sample_targets(z, self.generator)) if sample else (lambda z: z.argmax(1))
        network, seen, _ = explained_input(self.teacher, x, mask)
        return self.explainer.explain(network, seen, choose, eps=eps, create_graph=create_graph)

    def validation_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic TEA loss for model selection: the teacher's predicted class and the
        geometric middle of the ε range for every image; no draw from the task's generator."""
        eps = torch.full(
            (x.shape[0],), (self.eps_range[0] * self.eps_range[1]) ** 0.5, dtype=x.dtype, device=x.device
        )
        t = self.explain_teacher(x, eps, sample=False)
        s = self.explainer.explain(self.student, x, t.target, eps=eps)
        levels = self.loss.levels(s.heatmap, t.heatmap)
        return {
            "loss_per_sample": levels.mean(1),
            "student_logits": s.logits,
            "teacher_logits": t.logits,
            "student_heatmap": s.heatmap,
            "teacher_heatmap": t.heatmap,
        }

    def forward(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None = None,
        warmup: bool = False,
        mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        eps = sample_eps(x.shape[0], *self.eps_range, self.generator, dtype=x.dtype, device=x.device)
        cotrain = self.training and self.teacher_ce_weight is not None
        # co-training: the teacher's logits (for its CE) and, in warm-up, its heatmap stay in the graph
        t = self.explain_teacher(x, eps, create_graph=cotrain, mask=mask)
        s = self.explainer.explain(self.student, x, t.target, eps=eps, create_graph=self.training)
        # the TEA gradient reaches the teacher only during warm-up co-training
        levels = self.loss.levels(s.heatmap, t.heatmap, detach_target=not (cotrain and warmup))
        out: dict[str, Any] = {
            "loss": levels.mean(),
            "loss_levels": levels.detach().mean(0),
            "loss_per_sample": levels.detach().mean(1),
            "student_logits": s.logits.detach(),
            "teacher_logits": t.logits.detach(),
            "target": t.target,
            "eps": eps,
            "agreement": (s.logits.argmax(1) == t.logits.argmax(1)).float().mean().detach(),
        }
        if cotrain and self.teacher_ce_weight is not None:
            if label is None:
                raise ValueError("co-training the teacher (teacher_ce_weight set) needs labels")
            ce = F.cross_entropy(t.logits, label.long())
            out["teacher_loss"] = (0.1 * ce + levels.mean()) if warmup else self.teacher_ce_weight * ce
        return out
