"""The ``tea-med`` command: thin sub-commands over the library.

Each sub-command lives in a small ``_add_<name>`` function that registers its parser and a
handler; handlers import their heavy modules lazily so ``tea-med --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def _add_version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the tea_med version")

    def run(_: argparse.Namespace) -> int:
        from tea_med import __version__

        print(__version__)
        return 0

    p.set_defaults(handler=run)


def _checked(
    parse: Callable[[str], Any], ok: Callable[[Any], bool], expected: str, hint: str = ""
) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``parse`` and refuses values failing ``ok``, saying
    what was ``expected`` (and ``hint`` when the value parsed but is out of range)."""

    def check(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}{hint}, got {value}")
        return value

    return check


_positive_int = _checked(int, lambda v: v >= 1, "a whole number >= 1")
_image_size = _checked(int, lambda v: 32 <= v <= 4096, "a side in pixels (32..4096)", " (224 by default)")
_fraction = _checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", " (1 = fully confounded)")
_positive_float = _checked(float, lambda v: v > 0, "a number > 0", " (LRP-ε: typically 0.001..0.1)")


def _add_override(p: argparse.ArgumentParser) -> None:
    """``--override KEY=VALUE``: replace an id of the bundle's config (see ``parse_override``)."""
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace a config id (repeatable; VALUE parsed as JSON when possible), "
        "e.g. --override image_size=32 --override segmenter_profile=small",
    )


def _error(command: str, message: object) -> int:
    print(f"tea-med {command}: error: {message}", file=sys.stderr)
    return 2


