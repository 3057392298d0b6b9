"""The ``tea-med`` command: thin sub-commands over the library.

Each sub-command lives in a small ``_add_<name>`` function that registers its parser and a
handler; handlers import their heavy modules lazily so ``tea-med --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _add_version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the tea_med version")

    def run(_: argparse.Namespace) -> int:
        from tea_med import __version__

        print(__version__)
        return 0

    p.set_defaults(handler=run)


# Registration order is the order shown by `tea-med --help`.
# Data commands (`phantoms`, `manifest`) register below this line.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_version]


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
