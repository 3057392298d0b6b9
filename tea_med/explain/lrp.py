"""Trainable LRP-ε with LRP-Flex semantics (METHOD.md section 2).

The explained quantity is the raw logit ``z[b, c_b]``. Backpropagation is ordinary autograd
except at every ``nn.ReLU``, where the incoming gradient is multiplied by ``a / (a + eps_b)``
(``a``: that ReLU's output, ``eps_b``: the sample's ε). The heatmap is ``x * dQ/dx``. This is
LRP-ε with ε in every pre-activation that feeds a ReLU and LRP-0 elsewhere.

How the modification is applied, and why it is correct for training:

* During the explainer's forward pass a hook on each ReLU *module* registers a tensor hook on
  that ReLU's output. The tensor hook fires in the backward that builds the heatmap and
  returns ``grad * a / (a + eps)``.
* With ``create_graph=True`` that product is recorded by autograd (through
  :class:`EpsilonFactor`, whose derivative is exact), with ``a`` in the graph: nothing is
  detached, so the TEA loss gradient flows through the denominators.
* All hooks are removed as soon as the heatmap exists (``finally``), so a later
  ``loss.backward()`` through the heatmap and the forward graph is plain autograd. A custom
  function baked into the *forward* graph would keep modifying that second backward and give
  weight gradients a few percent off; ``tests/explain/test_lrp_gradcheck.py`` catches this.
* All state lives in one call's context object: no module-level switches, so two models,
  threads or DDP ranks never interfere (hooks on a model shared by two threads act only in
  the thread that registered them).
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
from torch.utils.hooks import RemovableHandle

from tea_med.explain.base import LRPUnsupportedError
from tea_med.explain.gradient import GradientExplainer
from tea_med.explain.guard import ForwardGuard

Validate = Literal["always", "once", "never"]


class EpsilonFactor(torch.autograd.Function):
    """``g * a / (a + eps)`` with an exact, memory-lean derivative (saves ``g`` and ``a`` only)."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, a: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g, a, eps)
        return g * a / (a + eps)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g, a, eps = ctx.saved_tensors
        denom = a + eps
        grad_g = grad_out * a / denom if ctx.needs_input_grad[0] else None
        # d/da [a / (a + eps)] = eps / (a + eps)^2
        grad_a = grad_out * g * eps / (denom * denom) if ctx.needs_input_grad[1] else None
        return grad_g, grad_a, None


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
    """One explainer call's hooks: the ε-rule at every ReLU, removed on every exit path."""

    def __init__(
        self,
        model: nn.Module,
        eps: torch.Tensor,
        create_graph: bool,
        guard: ForwardGuard | None,
        on_valid: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.eps = eps
        self.create_graph = create_graph
        self.guard = guard
        self.on_valid = on_valid
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.thread = threading.get_ident()  # hooks sit on shared modules: act in this thread only
        self.calls: dict[str, int] = {}
        self.outputs: list[tuple[str, torch.Tensor, int]] = []
        self.module_handles: list[RemovableHandle] = []
        self.tensor_handles: list[RemovableHandle] = []

    def __enter__(self) -> _EpsilonRules:
        try:
            if self.guard is not None:
                self.guard.__enter__()
            else:
                for name, relu in self.relus:
                    if relu.inplace:
                        raise LRPUnsupportedError(
                            f"ReLU module '{name}' is in-place (inplace=True); use "
                            "tea_med.networks.lrp_ready(model), which returns a copy with in-place off"
                        )
            for name, relu in self.relus:
                hook = functools.partial(self._forward_hook, name)
                self.module_handles.append(relu.register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise
        return self

    def _forward_hook(self, name: str, _module: nn.Module, _inputs: Any, a: torch.Tensor) -> None:
        if threading.get_ident() != self.thread:
            return
        n = self.calls.get(name, 0) + 1
        self.calls[name] = n
        if n > 1:
            raise LRPUnsupportedError(
                f"ReLU module '{name}' is called {n} times in one forward pass; LRP-ε needs a distinct "
                "nn.ReLU module per use (see tea_med.networks.lrp_ready)"
            )
        if not a.requires_grad:
            return  # no gradient flows here (frozen prefix and an input without grad)
        if a.shape[0] != self.eps.shape[0]:
            raise LRPUnsupportedError(
                f"ReLU module '{name}' outputs batch size {a.shape[0]}, the input had {self.eps.shape[0]}; "
                "per-sample ε needs the batch dimension first and unchanged"
            )
        eps = self.eps.view(-1, *([1] * (a.ndim - 1)))
        self.tensor_handles.append(a.register_hook(functools.partial(self._rule, a, eps)))
        self.outputs.append((name, a, a._version))

    def _rule(self, a: torch.Tensor, eps: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.create_graph:
            return EpsilonFactor.apply(grad, a, eps)
        denom = a + eps
        return torch.div(a, denom, out=denom).mul_(grad)

    def after_forward(self) -> None:
        """Stop watching the forward; refuse ReLU outputs that were modified in place."""
        if self.guard is not None:
            self.guard.__exit__(None, None, None)
            self.guard = None
        for h in self.module_handles:
            h.remove()
        self.module_handles.clear()
        for name, a, version in self.outputs:
            if a._version != version:
                raise LRPUnsupportedError(
                    f"the output of ReLU module '{name}' is modified in place later in the forward pass "
                    "(e.g. `out += residual`); write that op out of place"
                )
        if self.on_valid is not None:
            self.on_valid()

    def _remove(self) -> None:
        if self.guard is not None:
            self.guard.__exit__(None, None, None)
            self.guard = None
        for h in (*self.module_handles, *self.tensor_handles):
            h.remove()
        self.module_handles.clear()
        self.tensor_handles.clear()
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
        return _EpsilonRules(model, e, create_graph, guard, on_valid)

    def __repr__(self) -> str:
        return f"LRPEpsilon(eps={self.eps}, validate={self.validate!r})"


__all__ = ["EpsilonFactor", "LRPEpsilon", "as_eps"]
