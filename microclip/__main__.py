"""``python -m microclip {train,evaluate,explain,describe,classes} ...``."""

from __future__ import annotations

import sys

USAGE = """usage: python -m microclip COMMAND [options]

commands:
  train      self-train (adapt) a CLIP on unlabelled images      (same as train.py)
  evaluate   evaluate an adapted checkpoint                      (same as evaluate.py)
  explain    one image: top-k per branch, [FG]/[CLS] contributions; a folder or zip: a bundle
  describe   write class descriptions with an OpenAI-compatible chat endpoint
  classes    print a benchmark's class strings (or --templates) as the reference uses them
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from microclip.cli import train

        return train(rest)
    if command == "evaluate":
        from microclip.cli import evaluate_main

        return evaluate_main(rest)
    if command == "explain":
        from microclip.explain_cli import main as explain_main

        return explain_main(rest)
    if command == "describe":
        from microclip.describe import main as describe_main

        return describe_main(rest)
    if command == "classes":
        from microclip.classes_cli import main as classes_main

        return classes_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
