"""Throughput of ``tea-med infer`` per backend against the bare network, and the cost of DICOM results.

A student bundle at 224 px (the shipped ``tea_student`` configs, seeded random DenseNet121
weights) is exported with ``tea-med export``'s code (TorchScript + ONNX); ``--n`` DICOM phantoms
(CR/DX, ``--source-size`` px) are classified by the shipped ``tea_med.deploy.infer.infer``:

(a) images/s of ``infer`` per backend (reading, preprocessing, forward, CSV/JSON lines);
(b) images/s of the bare forward of the same backend on the already preprocessed batch;
    the overhead ratio is (b) / (a);
(c) seconds per image that the DICOM results add (SR + heatmap Secondary Capture, including the
    LRP-ε heatmap the Secondary Capture shows): eager ``infer`` with and without them.

Medians of ``--reps`` interleaved repetitions, on ``--threads`` CPU threads.

    python benchmarks/infer.py [--n 32] [--batch 8] [--reps 3] [--threads 2] [--source-size 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tea_med.bundled import copy_bundles, set_common_values
from tea_med.data.phantom_files import write_phantoms
from tea_med.deploy.backends import BACKENDS, open_backend
from tea_med.deploy.bundle import load_bundle_network
from tea_med.deploy.export import ModelCard, export_bundle
from tea_med.deploy.infer import infer, prepare_image
from tea_med.networks import densenet121

SIZE = 224


def make_bundle(root: Path) -> Path:
    (bundle,) = copy_bundles(root, names=("tea_student",))
    set_common_values(bundle, {"image_size": SIZE})
    torch.manual_seed(0)
    torch.save({"model": densenet121(num_classes=3).state_dict()}, bundle / "models" / "model.pt")
    export_bundle(bundle)
    return bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="DICOM images to classify (default 32)")
    ap.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, medians reported (default 3)")
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
        net = load_bundle_network(bundle)
        card = ModelCard.load(bundle / "models" / "model_card.json")
        chain = net.preprocessing()
        batch = np.stack([prepare_image(chain, f)[0].numpy() for f in files[: args.batch]]).astype(np.float32)
        runs = {b: open_backend(b, net, card) for b in BACKENDS}
        times: dict[str, list[float]] = {
            k: [] for k in [*BACKENDS, *(f"bare_{b}" for b in BACKENDS), "dicom"]
        }
        for _ in range(args.reps):
            for b in BACKENDS:
                t = time.perf_counter()
                infer(bundle, files, root / f"out_{b}", backend=b, dicom_results=False, batch_size=args.batch)
                times[b].append(time.perf_counter() - t)
                t = time.perf_counter()
                for _ in range(len(files) // args.batch):
                    runs[b](batch)
                times[f"bare_{b}"].append((time.perf_counter() - t) / (len(files) // args.batch * args.batch))
            t = time.perf_counter()
            infer(
                bundle, files, root / "out_dicom", backend="eager", dicom_results=True, batch_size=args.batch
            )
            times["dicom"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(files)
    result: dict[str, object] = {"n": n, "batch": args.batch, "threads": args.threads, "size": SIZE}
    print(
        f"tea-med infer on {n} DICOM images ({args.source_size} px -> {SIZE} px), batch {args.batch}, "
        f"{args.threads} threads, medians of {args.reps}"
    )
    print(f"{'backend':12s} {'infer img/s':>12s} {'bare img/s':>11s} {'overhead':>9s}")
    for b in BACKENDS:
        infer_rate, bare_rate = n / med[b], 1.0 / med[f"bare_{b}"]
        result[b] = {
            "infer_images_per_s": infer_rate,
            "bare_images_per_s": bare_rate,
            "overhead": bare_rate / infer_rate,
        }
        print(f"{b:12s} {infer_rate:12.1f} {bare_rate:11.1f} {bare_rate / infer_rate:8.2f}x")
    per_image = (med["dicom"] - med["eager"]) / n
    result["dicom_results_s_per_image"] = per_image
    print(f"SR + heatmap SC (incl. its LRP-ε heatmap): {per_image * 1000:.0f} ms per image")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
