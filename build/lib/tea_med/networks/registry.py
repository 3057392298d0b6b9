"""Networks by name, so bundle configs and CLIs can name models instead of import paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tea_med.networks.classifiers import densenet121, resnet18, resnet34, resnet50
from tea_med.networks.segmenter import lung_segmenter

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "densenet121": densenet121,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "lung_segmenter": lung_segmenter,
}


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """``NETWORKS[name](**kwargs)``, with an error that lists the known names."""
    try:
        factory = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}") from None
    return factory(**kwargs)
