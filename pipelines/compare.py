"""TEA against the paper's baselines and ablations on phantoms, as one command.

Same as ``tea-med compare``; see ``tea_med/compare.py`` for the stages and ``--help`` for options.

    python pipelines/compare.py --methods all --bias background [--size 64] [--n 240] [--epochs 1]
"""

from __future__ import annotations

import sys

from tea_med.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