def _add_phantoms(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantoms",
        help="write a synthetic multi-hospital chest X-ray data set (DICOM/PNG, masks, datalists)",
        description=(
            "Generate seeded chest X-ray phantoms (normal / pneumonia / covid) from six synthetic "
            "hospitals. The class's shortcut is the hospital's background signature (--bias "
            "background) or a device marker inside the lungs (--bias foreground). Writes "
            "images/, masks/, datalist_<format>.json and examples.png under OUT."
        ),
    )
    p.add_argument("out", metavar="OUT", help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--n", type=_positive_int, default=60, help="images per split, 5 splits (default 60)")
    p.add_argument("--size", type=_image_size, default=224, help="image side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument(
        "--confounding",
        type=_fraction,
        default=1.0,
        help="class-hospital (--bias background) or class-marker (--bias foreground) correlation "
        "in training/validation/test_biased, 0..1 (default 1.0)",
    )
    p.add_argument(
        "--bias",
        choices=("background", "foreground"),
        default="background",
        help="background: each training class from its own hospital, whose signature lies outside "
        "the lungs; foreground: hospitals independent of the class, a class-correlated device "
        "marker (pacemaker / electrode / port) inside the lungs (default background)",
    )
    p.add_argument(
        "--format", choices=("dicom", "png", "both"), default="both", help="image files (default both)"
    )
    p.add_argument("--no-grid", action="store_true", help="do not save the examples.png grid")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")

    def run(args: argparse.Namespace) -> int:
        import time

        from tea_med.data.phantom_files import write_phantoms
        from tea_med.data.phantoms import SPLITS

        formats = ("dicom", "png") if args.format == "both" else (args.format,)
        start = time.perf_counter()
        try:
            written = write_phantoms(
                args.out,
                n=args.n,
                size=args.size,
                seed=args.seed,
                confounding=args.confounding,
                bias=args.bias,
                formats=formats,
                grid=not args.no_grid,
                overwrite=args.overwrite,
            )
        except FileExistsError:
            return _error("phantoms", f"OUT {args.out!r} is not empty; use a new folder or --overwrite")
        except NotADirectoryError:
            return _error("phantoms", f"OUT {args.out!r} exists and is not a folder")
        except (ValueError, OSError) as exc:
            return _error("phantoms", exc)
        seconds = time.perf_counter() - start
        print(
            f"wrote {len(SPLITS) * args.n} phantoms ({args.size} px, seed {args.seed}, {args.bias} bias) "
            f"in {seconds:.1f} s"
        )
        for name, path in written.items():
            print(f"  {name}: {path}")
        return 0

    p.set_defaults(handler=run)


def _add_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="check datalist manifests")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION", required=True)
    v = msub.add_parser(
        "validate",
        help="report every problem of a datalist manifest (exit 0 valid, 1 problems)",
        description=(
            "Validate a MONAI datalist against data_manifests/datalist.schema.json and check files, "
            "labels, patient overlap between splits, duplicate images and masks; every problem is "
            "listed at once. With --skip-bad, bad records are quarantined into a report and a clean "
            "manifest is written instead."
        ),
    )
    v.add_argument("file", metavar="FILE", help="the manifest JSON")
    v.add_argument("--require-mask", action="store_true", help="every record must have a mask")
    v.add_argument("--labels", nargs="+", metavar="LABEL", help="allowed labels (default: the manifest's)")
    v.add_argument("--base-dir", help="folder relative paths start from (default: the manifest's folder)")
    v.add_argument("--check-readable", action="store_true", help="also decode every image and mask (slow)")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.add_argument(
        "--skip-bad",
        action="store_true",
        help="quarantine bad records: write a clean manifest and a report instead of failing",
    )
    v.add_argument("--out", help="clean manifest path with --skip-bad (default FILE stem + .clean.json)")
    v.add_argument(
        "--report", help="quarantine report path with --skip-bad (default FILE stem + .quarantine.json)"
    )

    def run(args: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        from tea_med.data.errors import DataError
        from tea_med.data.manifest import (
            ManifestError,
            default_report_path,
            quarantine,
            read_manifest,
            split_names,
            validate_manifest,
            write_quarantine_report,
        )

        path = Path(args.file)
        try:
            manifest = read_manifest(path)
        except DataError as exc:
            if args.json:
                print(json.dumps({"file": str(path), "valid": False, "error": str(exc)}))
            else:
                print(f"{exc}", file=sys.stderr)
            return 1
        base = Path(args.base_dir) if args.base_dir else path.parent
        problems = validate_manifest(
            manifest,
            base_dir=base,
            labels=args.labels,
            require_mask=args.require_mask,
            check_readable=args.check_readable,
            progress=args.check_readable,
        )
        counts = {s: len(manifest[s]) for s in split_names(manifest) if isinstance(manifest[s], list)}
        if args.json:
            print(
                json.dumps(
                    {
                        "file": str(path),
                        "valid": not problems,
                        "records": counts,
                        "problems": [p.to_dict() for p in problems],
                    },
                    indent=2,
                )
            )
        elif not problems:
            print(f"{path}: valid ({', '.join(f'{s}: {n}' for s, n in counts.items())})")
        else:
            print(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}:")
            for problem in problems:
                print(f"  - {problem}")
        if not problems:
            return 0
        if not args.skip_bad:
            return 1
        try:
            clean, quarantined = quarantine(manifest, problems)
        except ManifestError as exc:
            print(f"{path}: cannot quarantine problems that concern the whole manifest:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        out = Path(args.out) if args.out else path.with_name(f"{path.stem}.clean.json")
        if out.parent.resolve() != base.resolve():  # keep relative paths valid from the new folder
            for split in split_names(clean):
                for rec in clean[split]:
                    for field in ("image", "mask"):
                        if isinstance(rec.get(field), str):
                            rec[field] = str((base / rec[field]).resolve())
        out.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
        report = write_quarantine_report(
            args.report or default_report_path(path), quarantined, manifest_path=path
        )
        print(
            f"quarantined {len(quarantined)} record(s) -> {report}; clean manifest -> {out}",
            file=sys.stderr if args.json else sys.stdout,
        )
        return 0

    v.set_defaults(handler=run)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="write an LRP-ε heatmap overlay (PNG) for each image, explained by a MONAI bundle's network",
        description=(
            "Compose BUNDLE/configs/common.yaml + configs/inference.yaml (network_def, ckpt_path, "
            "image_size, class_names, heatmap_eps), load the trained weights, preprocess each IMAGE as "
            "at test time and explain the predicted class (or --class) with LRP-ε. A teacher "
            "(segmenter + classifier) is explained through its classifier on the masked image, with "
            "the lung mask outlined. Writes OUT/<stem>_lrp.png "
            "per image. Exit 0: all written; 1: an image or the checkpoint could not be used; 2: usage."
        ),
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="DICOM, PNG or JPEG files")
    p.add_argument(
        "--bundle", required=True, metavar="DIR", help="MONAI bundle folder (tea_teacher, tea_student)"
    )
    p.add_argument(
        "--out", default="explanations", metavar="DIR", help="output folder (default explanations)"
    )
    p.add_argument(
        "--eps",
        type=_positive_float,
        default=None,
        help="LRP ε (default: the bundle's heatmap_eps, for tea_student the geometric midpoint of its "
        "training range eps_lo..eps_hi, which --override eps_lo=... / eps_hi=... move; "
        "0.01 for a bundle without one, such as tea_teacher)",
    )
    p.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="explain this class (one of the bundle's class_names) instead of the predicted one",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of a teacher's background noise (default 0)")
    _add_override(p)

    def run(args: argparse.Namespace) -> int:

        import torch

        from tea_med.data.errors import DataError
        from tea_med.deploy.explain import (
            BundleError,
            ExplainedImage,
            MissingCheckpointError,
            explain_images,
            parse_override,
        )

        try:
            device = torch.device(args.device)
        except RuntimeError:
            return _error(
                "explain", f"--device {args.device!r} is not a torch device (cpu, cuda, cuda:0, ...)"
            )
        if device.type == "cuda" and not torch.cuda.is_available():
            return _error("explain", f"--device {args.device}: CUDA is not available here; use --device cpu")
        failed: list[Path] = []

        def written(result: ExplainedImage) -> None:
            p_pred = float(result.probabilities.max())
            print(
                f"{result.output}  ({result.source}: predicted {result.predicted} p={p_pred:.2f}, "
                f"explained {result.explained})",
                flush=True,
            )

        def unreadable(path: Path, err: DataError) -> None:
            failed.append(path)
            print(f"tea-med explain: error: {err}", file=sys.stderr, flush=True)

        try:
            overrides = dict(parse_override(o) for o in args.override)
            results = explain_images(
                args.bundle,
                args.images,
                eps=args.eps,
                class_name=args.class_name,
                overrides=overrides,
                out_dir=args.out,
                device=device,
                seed=args.seed,
                on_written=written,
                on_error=unreadable,
            )
        except MissingCheckpointError as exc:
            print(f"tea-med explain: error: {exc}", file=sys.stderr)
            return 1
        except BundleError as exc:
            return _error("explain", exc)
        except RuntimeError as exc:  # a checkpoint that does not fit the network, a bad image size
            print(f"tea-med explain: error: {exc}", file=sys.stderr)
            return 1
        if failed:
            print(
                f"tea-med explain: {len(failed)} of {len(args.images)} image(s) could not be read "
                f"(DICOM, PNG or JPEG expected); wrote {len(results)}",
                file=sys.stderr,
            )
            return 1
        return 0

    p.set_defaults(handler=run)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a bundle's network to TorchScript and ONNX, verified, with a model card",
        description=(
            "Write BUNDLE/models/model.ts (MONAI ckpt_export) and model.onnx (dynamic batch axis) "
            "beside models/model.pt, run each on a fixed batch against the eager network (largest "
            "absolute logit difference <= --tolerance) and write models/model_card.json (classes, "
            "preprocessing, shapes, SHA-256 of every file, versions, Device UID). Nothing is moved "
            "into place unless every export passes. Exit 0: exported; 1: an export failed or "
            "differs; 2: usage or a bad bundle."
        ),
    )
    p.add_argument("--bundle", required=True, metavar="DIR", help="MONAI bundle folder (e.g. tea_student)")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("torchscript", "onnx"),
        help="export only this format (repeatable; default both)",
    )
    p.add_argument(
        "--tolerance",
        type=_checked(float, lambda v: v > 0, "a number > 0"),
        default=1e-4,
        help="largest absolute logit difference allowed against the eager network (default 1e-4)",
    )
    p.add_argument("--mlflow-run-id", metavar="ID", help="the MLflow run that trained the weights (recorded)")
    p.add_argument(
        "--from-registry",
        metavar="NAME@ALIAS",
        help="first fetch models/model.pt from the MLflow model registry (e.g. tea_student@champion) "
        "into BUNDLE; needs --tracking-uri (or MLFLOW_TRACKING_URI)",
    )
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI for --from-registry")
    _add_override(p)

    def run(args: argparse.Namespace) -> int:
        from tea_med.deploy.bundle import BundleError, MissingCheckpointError, parse_override
        from tea_med.deploy.export import FORMATS, ExportError, export_bundle

        run_id = args.mlflow_run_id
        try:
            overrides = dict(parse_override(o) for o in args.override)
            if args.from_registry:
                from tea_med.deploy.registry import fetch_registered

                fetched = fetch_registered(args.from_registry, args.bundle, tracking_uri=args.tracking_uri)
                run_id = run_id or fetched.run_id
                print(
                    f"fetched {args.from_registry} (version {fetched.version}, run {fetched.run_id}) "
                    f"into {fetched.path}"
                )
            card = export_bundle(
                args.bundle,
                formats=args.formats or tuple(FORMATS),
                tolerance=args.tolerance,
                mlflow_run_id=run_id,
                overrides=overrides,
                say=lambda line: print(line, flush=True),
            )
        except (MissingCheckpointError, ExportError) as exc:
            print(f"tea-med export: error: {exc}", file=sys.stderr)
            return 1
        except BundleError as exc:
            return _error("export", exc)
        except RuntimeError as exc:  # a checkpoint that does not fit the network
            print(f"tea-med export: error: {exc}", file=sys.stderr)
            return 1
        print(f"exported {card.name} {card.version}: " + ", ".join(sorted(card.files)))
        return 0

    p.set_defaults(handler=run)


