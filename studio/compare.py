"""Compare's words without Gradio: how one class ranks under two models, and two runs class by class."""

from __future__ import annotations

from dataclasses import dataclass

from microclip.explain import Explanation
from microclip.timeline import Timeline, epoch_name
from studio.epochs import dotted_series, markdown_row, markdown_rule, scarce_classes


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


# ------------------------------------------------------------ two runs, class by class


@dataclass(frozen=True)
class RunClasses:
    """What one run logged per class and epoch (``Timeline.per_class``): its labels, its test accuracy (runs with a
    test split) and how many labels were right (training images with true classes)."""

    name: str
    labels: dict[int, dict[str, int]]
    accuracy: dict[int, dict[str, float | None]]
    right: dict[int, dict[str, int]]

    @classmethod
    def of(cls, name: str, timeline: Timeline) -> RunClasses:
        return cls(name, timeline.per_class("labels"), timeline.per_class("acc"), timeline.per_class("labels_right"))

    @property
    def classes(self) -> list[str]:
        logged = self.labels or self.accuracy
        return list(next(iter(logged.values()))) if logged else []

    def last_labels(self) -> tuple[int, dict[str, int]] | None:
        return (max(self.labels), self.labels[max(self.labels)]) if self.labels else None

    def accuracy_ends(self) -> tuple[dict[str, float | None], dict[str, float | None]] | None:
        """Each class's test accuracy at the first and the last epoch that logged it (None: logged once or never)."""
        epochs = sorted(self.accuracy)
        return (self.accuracy[epochs[0]], self.accuracy[epochs[-1]]) if len(epochs) > 1 else None


# each run's test accuracy per class at its first and its last logged epoch (RunClasses.accuracy_ends), A's then B's
Ends = tuple[tuple[dict[str, float | None], dict[str, float | None]], ...]

# what each column means, by column kind (only the kinds the table shows are explained under it)
RUNS_SOURCES = {
    "labels": "labels: how many of each epoch's training images the run's self-training labelled as the class (no "
    "labels used)",
    "right": "labels right: of the last epoch's labels, how many were on the class's own images (checked against "
    "their true classes, which self-training does not use)",
    "accuracy": "test accuracy: per class, in % (of the branch each run reports), at the start → after the last "
    "epoch; B − A: the two runs' test accuracy after their last epochs, in points",
}


def _scarce_phrase(run: RunClasses, letter: str) -> str:
    epoch, counts = run.last_labels()
    scarce = scarce_classes(counts)
    listed = ", ".join(f"{c} {counts[c]}" for c in scarce) or "none"
    return f"{letter}'s labels after {epoch_name(epoch)} gave under a tenth of an even share to {listed}"


def _starved_apart(a: RunClasses, b: RunClasses, ends: Ends | None) -> str:
    """The classes one run's last labels starve and the other's do not, with their test accuracy at the end."""
    (_, counts_a), (_, counts_b) = a.last_labels(), b.last_labels()
    scarce_a, scarce_b = set(scarce_classes(counts_a)), set(scarce_classes(counts_b))

    def told(c: str) -> str:
        at_end = (
            f"; test accuracy at the end A {ends[0][1][c]:.0f}%, B {ends[1][1][c]:.0f}%"
            if ends and ends[0][1].get(c) is not None and ends[1][1].get(c) is not None
            else ""
        )
        return f"{c} (labels A {counts_a[c]}, B {counts_b[c]}{at_end})"

    apart = [c for c in a.classes if (c in scarce_a) != (c in scarce_b)]
    if not apart:
        return "Both runs' last labels starve the same classes."
    return "Starved by one run's labels and not the other's: " + "; ".join(told(c) for c in apart) + "."


