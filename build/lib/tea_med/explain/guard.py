"""Checks that a network can be explained faithfully by gradient-based relevance rules.

LRP-ε (and its trainable form) modifies the gradient at every ``nn.ReLU`` *module*. That is
only faithful when each ReLU is a distinct, non-in-place module used once per forward pass,
when no ReLU is applied as a function (``F.relu``/``torch.relu``, invisible to module hooks),
when nothing is modified in place inside the autograd graph, and when there are no other
non-linear activations whose relevance rule tea_med does not define. :class:`ForwardGuard`
watches one forward pass and raises :class:`LRPUnsupportedError` naming the offending module.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from tea_med.explain.base import LRPUnsupportedError

#: Activation modules whose relevance is not defined by LRP-ε as tea_med implements it.
UNSUPPORTED_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Softsign,
    nn.Sigmoid,
    nn.Tanh,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.Softmax,
    nn.LogSoftmax,
)

#: Functions that apply a ReLU (or another activation) outside an ``nn.ReLU`` module.
_FUNCTIONAL_ACTIVATIONS = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
    F.threshold,
    F.threshold_,  # type: ignore[attr-defined]  # defined at runtime, missing from torch's functional.pyi
    torch.threshold,
    F.relu6,
    F.hardtanh,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    F.mish,
    F.softplus,
    torch.sigmoid,
    torch.tanh,
    torch.Tensor.sigmoid,
    torch.Tensor.tanh,
}

_INPLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__ipow__"}
_HARMLESS_UNDERSCORE = {"requires_grad_", "retain_grad", "share_memory_", "__set__", "__get__"}


def module_names(model: nn.Module) -> dict[nn.Module, str]:
    """``{module: dotted name}``; the root is called ``<model>``."""
    return {m: (name or "<model>") for name, m in model.named_modules()}


def check_modules(model: nn.Module) -> None:
    """Static checks: no unsupported activation module, no in-place ReLU or dropout."""
    for name, module in model.named_modules():
        label = name or "<model>"
        if isinstance(module, UNSUPPORTED_ACTIVATIONS):
            raise LRPUnsupportedError(
                f"module '{label}' is a {type(module).__name__}: tea_med's LRP-ε defines relevance for "
                "nn.ReLU activations only (allowed: nn.ReLU, linear layers, convolutions, batch-norm, "
                "pooling, concatenation, out-of-place additions)"
            )
        if isinstance(module, nn.ReLU | nn.Dropout | nn.Dropout2d | nn.Dropout3d) and module.inplace:
            raise LRPUnsupportedError(
                f"module '{label}' ({type(module).__name__}) is in-place (inplace=True); in-place ops "
                "destroy the activations the relevance rule needs. Use tea_med.networks.lrp_ready(model), "
                "which returns a copy with in-place turned off"
            )


def _is_inplace(func: Any, kwargs: dict[str, Any]) -> bool:
    name = getattr(func, "__name__", "")
    if name in _INPLACE_DUNDERS:
        return True
    if name.endswith("_") and not name.startswith("__") and name not in _HARMLESS_UNDERSCORE:
        return True
    return bool(kwargs.get("inplace", False))


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


class _FunctionWatch(TorchFunctionMode):
    def __init__(self, guard: ForwardGuard) -> None:
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.guard.check_call(func, args, kwargs)
        return func(*args, **kwargs)


class ForwardGuard:
    """Context manager that watches one forward pass of ``model`` and refuses what LRP cannot explain.

    It tracks which module is running (hooks on every module, removed on exit) and intercepts
    torch functions: a ReLU-like function called outside an ``nn.ReLU`` module or an in-place
    op on a tensor that is part of the autograd graph raises :class:`LRPUnsupportedError`
    naming the module. (Reused ReLU modules are refused by the LRP rules themselves.)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = module_names(model)
        self._stack: list[nn.Module] = []
        self._handles: list[RemovableHandle] = []
        self._mode = _FunctionWatch(self)
        self._mode_active = False
        self._thread = threading.get_ident()

    # -- module tracking -------------------------------------------------------------------
    def _pre(self, module: nn.Module, _inputs: Any) -> None:
        if threading.get_ident() == self._thread:
            self._stack.append(module)

    def _post(self, module: nn.Module, _inputs: Any, _output: Any) -> None:
        if threading.get_ident() == self._thread and self._stack and self._stack[-1] is module:
            self._stack.pop()

    def _where(self) -> str:
        return f"module '{self.names[self._stack[-1]]}'" if self._stack else "the model's forward"

    def check_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inside_relu = bool(self._stack) and isinstance(self._stack[-1], nn.ReLU)
        if func in _FUNCTIONAL_ACTIVATIONS and not inside_relu:
            raise LRPUnsupportedError(
                f"{self._where()} calls the function {getattr(func, '__name__', func)!s}; LRP-ε modifies "
                "gradients at nn.ReLU modules only, so a functional activation would be explained wrong. "
                "Use a distinct nn.ReLU module instead"
            )
        if _is_inplace(func, kwargs):
            t = _first_tensor(args)
            if t is not None and t.requires_grad:
                raise LRPUnsupportedError(
                    f"{self._where()} runs the in-place op {getattr(func, '__name__', func)!s} on a tensor "
                    "in the autograd graph; write it out of place (e.g. `out = out + residual`)"
                )

    # -- context ---------------------------------------------------------------------------
    def __enter__(self) -> ForwardGuard:
        check_modules(self.model)
        try:
            for module in self.names:
                self._handles.append(module.register_forward_pre_hook(self._pre))
                self._handles.append(module.register_forward_hook(self._post, always_call=True))
            self._mode.__enter__()
            self._mode_active = True
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._mode_active:
                self._mode_active = False
                self._mode.__exit__(exc_type, exc, tb)
        finally:
            self._remove()
