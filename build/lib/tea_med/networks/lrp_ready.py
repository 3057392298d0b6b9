"""``lrp_ready(model)``: validate a classifier for LRP-ε, fixing what can be fixed on a copy."""

from __future__ import annotations

import copy

import torch
from torch import nn

from tea_med.explain.base import LRPUnsupportedError
from tea_med.explain.guard import check_modules
from tea_med.explain.lrp import LRPEpsilon
from tea_med.networks.classifiers import LRP_BLOCKS

_CONV_DIMS: dict[type[nn.Module], int] = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _needs_fix(model: nn.Module) -> bool:
    for m in model.modules():
        if type(m) in LRP_BLOCKS:
            return True
        if isinstance(m, nn.ReLU | nn.Dropout | nn.Dropout2d | nn.Dropout3d) and m.inplace:
            return True
    return False


def _fix(model: nn.Module) -> nn.Module:
    fixed = copy.deepcopy(model)
    for m in fixed.modules():
        replacement = LRP_BLOCKS.get(type(m))
        if replacement is not None:  # MONAI ResNet block: distinct ReLUs, out-of-place add
            m.__class__ = replacement
            m.make_lrp_ready()  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
        if isinstance(m, nn.ReLU | nn.Dropout | nn.Dropout2d | nn.Dropout3d):
            m.inplace = False
    return fixed


def probe_input(model: nn.Module, size: int | None = None) -> torch.Tensor:
    """A probe input ``[2, C, *spatial]`` derived from the model's first convolution."""
    for m in model.modules():
        dims = _CONV_DIMS.get(type(m))
        if dims is not None and isinstance(m, nn.modules.conv._ConvNd):  # always a conv (narrows m)
            param = next(model.parameters())
            side = size or (64 if dims <= 2 else 32)
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(2, m.in_channels, *([side] * dims), generator=gen, dtype=param.dtype)
            return x.to(param.device)
    raise ValueError(
        f"cannot derive an input shape for {type(model).__name__} (no convolution found); "
        "pass example_input=tensor of shape [B, C, *spatial]"
    )


def lrp_ready(
    model: nn.Module, example_input: torch.Tensor | None = None, *, probe: bool = True
) -> nn.Module:
    """Return a model that LRP-ε explains faithfully, or raise :class:`LRPUnsupportedError`.

    The original model is never modified. If nothing needs fixing the same object is returned;
    otherwise a deep copy in which in-place ReLUs/dropouts are turned off and MONAI ResNet
    blocks (which reuse one ReLU and add in place) are converted to their LRP-ready versions
    (same parameters and state dict keys).

    Refused, with an error naming the module: an unsupported activation module, a ReLU module
    used twice per forward, a functional ReLU (``F.relu``/``torch.relu``), an in-place op on a
    tensor in the autograd graph, and a head with fewer than two logits. The last four are
    found by one probe forward/backward pass in eval mode on ``example_input`` (default: a
    random ``[2, C, 64, 64]`` or ``[2, C, 32, 32, 32]`` built from the first convolution).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ready = _fix(model) if _needs_fix(model) else model
    check_modules(ready)
    if probe:
        x = example_input if example_input is not None else _probe_input(ready)
        was_training = ready.training
        ready.eval()
        try:
            LRPEpsilon(validate="always")(ready, x, torch.zeros(x.shape[0], dtype=torch.long))
        except LRPUnsupportedError:
            raise
        except Exception as err:
            if example_input is not None:
                raise
            raise ValueError(
                f"the probe forward pass of lrp_ready on a random input of shape {tuple(x.shape)} failed "
                f"({type(err).__name__}: {err}); pass example_input=<a tensor the model accepts>"
            ) from err
        finally:
            ready.train(was_training)
    return ready


def _probe_input(model: nn.Module) -> torch.Tensor:
    try:
        return probe_input(model)
    except ValueError as err:
        raise LRPUnsupportedError(str(err)) from err
