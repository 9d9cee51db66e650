"""Evaluate an adapted checkpoint: ``python evaluate.py --dataset NAME --ckpt-path PATH``."""

import sys

from microclip.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
