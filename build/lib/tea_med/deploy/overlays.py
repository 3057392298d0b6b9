"""Writes an LRP-ε heatmap overlay per inferred image (optional output of student inference)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from tea_med.evaluation.figures import heatmap_grid
from tea_med.explain import LRPEpsilon


class HeatmapOverlayWriter:
    """``<output_dir>/heatmaps/<stem>_heatmap.png``: the image and the LRP-ε heatmap of the
    predicted class (red: evidence for it, blue: against).

    Args:
        output_dir: parent folder of ``heatmaps/``.
        network: the (LRP-ready) classifier used for inference.
        class_names: names of the network's outputs.
        eps: LRP-ε's ε.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        network: torch.nn.Module,
        class_names: Sequence[str],
        eps: float = 1e-2,
        image_key: str = "image",
    ) -> None:
        self.dir = Path(output_dir) / "heatmaps"
        self.network = network
        self.class_names = list(class_names)
        self.explainer = LRPEpsilon(eps=eps)
        self.image_key = image_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        items: list[dict[str, Any]] = engine.state.output  # type: ignore[assignment]  # ignite types State.output as int | None
        device = next(self.network.parameters()).device
        x = torch.stack([torch.as_tensor(it[self.image_key]).as_subclass(torch.Tensor) for it in items]).to(
            device
        )
        e = self.explainer.explain(self.network, x, lambda z: z.argmax(1))
        probs = torch.softmax(e.logits, 1)
        for i, item in enumerate(items):
            meta = getattr(item[self.image_key], "meta", {}) or {}
            stem = Path(str(meta.get("filename_or_obj", ""))).stem or f"image_{engine.state.iteration}_{i}"
            c = int(e.target[i])
            heatmap_grid(
                x[i : i + 1].cpu().numpy(),
                {
                    f"LRP-ε: {self.class_names[c]} ({float(probs[i, c]):.2f})": e.heatmap[i : i + 1]
                    .cpu()
                    .numpy()
                },
                self.dir / f"{stem}_heatmap.png",
                row_titles=[stem],
            )
