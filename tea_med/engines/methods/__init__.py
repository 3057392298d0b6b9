"""The baselines TEA is compared with, as training steps selectable by name (``method`` in the
student bundle's ``train.yaml``). Each shares the TEA student's initialisation, engines,
handlers, checkpoints and tracking; only the loss differs.

- ``tea``: the TEA loss on LRP-ε heatmaps (the default; :class:`~tea_med.engines.TEATrainStep`);
- ``erm``: cross-entropy on the labels (:mod:`.erm`);
- ``kd``: output distillation, Hinton et al. 2015 (:mod:`.kd`);
- ``rep_kd``: feature distillation through the transplanted last layer, Lee and Lee 2023
  (:mod:`.rep_kd`);
- ``rrr``: cross-entropy plus the background input-gradient penalty, Ross et al. 2017 (:mod:`.rrr`);
- ``gradcam_kd``: Grad-CAM matching plus output distillation, Parchami-Araghi et al. 2024
  (:mod:`.gradcam_kd`);
- ``gain``: attention mining plus lung-mask supervision of Grad-CAM, Li et al. 2018 (:mod:`.gain`);
- ``isnet``: cross-entropy plus LRP background relevance minimisation, Bassi et al. 2024
  (:mod:`.isnet`);
- ``group_dro``: group DRO over the source hospitals, Sagawa et al. 2020 (:mod:`.group_dro`);
- ``irm``: IRMv1 over the source hospitals, Arjovsky et al. 2019 (:mod:`.irm`);
- ``tea+kd`` and ``tea+rep_kd``: TEA with a distillation term added, the "not alone" ablations
  (:mod:`.tea_plus`).

TEA's other ablations are settings of the ``tea`` method: the explainer (``explainer``), the
heatmap loss (``heatmap_loss``) and a fixed ε (``eps_lo`` = ``eps_hi``).
"""

from __future__ import annotations

from typing import Any

import torch

from tea_med.engines.methods.base import MethodStep, mask_teacher
from tea_med.engines.methods.erm import ERMStep
from tea_med.engines.methods.gain import GAINStep
from tea_med.engines.methods.gradcam_kd import GradCAMKDStep, map_dissimilarity
from tea_med.engines.methods.group_dro import GroupDROStep
from tea_med.engines.methods.irm import IRMStep, irm_penalty
from tea_med.engines.methods.isnet import ISNetStep, background_relevance_loss
from tea_med.engines.methods.kd import KDStep, distillation_loss
from tea_med.engines.methods.rep_kd import RepKDStep, feature_distillation_loss
from tea_med.engines.methods.rrr import RRRStep, input_gradient_penalty
from tea_med.engines.methods.tea_plus import TEAPlusKDStep, TEAPlusRepKDStep
from tea_med.engines.task import TEATask

METHODS = (
    "tea",
    "erm",
    "kd",
    "rep_kd",
    "gradcam_kd",
    "rrr",
    "gain",
    "isnet",
    "group_dro",
    "irm",
    "tea+kd",
    "tea+rep_kd",
)


def training_step(
    method: str,
    task: TEATask,
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float = 1.0,
    teacher_optimizer: torch.optim.Optimizer | None = None,
    kd_temperature: float = 4.0,
    kd_weight: float = 1.0,
    kd_ce_weight: float = 0.0,
    rrr_weight: float = 1e4,
    gradcam_weight: float = 1.0,
    gradcam_kd_weight: float = 0.1,
    group_dro_step_size: float = 0.01,
    irm_weight: float = 1e4,
    irm_anneal_steps: int = 100,
    rep_kd_weight: float = 1.0,
    gain_am_weight: float = 1.0,
    gain_mask_weight: float = 1e4,
    isnet_weight: float = 0.95,
    isnet_eps: float = 0.01,
    isnet_d: float = 0.96,
    precision: str = "float32",
    channels_last: bool = False,
    mask_key: str | None = None,
) -> Any:
    """The ``iteration_update`` of ``method`` (one of :data:`METHODS`); ``precision``,
    ``channels_last`` and ``mask_key`` are options of the ``tea`` step
    (:class:`~tea_med.engines.TEATrainStep`)."""
    from tea_med.engines.steps import TEATrainStep

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "tea":
        return TEATrainStep(
            task,
            optimizer,
            max_grad_norm,
            teacher_optimizer,
            precision=precision,
            channels_last=channels_last,
            mask_key=mask_key,
        )
    if precision != "float32" or channels_last or mask_key is not None:
        raise ValueError(
            f"precision {precision!r}, channels_last {channels_last} and teacher masks ({mask_key!r}) "
            f"are options of method 'tea' only; method {method!r} runs in float32 with the default "
            "memory format and the teacher's segmenter"
        )
    if method == "erm":
        return ERMStep(task, optimizer, max_grad_norm)
    if method == "rep_kd":
        return RepKDStep(task, optimizer, max_grad_norm, rep_kd_weight)
    if method == "gain":
        return GAINStep(task, optimizer, max_grad_norm, gain_am_weight, gain_mask_weight)
    if method == "isnet":
        return ISNetStep(task, optimizer, max_grad_norm, isnet_weight, isnet_eps, isnet_d)
    if method == "tea+kd":
        return TEAPlusKDStep(task, optimizer, max_grad_norm, kd_weight, kd_temperature)
    if method == "tea+rep_kd":
        return TEAPlusRepKDStep(task, optimizer, max_grad_norm, rep_kd_weight)
    if method == "rrr":
        return RRRStep(task, optimizer, max_grad_norm, rrr_weight)
    if method == "irm":
        return IRMStep(task, optimizer, max_grad_norm, irm_weight, irm_anneal_steps)
    if method == "group_dro":
        return GroupDROStep(task, optimizer, max_grad_norm, group_dro_step_size)
    if method == "gradcam_kd":
        return GradCAMKDStep(
            task, optimizer, max_grad_norm, gradcam_weight, gradcam_kd_weight, kd_temperature
        )
    return KDStep(task, optimizer, max_grad_norm, kd_temperature, kd_weight, kd_ce_weight)


__all__ = [
    "METHODS",
    "ERMStep",
    "GAINStep",
    "GradCAMKDStep",
    "GroupDROStep",
    "IRMStep",
    "ISNetStep",
    "KDStep",
    "MethodStep",
    "RRRStep",
    "RepKDStep",
    "TEAPlusKDStep",
    "TEAPlusRepKDStep",
    "background_relevance_loss",
    "distillation_loss",
    "feature_distillation_loss",
    "input_gradient_penalty",
    "irm_penalty",
    "map_dissimilarity",
    "mask_teacher",
    "training_step",
]
