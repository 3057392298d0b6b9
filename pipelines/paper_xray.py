"""The paper's chest X-ray recipe (Bassi et al.; docs/method.md) on your own manifests.

Runs, in order, with the bundles' own commands:

1. the teacher's lung segmenter (paper-size U-Net, 224 px) on images + lung masks;
2. the teacher's DenseNet121 on segmented images (cross-entropy);
3. the TEA student: DenseNet121 trained with explanations alone (SGD, momentum 0.9, lr 1e-3,
   gradient-norm clip 1, 500 epochs, batch 16, lr x0.1 at epochs 300 and 400, student copied
   from the teacher with its last layer frozen, ε per image in 1e-3..1e-2);
4. evaluation of teacher and student on your out-of-distribution split.

    python pipelines/paper_xray.py --datalist /data/cxr/datalist.json --ood-split test_ood \\
        [--work outputs/paper_xray] [--run-name cxr-v1] [--dry-run]

The manifest is a MONAI datalist (``data_manifests/datalist.schema.json``) with ``training`` and
``validation`` splits, lung masks for the segmenter, and your test splits; validate it first with
``tea-med manifest validate FILE --require-mask``. Every command is tracked in MLflow (SQLite
store under each bundle's ``eval/``). Training is resumable: run the same command again after an
interruption. ``--dry-run`` prints the commands instead of running them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from tea_med.bundled import bundle_dir

# the shipped bundles, from a checkout (its bundles/) or an installed tea_med (tea_med.bundles)
TEACHER, STUDENT = bundle_dir("tea_teacher"), bundle_dir("tea_student")


def workflow(name: str) -> list[str]:
    """``--config_file`` composing ``configs/common.yaml`` with the workflow ``configs/<name>.yaml``
    (a list literal that ``monai.bundle``'s command line reads, and that shlex quotes cleanly)."""
    files = ["configs/common.yaml", f"configs/{name}.yaml"]
    return ["--config_file", json.dumps(files, separators=(",", ":"))]


def commands(datalist: Path, ood_split: str, work: Path, run_name: str) -> list[tuple[Path, list[str]]]:
    data = ["--dataset_dir", str(datalist.parent), "--datalist", str(datalist), "--image_size", "224"]
    teacher_models, student_models = work / "teacher" / "models", work / "student" / "models"
    bundle = [sys.executable, "-m", "monai.bundle", "run"]
    track = ["--tracking", "configs/mlflow.yaml", "--run_name"]  # run parameters, best checkpoint, figures
    t_ckpt, s_ckpt = ["--ckpt_dir", str(teacher_models)], ["--ckpt_dir", str(student_models)]
    teacher = str(teacher_models / "model.pt")
    return [
        (TEACHER, [*bundle, *workflow("train_segmenter"), *data, *t_ckpt, "--max_epochs", "100",
                   *track, f"{run_name}-segmenter"]),
        (TEACHER, [*bundle, *workflow("train_classifier"), *data, *t_ckpt, "--max_epochs", "100",
                   *track, f"{run_name}-teacher"]),
        (STUDENT, [*bundle, *workflow("train"), *data, *s_ckpt, "--teacher_ckpt", teacher,
                   "--max_epochs", "500", "--lr_milestones", "[300, 400]", *track, f"{run_name}-student"]),
        (TEACHER, [*bundle, *workflow("evaluate"), *data, *t_ckpt, "--eval_split", ood_split,
                   "--output_dir", str(work / "teacher" / "eval_ood")]),
        (STUDENT, [*bundle, *workflow("evaluate"), *data, *s_ckpt, "--eval_split", ood_split,
                   "--output_dir", str(work / "student" / "eval_ood")]),
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", type=Path, required=True, help="MONAI datalist JSON (validated)")
    ap.add_argument("--ood-split", required=True, help="the manifest split from unseen hospitals")
    ap.add_argument("--work", type=Path, default=Path("outputs/paper_xray"))
    ap.add_argument("--run-name", default="paper-xray")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if not args.datalist.is_file():
        ap.error(f"--datalist {args.datalist} does not exist")
    from tea_med.data.manifest import validate_manifest

    problems = validate_manifest(args.datalist, require_mask=["training", "validation"])
    if problems:
        print(
            f"{args.datalist}: {len(problems)} problems; run `tea-med manifest validate` for the list",
            file=sys.stderr,
        )
        return 1
    for cwd, cmd in commands(args.datalist.resolve(), args.ood_split, args.work.resolve(), args.run_name):
        print(f"(cd {shlex.quote(str(cwd))} && {shlex.join(cmd)})", flush=True)
        if not args.dry_run:
            subprocess.run(cmd, cwd=cwd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
