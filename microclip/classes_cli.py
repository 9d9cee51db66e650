"""``python -m microclip classes NAME [--templates]``: a benchmark's reference class strings or templates.

Reads only the shipped package data, so it works with no data on disk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from microclip.cliargs import new_parser
from microclip.data.catalog import BENCHMARKS
from microclip.data.shipped import reference_benchmarks, shipped_classnames, shipped_templates


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = new_parser(
        parser,
        prog="python -m microclip classes",
        description="Print a benchmark's class strings in label order (the reference's configs/classes.json), "
        "one per line; with --templates its zero-shot templates instead.",
    )
    parser.add_argument("name", help=f"one of: {', '.join(reference_benchmarks())}")
    parser.add_argument("--templates", action="store_true", help="print the templates ('{}' marks the class)")
    parser.add_argument("--split", action="store_true", help="print how the reference split the data set")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """``classes`` with parsed arguments."""
    classes = shipped_classnames(args.name)
    if classes is None:
        print(
            f"error: unknown benchmark {args.name!r}; valid names: {', '.join(reference_benchmarks())}", file=sys.stderr
        )
        return 2
    if args.split:
        benchmark = BENCHMARKS[args.name]
        print(f"reference: {benchmark.reference_split}")
        if benchmark.official_split:
            print(f"official (--data_split official): {benchmark.official_split}")
        return 0
    print("\n".join(shipped_templates(args.name) if args.templates else classes))
    return 0
