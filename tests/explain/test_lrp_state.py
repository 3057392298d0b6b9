"""LRPEpsilon leaves no trace: same parameters, working optimisers, no hooks, no global state."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from helpers.nets import NetA, randomize_batchnorm
from torch import nn

from tea_med.explain import LRPEpsilon, LRPUnsupportedError
from tea_med.losses import TEALoss
from tea_med.networks import densenet121

DT = torch.float64


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def plain_param_grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("validate", ["always", "never"])
def test_parameters_optimizer_and_hooks_after_explain_and_backward(validate: str) -> None:
    net = randomize_batchnorm(NetA()).double().eval()
    twin = copy.deepcopy(net)
    params_before = list(net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    heat = LRPEpsilon(validate=validate)(net, x, torch.tensor([0, 1]), eps=0.05, create_graph=True)
    TEALoss()(heat, torch.randn_like(heat)).backward()
    assert all(p is q for p, q in zip(net.parameters(), params_before, strict=True))
    # Every parameter but the last bias (which no input gradient depends on) receives a gradient.
    trained = [p for n, p in net.named_parameters() if n != "fc2.bias"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert net.fc2.bias.grad is None
    before = [p.detach().clone() for p in trained]
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(trained, before, strict=True))
    assert hook_count(net) == 0
    assert torch._C._len_torch_function_stack() == 0
    # The ReLU rule is off again: a plain backward equals the one of an untouched twin.
    twin.load_state_dict(net.state_dict())
    for g, h in zip(plain_param_grads(net, x), plain_param_grads(twin, x), strict=True):
        torch.testing.assert_close(g, h)


class _Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.parametrize("validate", ["always", "never"])
def test_hooks_removed_when_forward_raises(validate: str) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), _Boom(), nn.Flatten(), nn.Linear(2, 2)).double()
    with pytest.raises(RuntimeError, match="boom"):
        LRPEpsilon(validate=validate)(net, torch.randn(1, 1, 5, 5, dtype=DT), torch.tensor([0]))
    assert hook_count(net) == 0
    assert torch._C._len_torch_function_stack() == 0


def test_hooks_removed_when_target_is_invalid() -> None:
    net = randomize_batchnorm(NetA()).double().eval()
    with pytest.raises(ValueError, match=r"target classes must lie in \[0, 2\]"):
        LRPEpsilon()(net, torch.randn(2, 2, 8, 8, dtype=DT), torch.tensor([0, 7]))
    assert hook_count(net) == 0


def test_eval_mode_heatmap_of_a_sample_does_not_depend_on_the_batch() -> None:
    net = randomize_batchnorm(densenet121(num_classes=3)).double().eval()
    x = torch.rand(4, 3, 32, 32, dtype=DT)
    target = torch.tensor([0, 1, 2, 1])
    eps = torch.tensor([1e-3, 1e-2, 5e-3, 2e-3], dtype=DT)
    lrp = LRPEpsilon()
    batch = lrp(net, x, target, eps=eps)
    for i in range(4):
        alone = lrp(net, x[i : i + 1], target[i : i + 1], eps=eps[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-10, atol=1e-12)
    shuffled = lrp(net, x.flip(0), target.flip(0), eps=eps.flip(0))
    torch.testing.assert_close(shuffled.flip(0), batch, rtol=1e-10, atol=1e-12)


def test_two_models_and_threads_do_not_interfere() -> None:
    a = randomize_batchnorm(NetA()).double().eval()
    b = randomize_batchnorm(NetA()).double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=DT)
    t = torch.tensor([0, 1])
    lrp = LRPEpsilon(validate="never")
    expected = {"a": lrp(a, x, t, eps=0.1), "b": lrp(b, x, t, eps=0.001)}
    results: dict[str, list[torch.Tensor]] = {"a": [], "b": []}

    def work(name: str, model: nn.Module, eps: float) -> None:
        for _ in range(20):
            results[name].append(lrp(model, x, t, eps=eps))

    threads = [
        threading.Thread(target=work, args=("a", a, 0.1)),
        threading.Thread(target=work, args=("b", b, 0.001)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for name in ("a", "b"):
        assert len(results[name]) == 20
        for h in results[name]:
            torch.testing.assert_close(h, expected[name])


def test_one_model_explained_in_two_threads_at_once() -> None:
    net = randomize_batchnorm(densenet121(num_classes=3)).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=DT)
    t = torch.tensor([0, 1])
    lrp = LRPEpsilon(validate="never")
    expected = {eps: lrp(net, x, t, eps=eps) for eps in (0.1, 0.001)}
    results: dict[float, list[torch.Tensor]] = {0.1: [], 0.001: []}
    start = threading.Barrier(2)

    def work(eps: float) -> None:
        start.wait()
        for _ in range(5):
            results[eps].append(lrp(net, x, t, eps=eps))

    threads = [threading.Thread(target=work, args=(eps,)) for eps in results]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for eps, hs in results.items():
        assert len(hs) == 5
        for h in hs:
            torch.testing.assert_close(h, expected[eps])
    assert hook_count(net) == 0


def test_explain_returns_logits_and_targets_of_the_same_pass(gen: torch.Generator) -> None:
    net = randomize_batchnorm(NetA()).double().eval()
    x = torch.randn(5, 2, 8, 8, dtype=DT)
    e = LRPEpsilon().explain(net, x, lambda logits: logits.argmax(1))
    torch.testing.assert_close(e.logits, net(x).detach())
    assert torch.equal(e.target, net(x).argmax(1))
    assert not e.heatmap.requires_grad and not e.logits.requires_grad


def test_input_requiring_grad_stays_connected() -> None:
    net = randomize_batchnorm(NetA()).double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=DT, requires_grad=True)
    heat = LRPEpsilon()(net, x, torch.tensor([0, 1]), create_graph=True)
    heat.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), torch.tensor([1e-2, 0.0])])
def test_invalid_eps_is_refused(eps: object) -> None:
    net = randomize_batchnorm(NetA()).double().eval()
    with pytest.raises(ValueError, match="eps must be"):
        LRPEpsilon()(net, torch.randn(2, 2, 8, 8, dtype=DT), torch.tensor([0, 1]), eps=eps)


def test_reused_relu_refused_even_without_validation() -> None:
    relu = nn.ReLU()
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 2))
    with pytest.raises(LRPUnsupportedError, match="ReLU module '2' is called 2 times"):
        LRPEpsilon(validate="never")(net, torch.randn(2, 4, 1), torch.tensor([0, 1]))
