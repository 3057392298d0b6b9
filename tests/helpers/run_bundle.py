"""Run a bundle workflow in this process (used by tests as a subprocess).

    python tests/helpers/run_bundle.py CONFIG_FILES '{"override": "json"}' [--kill-at-epoch N]
        [--perturb-at-epoch N] [--tracking-uri URI --run-name NAME]

``CONFIG_FILES`` is comma-separated (``.../common.yaml,.../train.yaml``), merged in order. With
``--kill-at-epoch`` a handler appended to ``train#handlers`` SIGKILLs the process at the end of
that epoch, after the checkpoint handlers listed before it have run; ``--perturb-at-epoch``
scrambles the trained network's weights when that epoch starts (a reproducibly worse epoch).
``--tracking-uri`` tracks the run with the bundle's ``configs/mlflow.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai.bundle import ConfigWorkflow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_files")
    ap.add_argument("overrides")
    ap.add_argument("--kill-at-epoch", type=int)
    ap.add_argument("--perturb-at-epoch", type=int)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--run-name")
    args = ap.parse_args()
    overrides = json.loads(args.overrides)
    kwargs = {}
    files = args.config_files.split(",")
    if args.tracking_uri:  # the bundle's own tracking settings, next to its configs
        settings = str(Path(files[0]).parent / "mlflow.yaml")
        kwargs = {"tracking": settings, "tracking_uri": args.tracking_uri, "run_name": args.run_name}
    wf = ConfigWorkflow(config_file=files, workflow_type="train", **kwargs, **overrides)
    handlers = wf.parser.get("train#handlers")
    if args.perturb_at_epoch:
        handlers.insert(0, {"_target_": "helpers.kill.PerturbAtEpoch", "epoch": args.perturb_at_epoch})
    if args.kill_at_epoch:
        handlers.append({"_target_": "helpers.kill.KillAtEpoch", "epoch": args.kill_at_epoch})
    wf.initialize()
    wf.run()
    wf.finalize()


if __name__ == "__main__":
    main()
