"""Command-line helpers shared by the sub-commands: one flag name per idea, old spellings still accepted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

CLASSNAME_FLAGS = ("--classname", "--classes", "--classnames")  # the reference's name first


class DeprecatedAlias(argparse.Action):
    """Stores the value; an option spelled other than the first name prints one deprecation note."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        canonical = self.option_strings[0]
        if option_string is not None and option_string != canonical:
            print(f"note: {option_string} is deprecated; use {canonical}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_classname(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str, **options: Any) -> None:
    """``--classname FILE`` (the reference's spelling), with ``--classes`` / ``--classnames`` as deprecated aliases."""
    parser.add_argument(*CLASSNAME_FLAGS, dest="classname", action=DeprecatedAlias, help=help_text, **options)


def new_parser(parser: argparse.ArgumentParser | None, **options: Any) -> argparse.ArgumentParser:
    """``parser`` (a sub-command's, from ``python -m microclip``) or a new stand-alone one."""
    if parser is None:
        return argparse.ArgumentParser(**options)
    if options.get("description") and not parser.description:
        parser.description = options["description"]
    if options.get("formatter_class"):
        parser.formatter_class = options["formatter_class"]
    return parser


def same_named(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags ``names`` as keyword arguments of the same names: what a command passes on unchanged."""
    return {name: getattr(args, name) for name in names}


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero (a batch of 0 would silently mean the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def unit_fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1 (a fusion ratio outside it would weigh one branch negatively)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {value:g}")
    return value


def add_adapted_model(parser: argparse.ArgumentParser, default_checkpoint: str) -> None:
    """``--ckpt-path`` (``--ckpt_path`` too; by default the bundled toy-world model), ``--fusion_ratio`` and
    ``--classname``: how a command that reads pictures with one adapted model is told which, at which ρ, and among
    which classes."""
    parser.add_argument(
        "--ckpt-path",
        "--ckpt_path",
        dest="ckpt_path",
        default=default_checkpoint,
        help="adapted checkpoint (.safetensors); default: the bundled toy-world model",
    )
    parser.add_argument("--fusion_ratio", type=unit_fraction, default=None, help="override ρ (weight of [CLS]), 0 to 1")
    add_classname(
        parser,
        "your own label set instead of the checkpoint's classes (.txt, one per line, or .json, a list): the adapted "
        "visual tower answers among them zero-shot, with heads built from their names, as the app's typed class names",
        default=None,
    )
