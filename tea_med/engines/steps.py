"""TEA as ``iteration_update`` callables for MONAI's stock ``SupervisedTrainer`` and
``SupervisedEvaluator``, so stock handlers (checkpoints, stats, validation, metrics, MLflow)
keep working. Each step's output carries what the epoch metrics average (``loss``,
``agreement``, ``loss_levels``): the bundles attach ignite ``Average`` metrics to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents, default_metric_cmp_fn

from tea_med.engines.distributed import average_gradients
from tea_med.engines.task import TEATask

#: the compute types of the TEA step's forward passes (``TEATrainStep(precision=...)``)
PRECISIONS = ("float32", "bfloat16")


def plain_tensor(x: Any, device: torch.device | str | None) -> torch.Tensor:
    x = torch.as_tensor(x)
    x = x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
    return x.to(device) if device is not None else x


def engine_device(engine: Engine, task: TEATask) -> torch.device:
    """The engine's device (MONAI workflows set ``state.device``), else the student's."""
    return getattr(engine.state, "device", None) or next(task.student.parameters()).device


def finish_iteration(engine: Engine, output: dict[str, Any]) -> Any:
    """Hand the output to MONAI's machinery as its own iteration does (decollation and the
    engine's ``postprocessing`` run on ``MODEL_COMPLETED``)."""
    engine.state.output = output  # type: ignore[assignment]  # ignite types State.output as int | None
    engine.fire_event(IterationEvents.MODEL_COMPLETED)  # registered by every MONAI workflow
    return engine.state.output


class TEATrainStep:
    """``iteration_update`` for ``SupervisedTrainer``: one TEA step, then clip and step.

    The output holds ``loss`` (the batch's TEA loss), ``agreement`` (share of images where the
    student's and the teacher's classes agree) and ``loss_level<i>`` (the loss at pyramid level
    ``i``), all detached scalars: average them per epoch with ignite ``Average`` metrics, e.g.
    ``Average(output_transform=from_engine(["agreement"], first=True))``.

    Args:
        task: the :class:`TEATask`.
        optimizer: the student's optimiser (SGD with momentum in the paper).
        max_grad_norm: gradient-norm clipping of the student (and the teacher when co-trained).
        teacher_optimizer: needed when the task co-trains the teacher.
        precision: ``"float32"`` (default) or ``"bfloat16"``: the TEA forward passes and heatmaps
            under ``torch.autocast`` in that type (parameters, gradients and the optimiser stay
            float32). Measured at 224 px on this project's CPU (``benchmarks/tea_speed.py``):
            1.04x to 1.31x faster, but heatmaps 23 % (teacher) and 95 % (student) off float32, since
            LRP-ε divides by pre-activations that bfloat16 rounds; off by default.
        channels_last: teacher, student and images in ``torch.channels_last`` memory format
            (the same numbers; faster on GPUs with tensor cores, slower on the CPU measured).
        mask_key: the batch key of the teacher's lung masks computed once per image before
            training and carried through the augmentation with the image (the student bundle's
            ``teacher_masks``); ``None`` runs the teacher's segmenter in every step.
    """

    def __init__(
        self,
        task: TEATask,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float = 1.0,
        teacher_optimizer: torch.optim.Optimizer | None = None,
        image_key: str = "image",
        label_key: str = "label",
        precision: str = "float32",
        channels_last: bool = False,
        mask_key: str | None = None,
    ) -> None:
        if task.teacher_ce_weight is not None and teacher_optimizer is None:
            raise ValueError("the task co-trains the teacher: pass teacher_optimizer")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.mask_key = mask_key
        if self.channels_last:
            task.student.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
            task.teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.task = task
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.teacher_optimizer = teacher_optimizer
        self.image_key = image_key
        self.label_key = label_key

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The batch in the memory format the step computes in."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self, device_type: str) -> torch.autocast:
        """The autocast context of the step's forward passes (disabled for ``float32``)."""
        on = self.precision == "bfloat16"
        return torch.autocast(device_type, dtype=torch.bfloat16 if on else None, enabled=on)

    def extra_loss(
        self, x: torch.Tensor, label: torch.Tensor | None, out: dict[str, Any]
    ) -> torch.Tensor | None:
        """A term added to the student's TEA loss (``None``: explanations alone). TEA ablations
        that add output or feature distillation override this."""
        return None

    def __call__(self, engine: Engine, batch: dict[str, Any]) -> dict[str, Any]:
        device = engine_device(engine, self.task)
        x = plain_tensor(batch[self.image_key], device)
        label = batch.get(self.label_key)
        label = plain_tensor(label, device) if label is not None else None
        warmup = engine.state.epoch <= self.task.warmup_epochs
        self.task.train()
        x = self.prepare(x)
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in batch:
                raise KeyError(
                    f"the batch has no {self.mask_key!r} (the teacher's lung masks): keys are "
                    f"{sorted(batch)}; load them with the images or set mask_key None"
                )
            mask = plain_tensor(batch[self.mask_key], device)
        with self.autocast(x.device.type):
            out = self.task(x, label=label, warmup=warmup, mask=mask)
        self.optimizer.zero_grad(set_to_none=True)
        if self.teacher_optimizer is not None:
            self.teacher_optimizer.zero_grad(set_to_none=True)
        extra = self.extra_loss(x, label, out)
        student_loss = out["loss"] if extra is None else out["loss"] + extra
        total = student_loss + out.get("teacher_loss", 0.0)
        total.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        average_gradients(params)  # over torch.distributed processes, when there are several
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        if self.teacher_optimizer is not None:
            t_params = [p for g in self.teacher_optimizer.param_groups for p in g["params"]]
            average_gradients(t_params)
            torch.nn.utils.clip_grad_norm_(t_params, self.max_grad_norm)
            self.teacher_optimizer.step()
        result = {
            "image": x,
            "pred": out["student_logits"],
            "teacher": out["teacher_logits"],
            "loss": student_loss.detach(),
            "agreement": out["agreement"],
        }
        result |= {f"loss_level{i}": v for i, v in enumerate(out["loss_levels"])}
        if label is not None:
            result["label"] = label
        return finish_iteration(engine, result)


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
        device = engine_device(engine, self.task)
        x = plain_tensor(batch[self.image_key], device)
        self.task.eval()
        out = self.task.validation_losses(x)
        result = {
            "image": batch[self.image_key],
            "pred": out["student_logits"],
            "teacher": out["teacher_logits"],
            "tea_loss": out["loss_per_sample"],
        }
        if self.label_key in batch:
            result["label"] = plain_tensor(batch[self.label_key], device)
        return finish_iteration(engine, result)


def lower_is_better(current: float, best: float) -> bool:
    """``metric_cmp_fn`` for evaluators whose key metric is a loss."""
    return current < best


#: the student validation's metrics and whether a lower value is better
VALIDATION_METRICS = {"val_tea_loss": True, "val_auc": False, "val_agreement": False}


def metric_comparison(metric: str) -> Callable[[float, float], bool]:
    """The ``metric_cmp_fn`` that ranks the student validation's key metric ``metric`` (one of
    :data:`VALIDATION_METRICS`): lower is better for the TEA loss, higher for the scores
    (MONAI's ``default_metric_cmp_fn``)."""
    if metric not in VALIDATION_METRICS:
        raise ValueError(f"selection_metric must be one of {sorted(VALIDATION_METRICS)}, got {metric!r}")
    return lower_is_better if VALIDATION_METRICS[metric] else default_metric_cmp_fn
