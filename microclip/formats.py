"""How numbers read in text and files: one rule for every front end, so a tab and a file never disagree.

A null weight of 2.46e-05 must never read as 0 (or 0.0000): small numbers go to scientific notation.
"""

from __future__ import annotations


def small_number(value: float) -> str:
    """Scientific notation with three significant digits: ``2.46e-05`` (null weights, SOAP weights, Δ)."""
    return f"{float(value):.2e}"


def number(value: float | None, digits: int = 4) -> str:
    """Fixed-point with ``digits`` decimals, or :func:`small_number` when fixed-point would print a nonzero
    value as 0; ``–`` for a missing value."""
    if value is None:
        return "–"
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return small_number(value)
    return f"{value:.{digits}f}"


# What each branch is called in text (the CLI, the app, the plots); the keys are Explanation's branch names.
BRANCH_LABELS = {"fused": "TokenFusion", "cls": "[CLS] only", "fg": "[FG] only"}
