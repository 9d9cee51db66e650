"""Preparing what a user hands over: typed class names, and a set of images capped and test-decoded.

One rule for every front end (the command line, the app's Batch and Adapt tabs), so the same input is read the
same way everywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from microclip.data.images import ImageError, load_image

T = TypeVar("T")


def parse_class_names(text: str | Sequence[str] | None) -> list[str]:
    """Class names typed one per line or separated by commas (or already a list); blanks and repeats dropped,
    order kept. An empty list means "none typed" (the caller then uses its own classes)."""
    items = re.split(r"[,\n]", text or "") if text is None or isinstance(text, str) else text
    return list(dict.fromkeys(name.strip() for name in items if name and name.strip()))


def cap_evenly(items: Sequence[T], cap: int) -> tuple[list[T], str]:
    """At most ``cap`` items, evenly spaced over ``items`` (so every class of a sorted list keeps some), and a
    note of what was left out ("" when nothing was)."""
    if len(items) <= cap:
        return list(items), ""
    keep = np.linspace(0, len(items) - 1, cap).round().astype(int)
    return [
        items[i] for i in keep
    ], f"{len(items) - len(keep)} images over the cap of {cap}; an evenly spaced sample is used"


def readable(
    samples: Sequence[tuple[str, T]],
    max_pixels: int | None,
    root: str | Path | None = None,
    every: Callable[[int], None] | None = None,
) -> tuple[list[tuple[str, T]], list[tuple[str, str]]]:
    """The ``(path, label)`` samples whose image decodes, and ``(name, reason)`` for the others (names relative
    to ``root``). ``every(index)`` is called before each image (progress, a stop check)."""
    good, skipped = [], []
    for index, (path, label) in enumerate(samples):
        if every is not None:
            every(index)
        try:
            load_image(path, max_pixels=max_pixels)
            good.append((path, label))
        except ImageError as error:
            skipped.append((os.path.relpath(path, root) if root else str(path), str(error)))
    return good, skipped
