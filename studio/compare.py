"""Compare's words without Gradio: how one class ranks under two models."""

from __future__ import annotations

from microclip.explain import Explanation


def rank_of(explanation: Explanation, name: str) -> int | None:
    """1-based rank of a class in the fused prediction, or None if the model lacks it."""
    order = [label for label, _ in explanation.top_k("fused", len(explanation.classes))]
    return order.index(name) + 1 if name in order else None


def rank_markdown(a: Explanation, b: Explanation, name: str, name_a: str, name_b: str) -> str:
    """How the rank of one class differs between model A and model B."""
    rank_a, rank_b = rank_of(a, name), rank_of(b, name)
    if rank_a is None or rank_b is None:
        missing = name_a if rank_a is None else name_b
        return f"Class **{name}** is not among the classes of *{missing}*; type a shared class, or a label set."
    if rank_a == rank_b:
        change = "the same rank under both"
    else:
        change = (
            f"{abs(rank_b - rank_a)} place{'s' if abs(rank_b - rank_a) > 1 else ''} "
            f"{'higher' if rank_a < rank_b else 'lower'} under A"
        )
    return (
        f"Class **{name}**: rank **{rank_a}** of {len(a.classes)} under A (*{name_a}*), "
        f"rank **{rank_b}** of {len(b.classes)} under B (*{name_b}*): {change}."
    )
