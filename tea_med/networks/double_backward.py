"""One switch for the layers whose double backward tea_med computes faster than PyTorch.

TEA trains on a heatmap built by a backward pass, so the student's step differentiates that
backward again. Two layers of the default networks make PyTorch's generic double backward
slow: training-mode batch-norm (:mod:`tea_med.networks.batchnorm`, closed forms) and DenseNet's
channel concatenation (:mod:`tea_med.networks.concat`). :func:`use_fast_double_backward`
swaps their classes in place; parameters, buffers and state-dict keys stay the same.
"""

from __future__ import annotations

from torch import nn

from tea_med.networks.batchnorm import FAST_BATCHNORM
from tea_med.networks.concat import FAST_CONCAT

_FAST = FAST_BATCHNORM | FAST_CONCAT


def use_fast_double_backward(model: nn.Module) -> nn.Module:
    """Switch every plain ``nn.BatchNorm{1,2,3}d`` and MONAI DenseNet layer of ``model`` to its
    fast class, in place.

    Parameters, buffers and state-dict keys are unchanged; results are identical up to
    floating-point rounding. Returns ``model`` for chaining.
    """
    for m in model.modules():
        fast = _FAST.get(type(m))
        if fast is not None:
            m.__class__ = fast
    return model


__all__ = ["use_fast_double_backward"]
