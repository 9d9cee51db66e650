"""Command-line helpers shared by the sub-commands (microclip/cliargs.py)."""

from __future__ import annotations

import argparse

import pytest

from microclip.cli import build_evaluate_parser
from microclip.cliargs import positive_int, same_named


def test_same_named_passes_the_named_flags_on_and_nothing_else():
    args = argparse.Namespace(model="m", temperature=0.2, out="x.json")
    assert same_named(args, "model", "temperature") == {"model": "m", "temperature": 0.2}
    with pytest.raises(AttributeError):
        same_named(args, "missing")


@pytest.mark.parametrize("text", ["0", "-3", "two", "1.5"])
def test_a_batch_of_zero_or_a_non_number_is_refused_by_the_parser(text, capsys):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)
    with pytest.raises(SystemExit):
        build_evaluate_parser().parse_args(["--dataset", "d", "--ckpt-path", "c", "--batch_size", text])
    assert "--batch_size" in capsys.readouterr().err


def test_a_positive_batch_is_read_as_a_number():
    assert positive_int("32") == 32
    args = build_evaluate_parser().parse_args(["--dataset", "d", "--ckpt-path", "c", "--batch_size", "8"])
    assert args.batch_size == 8
