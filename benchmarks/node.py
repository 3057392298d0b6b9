"""What the DICOM node's networking and durability cost, measured on the shipped ``StorageNode``.

A student bundle at 224 px (shipped configs, seeded random weights) is exported; ``--n`` DICOM
phantoms (``--source-size`` px) are sent over one association by a pynetdicom sender on
loopback to the node (ONNX backend), which spools, classifies and writes the SR and heatmap SC
of each. Reported:

- latency per image from the node's 0x0000 to its complete result (p50, p95);
- node throughput: images / (time of the last result - start of the first C-STORE);
- ``tea-med infer`` throughput on the same files with the same backend and the same DICOM
  results, and the ratio node / infer.

    python benchmarks/node.py [--n 32] [--threads 2] [--source-size 512]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from infer import make_bundle  # benchmarks/infer.py
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from pynetdicom import AE

from tea_med.data.phantom_files import write_phantoms
from tea_med.deploy.infer import infer
from tea_med.node.config import from_mapping
from tea_med.node.scp import StorageNode


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--source-size", type=int, default=512, help="side of the DICOM phantoms (default 512)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = make_bundle(root)
        write_phantoms(
            root / "ph", n=args.n, size=args.source_size, formats=("dicom",), grid=False, progress=False
        )
        files = sorted((root / "ph" / "images" / "test_unbiased").glob("*.dcm"))
        t = time.perf_counter()
        infer(bundle, files, root / "infer", backend="onnx", dicom_results=True, batch_size=1)
        infer_rate = len(files) / (time.perf_counter() - t)

        settings = {
            "bundle": str(bundle),
            "spool": str(root / "spool"),
            "port": _port(),
            "backend": "onnx",
            "allowed_senders": [{"ae_title": "BENCH"}],
            "min_free_disk_mb": 1,
        }
        node = StorageNode(from_mapping(settings))
        node.start()
        acked: dict[str, float] = {}
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(ComputedRadiographyImageStorage)
        ae.add_requested_context(DigitalXRayImageStorageForPresentation)
        datasets = [pydicom.dcmread(f) for f in files]
        start = time.time()
        assoc = ae.associate("127.0.0.1", node.config.port, ae_title="TEA_MED")
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status.Status == 0, status
            acked[str(ds.SOPInstanceUID)] = time.time()
        assoc.release()
        results = root / "spool" / "results"
        while sum(1 for d in results.iterdir() if (d / "COMPLETE").exists()) < len(files):
            time.sleep(0.05)
        node.stop()
        done = {d.name: (d / "COMPLETE").stat().st_mtime for d in results.iterdir()}
    latency = np.array([done[uid] - acked[uid] for uid in acked])
    node_rate = len(files) / (max(done.values()) - start)
    out = {
        "n": len(files),
        "threads": args.threads,
        "latency_p50_s": float(np.percentile(latency, 50)),
        "latency_p95_s": float(np.percentile(latency, 95)),
        "node_images_per_s": node_rate,
        "infer_images_per_s": infer_rate,
        "node_over_infer": node_rate / infer_rate,
    }
    shape = f"{args.source_size} px -> 224 px, onnx, SR + SC each, {args.threads} threads"
    print(f"node: {len(files)} DICOM images, {shape}")
    print(f"latency 0x0000 -> result: p50 {out['latency_p50_s']:.2f} s, p95 {out['latency_p95_s']:.2f} s")
    print(f"throughput: node {node_rate:.2f} images/s, tea-med infer {infer_rate:.2f} images/s")
    print(f"node / infer: {node_rate / infer_rate:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
