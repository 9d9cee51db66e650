"""Compare's *Two runs, class by class*: every cell and fact read back against what the runs' epoch files logged."""

from __future__ import annotations

import re

import pytest

from microclip.checkpoint import epochs_beside, read_adapted
from studio.compare import RunClasses, runs_markdown
from studio.registry import TOY_ADAPTED, TOY_DEBIASED

pytestmark = pytest.mark.skipif(
    not (epochs_beside(TOY_ADAPTED) and epochs_beside(TOY_DEBIASED)), reason="the toy models' epochs are not shipped"
)


def logged(checkpoint) -> dict[int, dict]:
    """Each saved epoch's per-class record, read straight from its file (not through a Timeline)."""
    return {epoch: read_adapted(path)[1].metrics["per_class"] for epoch, path in epochs_beside(checkpoint)}


def run(name: str, checkpoint) -> RunClasses:
    record = logged(checkpoint)
    pick = lambda what: {e: r[what] for e, r in record.items() if what in r}  # noqa: E731
    return RunClasses(name, pick("labels"), pick("acc"), pick("labels_right"))


def table(markdown: str) -> dict[str, list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| class")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


def test_every_cell_is_what_each_run_logged():
    a, b = logged(TOY_ADAPTED), logged(TOY_DEBIASED)
    rows = table(runs_markdown(run("A", TOY_ADAPTED), run("B", TOY_DEBIASED)))
    last, end = max(a), max(a)
    assert list(rows) == list(a[last]["labels"])  # every class, in the run's order
    for c, cells in rows.items():
        labels_a, labels_b, right_a, right_b, acc_a, acc_b, gap = cells
        assert labels_a == " · ".join(str(a[e]["labels"][c]) for e in sorted(a) if e > 0)
        assert labels_b == " · ".join(str(b[e]["labels"][c]) for e in sorted(b) if e > 0)
        assert right_a == f"{a[last]['labels_right'][c]} of {a[last]['labels'][c]}"
        assert right_b == f"{b[last]['labels_right'][c]} of {b[last]['labels'][c]}"
        assert acc_a == f"{a[0]['acc'][c]:.0f}% → {a[end]['acc'][c]:.0f}%"
        assert acc_b == f"{b[0]['acc'][c]:.0f}% → {b[end]['acc'][c]:.0f}%"
        difference = b[end]["acc"][c] - a[end]["acc"][c]
        assert gap == ("0" if round(difference) == 0 else f"{difference:+.0f}".replace("-", "−")), c


def test_the_facts_name_the_classes_one_run_starves_and_the_other_does_not():
    a, b = logged(TOY_ADAPTED), logged(TOY_DEBIASED)
    last = max(a)
    even = 1600 / len(a[last]["labels"])  # every epoch labels each of the 1,600 training images once
    starved = {name: {c for c, n in r[last]["labels"].items() if n < 0.1 * even} for name, r in (("A", a), ("B", b))}
    assert starved["A"] != starved["B"]  # the bundled pair differs here, or the fact below would say nothing
    text = runs_markdown(run("A", TOY_ADAPTED), run("B", TOY_DEBIASED))
    fact = next(line for line in text.splitlines() if line.startswith("- Starved by one run's labels"))
    named = set(re.findall(r"(?:: |; )([a-z]+ [a-z]+) \(labels A", fact))
    assert named == starved["A"] ^ starved["B"]
    for c in named:
        assert f"{c} (labels A {a[last]['labels'][c]}, B {b[last]['labels'][c]}; " in fact
    ahead = sum(b[last]["acc"][c] > a[last]["acc"][c] for c in a[last]["acc"])
    assert f"B is ahead of A on {ahead} classes" in text


def test_hand_checked_two_class_runs():
    a = RunClasses("one", {1: {"x": 20, "y": 0}}, {0: {"x": 50.0, "y": 10.0}, 1: {"x": 90.0, "y": 0.0}}, {})
    b = RunClasses("two", {1: {"x": 10, "y": 10}}, {0: {"x": 50.0, "y": 10.0}, 1: {"x": 80.0, "y": 60.0}}, {})
    text = runs_markdown(a, b)
    assert "labels right" not in text  # neither run had true classes for its training images
    # an even share is 10 a class: y's 0 labels are under a tenth of it (1) in run A, nothing is in run B
    assert "A's labels after epoch 1 gave under a tenth of an even share to y 0; B's labels after epoch 1 gave " \
        "under a tenth of an even share to none." in text  # fmt: skip
    assert "Starved by one run's labels and not the other's: y (labels A 0, B 10; test accuracy at the end A 0%, " \
        "B 60%)." in text  # fmt: skip
    assert "B is ahead of A on 1 class and behind on 1 (mean over the classes: A 45.0%, B 70.0%)" in text
    assert "B's largest gain: y (A 0%, B 60%; 10% at the start); B's largest loss: x (A 90%, B 80%; 50% at the " \
        "start)." in text  # fmt: skip
    assert table(text) == {
        "x": ["20", "10", "50% → 90%", "50% → 80%", "−10"],
        "y": ["0", "10", "10% → 0%", "10% → 60%", "+60"],
    }


def test_runs_on_different_classes_or_without_a_per_class_record_are_refused():
    a = RunClasses("one", {1: {"x": 1, "y": 1}}, {}, {})
    with pytest.raises(ValueError, match="different classes"):
        runs_markdown(a, RunClasses("two", {1: {"x": 1, "z": 1}}, {}, {}))
    with pytest.raises(ValueError, match="neither run logged"):
        runs_markdown(RunClasses("old", {}, {}, {}), RunClasses("older", {}, {}, {}))
