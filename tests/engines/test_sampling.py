"""Per-image class and ε sampling (docs/method.md, section 3)."""

from __future__ import annotations

import math

import pytest
import torch

from tea_med.engines import sample_eps, sample_targets


def test_targets_half_argmax_otherwise_uniform_over_other_classes(gen: torch.Generator) -> None:
    n, k = 40_000, 4
    logits = torch.randn(n, k, generator=gen)
    argmax = logits.argmax(1)
    t = sample_targets(logits, gen)
    assert t.dtype == torch.long and t.shape == (n,)
    share_argmax = (t == argmax).float().mean().item()
    assert abs(share_argmax - 0.5) < 0.015  # ~6 standard deviations
    others = t[t != argmax]
    rel = (others - argmax[t != argmax]) % k  # 1..k-1, uniform
    counts = torch.bincount(rel, minlength=k)[1:].float()
    assert counts.min() / counts.max() > 0.93


def test_targets_deterministic_per_generator() -> None:
    logits = torch.randn(64, 3)
    a = sample_targets(logits, torch.Generator().manual_seed(5))
    b = sample_targets(logits, torch.Generator().manual_seed(5))
    c = sample_targets(logits, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("shape", [(8, 1), (8,)])
def test_targets_refuse_single_logit_or_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"at least two logits|shape"):
        sample_targets(torch.randn(shape))


def test_eps_log_uniform_in_range(gen: torch.Generator) -> None:
    e = sample_eps(20_000, 1e-3, 1e-2, gen)
    assert e.shape == (20_000,) and e.dtype == torch.float32
    assert e.min() >= 1e-3 * (1 - 1e-6) and e.max() <= 1e-2 * (1 + 1e-6)
    logs = torch.log10(e.double())
    assert abs(logs.mean().item() - (-2.5)) < 0.01
    assert abs(logs.std().item() - 1 / math.sqrt(12)) < 0.01  # uniform over one decade


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1e-2), (1e-2, 1e-3), (-1.0, 1.0), (1e-3, float("inf"))])
def test_eps_range_validated(lo: float, hi: float) -> None:
    with pytest.raises(ValueError, match="0 < lo <= hi"):
        sample_eps(4, lo, hi)
