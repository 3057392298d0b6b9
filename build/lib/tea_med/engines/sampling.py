"""What each training image explains (docs/method.md, section 3): its class and its ε."""

from __future__ import annotations

import math

import torch


def sample_targets(teacher_logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image: with probability 0.5 the teacher's argmax, otherwise one of the other classes
    uniformly. Returns a ``LongTensor[B]`` on the logits' device (random draws on the CPU, so
    a CPU generator gives the same classes on every device).
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_logits must have shape [B, K], got {tuple(teacher_logits.shape)}")
    batch, n_classes = teacher_logits.shape
    if n_classes < 2:
        raise ValueError(
            f"teacher_logits has {n_classes} class; TEA needs at least two logits (a single-logit "
            "sigmoid head cannot be explained per class)"
        )
    argmax = teacher_logits.detach().argmax(1).cpu()
    keep = torch.rand(batch, generator=generator) < 0.5
    shift = torch.randint(1, n_classes, (batch,), generator=generator)
    other = (argmax + shift) % n_classes
    return torch.where(keep, argmax, other).to(teacher_logits.device)


def sample_eps(
    batch: int,
    lo: float = 1e-3,
    hi: float = 1e-2,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per image ``eps = 10 ** U(log10(lo), log10(hi))`` as a ``[B]`` tensor."""
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"need 0 < lo <= hi < inf for the ε range, got lo={lo!r}, hi={hi!r}")
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    e = 10 ** (math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))
    return e.to(dtype=dtype, device=device)
