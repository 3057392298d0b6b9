"""Training with Explanations Alone as a small module plugged into MONAI's engines.

:class:`TEATask` owns the frozen teacher, the student, the explainer and the loss; its forward
returns a dict of losses and logits (the timm ``task/`` pattern). :class:`TEATrainStep` and
:class:`TEAValidationStep` are ``iteration_update`` callables for MONAI's stock
``SupervisedTrainer`` / ``SupervisedEvaluator``, so stock handlers (checkpoints, stats,
validation, MLflow) keep working.

No loss term ever reads the student's outputs or features: the student's only training
signal is the TEA loss between its LRP-ε heatmap and the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from torch import nn

from tea_med.explain import Explainer, LRPEpsilon, sample_eps, sample_targets
from tea_med.explain.base import Explanation
from tea_med.losses import HeatmapLoss, TEALoss
from tea_med.networks.teacher import TeacherPipeline

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
            classifier with cross-entropy at this weight (needs labels and a teacher optimiser).
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

    @property
    def teacher_model(self) -> nn.Module:
        """The module whose heatmaps the student matches (the teacher's classifier)."""
        return self.teacher.classifier if isinstance(self.teacher, TeacherPipeline) else self.teacher

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

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the teacher's classifier sees: the masked image for a :class:`TeacherPipeline`."""
        if isinstance(self.teacher, TeacherPipeline):
            masked, _ = self.teacher.masked_input(x)
            return masked
        return x

    def explain_teacher(
        self, x: torch.Tensor, eps: torch.Tensor, create_graph: bool = False, sample: bool = True
    ) -> Explanation:
        """The teacher's heatmap of a class drawn per image (argmax w.p. 0.5, else another), or
        of its argmax class with ``sample=False``."""
        choose = (lambda z: sample_targets(z, self.generator)) if sample else (lambda z: z.argmax(1))
        return self.explainer.explain(
            self.teacher_model, self.teacher_input(x), choose, eps=eps, create_graph=create_graph
        )

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
        self, x: torch.Tensor, label: torch.Tensor | None = None, warmup: bool = False
    ) -> dict[str, Any]:
        eps = sample_eps(x.shape[0], *self.eps_range, self.generator, dtype=x.dtype, device=x.device)
        cotrain = self.training and self.teacher_ce_weight is not None
        # co-training: the teacher's logits (for its CE) and, in warm-up, its heatmap stay in the graph
        t = self.explain_teacher(x, eps, create_graph=cotrain)
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
        if cotrain:
            if label is None:
                raise ValueError("co-training the teacher (teacher_ce_weight set) needs labels")
            ce = F.cross_entropy(t.logits, label.long())
            out["teacher_loss"] = (0.1 * ce + levels.mean()) if warmup else self.teacher_ce_weight * ce
        return out


def _plain(x: Any, device: torch.device | str | None) -> torch.Tensor:
    x = torch.as_tensor(x)
    x = x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
    return x.to(device) if device is not None else x


def _finish(engine: Engine, output: dict[str, Any]) -> Any:
    """Hand the output to MONAI's machinery as its own iteration does (decollation and the
    engine's ``postprocessing`` run on ``MODEL_COMPLETED``)."""
    engine.state.output = output
    if hasattr(engine, "state") and IterationEvents.MODEL_COMPLETED in engine._allowed_events:
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
    return engine.state.output


class TEATrainStep:
    """``iteration_update`` for ``SupervisedTrainer``: one TEA step, then clip and step.

    Its epoch means (TEA loss, per-level losses, student-teacher agreement) reach
    ``engine.state.metrics`` through :class:`TEAEpochMetrics`.

    Args:
        task: the :class:`TEATask`.
        optimizer: the student's optimiser (SGD with momentum in the paper).
        max_grad_norm: gradient-norm clipping of the student (and the teacher when co-trained).
        teacher_optimizer: needed when the task co-trains the teacher.
    """

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        teacher_optimizer: torch.optim.Optimizer | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if task.teacher_ce_weight is not None and teacher_optimizer is None:
            raise ValueError("the task co-trains the teacher: pass teacher_optimizer")
        self.task = task
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.teacher_optimizer = teacher_optimizer
        self.image_key = image_key
        self.label_key = label_key
        self._sums: dict[str, float] = {}
        self._count = 0

    def __call__(self, engine: Engine, batch: dict[str, Any]) -> dict[str, Any]:
        device = getattr(engine.state, "device", None) or next(self.task.student.parameters()).device
        x = _plain(batch[self.image_key], device)
        label = batch.get(self.label_key)
        label = _plain(label, device) if label is not None else None
        warmup = engine.state.epoch <= self.task.warmup_epochs
        self.task.train()
        out = self.task(x, label=label, warmup=warmup)
        self.optimizer.zero_grad(set_to_none=True)
        if self.teacher_optimizer is not None:
            self.teacher_optimizer.zero_grad(set_to_none=True)
        total = out["loss"] + out.get("teacher_loss", 0.0)
        total.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        if self.teacher_optimizer is not None:
            t_params = [p for g in self.teacher_optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(t_params, self.max_grad_norm)
            self.teacher_optimizer.step()
        self._accumulate(out)
        result = {
            "image": x,
            "pred": out["student_logits"],
            "teacher": out["teacher_logits"],
            "loss": out["loss"].detach(),
        }
        if label is not None:
            result["label"] = label
        return _finish(engine, result)

    def _accumulate(self, out: dict[str, Any]) -> None:
        values = {"tea_loss": float(out["loss"]), "agreement": float(out["agreement"])}
        for i, v in enumerate(out["loss_levels"].tolist()):
            values[f"tea_loss_level{i}"] = v
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1

    def reset(self) -> None:
        self._sums, self._count = {}, 0

    def means(self) -> dict[str, float]:
        return {k: v / max(self._count, 1) for k, v in self._sums.items()}


class TEAEpochMetrics:
    """Trainer handler: each epoch, ``train_tea_loss``, ``train_tea_loss_level<i>`` and
    ``train_agreement`` (means over the epoch's steps) go into ``engine.state.metrics``, where
    stock handlers (stats, MLflow) pick them up. List it before those handlers."""

    def __init__(self, step: TEATrainStep) -> None:
        self.step = step

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.step.reset())
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _publish(self, engine: Engine) -> None:
        for k, v in self.step.means().items():
            engine.state.metrics[f"train_{k}"] = v


class TEAValidationStep:
    """``iteration_update`` for ``SupervisedEvaluator``: heatmaps of teacher and student in eval
    mode, the TEA loss per image (``tea_loss``, see :meth:`TEATask.validation_losses`), student
    logits (``pred``) and teacher logits (``teacher``). The TEA loss needs no labels, so it can
    select the checkpoint.
    """

    def __init__(self, task: TEATask, image_key: str = "image", label_key: str = "label") -> None:
        self.task = task
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, engine: Engine, batch: dict[str, Any]) -> dict[str, Any]:
        device = getattr(engine.state, "device", None) or next(self.task.student.parameters()).device
        x = _plain(batch[self.image_key], device)
        self.task.eval()
        out = self.task.validation_losses(x)
        result = {
            "image": batch[self.image_key],
            "pred": out["student_logits"],
            "teacher": out["teacher_logits"],
            "tea_loss": out["loss_per_sample"],
        }
        if self.label_key in batch:
            result["label"] = _plain(batch[self.label_key], device)
        return _finish(engine, result)


def lower_is_better(current: float, best: float) -> bool:
    """``metric_cmp_fn`` for evaluators whose key metric is a loss."""
    return current < best