def _accuracy_apart(classes: list[str], ends: Ends) -> str:
    """How the two runs' test accuracy differs per class at the end: on how many each is ahead, the largest gap
    each way, and their means over the classes."""
    (start_a, end_a), (_, end_b) = ends
    gap = {c: end_b[c] - end_a[c] for c in classes if end_a.get(c) is not None and end_b.get(c) is not None}
    if not gap:
        return ""
    ahead, behind = sum(v > 0 for v in gap.values()), sum(v < 0 for v in gap.values())
    mean_a, mean_b = (sum(end[c] for c in gap) / len(gap) for end in (end_a, end_b))
    fact = (
        f"After their last epochs B is ahead of A on {ahead} class{'es' if ahead != 1 else ''} and behind on "
        f"{behind} (mean over the classes: A {mean_a:.1f}%, B {mean_b:.1f}%)"
    )
    best, worst = max(gap, key=gap.get), min(gap, key=gap.get)
    for word, c, happened in (("gain", best, ahead), ("loss", worst, behind)):
        if happened:
            fact += f"; B's largest {word}: {c} (A {end_a[c]:.0f}%, B {end_b[c]:.0f}%; {start_a[c]:.0f}% at the start)"
    return fact + "."


def runs_markdown(a: RunClasses, b: RunClasses) -> str:
    """Two runs' classes side by side: the labels each run's self-training gave every class, each class's test
    accuracy from the start to the end in each run, and the facts that read them (the classes one run's labels
    starve and the other's do not; where B is ahead of A and by how much)."""
    if a.classes != b.classes:
        raise ValueError(
            f"*{a.name}* and *{b.name}* were trained on different classes ({len(a.classes)} and {len(b.classes)}); "
            "compare two runs of one label set"
        )
    if not a.classes:
        raise ValueError("neither run logged its labels or its test accuracy per class (runs from before round 27)")
    have_labels = bool(a.labels and b.labels)
    ends = (a.accuracy_ends(), b.accuracy_ends())
    ends = ends if all(ends) else None
    facts = []
    if have_labels:
        facts += [f"Without labels: {_scarce_phrase(a, 'A')}; {_scarce_phrase(b, 'B')}.", _starved_apart(a, b, ends)]
    if ends:
        facts.append(_accuracy_apart(a.classes, ends))
    header = ["class"]
    rights = [(x, run) for x, run in (("A", a), ("B", b)) if run.right and run.labels] if have_labels else []
    if have_labels:
        header += [f"{x}: labels, {_span(run.labels)}" for x, run in (("A", a), ("B", b))]
        header += [f"{x}: labels right, {epoch_name(max(run.right))}" for x, run in rights]
    if ends:
        header += [f"{x}: test accuracy, {_span(run.accuracy)}" for x, run in (("A", a), ("B", b))] + ["B − A"]
    lines = [markdown_row(header), markdown_rule(header)]
    for c in a.classes:
        cells = [c]
        if have_labels:
            cells += [dotted_series([run.labels[e][c] for e in sorted(run.labels)], "d") for run in (a, b)]
            for _, run in rights:
                epoch = max(run.right)
                cells.append(f"{run.right[epoch][c]} of {run.labels.get(epoch, {}).get(c, '?')}")
        if ends:
            for start, end in ends:
                cells.append(f"{_percent(start.get(c))} → {_percent(end.get(c))}")
            gap = None if ends[0][1].get(c) is None or ends[1][1].get(c) is None else ends[1][1][c] - ends[0][1][c]
            cells.append(_points(gap))
        lines.append(markdown_row(cells))
    title = f"**Two runs, class by class**: A *{a.name}*, B *{b.name}*"
    shown = {"labels": have_labels, "right": bool(rights), "accuracy": bool(ends)}
    source = "; ".join(RUNS_SOURCES[kind] for kind, there in shown.items() if there)
    return "\n".join([title, "", *[f"- {fact}" for fact in facts if fact], "", *lines, "", f"*Columns*: {source}."])


def _span(logged: dict[int, dict]) -> str:
    epochs = sorted(logged)
    if len(epochs) == 1:
        return epoch_name(epochs[0])
    return f"{epoch_name(epochs[0])} to {epoch_name(epochs[-1])}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def _points(gap: float | None) -> str:
    """A signed whole number of points; "0" where the two runs agree to the point."""
    if gap is None:
        return "–"
    return "0" if round(gap) == 0 else format(gap, "+.0f").replace("-", "−")
