"""Batch inference of a bundle on files, folders or a manifest (``tea-med infer``).

Per image: the class probabilities, the predicted class, the model's name, version and weights
SHA-256 (from the model card ``tea-med export`` wrote) and, for DICOM, the SOP Instance UID,
never patient name or ID. Written as they are computed to ``OUT/predictions.csv`` and
``OUT/predictions.jsonl``; inputs that cannot be used (unreadable, not an image, an unsupported
SOP class, ...) go to ``OUT/errors.csv`` with the reason and never stop the batch. Options:
LRP-ε overlays (``OUT/heatmaps/``) and, for each DICOM input, a TID 1500 Structured Report and
a heatmap Secondary Capture (``OUT/dicom/``, :mod:`tea_med.deploy.dicom_results`).

No training code (``tea_med.engines``, ``tea_med.losses``, mlflow) is imported here.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from tea_med.data.errors import DataError
from tea_med.deploy.backends import open_backend
from tea_med.deploy.bundle import BundleError, BundleNetwork, load_bundle_network
from tea_med.deploy.export import MODEL_CARD, ModelCard, device_uid, sha256_of
from tea_med.deploy.inputs import IMAGE_SUFFIXES, inference_datalist

#: the long side of a Secondary Capture at most (larger images are scaled down for it)
SC_MAX_SIDE = 1024


@dataclass
class InferenceSummary:
    """What one ``infer`` call did."""

    out_dir: Path
    backend: str
    images: int = 0
    predicted: int = 0
    errors: int = 0
    dicom_objects: int = 0
    heatmaps: int = 0
    seconds: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]], split: str = "test") -> list[Path]:
    """Files in the order given: a folder contributes its DICOM/PNG/JPEG files and its files
    without an ending (DICOM from PACS exports), recursively and sorted; a ``.json`` manifest the
    images of ``split``. Raises :class:`BundleError` naming an input that does not exist."""
    found: list[Path] = []
    if not inputs:
        raise BundleError("no INPUT given: pass image files, folders or a manifest .json")
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not f.name.startswith(".")
                and (f.suffix.lower() in IMAGE_SUFFIXES or not f.suffix)
            )
            found.extend(files)
        elif p.is_file() and p.suffix.lower() == ".json":
            found.extend(Path(r["image"]) for r in inference_datalist(p, split))
        elif p.is_file():
            found.append(p)
        else:
            raise BundleError(
                f"input {p} does not exist (expected an image file, a folder or a manifest .json)"
            )
    return found


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def model_identity(bundle: BundleNetwork) -> tuple[ModelCard | None, dict[str, str]]:
    """The model card when it describes the current ``model.pt``, and the model's identity."""
    from tea_med import __version__

    card_path = bundle.ckpt_path.parent / MODEL_CARD
    weights = sha256_of(bundle.ckpt_path)
    card = ModelCard.load(card_path) if card_path.is_file() else None
    if card is not None and card.weights_sha256 != weights:
        card = None  # retrained since the export: the card (and exported files) are stale
    meta = bundle.metadata()
    name = card.name if card else str(meta.get("name") or bundle.bundle_dir.resolve().name)
    version = card.version if card else str(meta.get("version", "0"))
    uid = card.device_uid if card else device_uid(weights)
    return card, {
        "name": name,
        "version": version,
        "sha256": weights,
        "device_uid": uid,
        "tea_med": __version__,
    }