def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="classify DICOM/PNG/JPEG images with a bundle: CSV, JSON lines, DICOM SR + heatmap SC",
        description=(
            "Classify every INPUT (files, folders searched recursively, manifest .json files) with "
            "the bundle's network. Writes OUT/predictions.csv and OUT/predictions.jsonl (probabilities, "
            "predicted class, model version and SHA-256, SOP Instance UID for DICOM; never patient "
            "name or ID), OUT/errors.csv (inputs that could not be used, with the reason; they never "
            "stop the batch), for each DICOM input a TID 1500 Structured Report and a heatmap "
            "Secondary Capture in OUT/dicom/, and with --heatmaps an LRP-ε overlay PNG per image. "
            "Exit 0: every input classified; 1: some inputs are listed in errors.csv; 2: usage."
        ),
    )
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files, folders or manifest .json files")
    p.add_argument("--bundle", required=True, metavar="DIR", help="MONAI bundle folder (e.g. tea_student)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument(
        "--backend",
        choices=("eager", "torchscript", "onnx"),
        default="eager",
        help="eager PyTorch, or the TorchScript / ONNX file `tea-med export` wrote (default eager)",
    )
    p.add_argument("--heatmaps", action="store_true", help="also write an LRP-ε overlay PNG per image")
    p.add_argument(
        "--no-dicom-results",
        action="store_true",
        help="do not write the SR and Secondary Capture of DICOM inputs",
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--split", default="test", help="the split read from a manifest INPUT (default test)")
    p.add_argument(
        "--eps", type=_positive_float, default=None, help="LRP ε (default: the bundle's heatmap_eps)"
    )
    _add_override(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        from tea_med.data.errors import DataError
        from tea_med.deploy.bundle import BundleError, MissingCheckpointError, parse_override
        from tea_med.deploy.infer import infer

        try:
            summary = infer(
                args.bundle,
                args.inputs,
                args.out,
                backend=args.backend,
                heatmaps=args.heatmaps,
                dicom_results=not args.no_dicom_results,
                batch_size=args.batch_size,
                split=args.split,
                eps=args.eps,
                overrides=dict(parse_override(o) for o in args.override),
                progress=not args.no_progress,
            )
        except MissingCheckpointError as exc:
            print(f"tea-med infer: error: {exc}", file=sys.stderr)
            return 1
        except (BundleError, DataError) as exc:
            return _error("infer", exc)
        print(
            f"classified {summary.predicted} of {summary.images} image(s) in {summary.seconds:.1f} s "
            f"({args.backend}); {summary.dicom_objects} DICOM object(s), {summary.heatmaps} heatmap(s)"
        )
        for name, path in summary.outputs.items():
            print(f"  {name}: {path}")
        if summary.errors:
            print(
                f"tea-med infer: {summary.errors} input(s) could not be used; "
                f"reasons in {summary.outputs['errors']}",
                file=sys.stderr,
            )
            return 1
        return 0

    p.set_defaults(handler=run)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="measure a classifier's shortcut reliance: background relevance, swaps, lungs removed, markers",
        description="Audit one or more MONAI classification bundles on a manifest split: the share of "
        "LRP-ε relevance outside the lungs, the prediction change when the background is swapped "
        "with another source's, when the lungs are replaced by noise, and when text markers are "
        "stamped outside the lungs; each with a 95%% interval, per source and per class. Writes "
        "OUT/report.html, OUT/audit.json and figures.",
    )
    p.add_argument(
        "--bundle",
        required=True,
        action="append",
        metavar="DIR",
        help="bundle folder (repeat to compare models)",
    )
    p.add_argument("--data", required=True, metavar="MANIFEST", help="datalist .json with the split to audit")
    p.add_argument("--split", default="test_unbiased", help="the manifest split (default test_unbiased)")
    p.add_argument(
        "--segmenter-bundle",
        metavar="DIR",
        default=None,
        help="a tea_teacher bundle whose segmenter draws the lung masks (default: the manifest's masks)",
    )
    p.add_argument("--out", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of the swap partners and the noise (default 0)")
    p.add_argument("--batch", type=_positive_int, default=32, help="images per chunk (default 32)")
    p.add_argument("--tracking", choices=("mlflow",), default=None, help="log the audit as an MLflow run")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI with --tracking mlflow (default sqlite:///OUT/mlruns.db)",
    )
    p.add_argument(
        "--fail-above",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="exit 3 when a model's overall METRIC exceeds VALUE (repeatable); METRIC: background_share, "
        "swap_flip_rate, swap_following_rate, lungs_removed_confidence, lungs_removed_accuracy, "
        "marker_flip_rate",
    )

    def run(args: argparse.Namespace) -> int:
        from tea_med.audit.command import parse_gate, run_audit
        from tea_med.audit.report import headline_table
        from tea_med.audit.run import AuditSettings
        from tea_med.data.errors import DataError
        from tea_med.data.manifest import ManifestError
        from tea_med.deploy.bundle import BundleError, MissingCheckpointError

        try:
            gates = [parse_gate(g) for g in args.fail_above]
        except ValueError as exc:
            return _error("audit", exc)
        uri = None
        if args.tracking == "mlflow":
            uri = args.tracking_uri or f"sqlite:///{(Path(args.out) / 'mlruns.db').resolve()}"
            Path(args.out).mkdir(parents=True, exist_ok=True)
        try:
            outcome = run_audit(
                args.bundle,
                args.data,
                args.out,
                split=args.split,
                segmenter_bundle=args.segmenter_bundle,
                settings=AuditSettings(split=args.split, seed=args.seed, batch=args.batch),
                fail_above=gates,
                tracking_uri=uri,
            )
        except MissingCheckpointError as exc:
            print(f"tea-med audit: error: {exc}", file=sys.stderr)
            return 1
        except (BundleError, DataError, ManifestError, ValueError, FileNotFoundError) as exc:
            return _error("audit", exc)
        names = list(outcome.summaries)
        width = max(len(r[0]) for r in headline_table(outcome.summaries))
        print(f"{'probe':<{width}}  " + "  ".join(f"{n:>24}" for n in names))
        for row in headline_table(outcome.summaries):
            print(f"{row[0]:<{width}}  " + "  ".join(f"{c:>24}" for c in row[2:]))
        print(f"report: {outcome.outputs['report']} ({outcome.seconds:.1f} s)")
        if outcome.run_id is not None:
            print(f"MLflow run {outcome.run_id} in {uri}")
        for failure in outcome.failures:
            print(f"tea-med audit: gate failed: {failure}", file=sys.stderr)
        return 3 if outcome.failures else 0

    p.set_defaults(handler=run)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run a DICOM node beside PACS: receive CR/DX, classify, send SR + heatmap SC back",
        description=(
            "A DICOM Storage SCP (Verification, CR, DX) that accepts known senders only, writes every "
            "instance durably to its spool before answering 0x0000, classifies it with the bundle "
            "(one result per instance, also after a restart) and, with a [destination], sends the "
            "SR and the heatmap Secondary Capture there. Settings: --config node.toml (see "
            "tea_med.node.config), flags override it. SIGTERM or Ctrl-C stops it: what is in flight "
            "stays in the spool. Exit 0 on a clean stop; 2: bad settings; with --check 1 when the "
            "destination does not answer C-ECHO."
        ),
    )
    p.add_argument("--config", metavar="TOML", help="node settings (node.toml)")
    p.add_argument("--bundle", metavar="DIR", help="the student bundle (overrides `bundle`)")
    p.add_argument("--spool", metavar="DIR", help="the spool folder (overrides `spool`)")
    p.add_argument("--ae-title", help="the node's AE title (overrides `ae_title`)")
    p.add_argument("--host", help="address to listen on (overrides `host`)")
    p.add_argument("--port", type=int, help="port to listen on (overrides `port`)")
    p.add_argument("--backend", choices=("eager", "torchscript", "onnx"), help="overrides `backend`")
    p.add_argument(
        "--allow",
        action="append",
        metavar="AE[@IP]",
        help="an allowed sender (repeatable; replaces `allowed_senders`)",
    )
    p.add_argument("--check", action="store_true", help="validate the settings, C-ECHO the destination, exit")
    p.add_argument("--log-file", metavar="FILE", help="also write the log to this file")

    def run(args: argparse.Namespace) -> int:
        import logging
        import signal
        import threading

        from tea_med.node.config import NodeConfigError, from_mapping

        table: dict[str, Any] = {}
        base = Path()
        try:
            if args.config:
                import tomllib

                path = Path(args.config)
                if not path.is_file():
                    return _error("serve", f"--config {path} does not exist")
                try:
                    table = tomllib.loads(path.read_text())
                except tomllib.TOMLDecodeError as err:
                    return _error("serve", f"{path} is not valid TOML: {err}")
                base = path.parent
            flags = {"bundle": args.bundle, "spool": args.spool, "ae_title": args.ae_title, "host": args.host}
            flags |= {"port": args.port, "backend": args.backend}
            for key, value in flags.items():
                if value is not None:
                    table[key] = str(Path(value).resolve()) if key in ("bundle", "spool") else value
            if args.allow:
                table["allowed_senders"] = [
                    {"ae_title": a.partition("@")[0], **({"ip": a.partition("@")[2]} if "@" in a else {})}
                    for a in args.allow
                ]
            config = from_mapping(table, base)
        except NodeConfigError as err:
            return _error("serve", err)
        if args.check:
            print(f"settings OK: {config.ae_title} on {config.host}:{config.port}, bundle {config.bundle}")
            if config.destination is None:
                print("no [destination]: results stay in the spool")
                return 0
            from tea_med.node.forward import echo

            status = echo(config.destination, config.ae_title)
            d = config.destination
            if status != 0:
                shown = "no association" if status is None else f"status 0x{status:04X}"
                print(
                    f"tea-med serve: destination {d.ae_title}@{d.host}:{d.port} C-ECHO failed ({shown})",
                    file=sys.stderr,
                )
                return 1
            print(f"destination {d.ae_title}@{d.host}:{d.port} answers C-ECHO")
            return 0
        from tea_med.node.scp import StorageNode

        handlers: list[logging.Handler] = [logging.StreamHandler()]
        if args.log_file:
            handlers.append(logging.FileHandler(args.log_file))
        node_log = logging.getLogger("tea_med.node")
        for h in handlers:
            h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            node_log.addHandler(h)
        node_log.setLevel(logging.INFO)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            node = StorageNode(config)
            node.start()
            try:
                while not stop.wait(0.5):
                    pass
            finally:
                node.stop()
        finally:
            for h in handlers:
                node_log.removeHandler(h)
                h.close()
        return 0

    p.set_defaults(handler=run)


def _demo_defaults() -> Any:
    from tea_med.demo import DemoSettings  # light: no torch at import time

    return DemoSettings()


def _add_stage_sizes(p: argparse.ArgumentParser, student: str, note: str) -> None:
    """``--size --n --epochs --student-epochs --seed`` of the demo's stages (demo and compare)."""
    defaults = _demo_defaults()
    p.add_argument(
        "--size",
        type=int,
        default=defaults.size,
        help=f"image side in px, multiple of 8, >= 32 (default {defaults.size})",
    )
    p.add_argument("--n", type=int, default=defaults.n, help=f"phantoms per split (default {defaults.n})")
    p.add_argument(
        "--epochs", type=float, default=1.0, help="multiply every stage's epochs by this (default 1)"
    )
    p.add_argument(
        "--student-epochs",
        type=_positive_int,
        default=None,
        help=f"{student}, after --epochs scaling (default {defaults.student_epochs} x --epochs){note}",
    )
    p.add_argument("--seed", type=int, default=0)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo on synthetic phantoms: teacher, standard classifier, TEA student, report",
        description="Phantoms -> lung segmenter -> teacher -> standard classifier -> TEA student -> "
        "evaluation on biased / unbiased / deceiving test sets -> HTML report and table. Every stage "
        "is an MLflow run nested under one parent in OUT/mlruns.db; stages whose outputs exist are "
        "skipped unless --force.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)"
    )
    _add_stage_sizes(p, "TEA student epochs", "; the student is the slowest stage and gains most from more")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument(
        "--verbose", action="store_true", help="log every iteration (default: a bar and one line per epoch)"
    )

    def run(args: argparse.Namespace) -> int:
        import importlib.util

        from tea_med.demo import DemoSettings, run_demo

        if importlib.util.find_spec("mlflow") is None:
            return _error(
                "demo",
                "the demo tracks its stages in MLflow, which is not installed: pip install 'tea_med[train]'",
            )
        try:
            settings = DemoSettings(
                out=args.out, size=args.size, n=args.n, seed=args.seed, force=args.force, verbose=args.verbose
            )
            summary = run_demo(settings.scaled(args.epochs, args.student_epochs))
        except (ValueError, FileNotFoundError) as err:
            print(f"tea-med demo: {err}", file=sys.stderr)
            return 2
        from tea_med.evaluation.report import format_table

        print(format_table(summary["rows"]))
        print(f"report: {args.out / 'report.html'}")
        print(f"wall time: {summary['wall_time_s'] / 60:.1f} min")
        for name, ok in summary["targets"].items():
            print(f"target {'met' if ok else 'NOT met'}: {name.replace('_', ' ')}")
        print(f"MLflow: mlflow ui --backend-store-uri sqlite:///{(args.out / 'mlruns.db').resolve()}")
        return 0

    p.set_defaults(handler=run)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="TEA against the paper's baselines and ablations on one phantom data set: table and figure",
        description="Phantoms -> lung segmenter -> teacher -> one student per method (same "
        "initialisation, epochs and evaluation) -> comparison.md / .csv / .png under OUT. Every "
        "training is an MLflow run nested under one parent in OUT/mlruns.db; finished stages and "
        "methods are reused unless --force.",
    )
    p.add_argument(
        "--methods",
        default="all",
        help="all | baselines | ablations | comma-separated names (default all); names: "
        "tea, erm, kd, rep_kd, gradcam_kd, rrr, gain, isnet, group_dro, irm, tea_gradient_x_input, "
        "tea_input_gradient, tea_gradcam, tea_attention, tea_l1, tea_l2, tea_single_resolution, "
        "tea_eps_0.1, tea_eps_0.01, tea_eps_0.001, tea+kd, tea+rep_kd",
    )
    p.add_argument(
        "--bias",
        choices=("background", "foreground"),
        default="background",
        help="the shortcut: hospital signatures outside the lungs (background, default) or a device "
        "marker inside them (foreground; the teacher then learns on marker-free phantoms)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/compare_<bias>)")
    _add_stage_sizes(p, "epochs of every method's student", "")
    p.add_argument(
        "--group-confounding",
        type=_fraction,
        default=0.9,
        help="hospital (or marker) - class pairing of group_dro's and irm's training data (default 0.9)",
    )
    p.add_argument(
        "--student-init",
        choices=("copy", "random"),
        default="copy",
        help="every method's student starts as a copy of the teacher's classifier (copy, default; the "
        "paper's X-ray setting) or re-initialised except the copied last layer (random; the paper's "
        "foreground settings, where the student is not the teacher's architecture)",
    )
    p.add_argument("--force", action="store_true", help="redo every stage and method")
    p.add_argument("--verbose", action="store_true", help="log every iteration")

    def run(args: argparse.Namespace) -> int:
        import importlib.util

        from tea_med.compare import CompareSettings, parse_methods, run_compare
        from tea_med.demo import DemoSettings

        if importlib.util.find_spec("mlflow") is None:
            return _error(
                "compare",
                "compare tracks its runs in MLflow, which is not installed: pip install 'tea_med[train]'",
            )
        out = args.out if args.out is not None else Path(f"outputs/compare_{args.bias}")
        try:
            methods = parse_methods(args.methods)
            base = DemoSettings(
                out=out, size=args.size, n=args.n, seed=args.seed, force=args.force, verbose=args.verbose
            ).scaled(args.epochs, args.student_epochs)
            summary = run_compare(
                CompareSettings(
                    base=base,
                    methods=methods,
                    bias=args.bias,
                    group_confounding=args.group_confounding,
                    student_init=args.student_init,
                )
            )
        except (ValueError, FileNotFoundError) as err:
            print(f"tea-med compare: {err}", file=sys.stderr)
            return 2
        print(Path(summary["outputs"]["markdown"]).read_text())
        for name, path in summary["outputs"].items():
            print(f"{name}: {path}")
        print(f"wall time: {summary['wall_time_s'] / 60:.1f} min")
        print(f"MLflow: mlflow ui --backend-store-uri {summary['mlflow_uri']}")
        return 0

    p.set_defaults(handler=run)


