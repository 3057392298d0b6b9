"""Trainable LRP-ε with LRP-Flex semantics (docs/method.md, section 2).

The explained quantity is the raw logit ``z[b, c_b]``. Backpropagation is ordinary autograd
except at every ``nn.ReLU``, where the incoming gradient is multiplied by ``a / (a + eps_b)``
(``a``: that ReLU's output, ``eps_b``: the sample's ε). The heatmap is ``x * dQ/dx``. This is
LRP-ε with ε in every pre-activation that feeds a ReLU and LRP-0 elsewhere.

How the modification is applied, and why it is correct for training:

* During the explainer's forward pass a hook on each ReLU *module* routes its output through
  :class:`EpsilonReLU`, an autograd function tied to this call (no second ReLU pass). While the heatmap is
  being built its backward returns ``grad * a / (a + eps)`` directly (the ReLU mask is implied:
  the factor is 0 where ``a`` is 0).
* With ``create_graph=True`` that product is recorded by autograd (through
  :class:`EpsilonRule`, whose derivative is exact), with ``a`` in the graph: nothing is
  detached, so the TEA loss gradient flows through the denominators.
* As soon as the heatmap exists the call's ``active`` flag is cleared (``finally``), so a later
  ``loss.backward()`` through the heatmap and the forward graph sees a plain ReLU backward. A
  rule that stays on in that second backward (the classic trap of a function baked into the
  forward graph) gives weight gradients a few percent off;
  ``tests/explain/test_lrp_gradcheck.py`` catches it.
* All state lives in one call's context object: no module-level switches, so two models,
  threads or DDP ranks never interfere (hooks on a model shared by two threads act only in the
  thread whose call installed them, and are removed on every exit path).
* Memory: :class:`EpsilonRule` saves its own output (which the preceding batch-norm's backward
  saves anyway) instead of the incoming gradient, so the rule adds no saved tensor.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.hooks import RemovableHandle

from tea_med.explain.base import LRPUnsupportedError
from tea_med.explain.gradient import GradientExplainer
from tea_med.explain.guard import ForwardGuard

Validate = Literal["always", "once", "never"]


class EpsilonRule(torch.autograd.Function):
    """``out = g * a / (a + eps)``, recorded for a later backward (``create_graph=True``).

    Saves ``out`` and ``a`` (both kept alive by the graph anyway) and recovers
    ``g = out * (a + eps) / a`` where ``a > 0``; where ``a == 0`` both ``out`` and the exact
    derivative with respect to ``a`` that survives the ReLU are 0. (Activations below the
    smallest normal float, about 1e-38 in float32, get a slightly smaller derivative.)
    """

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, a: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        out = g * a / (a + eps)
        ctx.save_for_backward(out, a, eps)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        out, a, eps = ctx.saved_tensors
        denom = a + eps
        t = grad_out / denom
        grad_g = t * a if ctx.needs_input_grad[0] else None
        grad_a = None
        if ctx.needs_input_grad[1]:
            # d/da [g a / (a + eps)] = g eps / (a + eps)^2 = out eps / (a (a + eps)). Where a == 0,
            # out == 0 and the clamp keeps 0/0 away; only denormal activations are approximated.
            grad_a = t.mul_(out).mul_(eps).div_(a.clamp_min(torch.finfo(a.dtype).tiny))
        return grad_g, grad_a, None


class EpsilonReLU(torch.autograd.Function):
    """A ReLU whose backward follows the ε-rule while its call's ``rules.active`` is set."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, a: torch.Tensor, rules: _EpsilonRules, eps: torch.Tensor
    ) -> torch.Tensor:
        """``a`` is the ReLU module's own (detached) output: no second ReLU pass."""
        out = a.view_as(a)
        ctx.save_for_backward(out)
        ctx.rules, ctx.eps = rules, eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (a,) = ctx.saved_tensors
        if not ctx.rules.active:  # e.g. the final loss.backward(): a plain ReLU
            return torch.ops.aten.threshold_backward(grad, a, 0), None, None, None
        if torch.is_grad_enabled():  # building a heatmap with create_graph=True
            return EpsilonRule.apply(grad, a, ctx.eps), None, None, None
        denom = a + ctx.eps
        return torch.div(a, denom, out=denom).mul_(grad), None, None, None


