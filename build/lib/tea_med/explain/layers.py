"""Capturing one layer's activation during a forward pass (for Grad-CAM and attention maps)."""

from __future__ import annotations

from abc import abstractmethod
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from tea_med.explain.base import (
    Explainer,
    Explanation,
    Target,
    check_logits,
    plain_input,
    resolve_target,
)


class ActivationCapture:
    """Records the output of the module named ``layer`` (or, when ``layer`` is None, of the last
    leaf module whose output is a spatial map like the input (more than one position), i.e.
    the last convolutional block).

    Hooks are removed on exit, also when the forward raises.
    """

    def __init__(self, model: nn.Module, layer: str | None, spatial_ndim: int) -> None:
        self.model = model
        self.layer = layer
        self.spatial_ndim = spatial_ndim
        self.activation: torch.Tensor | None = None
        self.name: str | None = None
        self._handles: list[RemovableHandle] = []

    def _targets(self) -> list[tuple[str, nn.Module]]:
        if self.layer is not None:
            modules = dict(self.model.named_modules())
            if self.layer not in modules:
                leaves = [n for n, m in self.model.named_modules() if n and not list(m.children())]
                raise ValueError(
                    f"layer {self.layer!r} is not a module of {type(self.model).__name__}; "
                    f"e.g. one of {leaves[-5:]}"
                )
            return [(self.layer, modules[self.layer])]
        return [(n, m) for n, m in self.model.named_modules() if n and not list(m.children())]

    def _hook(self, name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        spatial_map = output.ndim == self.spatial_ndim and output.shape[2:].numel() > 1
        if self.layer is not None or spatial_map:
            self.activation, self.name = output, name

    def __enter__(self) -> ActivationCapture:
        for name, module in self._targets():
            self._handles.append(module.register_forward_hook(lambda m, i, o, n=name: self._hook(n, m, i, o)))
        return self

    def result(self) -> torch.Tensor:
        if self.activation is None:
            what = f"layer {self.layer!r}" if self.layer else "any spatial layer"
            raise ValueError(f"{what} produced no tensor output during the forward pass")
        if self.activation.ndim != self.spatial_ndim:
            raise ValueError(
                f"layer {self.name!r} outputs shape {tuple(self.activation.shape)}; a spatial map "
                f"[B, C, *spatial] with {self.spatial_ndim} dims is needed"
            )
        return self.activation

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class LayerMapExplainer(Explainer):
    """Template for explainers built from one layer's activation ``A`` (Grad-CAM, attention):
    one forward with ``A`` captured, then :meth:`layer_map` turns it into a ``[B, 1, *spatial]``
    map at the input's size. Detached unless ``create_graph``."""

    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer

    @abstractmethod
    def layer_map(
        self, a: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor, create_graph: bool
    ) -> torch.Tensor:
        """The ``[B, 1, *spatial]`` map at ``x``'s size from the activation ``a``."""

    def explain(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: Target,
        *,
        eps: float | torch.Tensor | None = None,
        create_graph: bool = False,
    ) -> Explanation:
        x_in = plain_input(x)
        with ActivationCapture(model, self.layer, x_in.ndim) as cap, torch.enable_grad():
            logits = check_logits(model(x_in), x_in.shape[0])
            t = resolve_target(target, logits)
            heat = self.layer_map(cap.result(), logits, t, x_in, create_graph)
        if not create_graph:
            heat, logits = heat.detach(), logits.detach()
        return Explanation(heatmap=heat, logits=logits, target=t)
