"""The picture under the model's W*, W* from its descriptions and W* from a user's (``studio.redescribe``), as one
HTML card."""

from __future__ import annotations

from typing import TYPE_CHECKING

from viz.steps import CHANGE_TITLES, escape, fig, table

if TYPE_CHECKING:
    from microclip.explain import Explanation
    from studio.redescribe import Redescribed

COLUMNS = ("the model", "W* from its descriptions", "W* from yours")
NOTE = (
    "W* from descriptions is W* as adaptation starts: each class vector the mean of its sentences' embeddings, with "
    "the model's visual tower and SOAP kept, so the last two columns differ by the sentences alone. The first is the "
    "model as it is ({first}). W_LLM changes with the sentences too, but it only makes pseudo-labels while adapting; "
    "the answer is W*'s."
)


def redescribe_html(result: Redescribed) -> str:
    """Each branch's answer in the three columns, then every class the user re-described: its sentences on each
    side and its fused logit and place in each column."""
    branches = [b for b in CHANGE_TITLES if all(_has(e, b) for e in result.columns)]
    truth = result.true_class
    rows = []
    for branch in branches:
        row = [CHANGE_TITLES[branch], *(_answer(e, branch) for e in result.columns)]
        if truth is not None:
            i = result.now.classes.index(truth)
            row.append(" → ".join(f"{e.probabilities(branch)[i]:.1%}" for e in result.columns))
        rows.append(row)
    header = ["branch", *COLUMNS, *([f"p({truth}), the three columns"] if truth else [])]
    cards = fig("Each branch's answer", table(header, rows, "wt-names"), extra_class="wt-wide")
    described = [
        (
            c.name,
            _sentences(c.before),
            _sentences(c.after),
            " → ".join(f"{v:.3f}" for v in c.logits),
            " → ".join(str(p) for p in c.places),
        )
        for c in result.classes
    ]
    if described:
        header = ["class", "its descriptions", "yours", "fused logit (the three columns)", "place"]
        described_table = table(header, described, "wt-names wt-prose")
        cards += fig("The classes you re-described", described_table, extra_class="wt-wide")
    else:
        cards += '<div class="wt-note">Your lines give every class the sentences it already had: nothing changed.</div>'
    # equal columns also come from an adapted model asked among typed names or with a descriptions file (its W* then
    # rebuilt), so "not adapted" would not be true of every such model
    first = (
        "its W* moved from its start in adaptation"
        if result.adapted
        else "its W* is the one the descriptions give, so the first two columns agree"
    )
    note = f'<div class="wt-note">{escape(NOTE.format(first=first))}</div>'
    return f'<div class="wt"><div class="wt-body">{cards}</div>{note}</div>'


def _has(explanation: Explanation, branch: str) -> bool:
    return branch != "fg_unshifted" or explanation.logits_fg_unshifted is not None


def _answer(explanation: Explanation, branch: str) -> str:
    """A branch's answer and its probability, "opsiva wren (81.6%)"."""
    i = explanation.prediction(branch)
    return f"{explanation.classes[i]} ({explanation.probabilities(branch)[i]:.1%})"


def _sentences(sentences: tuple[str, ...]) -> str:
    """A class's sentences in one cell (the table escapes them)."""
    return " · ".join(sentences) if sentences else "(none: its templates)"
