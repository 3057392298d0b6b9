"""Batch-norm statistics re-estimated on the training images before each validation.

A network trained with batch-norm in training mode normalises with each batch's statistics,
while evaluation uses running averages (momentum 0.1) gathered along the way, from weights that
kept changing and, for small images, from very few values per channel: DenseNet121's last block
sees 2x2 maps at 64 px, so a batch of 16 gives 64 values per channel. In the demo that mismatch
swung a classifier's validation accuracy between chance and its best from one epoch to the next.
Re-estimating the statistics of the current weights over the training images (population
averages, as :func:`torch.optim.swa_utils.update_bn` does for SWA) removes it.

:func:`recalibrate_batchnorm` only touches the batch-norm layers of the module it is given, so
a teacher pipeline's frozen segmenter keeps its statistics; :class:`BatchNormRecalibration`
runs it when an evaluator starts, so the validation metrics and the checkpoint it saves use the
re-estimated statistics. Training itself is unaffected (training mode never reads them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from tea_med.engines.distributed import broadcast_buffers

__all__ = ["BatchNormRecalibration", "recalibrate_batchnorm"]


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _running_stats(m: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(running_mean, running_var)``: both exist, :func:`_batch_norms` keeps modules that track them."""
    assert m.running_mean is not None and m.running_var is not None
    return m.running_mean, m.running_var


@torch.no_grad()
def recalibrate_batchnorm(
    module: nn.Module,
    batches: Iterable[Any],
    model: Callable[[torch.Tensor], Any] | None = None,
    *,
    image_key: str = "image",
    device: torch.device | str | None = None,
    max_images: int | None = None,
) -> int:
    """Replace the running statistics of ``module``'s batch-norm layers by their averages over
    ``batches`` (PyTorch's cumulative average: each batch's mean and unbiased variance count
    the same, so equal batches give the exact mean over all images).

    Args:
        module: whose ``BatchNorm*d`` layers are re-estimated (e.g. a teacher's classifier).
        batches: tensors or dicts holding ``image_key`` (a data loader, typically the training
            split with the deterministic evaluation transforms).
        model: what is called on each batch; default ``module``. A teacher pipeline passes
            itself so its classifier sees the masked images it is trained on.
        image_key: the image's key when batches are dicts.
        device: where the images go; default the module's parameters' device.
        max_images: stop once this many images were seen (a large training set needs only a
            few thousand; give a shuffled loader so they are a random subset).

    Returns:
        The number of images seen. Everything but the re-estimated statistics is restored:
        training modes, momenta and parameters. Raises ``ValueError`` if ``batches`` is empty.
    """
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive number of images or None, got {max_images!r}")
    norms = _batch_norms(module)
    if not norms:
        return 0
    model = module if model is None else model
    if device is None:
        device = next(module.parameters()).device
    modes = [(m, m.training) for m in (model.modules() if isinstance(model, nn.Module) else module.modules())]
    saved = []
    for m in norms:
        running_mean, running_var = _running_stats(m)
        saved.append((m, m.momentum, running_mean.clone(), running_var.clone()))
    n = 0
    try:
        if isinstance(model, nn.Module):
            model.eval()
        module.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
            m.train()
        for batch in batches:
            x = batch[image_key] if isinstance(batch, Mapping) else batch
            x = torch.as_tensor(x).to(device)
            model(x)
            n += x.shape[0]
            if max_images is not None and n >= max_images:
                break
        if n == 0:
            raise ValueError("recalibrate_batchnorm: no batches to estimate the statistics from")
    except BaseException:
        for m, _, mean, var in saved:
            running_mean, running_var = _running_stats(m)
            running_mean.copy_(mean)
            running_var.copy_(var)
        raise
    finally:
        for m, momentum, _, _ in saved:
            m.momentum = momentum
        for mod, training in modes:
            mod.training = training
    return n


class BatchNormRecalibration:
    """Ignite/MONAI handler: :func:`recalibrate_batchnorm` each time the engine starts.

    Attach it to the validator of a training workflow (bundle configs list it in
    ``validate#handlers``): the validation metrics, and the checkpoint the validator saves, then
    use statistics of the weights being validated. Under ``torchrun`` every rank then takes rank
    0's statistics, so that all ranks validate, and rank 0 saves, one and the same network.

    Args:
        module: whose batch-norm statistics are re-estimated.
        data_loader: the images to estimate them on (training split, evaluation transforms).
        model: what is called on each batch; default ``module``.
        image_key: the image's key in a batch dict.
        max_images: at most this many images per recalibration (``None``: the whole loader).
        enabled: ``False`` attaches nothing (e.g. a student trained with ``bn_mode="frozen"``,
            whose training reads the running statistics, must keep them).
    """

    def __init__(
        self,
        module: nn.Module,
        data_loader: Iterable[Any],
        model: Callable[[torch.Tensor], Any] | None = None,
        image_key: str = "image",
        max_images: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.module = module
        self.data_loader = data_loader
        self.model = model
        self.image_key = image_key
        self.max_images = max_images
        self.enabled = bool(enabled)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        device = getattr(engine.state, "device", None) or getattr(engine, "device", None)
        recalibrate_batchnorm(
            self.module,
            self.data_loader,
            self.model,
            image_key=self.image_key,
            device=device,
            max_images=self.max_images,
        )
        broadcast_buffers(self.module)
