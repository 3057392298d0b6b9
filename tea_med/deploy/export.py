"""Verified export of a bundle's network: TorchScript, ONNX and a model card (``tea-med export``).

``export_bundle(bundle_dir)`` writes, beside the bundle's ``models/model.pt``:

- ``model.ts``: TorchScript through MONAI's ``ckpt_export`` (the bundle's metadata and
  inference config travel inside it as extra files, as in the MONAI model zoo);
- ``model.onnx``: ``torch.onnx.export`` with a dynamic batch axis (input ``image``
  ``[batch, 3, S, S]``, output ``logits`` ``[batch, K]``);
- ``model_card.json``: see :class:`ModelCard`.

Each exported file is run on a fixed, seeded batch and compared with the eager network; an
export whose largest absolute logit difference exceeds the tolerance (1e-4 by default) is
deleted and :class:`ExportError` names the difference. No training code is imported here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tea_med.deploy.bundle import BundleError, BundleNetwork, load_bundle_network

#: formats ``tea-med export`` writes, and their file names beside the checkpoint
FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
MODEL_CARD = "model_card.json"
#: largest absolute logit difference an export may show against the eager network
DEFAULT_TOLERANCE = 1e-4
#: the verification batch: this many seeded uniform images in [0, 1] (a batch size other than
#: the one traced for ONNX, so the dynamic batch axis is exercised)
VERIFY_BATCH = 3
EXPORT_BATCH = 2
VERIFY_SEED = 20240917
#: the UUID namespace of Device UIDs
DEVICE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tea-med.invalid/device-uid")


class ExportError(RuntimeError):
    """An export that could not be written or does not reproduce the eager network."""


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def device_uid(weights_sha256: str) -> str:
    """A DICOM UID derived from the weights' SHA-256: the Device UID of the model in DICOM results.

    ``2.25.<decimal>`` of a name-based UUID (RFC 4122 version 5; PS3.5 B.2), so the same weights
    always give the same UID and retraining (other weights) gives another.
    """
    return f"2.25.{uuid.uuid5(DEVICE_NAMESPACE, weights_sha256).int}"


@dataclass
class ModelCard:
    """What ``models/model_card.json`` states about an exported model.

    Attributes:
        name, version: the bundle's ``metadata.json`` name and version.
        class_names: the outputs, in order.
        preprocessing: the input chain: ``image_size``, ``channels``, histogram-equalisation
            ``num_bins``, ``pad_to_square`` and the transform names of the bundle's chain.
        input, output: tensor names, shapes (``"batch"`` for the dynamic axis) and dtype.
        files: per file name (``model.pt``, ``model.ts``, ``model.onnx``) its ``sha256`` and ``bytes``.
        versions: tea_med, torch, monai (and onnx / onnxruntime when ONNX was written).
        mlflow_run_id: the training run, when known.
        device_uid: DICOM UID derived from ``model.pt``'s SHA-256.
        verification: per format the largest absolute logit difference to the eager network on
            the fixed batch, the tolerance and the batch shape.
        exported_at: UTC time of the export (ISO 8601).
    """

    name: str
    version: str
    class_names: list[str]
    preprocessing: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    files: dict[str, dict[str, Any]]
    versions: dict[str, str]
    device_uid: str
    mlflow_run_id: str | None = None
    verification: dict[str, dict[str, Any]] = field(default_factory=dict)
    exported_at: str = ""

    @property
    def weights_sha256(self) -> str:
        return str(self.files["model.pt"]["sha256"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a ``model_card.json``; :class:`BundleError` names the file when it is missing or bad."""
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"{path} does not exist: export the bundle first (tea-med export --bundle DIR)")
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (ValueError, TypeError) as err:
            raise BundleError(f"{path} is not a tea_med model card: {err}") from err


def _versions(onnx: bool) -> dict[str, str]:
    import monai

    import tea_med

    found = {"tea_med": tea_med.__version__, "torch": torch.__version__, "monai": monai.__version__}
    if onnx:
        import onnx as onnx_pkg
        import onnxruntime

        found |= {"onnx": onnx_pkg.__version__, "onnxruntime": onnxruntime.__version__}
    return found


def _preprocessing(bundle: BundleNetwork) -> dict[str, Any]:
    chain = bundle.config_value("preprocessing")
    names = [type(t).__name__ for t in getattr(chain, "transforms", ())]
    return {
        "image_size": bundle.image_size,
        "channels": 3,
        "num_bins": int(bundle.config_value("num_bins", 256)),
        "equalisation": "global histogram equalisation onto [0, 1]",
        "pad_to_square": "PadToSquared" in names if names else True,
        "transforms": names or ["tea_med.data.test_transforms"],
    }


def verification_batch(image_size: int, batch: int = VERIFY_BATCH) -> torch.Tensor:
    """The fixed batch every export is checked on: seeded uniform values in [0, 1]."""
    generator = torch.Generator().manual_seed(VERIFY_SEED)
    return torch.rand((batch, 3, image_size, image_size), generator=generator)


def _check_exportable(bundle: BundleNetwork, formats: Sequence[str]) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise BundleError(f"unknown export format(s) {unknown or formats!r}; allowed: {', '.join(FORMATS)}")
    from tea_med.networks.teacher import TeacherPipeline

    net = bundle.network
    if isinstance(net, TeacherPipeline) and net.uniform_background and "onnx" in formats:
        raise BundleError(
            f"{bundle.bundle_dir}: the network is a teacher pipeline that draws random background "
            "noise in every forward pass, which ONNX cannot reproduce bit for bit; export the "
            "student bundle (no segmenter, deterministic) or pass --format torchscript"
        )