def _add_bundles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundles",
        help="list the MONAI bundles shipped with tea_med, or copy them into a folder",
        description="Without --copy: print where the shipped bundles are. With --copy DEST: copy "
        "tea_teacher and tea_student (configs, docs, licence; no weights) into DEST, where "
        "`python -m monai.bundle run` trains and runs them (see each bundle's docs/README.md).",
    )
    p.add_argument("--copy", metavar="DEST", type=Path, help="copy the bundles into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace bundle folders already in DEST")

    def run(args: argparse.Namespace) -> int:
        from tea_med.bundled import BUNDLES, bundle_dir, copy_bundles

        if args.copy is None:
            for name in BUNDLES:
                print(f"{name}: {bundle_dir(name)}")
            return 0
        try:
            written = copy_bundles(args.copy, overwrite=args.overwrite)
        except (FileExistsError, OSError) as err:
            return _error("bundles", err)
        for path in written:
            print(f"wrote {path}")
        return 0

    p.set_defaults(handler=run)


# Registration order is the order shown by `tea-med --help`.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_version,
    _add_phantoms,
    _add_manifest,
    _add_explain,
    _add_export,
    _add_infer,
    _add_serve,
    _add_demo,
    _add_compare,
    _add_audit,
    _add_bundles,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tea-med",
        description="Training with Explanations Alone for chest X-ray classifiers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