class _Writers:
    """CSV + JSON lines of predictions and a CSV of errors, flushed after every image."""

    def __init__(self, out: Path, class_names: Sequence[str]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.paths = {
            "predictions_csv": out / "predictions.csv",
            "predictions_jsonl": out / "predictions.jsonl",
            "errors": out / "errors.csv",
        }
        self.class_names = list(class_names)
        self._csv_fh: TextIO = open(self.paths["predictions_csv"], "w", newline="")  # noqa: SIM115
        self._jsonl: TextIO = open(self.paths["predictions_jsonl"], "w")  # noqa: SIM115
        self._err_fh: TextIO = open(self.paths["errors"], "w", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._csv_fh)
        self._err = csv.writer(self._err_fh)
        self._csv.writerow(
            [
                "file",
                "sop_instance_uid",
                *[f"p_{c}" for c in self.class_names],
                "predicted",
                "model",
                "model_version",
                "model_sha256",
            ]
        )
        self._err.writerow(["file", "reason"])

    def prediction(self, row: dict[str, Any]) -> None:
        probs = row["probabilities"]
        self._csv.writerow(
            [
                row["file"],
                row["sop_instance_uid"],
                *[f"{probs[c]:.6f}" for c in self.class_names],
                row["predicted"],
                row["model"],
                row["model_version"],
                row["model_sha256"],
            ]
        )
        self._jsonl.write(json.dumps(row) + "\n")
        self._csv_fh.flush()
        self._jsonl.flush()

    def error(self, path: Path, reason: str) -> None:
        self._err.writerow([str(path), reason])
        self._err_fh.flush()

    def close(self) -> None:
        for fh in (self._csv_fh, self._jsonl, self._err_fh):
            fh.close()


def prepare_image(preprocessing: Any, path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The network input ``[3, S, S]`` of one file and its (non-identifying) metadata."""
    from tea_med.deploy.dicom_results import ACCEPTED_SOP_CLASSES
    from tea_med.deploy.explain import data_error

    try:
        record = preprocessing({"image": str(path)})
    except Exception as err:
        found = data_error(err)
        raise (found or DataError(path, f"cannot be preprocessed ({type(err).__name__}: {err})")) from err
    image = record["image"]
    meta = dict(getattr(image, "meta", {}) or {})
    if meta.get("source_format") == "dicom":
        sop_class = str(meta.get("sop_class_uid") or "")
        if sop_class not in ACCEPTED_SOP_CLASSES:
            accepted = ", ".join(ACCEPTED_SOP_CLASSES.values())
            raise DataError(path, f"unsupported SOP class {sop_class or '(none)'}; accepted: {accepted}")
    tensor = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    return tensor.float(), meta


def to_source_grid(heatmap: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """Undo the test chain's geometry for a ``[S, S]`` map: scale to the padded square of a
    ``rows x cols`` image and cut the symmetric padding off (the extra pixel of an odd padding
    lies after the image, as in MONAI's ``SpatialPad``). Values are divided by the number of
    output pixels per network pixel, so the map's sum is kept."""
    side = max(rows, cols)
    size = heatmap.shape[-1]
    up = torch.nn.functional.interpolate(
        heatmap.double()[None, None], size=(side, side), mode="bilinear", align_corners=False
    )[0, 0] * (size * size / (side * side))
    top, left = (side - rows) // 2, (side - cols) // 2
    return up[top : top + rows, left : left + cols].numpy()


def _sc_size(rows: int, cols: int) -> tuple[int, int]:
    scale = min(1.0, SC_MAX_SIDE / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def write_dicom_results(
    path: Path,
    heatmap: torch.Tensor,
    probabilities: Sequence[float],
    class_names: Sequence[str],
    identity: dict[str, str],
    out: Path,
    stem: str,
) -> list[Path]:
    """Write ``out/<stem>_sr.dcm`` and ``out/<stem>_sc.dcm`` for the DICOM file ``path``: the
    structured report of ``probabilities`` and the Secondary Capture of the image with
    ``heatmap`` (``[S, S]``, the network's grid) over it. Each file is renamed into place whole."""
    import pydicom
    from skimage.transform import resize

    from tea_med.data.loading import LoadXray
    from tea_med.deploy.dicom_results import (
        AlgorithmIdentity,
        overlay_rgb,
        secondary_capture,
        structured_report,
    )

    source = pydicom.dcmread(path, stop_before_pixels=True)
    who = AlgorithmIdentity(
        identity["name"], identity["version"], identity["device_uid"], identity["sha256"], identity["tea_med"]
    )
    sr = structured_report(source, probabilities, class_names, who)
    image = LoadXray()(path)[0].numpy()
    rows, cols = _sc_size(*image.shape)
    small = resize(image, (rows, cols), order=1, anti_aliasing=True, preserve_range=True)
    heat = to_source_grid(heatmap, rows, cols)
    k = int(np.argmax(probabilities))
    legend = [
        f"{who.name} {who.version}: {class_names[k]} (p = {probabilities[k]:.2f})",
        "LRP-e relevance: red for, blue against",
        "NOT FOR DIAGNOSTIC USE",
    ]
    sc = secondary_capture(source, overlay_rgb(small, heat, legend), who)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, ds in (("sr", sr), ("sc", sc)):
        target = out / f"{stem}_{suffix}.dcm"
        tmp = target.with_suffix(".dcm.part")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)
        written.append(target)
    return written


def infer(
    bundle_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    backend: str = "eager",
    heatmaps: bool = False,
    dicom_results: bool = True,
    batch_size: int = 8,
    split: str = "test",
    eps: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = False,
    on_image: Callable[[dict[str, Any]], None] | None = None,
) -> InferenceSummary:
    """Classify every input with the bundle's network; see the module docs for what is written.

    Args:
        bundle_dir: the MONAI bundle (inference workflow, ``models/model.pt``; for the
            ``torchscript`` / ``onnx`` backends also what ``tea-med export`` wrote).
        inputs: image files, folders (recursive) and manifest ``.json`` files.
        out_dir: output folder (created).
        backend: ``eager``, ``torchscript`` or ``onnx``.
        heatmaps: also write an LRP-ε overlay PNG per image (computed with the eager network).
        dicom_results: write the SR and the heatmap Secondary Capture for each DICOM input.
        batch_size: images per forward pass (>= 1).
        split: the split read from a manifest.
        eps: LRP ε; ``None``: the bundle's ``heatmap_eps`` (else 1e-2).
        overrides: config ids to replace (as ``tea-med explain --set``).
        progress: show a progress bar on stderr.
        on_image: called with each prediction row.
    """
    from tqdm.auto import tqdm

    from tea_med.deploy.explain import DEFAULT_EPS, ExplainedImage, explain_tensor, save_overlay
    from tea_med.explain import LRPEpsilon

    if batch_size < 1:
        raise BundleError(f"--batch-size must be >= 1, got {batch_size}")
    if eps is not None and not eps > 0:
        raise BundleError(f"eps must be > 0 (LRP-ε), got {eps!r}")
    t0 = time.perf_counter()
    files = collect_inputs(inputs, split)
    bundle = load_bundle_network(bundle_dir, overrides)
    card, identity = model_identity(bundle)
    run = open_backend(backend, bundle, card)
    preprocessing = bundle.preprocessing()
    eps = eps if eps is not None else (bundle.heatmap_eps or DEFAULT_EPS)
    lrp = LRPEpsilon(eps)
    out = Path(out_dir)
    writers = _Writers(out, bundle.class_names)
    summary = InferenceSummary(out, backend, images=len(files), outputs=dict(writers.paths))
    used: set[str] = set()
    bar = tqdm(total=len(files), desc=f"infer ({backend})", unit="image", disable=not progress)
    try:
        for chunk in _chunks(files, batch_size):
            ready: list[tuple[Path, torch.Tensor, dict[str, Any]]] = []
            for path in chunk:
                try:
                    tensor, meta = prepare_image(preprocessing, path)
                except DataError as err:
                    writers.error(path, str(err))
                    summary.errors += 1
                    bar.update(1)
                    continue
                ready.append((path, tensor, meta))
            if not ready:
                continue
            batch = np.ascontiguousarray(torch.stack([t for _, t, _ in ready]).numpy(), dtype=np.float32)
            logits = run(batch)
            probs = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), dim=1).numpy()
            for (path, tensor, meta), p in zip(ready, probs, strict=True):
                stem = _unique_stem(path, used)
                row: dict[str, Any] = {
                    "file": str(path),
                    "sop_instance_uid": str(meta.get("sop_instance_uid", "") or ""),
                    "probabilities": {c: float(v) for c, v in zip(bundle.class_names, p, strict=True)},
                    "predicted": bundle.class_names[int(np.argmax(p))],
                    "model": identity["name"],
                    "model_version": identity["version"],
                    "model_sha256": identity["sha256"],
                    "backend": backend,
                }
                is_dicom = meta.get("source_format") == "dicom"
                try:
                    if heatmaps or (dicom_results and is_dicom):
                        model_input, heat, mask, hp, target = explain_tensor(
                            bundle, tensor, eps=eps, class_index=int(np.argmax(p)), lrp=lrp
                        )
                        if heatmaps:
                            png = out / "heatmaps" / f"{stem}_lrp.png"
                            save_overlay(
                                ExplainedImage(
                                    path,
                                    png,
                                    tensor,
                                    model_input,
                                    heat,
                                    mask,
                                    hp,
                                    bundle.class_names[int(hp.argmax())],
                                    bundle.class_names[target],
                                    float(eps),
                                ),
                                png,
                            )
                            row["heatmap"] = str(png)
                            summary.heatmaps += 1
                        if dicom_results and is_dicom:
                            written = write_dicom_results(
                                path,
                                heat.sum(0),
                                [float(v) for v in p],
                                bundle.class_names,
                                identity,
                                out / "dicom",
                                stem,
                            )
                            row["dicom_results"] = [str(w) for w in written]
                            summary.dicom_objects += len(written)
                except Exception as err:  # one image's results never stop the batch
                    writers.error(
                        path,
                        f"{path}: classified, but its results could not be written "
                        f"({type(err).__name__}: {err})",
                    )
                    summary.errors += 1
                writers.prediction(row)
                summary.predicted += 1
                if on_image is not None:
                    on_image(row)
                bar.update(1)
    finally:
        bar.close()
        writers.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _unique_stem(source: Path, used: set[str]) -> str:
    stem = source.stem or source.name
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


__all__ = [
    "InferenceSummary",
    "collect_inputs",
    "infer",
    "model_identity",
    "prepare_image",
    "to_source_grid",
    "write_dicom_results",
]
