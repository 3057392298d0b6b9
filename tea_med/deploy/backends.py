"""The three ways ``tea-med infer`` runs a bundle's network: eager PyTorch, TorchScript, ONNX Runtime.

Every backend maps a float32 batch ``[B, 3, S, S]`` (numpy) to logits ``[B, K]`` (numpy).
TorchScript and ONNX files are those ``tea-med export`` wrote; each is checked against the
SHA-256 its model card records before it is used, so a file replaced after the export is
refused instead of silently run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tea_med.deploy.bundle import BundleError, BundleNetwork
from tea_med.deploy.export import FORMATS, MODEL_CARD, ModelCard, sha256_of

BACKENDS = ("eager", "torchscript", "onnx")

Backend = Callable[[np.ndarray], np.ndarray]


def _exported_file(bundle: BundleNetwork, card: ModelCard | None, fmt: str) -> Path:
    models = bundle.ckpt_path.parent
    path = models / FORMATS[fmt]
    if card is None:
        raise BundleError(
            f"{models / MODEL_CARD} does not exist: run `tea-med export --bundle {bundle.bundle_dir}` first"
        )
    if not path.is_file() or path.name not in card.files:
        raise BundleError(
            f"{path} was not exported: run `tea-med export --bundle {bundle.bundle_dir} --format {fmt}`"
        )
    found, recorded = sha256_of(path), card.files[path.name]["sha256"]
    if found != recorded:
        raise BundleError(
            f"{path} has SHA-256 {found[:12]}..., the model card records {recorded[:12]}...: "
            f"the file changed after the export; export again (tea-med export --bundle {bundle.bundle_dir})"
        )
    return path


def _eager(bundle: BundleNetwork) -> Backend:
    network = bundle.network

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(x)).float().numpy()

    return run


def _torchscript(path: Path) -> Backend:
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).float().numpy()

    return run


def _onnx(path: Path) -> Backend:
    try:
        import onnxruntime
    except ImportError as err:
        raise BundleError("the onnx backend needs onnxruntime: pip install 'tea_med[workstation]'") from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch would use
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["logits"], {"image": x})[0])

    return run


def open_backend(name: str, bundle: BundleNetwork, card: ModelCard | None) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) for ``bundle``; TorchScript and ONNX need
    the files and model card ``tea-med export`` wrote, with matching SHA-256."""
    if name not in BACKENDS:
        raise BundleError(f"--backend {name!r} is not one of {', '.join(BACKENDS)}")
    if name == "eager":
        return _eager(bundle)
    path = _exported_file(bundle, card, name)
    return _torchscript(path) if name == "torchscript" else _onnx(path)


__all__ = ["BACKENDS", "Backend", "open_backend"]
