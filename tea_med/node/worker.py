"""The node's worker: classifies spooled instances, one result each, whatever happens in between.

For each file in ``incoming/`` (oldest first): when ``results/<uid>/COMPLETE`` already exists
(the node stopped after the result and before the move) the file just moves to ``done/``;
otherwise it is preprocessed and classified, and its result (``prediction.json``, the SR and
the heatmap Secondary Capture) is written to a staging folder that is renamed to
``results/<uid>`` with its ``COMPLETE`` marker, copied to ``outbox/`` when results are
forwarded, its line is appended to ``predictions.jsonl`` and ``predictions.csv`` in the spool,
and the instance moves to ``done/`` (so an instance in ``done/`` always has its line). An
instance that cannot be classified moves to ``quarantine/`` with the reason. Both predictions
files are rebuilt from the result folders at start, so each instance has exactly one line even
when the node stopped between the line and the move.

The worker runs in its own thread: PyTorch and ONNX Runtime release the GIL while they compute,
so the association threads keep receiving.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tea_med.data.errors import DataError
from tea_med.deploy.backends import open_backend
from tea_med.deploy.bundle import load_bundle_network
from tea_med.deploy.infer import model_identity, prepare_image, write_dicom_results
from tea_med.node.spool import COMPLETE, Spool

logger = logging.getLogger("tea_med.node")


class Worker(threading.Thread):
    """Classifies what the spool holds until :meth:`stop` (see the module docs).

    Args:
        spool: the node's spool.
        bundle_dir: the student bundle (exported when ``backend`` is not eager).
        backend: ``eager``, ``torchscript`` or ``onnx``.
        forward: copy each result to ``outbox/`` for the destination.
        on_result: called with ``(uid, prediction)`` after each result is complete.
    """

    def __init__(
        self,
        spool: Spool,
        bundle_dir: str | os.PathLike[str],
        backend: str = "eager",
        forward: bool = False,
        on_result: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(name="tea_med-worker", daemon=True)
        self.spool = spool
        self.bundle = load_bundle_network(bundle_dir)
        card, self.identity = model_identity(self.bundle)
        self.run_model = open_backend(backend, self.bundle, card)
        self.preprocessing = self.bundle.preprocessing()
        self.eps = self.bundle.heatmap_eps or 1e-2
        self.forward = forward
        self.on_result = on_result
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self.processed = 0
        self.quarantined = 0
        self.rebuild_predictions()

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            did = self.process_pending()
            if not did:
                self.wake.wait(timeout=1.0)
                self.wake.clear()

    def process_pending(self) -> int:
        """Classify every instance now in ``incoming/``; returns how many were handled."""
        handled = 0
        for path in list(self.spool.pending()):
            if self._stopping.is_set():
                break
            self.process(path)
            handled += 1
        return handled

    def process(self, path: Path) -> None:
        uid = path.stem
        if self.spool.has_results(uid):  # finished before an interruption: only the move was left
            self.spool.finish(path)
            return
        started = time.perf_counter()
        try:
            tensor, meta = prepare_image(self.preprocessing, path)
        except DataError as err:
            self.spool.quarantine(path, str(err))
            self.quarantined += 1
            logger.warning("instance %s quarantined: %s", uid, err)
            return
        try:
            prediction = self._classify(path, uid, tensor, meta)
        except Exception as err:  # one instance never stops the worker
            self.spool.quarantine(path, f"{path.name}: classification failed ({type(err).__name__}: {err})")
            self.quarantined += 1
            logger.exception("instance %s quarantined: classification failed", uid)
            return
        self._append(prediction)  # before the move: an instance in done/ always has its line
        self.spool.finish(path)
        self.processed += 1
        logger.info(
            "instance %s classified: %s (p = %.3f) in %.2f s",
            uid,
            prediction["predicted"],
            prediction["probabilities"][prediction["predicted"]],
            time.perf_counter() - started,
        )
        if self.on_result is not None:
            self.on_result(uid, prediction)

    def _classify(self, path: Path, uid: str, tensor: torch.Tensor, meta: dict[str, Any]) -> dict[str, Any]:
        from tea_med.deploy.explain import explain_tensor

        names = self.bundle.class_names
        logits = self.run_model(np.ascontiguousarray(tensor[None].numpy(), dtype=np.float32))
        p = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), dim=1)[0].numpy()
        k = int(np.argmax(p))
        prediction: dict[str, Any] = {
            "sop_instance_uid": uid,
            "probabilities": {c: float(v) for c, v in zip(names, p, strict=True)},
            "predicted": names[k],
            "model": self.identity["name"],
            "model_version": self.identity["version"],
            "model_sha256": self.identity["sha256"],
            "received": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(path.stat().st_mtime)),
        }
        staging = self.spool.tmp / f"result-{uid}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _, heat, _, _, _ = explain_tensor(self.bundle, tensor, eps=self.eps, class_index=k)
        written = write_dicom_results(
            path, heat.sum(0), [float(v) for v in p], names, self.identity, staging, uid
        )
        prediction["results"] = [w.name for w in written]
        (staging / "prediction.json").write_text(json.dumps(prediction, indent=2))
        for f in staging.iterdir():  # make the files durable before the folder is published
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        (staging / COMPLETE).write_text("")
        target = self.spool.results_dir(uid)
        if target.exists():  # an incomplete folder of an interrupted attempt
            shutil.rmtree(target)
        os.replace(staging, target)
        if self.forward:
            for w in written:
                self.spool.write_durably(self.spool.folder("outbox") / w.name, (target / w.name).read_bytes())
        return prediction

    # ---- the aggregate prediction files ----------------------------------------------------
    def _columns(self) -> list[str]:
        return [
            "sop_instance_uid",
            *[f"p_{c}" for c in self.bundle.class_names],
            "predicted",
            "model",
            "model_version",
            "model_sha256",
        ]

    def _csv_row(self, prediction: dict[str, Any]) -> list[Any]:
        probs = prediction["probabilities"]
        return [
            prediction["sop_instance_uid"],
            *[f"{probs[c]:.6f}" for c in self.bundle.class_names],
            prediction["predicted"],
            prediction["model"],
            prediction["model_version"],
            prediction["model_sha256"],
        ]

    def rebuild_predictions(self) -> None:
        """Write ``predictions.jsonl`` / ``.csv`` afresh from every complete result folder."""
        found = []
        for folder in (self.spool.folder("results")).iterdir():
            if (folder / COMPLETE).is_file() and (folder / "prediction.json").is_file():
                found.append(json.loads((folder / "prediction.json").read_text()))
        found.sort(key=lambda r: (r.get("received", ""), r["sop_instance_uid"]))
        jsonl = "".join(json.dumps(r) + "\n" for r in found)
        self.spool.write_durably(self.spool.root / "predictions.jsonl", jsonl.encode())
        staged = self.spool.tmp / "predictions.csv"
        with open(staged, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self._columns())
            w.writerows(self._csv_row(r) for r in found)
        os.replace(staged, self.spool.root / "predictions.csv")

    def _append(self, prediction: dict[str, Any]) -> None:
        with open(self.spool.root / "predictions.jsonl", "a") as fh:
            fh.write(json.dumps(prediction) + "\n")
        with open(self.spool.root / "predictions.csv", "a", newline="") as fh:
            csv.writer(fh).writerow(self._csv_row(prediction))


__all__ = ["Worker"]
