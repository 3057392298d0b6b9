"""What a shortcut audit costs: ``tea-med audit`` images/s against ``tea-med infer`` on the same images.

A student bundle at 224 px (the shipped ``tea_student`` configs, seeded random DenseNet121
weights) audits ``--n`` PNG phantoms of ``test_unbiased`` with masks from the manifest, through
the shipped ``tea_med.audit.command.run_audit`` (reading, preprocessing, the four probes, the
report); the same images are classified by the shipped ``tea_med.deploy.infer.infer`` (eager, no
DICOM results). The ratio says what an audit costs against plain inference, and the last line
what 3,000 images take.

Medians of ``--reps`` interleaved repetitions, on ``--threads`` CPU threads.

    python benchmarks/audit.py [--n 32] [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tea_med.audit.command import run_audit
from tea_med.audit.run import AuditSettings
from tea_med.bundled import copy_bundles, set_common_values
from tea_med.data.phantom_files import write_phantoms
from tea_med.deploy.infer import infer
from tea_med.networks import densenet121

SIZE = 224


def make_bundle(root: Path) -> Path:
    (bundle,) = copy_bundles(root, names=("tea_student",))
    set_common_values(bundle, {"image_size": SIZE})
    torch.manual_seed(0)
    torch.save({"model": densenet121(num_classes=3).state_dict()}, bundle / "models" / "model.pt")
    return bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images of test_unbiased to audit (default 32)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, medians reported (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--batch", type=int, default=16, help="images per chunk / forward pass (default 16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = make_bundle(root)
        written = write_phantoms(
            root / "ph", n=args.n, size=SIZE, formats=("png",), grid=False, progress=False
        )
        manifest = written["datalist_png"]
        times: dict[str, list[float]] = {"audit": [], "infer": []}
        for rep in range(args.reps):
            t = time.perf_counter()
            run_audit(
                [bundle],
                manifest,
                root / f"audit_{rep}",
                settings=AuditSettings(batch=args.batch),
                say=lambda _: None,
            )
            times["audit"].append(time.perf_counter() - t)
            t = time.perf_counter()
            infer(
                bundle,
                [manifest],
                root / f"infer_{rep}",
                backend="eager",
                dicom_results=False,
                batch_size=args.batch,
                split="test_unbiased",
                progress=False,
            )
            times["infer"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    audit_rate, infer_rate = args.n / med["audit"], args.n / med["infer"]
    print(f"{args.n} images at {SIZE} px, {args.threads} threads, medians of {args.reps}")
    print(f"tea-med audit: {audit_rate:.2f} img/s; tea-med infer: {infer_rate:.2f} img/s")
    print(f"an audit costs {infer_rate / audit_rate:.1f}x plain inference")
    print(f"3,000 images: about {3000 / audit_rate / 60:.0f} min to audit")
    print(json.dumps({"n": args.n, "audit_images_per_s": audit_rate, "infer_images_per_s": infer_rate}))


if __name__ == "__main__":
    main()
