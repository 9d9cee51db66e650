"""``python -m microclip {train,evaluate,explain,walkthrough,drift,describe,classes,check-data} ...``: one parser.

Each sub-command's flags are its module's parser (``train.py`` and ``evaluate.py`` are the same
``train`` and ``evaluate``); ``python -m microclip COMMAND -h`` lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

# name: (one-line help, module, parser builder, runner)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "train": (
        "self-train (adapt) a CLIP on unlabelled images (same as train.py)",
        "microclip.cli",
        "build_train_parser",
        "run_train",
    ),
    "evaluate": (
        "evaluate an adapted checkpoint (same as evaluate.py)",
        "microclip.cli",
        "build_evaluate_parser",
        "run_evaluate",
    ),
    "explain": (
        "one image: top-k per branch, [FG]/[CLS] contributions; a folder or zip: a bundle",
        "microclip.explain_cli",
        "build_parser",
        "run",
    ),
    "walkthrough": (
        "each image through the model, step by step, as one HTML file that steps through offline (a handout)",
        "microclip.walkthrough_cli",
        "build_parser",
        "run",
    ),
    "drift": (
        "measure the shift self-training gave every image's [FG] in a checkpoint's run (no labels), --write it in",
        "microclip.cli",
        "build_drift_parser",
        "run_drift",
    ),
    "describe": (
        "write class descriptions with an OpenAI-compatible chat endpoint",
        "microclip.describe",
        "build_parser",
        "run",
    ),
    "classes": (
        "print a benchmark's class strings (or --templates) as the reference uses them",
        "microclip.classes_cli",
        "build_parser",
        "run",
    ),
    "check-data": (
        "check the data sets on disk: layout, images per split, class folders, descriptions",
        "microclip.check_cli",
        "build_parser",
        "run",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that sub-command gets its flags (the others' modules, which import
    torch, are not loaded: ``describe`` and ``classes`` start in a moment)."""
    parser = argparse.ArgumentParser(prog="python -m microclip", description="microCLIP Studio's command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module, builder, _) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            getattr(import_module(module), builder)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else "").parse_args(argv)
    _, module, _, runner = COMMANDS[args.command]
    run: Callable[[argparse.Namespace], int] = getattr(import_module(module), runner)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
