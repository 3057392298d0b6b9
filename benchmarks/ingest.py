"""Ingestion throughput: 2048x2048 16-bit DICOM -> preprocessed 224 tensor (images/s).

Measures, on the calling process only (no DataLoader workers unless --workers):

- the steps of one image: DICOM read + Modality LUT, histogram equalisation, resize;
- uncached ``monai.data.Dataset`` with the evaluation and the training chain;
- ``monai.data.CacheDataset``: the one-off cache fill, then epochs served from the cache
  (evaluation: everything cached; training: cached up to the first random transform).

The DICOM files are phantoms written to a temporary folder. A ratio, not a test: compare the
figures with the training step rate of ``benchmarks/explain_cost.py`` (loading must never be
the bottleneck). Usage: ``python benchmarks/ingest.py [--n 16] [--epochs 2] [--workers 0]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Resize
from skimage.transform import resize as sk_resize

from tea_med.data import (
    HistogramEqualize,
    LoadXray,
    eval_transforms,
    generate_phantom,
    train_transforms,
    write_dicom,
)
from tea_med.data.phantom_files import to_stored_values


def _write_files(folder: Path, n: int, side: int) -> list[dict[str, str]]:
    """``n`` distinct 16-bit MONOCHROME1 DX files of ``side`` x ``side`` pixels."""
    rng = np.random.default_rng(0)
    base, _ = generate_phantom("pneumonia", "H2", 512, rng=rng)
    big = sk_resize(base, (side, side), order=1, preserve_range=True).astype(np.float32)
    records = []
    for i in range(n):
        noisy = np.clip(big + rng.normal(0, 0.01, big.shape).astype(np.float32), 0, 1)
        path = write_dicom(
            folder / f"{i:03d}.dcm",
            to_stored_values(noisy, 16, "MONOCHROME1"),
            photometric="MONOCHROME1",
            bits_stored=16,
            rescale_slope=0.5,
            rescale_intercept=-1024.0,
            pixel_spacing=(0.139, 0.139),
        )
        records.append({"image": str(path), "label": i % 3})
    return records


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} img/s  ({1000 * seconds / n:7.1f} ms/img)"


def _epoch(dataset: Dataset, workers: int, batch: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    for item in loader:
        assert item["image"].shape[1:] == (3, 224, 224)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="number of DICOM files (default 16)")
    parser.add_argument("--side", type=int, default=2048, help="DICOM side in pixels (default 2048)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs served from the cache (default 2)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, DataLoader workers: {args.workers}")

    with tempfile.TemporaryDirectory() as tmp:
        records = _write_files(Path(tmp), args.n, args.side)
        size_mb = sum(Path(r["image"]).stat().st_size for r in records) / args.n / 2**20
        print(f"{args.n} files of {args.side}x{args.side} 16-bit MONOCHROME1 DX ({size_mb:.1f} MiB each)\n")

        load, equalize, resize = LoadXray(), HistogramEqualize(), Resize((224, 224), mode="area")
        steps = {"read + modality LUT": 0.0, "histogram equalise": 0.0, "resize to 224": 0.0}
        for rec in records:
            t0 = time.perf_counter()
            img = load(rec["image"])
            t1 = time.perf_counter()
            img = equalize(img)
            t2 = time.perf_counter()
            resize(img)
            t3 = time.perf_counter()
            steps["read + modality LUT"] += t1 - t0
            steps["histogram equalise"] += t2 - t1
            steps["resize to 224"] += t3 - t2
        print("per step (one image):")
        for name, seconds in steps.items():
            print(f"  {name:22s} {1000 * seconds / args.n:7.1f} ms")
        print()

        results = {}
        for name, chain in (("eval", eval_transforms(224)), ("train", train_transforms(224))):
            results[f"uncached {name}"] = _epoch(Dataset(records, chain), args.workers, args.batch)
        for name, chain in (("eval", eval_transforms(224)), ("train", train_transforms(224))):
            start = time.perf_counter()
            cached = CacheDataset(records, chain, cache_rate=1.0, num_workers=1, progress=False)
            results[f"cache fill ({name})"] = time.perf_counter() - start
            seconds = sum(_epoch(cached, args.workers, args.batch) for _ in range(args.epochs))
            results[f"cached {name} epoch"] = seconds / args.epochs
        print("throughput (2048^2 16-bit DICOM -> 3x224x224 float32):")
        for name, seconds in results.items():
            print(f"  {name:22s} {_rate(args.n, seconds)}")


if __name__ == "__main__":
    main()
