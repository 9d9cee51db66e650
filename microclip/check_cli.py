"""``python -m microclip check-data NAME|all [--data_root R]``: what a run would find, one table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from microclip.cliargs import new_parser
from microclip.data.check import check_benchmark, format_table
from microclip.data.shipped import reference_benchmarks
from microclip.resources import locate

DEFAULT_DESCRIPTIONS = "./all_prompts/train_prompts"  # the reference's --text_descriptions_path default


DESCRIPTION = (
    "For each benchmark: the layout found, images per split against the reference's counts, missing or extra "
    "class folders, the description file and the classes it lacks, the split file. Exit code 1 when a run would "
    "fail; each failure is explained in one line."
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``check-data`` command line (on ``parser``, the sub-command's, when given)."""
    parser = new_parser(parser, prog="python -m microclip check-data", description=DESCRIPTION)
    parser.add_argument("name", help=f"one of {', '.join(reference_benchmarks())}, or all")
    parser.add_argument("--data_root", "--data-root", default="./data")
    parser.add_argument(
        "--text_descriptions_path",
        default=None,
        help=f"descriptions JSON file or folder (default: {DEFAULT_DESCRIPTIONS} where it exists)",
    )
    parser.add_argument("--no_descriptions", action="store_true", help="skip the description check")
    parser.add_argument("--quick", action="store_true", help="do not walk the images (layout and folders only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def _descriptions(args: argparse.Namespace) -> str | None:
    if args.no_descriptions:
        return None
    if args.text_descriptions_path:
        return args.text_descriptions_path
    default = locate(DEFAULT_DESCRIPTIONS)
    return default if Path(default).exists() else None


def run(args: argparse.Namespace) -> int:
    """``check-data`` with parsed arguments: prints the table; 0 when every set would run, 1 otherwise."""
    names = reference_benchmarks() if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in reference_benchmarks()]
    if unknown:
        print(
            f"error: {unknown[0]!r} is not a benchmark; one of {', '.join(reference_benchmarks())}, or all",
            file=sys.stderr,
        )
        return 2
    descriptions = _descriptions(args)
    reports = [check_benchmark(name, args.data_root, descriptions, quick=args.quick) for name in names]
    print(format_table(reports))
    if descriptions is None and not args.no_descriptions:
        print(f"(descriptions not checked: no {DEFAULT_DESCRIPTIONS}; pass --text_descriptions_path)")
    return 0 if all(report.ok for report in reports) else 1