def as_eps(eps: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """ε as a ``[B]`` tensor of ``like``'s dtype/device, validated to be finite and > 0."""
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if e.ndim == 0:
        e = e.expand(batch)
    e = e.reshape(-1)
    if e.numel() != batch:
        raise ValueError(f"eps must be a float or a tensor of shape [{batch}], got {e.numel()} values")
    if not bool(torch.isfinite(e).all()) or bool((e <= 0).any()):
        raise ValueError(
            f"eps must be finite and > 0 (LRP-ε), got {e.tolist()}; for ε = 0 use GradientXInput"
        )
    return e


class _EpsilonRules:
    """One explainer call: a forward hook on every ReLU module routes its output through
    :class:`EpsilonReLU`; hooks are removed and the rule switched off on every exit path."""

    def __init__(
        self,
        model: nn.Module,
        eps: torch.Tensor,
        guard: ForwardGuard | None,
        on_valid: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.eps = eps
        self.guard = guard
        self.on_valid = on_valid
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.thread = threading.get_ident()
        self.active = False
        self.calls: dict[str, int] = {}
        self.outputs: list[tuple[str, torch.Tensor, int]] = []
        self.handles: list[RemovableHandle] = []

    def __enter__(self) -> _EpsilonRules:
        try:
            if self.guard is not None:
                self.guard.__enter__()
            for name, relu in self.relus:
                if relu.inplace:
                    raise LRPUnsupportedError(
                        f"ReLU module '{name}' is in-place (inplace=True); use "
                        "tea_med.networks.lrp_ready(model), which returns a copy with in-place off"
                    )
            for name, relu in self.relus:
                hook = functools.partial(self._relu_hook, name)
                self.handles.append(relu.register_forward_hook(hook))
            self.active = True
        except BaseException:
            self._remove()
            raise
        return self

    def _relu_hook(self, name: str, _module: nn.Module, inputs: tuple[Any, ...], a: torch.Tensor) -> Any:
        if threading.get_ident() != self.thread:
            return None  # another thread's forward of a shared model: a plain ReLU
        n = self.calls.get(name, 0) + 1
        self.calls[name] = n
        if n > 1:
            raise LRPUnsupportedError(
                f"ReLU module '{name}' is called {n} times in one forward pass; LRP-ε needs a distinct "
                "nn.ReLU module per use (see tea_med.networks.lrp_ready)"
            )
        z = inputs[0]
        if not z.requires_grad:
            return None  # no gradient flows here (frozen prefix and an input without grad)
        if z.shape[0] != self.eps.shape[0]:
            raise LRPUnsupportedError(
                f"ReLU module '{name}' sees batch size {z.shape[0]}, the input had {self.eps.shape[0]}; "
                "per-sample ε needs the batch dimension first and unchanged"
            )
        out = EpsilonReLU.apply(z, a.detach(), self, self.eps.view(-1, *([1] * (z.ndim - 1))))
        self.outputs.append((name, out, out._version))
        return out

    def _stop_watching(self) -> None:
        """Leave the forward guard and remove the module hooks (idempotent)."""
        if self.guard is not None:
            self.guard.__exit__(None, None, None)
            self.guard = None
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def after_forward(self) -> None:
        """Stop watching the forward; refuse ReLU outputs that were modified in place."""
        self._stop_watching()
        for name, a, version in self.outputs:
            if a._version != version:
                raise LRPUnsupportedError(
                    f"the output of ReLU module '{name}' is modified in place later in the forward pass "
                    "(e.g. `out += residual`); write that op out of place"
                )
        self.outputs.clear()
        if self.on_valid is not None:
            self.on_valid()

    def _remove(self) -> None:
        self.active = False
        self._stop_watching()
        self.outputs.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()


class LRPEpsilon(GradientExplainer):
    """Layer-wise relevance propagation, ε-rule, differentiable (LRP-Flex semantics).

    Args:
        eps: default ε when a call passes none (a float > 0). Per-sample ε is passed per call.
        validate: ``"once"`` (default) watches the first forward pass of each model for
            functional ReLUs, in-place ops and reused ReLUs and raises
            :class:`LRPUnsupportedError` naming the module; ``"always"`` watches every call;
            ``"never"`` skips that watch. Reused ReLUs and in-place changes of ReLU outputs are
            refused on every call regardless (it costs nothing).

    Example::

        lrp = LRPEpsilon()
        heat = lrp(model, x, target, eps=sample_eps(len(x), 1e-3, 1e-2, gen), create_graph=True)
    """

    def __init__(self, eps: float = 1e-2, validate: Validate = "once") -> None:
        if validate not in ("always", "once", "never"):
            raise ValueError(f"validate must be 'always', 'once' or 'never', got {validate!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (LRP-ε), got {eps!r}; for ε = 0 use GradientXInput")
        self.eps = float(eps)
        self.validate = validate
        self._validated: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    def rules(
        self, model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor | None, create_graph: bool
    ) -> _EpsilonRules:
        e = as_eps(self.eps if eps is None else eps, x.shape[0], x)
        watch = self.validate == "always" or (self.validate == "once" and model not in self._validated)
        guard = ForwardGuard(model) if watch else None
        on_valid = functools.partial(self._validated.add, model) if watch else None
        return _EpsilonRules(model, e, guard, on_valid)

    def __repr__(self) -> str:
        return f"LRPEpsilon(eps={self.eps}, validate={self.validate!r})"


__all__ = ["EpsilonReLU", "EpsilonRule", "LRPEpsilon", "as_eps"]
