"""TEALoss and its ablation variants against formulas written out in the test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tea_med.losses import L1NormalizedLoss, L2NormalizedLoss, TEALoss, resolution_levels

DT = torch.float64


def d_explicit(s: torch.Tensor, t: torch.Tensor) -> float:
    """Paper Eq. 1 for one sample, with sums (the mean's 1/n cancels)."""
    return float((s - t).abs().sum() / math.sqrt(float(s.abs().sum() * t.abs().sum())))


def tea_explicit(S: torch.Tensor, T: torch.Tensor) -> float:
    pool = F.avg_pool2d if S.ndim == 4 else F.avg_pool3d
    side = min(S.shape[2:])
    M = 1 + math.floor(math.log2(side / 8))
    total = 0.0
    for b in range(S.shape[0]):
        for i in range(M):
            k = 2**i
            s = pool(S[b : b + 1], k, k) if k > 1 else S[b : b + 1]
            t = pool(T[b : b + 1], k, k) if k > 1 else T[b : b + 1]
            total += d_explicit(s, t)
    return total / (S.shape[0] * M)


@pytest.mark.parametrize("shape", [(3, 3, 64, 48), (2, 1, 100, 100), (2, 2, 16, 24, 20), (2, 3, 224, 224)])
def test_tea_loss_equals_explicit_multiresolution_formula(shape: tuple[int, ...]) -> None:
    S, T = torch.randn(shape, dtype=DT), torch.randn(shape, dtype=DT)
    assert TEALoss()(S, T).item() == pytest.approx(tea_explicit(S, T), rel=1e-9)


@pytest.mark.parametrize(("side", "levels"), [(4, 1), (8, 1), (15, 1), (16, 2), (32, 3), (64, 4), (224, 5)])
def test_resolution_levels(side: int, levels: int) -> None:
    assert resolution_levels((side, side + 7)) == levels
    S = torch.randn(1, 1, side, side + 7)
    assert TEALoss().levels(S, S.flip(-1)).shape == (1, levels)


def test_single_resolution_ablation_is_level_zero() -> None:
    S, T = torch.randn(2, 3, 64, 64, dtype=DT), torch.randn(2, 3, 64, 64, dtype=DT)
    single = TEALoss(multi_resolution=False)(S, T)
    assert single.item() == pytest.approx(TEALoss().levels(S, T)[:, 0].mean().item(), rel=1e-12)


def test_geometric_normalisation_enforces_matching_norms() -> None:
    """Zero only at S == T; for S = a T the loss is |a - 1| / sqrt(a) at every level."""
    T = torch.randn(2, 3, 32, 32, dtype=DT)
    assert TEALoss()(T.clone(), T).item() == pytest.approx(0.0, abs=1e-12)
    for a in (0.25, 2.0, 5.0):
        assert TEALoss()(a * T, T).item() == pytest.approx(abs(a - 1) / math.sqrt(a), rel=1e-8)
        assert L1NormalizedLoss()(a * T, T).item() == pytest.approx(0.0, abs=1e-12)
        assert L2NormalizedLoss()(a * T, T).item() == pytest.approx(0.0, abs=1e-6)


def test_individual_normalisation_variants_match_equations() -> None:
    S, T = torch.randn(2, 3, 16, 16, dtype=DT), torch.randn(2, 3, 16, 16, dtype=DT)
    l1 = [float((S[b] / S[b].abs().sum() - T[b] / T[b].abs().sum()).abs().sum()) for b in range(2)]
    l2 = [float((S[b] / S[b].norm() - T[b] / T[b].norm()).norm()) for b in range(2)]
    assert L1NormalizedLoss()(S, T).item() == pytest.approx(sum(l1) / 2, rel=1e-10)
    assert L2NormalizedLoss()(S, T).item() == pytest.approx(sum(l2) / 2, rel=1e-10)


def test_teacher_is_detached_by_default_and_normaliser_is_not() -> None:
    S = torch.randn(2, 1, 16, 16, dtype=DT, requires_grad=True)
    T = torch.randn(2, 1, 16, 16, dtype=DT, requires_grad=True)
    TEALoss()(S, T).backward()
    assert S.grad is not None and T.grad is None
    TEALoss(detach_target=False)(S, T).backward()  # warm-up co-training: the teacher learns too
    assert T.grad is not None
    # The gradient includes the normaliser's: it differs from that of a detached normaliser.
    s = S.detach().requires_grad_()
    den = torch.sqrt(s.abs().flatten(1).mean(1).detach() * T.detach().abs().flatten(1).mean(1))
    ((s - T.detach()).abs().flatten(1).mean(1) / den).mean().backward()
    full = S.detach().requires_grad_()
    TEALoss(multi_resolution=False)(full, T).backward()
    assert not torch.allclose(full.grad, s.grad)


def test_gradient_is_finite_for_an_all_zero_student_heatmap() -> None:
    S = torch.zeros(2, 3, 32, 32, requires_grad=True)
    loss = TEALoss()(S, torch.randn(2, 3, 32, 32))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(S.grad).all()


def test_gradcheck_of_tea_loss() -> None:
    S = torch.randn(2, 2, 16, 16, dtype=DT, requires_grad=True)
    T = torch.randn(2, 2, 16, 16, dtype=DT)
    assert torch.autograd.gradcheck(lambda s: TEALoss()(s, T), (S,))


@pytest.mark.parametrize(
    ("s_shape", "t_shape", "message"),
    [((2, 3, 8, 8), (2, 3, 8, 9), "same shape"), ((2, 8, 8), (2, 8, 8), r"\[B, C, H, W\]")],
)
def test_bad_shapes_are_refused(s_shape: tuple[int, ...], t_shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TEALoss()(torch.randn(s_shape), torch.randn(t_shape))
