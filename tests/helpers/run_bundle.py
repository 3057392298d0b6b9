"""Run a bundle workflow in this process (used by tests as a subprocess).

    python tests/helpers/run_bundle.py CONFIG_FILE '{"override": "json"}' [--kill-at-epoch N]
        [--tracking-uri URI --run-name NAME]

With ``--kill-at-epoch`` a handler appended to ``train#handlers`` SIGKILLs the process at the
end of that epoch, after the checkpoint handlers listed before it have run.
"""

from __future__ import annotations

import argparse
import json

from monai.bundle import ConfigWorkflow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_file")
    ap.add_argument("overrides")
    ap.add_argument("--kill-at-epoch", type=int)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--run-name")
    args = ap.parse_args()
    overrides = json.loads(args.overrides)
    kwargs = {}
    if args.tracking_uri:
        kwargs = {"tracking": "mlflow", "tracking_uri": args.tracking_uri, "run_name": args.run_name}
    wf = ConfigWorkflow(config_file=args.config_file, workflow_type="train", **kwargs, **overrides)
    if args.kill_at_epoch:
        handlers = wf.parser.get("train#handlers")
        handlers.insert(len(handlers), {"_target_": "helpers.kill.KillAtEpoch", "epoch": args.kill_at_epoch})
    wf.initialize()
    wf.run()
    wf.finalize()


if __name__ == "__main__":
    main()
