"""Ignite handlers that write what inference produced: class probabilities and lung masks."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image


def _source(item: dict[str, Any], key: str) -> tuple[str, str]:
    meta = getattr(item.get(key), "meta", {}) or {}
    name = meta.get("filename_or_obj", "")
    return str(name), str(meta.get("sop_instance_uid", "") or "")


class PredictionWriter:
    """Writes ``predictions.csv``: file, SOP Instance UID, one probability per class, the
    predicted class. Written atomically at completion (a failed run leaves no half file).

    Args:
        output_dir: folder for ``predictions.csv``.
        class_names: one name per output of ``pred`` (probabilities after post-processing).
    """

    def __init__(
        self, output_dir: str | os.PathLike[str], class_names: Sequence[str], image_key: str = "image"
    ):
        self.path = Path(output_dir) / "predictions.csv"
        self.class_names = list(class_names)
        self.image_key = image_key
        self.rows: list[list[Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        items: list[dict[str, Any]] = engine.state.output  # type: ignore[assignment]  # ignite types State.output as int | None
        for item in items:
            probs = torch.as_tensor(item["pred"]).detach().float().reshape(-1).cpu().tolist()
            if len(probs) != len(self.class_names):
                raise ValueError(f"pred has {len(probs)} values for {len(self.class_names)} class names")
            name, uid = _source(item, self.image_key)
            best = int(np.argmax(probs))
            self.rows.append([name, uid, *[f"{p:.6f}" for p in probs], self.class_names[best]])

    def _write(self, _: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.part")
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "sop_instance_uid", *[f"p_{c}" for c in self.class_names], "predicted"])
            w.writerows(self.rows)
        os.replace(tmp, self.path)


class LungMaskWriter:
    """Saves the teacher's binary lung mask of each image as ``<output_dir>/masks/<stem>_mask.png``
    (at the network's input resolution, 0 / 255).

    Args:
        output_dir: parent folder of ``masks/``.
        network: a module with ``lung_mask(x) -> [B, 1, H, W]`` (``TeacherPipeline``).
    """

    def __init__(self, output_dir: str | os.PathLike[str], network: Any, image_key: str = "image") -> None:
        self.dir = Path(output_dir) / "masks"
        self.network = network
        self.image_key = image_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        items: list[dict[str, Any]] = engine.state.output  # type: ignore[assignment]  # ignite types State.output as int | None
        device = next(self.network.parameters()).device
        x = torch.stack([torch.as_tensor(item[self.image_key]) for item in items]).to(device)
        with torch.no_grad():
            masks = self.network.lung_mask(x).cpu().numpy()[:, 0]
        for item, mask in zip(items, masks, strict=True):
            name, _ = _source(item, self.image_key)
            stem = Path(name).stem or f"image_{engine.state.iteration}"
            Image.fromarray((mask > 0.5).astype(np.uint8) * 255).save(self.dir / f"{stem}_mask.png")
