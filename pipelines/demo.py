"""The README's main command: the end-to-end TEA demo on synthetic phantoms.

Same as ``tea-med demo``; see ``tea_med/demo.py`` for the stages and ``--help`` for options.

    python pipelines/demo.py [--out outputs/demo] [--size 64] [--n 60] [--epochs 1] [--force]
"""

from __future__ import annotations

import sys

from tea_med.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