def _max_difference(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ExportError(f"exported logits have shape {a.shape}, the eager network's {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _eager_logits(network: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(VERIFY_SEED)  # a teacher pipeline's noise: the same draw as the export's run
        return network(x).float().numpy()


def _write_torchscript(bundle: BundleNetwork, path: Path, overrides: Mapping[str, Any]) -> None:
    from monai.bundle import ckpt_export

    checkpoint = torch.load(bundle.ckpt_path, map_location="cpu", weights_only=True)
    key = "model" if isinstance(checkpoint, dict) and "model" in checkpoint else None
    meta = bundle.bundle_dir / "configs" / "metadata.json"
    with torch.random.fork_rng(devices=[]):
        ckpt_export(
            net_id="network_def",
            filepath=str(path),
            ckpt_file=str(bundle.ckpt_path),
            meta_file=str(meta) if meta.is_file() else None,
            config_file=[str(f) for f in bundle.config_files],
            key_in_ckpt=key,
            bundle_root=str(bundle.bundle_dir),
            **dict(overrides),
        )


def _run_torchscript(path: Path, x: torch.Tensor) -> np.ndarray:
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(VERIFY_SEED)
        return module(x).float().numpy()


def _write_onnx(bundle: BundleNetwork, path: Path, overrides: Mapping[str, Any]) -> None:
    x = verification_batch(bundle.image_size, EXPORT_BATCH)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.random.fork_rng(devices=[]):
        torch.onnx.export(
            bundle.network,
            (x,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def _run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"image": x.numpy()})[0])


def export_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = tuple(FORMATS),
    tolerance: float = DEFAULT_TOLERANCE,
    mlflow_run_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    say: Any = None,
) -> ModelCard:
    """Export the bundle's network, verify every export, write ``models/model_card.json``.

    Args:
        bundle_dir: the MONAI bundle (its inference workflow and ``models/model.pt``).
        formats: any of ``"torchscript"``, ``"onnx"``.
        tolerance: largest absolute logit difference allowed against the eager network.
        mlflow_run_id: the MLflow run that trained the weights, recorded in the card.
        overrides: config ids to replace (as ``tea-med explain --set``).
        say: called with one line per step (e.g. ``print``); ``None`` is silent.

    Raises:
        BundleError: a missing bundle, checkpoint or config id, or an unknown format.
        ExportError: an export failed or differs from the eager network by more than
            ``tolerance`` (the file is removed and nothing else is changed).
    """
    if not tolerance > 0:
        raise BundleError(f"tolerance must be > 0, got {tolerance!r}")
    bundle = load_bundle_network(bundle_dir, overrides)
    formats = list(dict.fromkeys(formats))
    _check_exportable(bundle, formats)
    out_dir = bundle.ckpt_path.parent
    x = verification_batch(bundle.image_size)
    expected = _eager_logits(bundle.network, x)
    writers = {"torchscript": (_write_torchscript, _run_torchscript), "onnx": (_write_onnx, _run_onnx)}
    verification: dict[str, dict[str, Any]] = {}
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        for fmt in formats:
            write, run = writers[fmt]
            staged = Path(tmp) / FORMATS[fmt]
            if say:
                say(f"[{fmt}] writing {out_dir / FORMATS[fmt]}")
            try:
                write(bundle, staged, dict(overrides or {}))
                found = run(staged, x)
            except Exception as err:  # the exporters raise assorted types
                raise ExportError(
                    f"{fmt} export of {bundle.ckpt_path} failed: {type(err).__name__}: {err}"
                ) from err
            diff = _max_difference(found, expected)
            if not diff <= tolerance:
                raise ExportError(
                    f"{fmt} export of {bundle.ckpt_path} differs from the eager network: largest absolute "
                    f"logit difference {diff:.3g} > tolerance {tolerance:g} on the fixed batch "
                    f"{tuple(x.shape)}; nothing was written"
                )
            verification[fmt] = {
                "max_abs_logit_difference": diff,
                "tolerance": tolerance,
                "batch_shape": list(x.shape),
            }
            if say:
                say(
                    f"[{fmt}] verified: largest absolute logit difference {diff:.2e} "
                    f"(tolerance {tolerance:g})"
                )
        for fmt in formats:  # every export verified: move them into place
            target = out_dir / FORMATS[fmt]
            os.replace(Path(tmp) / FORMATS[fmt], target)
            written[FORMATS[fmt]] = target
    files = {"model.pt": bundle.ckpt_path, **written}
    metadata = bundle.metadata()
    weights = sha256_of(bundle.ckpt_path)
    size = bundle.image_size
    card = ModelCard(
        name=str(metadata.get("name") or bundle.bundle_dir.resolve().name),
        version=str(metadata.get("version", "0")),
        class_names=bundle.class_names,
        preprocessing=_preprocessing(bundle),
        input={"name": "image", "shape": ["batch", 3, size, size], "dtype": "float32", "range": [0.0, 1.0]},
        output={
            "name": "logits",
            "shape": ["batch", len(bundle.class_names)],
            "dtype": "float32",
            "probabilities": "softmax over the logits",
        },
        files={
            n: {"sha256": weights if n == "model.pt" else sha256_of(p), "bytes": p.stat().st_size}
            for n, p in files.items()
        },
        versions=_versions("onnx" in formats),
        device_uid=device_uid(weights),
        mlflow_run_id=mlflow_run_id,
        verification=verification,
        exported_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    card_path = out_dir / MODEL_CARD
    tmp_card = card_path.with_suffix(".json.part")
    tmp_card.write_text(card.to_json())
    os.replace(tmp_card, card_path)
    if say:
        say(f"model card: {card_path} (Device UID {card.device_uid})")
    return card


__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "MODEL_CARD",
    "ExportError",
    "ModelCard",
    "device_uid",
    "export_bundle",
    "sha256_of",
    "verification_batch",
]
