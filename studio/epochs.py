"""Self-training epoch by epoch, without Gradio: the words and pictures that say where SOAP's map and each branch's
answer went over a run's saved epochs (``microclip.timeline`` explains the image at each of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from microclip.explain import Explanation
from microclip.heads import BRANCHES
from microclip.timeline import EpochView, epoch_name
from microclip.walkthrough import PatchTruth, mask_facts, top_patch
from studio.images import image_file
from viz.overlay import outline_mask, overlay_unit
from viz.steps import region_phrase

BRANCH_NAMES = {"fused": "fused", "cls": "`[CLS]`", "fg": "`[FG]`"}


# ------------------------------------------------------------------ pictures


def shared_top(views: Sequence[EpochView]) -> float:
    """The largest SOAP weight any patch gets at any epoch: the top of the one colour scale."""
    return max(float(np.max(v.explanation.soap_weights)) for v in views)


def epoch_panels(
    crop: np.ndarray, views: Sequence[EpochView], cmap: str, opacity: float, outline: np.ndarray | None = None
) -> list[tuple[str, str]]:
    """SOAP's map at each epoch over the crop, all on one scale (0 to ``shared_top``) so that a map growing
    sharper or flatter shows as such; each a PNG file with its caption, the epoch (the answers are in the table)."""
    top = shared_top(views) or 1.0
    panels = []
    for view in views:
        unit = view.explanation.soap_weights / top
        pixels = overlay_unit(crop, unit, opacity, cmap, interpolation="nearest")
        if outline is not None:
            pixels = outline_mask(pixels, outline)
        panels.append((image_file(pixels), epoch_name(view.epoch)))  # a thumbnail's caption fits a word or two
    return panels


# ------------------------------------------------------------------ words


def _answer(explanation: Explanation, branch: str, truth_class: str | None) -> str:
    name, probability = explanation.top_k(branch, 1)[0]
    mark = "" if truth_class is None else (" ✓" if name == truth_class else " ✗")
    return f"{name} {probability:.0%}{mark}"


@dataclass(frozen=True)
class _SoapAt:
    """SOAP's top patch at one epoch, in words ("(3, 2) on the beak" on a toy image), and its weight on the parts."""

    top: str
    on_parts: float | None  # None when the image's masks are not known


def _soap_at(explanation: Explanation, truth: PatchTruth | None) -> _SoapAt:
    if truth is None:
        return _SoapAt(str(top_patch(explanation.soap_weights)), None)
    facts = mask_facts(truth, explanation.ncut_mask, explanation.soap_weights, explanation.cls_similarity)
    return _SoapAt(f"{facts.soap_top} on {region_phrase(facts.soap_top_region)}", facts.soap_on_parts)


def _logged(view: EpochView, branches: Sequence[str] = BRANCHES) -> str:
    values = [view.logged.get(f"acc_{b}") for b in branches]
    return " / ".join("–" if v is None else f"{v:.1f}" for v in values)


ALL_PARTS = "all at once"  # the column of the bird drawn without every one of its parts
ERASE_SOURCE = (
    "the same bird drawn again without that part, at each epoch's model: points of the true class's probability "
    "`[CLS]` / `[FG]` lose; a negative number is a gain: without that part the bird looks more like its species"
)
ALL_PARTS_SOURCE = f"; *{ALL_PARTS}*: without every one of its parts in one picture"


SIGNS_SOURCE = (
    "on the run's own training batches, averaged over each epoch: how often each branch alone gives the fused "
    "answer (%), and how much of each branch's token every image shares, 0 to 1 (microclip/drift.py)"
)

SHIFT_SOURCE = (
    "the length of the one vector every image's `[FG]` token took on since the start, measured without labels on "
    "the run's training images as each epoch ended (each token has length 1); `[FG]` alone on this image with and "
    "without it; and the run's test accuracy of `[FG]` alone with / without it, in %"
)


def _signs(logged: dict[str, float]) -> list[str]:
    def value(key: str, form: str) -> str:
        return format(logged[key], form) if key in logged else "–"

    shared = f"{value('shared_cls', '.2f')} / {value('shared_fg', '.2f')}"
    return [f"{value('agree_cls', '.1f')}%", f"{value('agree_fg', '.1f')}%", shared]


def _shift_row(view: EpochView, true_class: str | None) -> list[str]:
    """One epoch of the shift's table: its length, `[FG]` with and without it, the run's `[FG]` accuracy both ways."""
    e = view.explanation
    if e.logits_fg_unshifted is None:  # the start has no shift; an epoch saved before shifts were kept has none
        alone = "no shift yet" if view.epoch == 0 else "–"
    else:
        alone = _answer(e, "fg_unshifted", true_class)
    length = f"{view.logged['shift_fg']:.2f}" if "shift_fg" in view.logged else "–"
    accuracy = _logged(view, ("fg", "fg_unshifted"))
    return [epoch_name(view.epoch), length, _answer(e, "fg", true_class), alone, accuracy]


def _drift_fact(first: EpochView, last: EpochView) -> str:
    """`[FG]`'s agreement with the fused answer from the first epoch with signs to the last, in words; and the part
    every image shares, where the run logged it (docs/toyworld.md, round 20: the drift `[FG]` shows)."""
    start, end = epoch_name(first.epoch), epoch_name(last.epoch)
    fact = (
        f"Without labels: `[FG]` alone gave the fused answer on {first.logged['agree_fg']:.0f}% of the training "
        f"batches' images in {start} and {last.logged['agree_fg']:.0f}% in {end} (`[CLS]` alone: "
        f"{first.logged['agree_cls']:.0f}% → {last.logged['agree_cls']:.0f}%)"
    )
    if "shared_fg" in first.logged and "shared_fg" in last.logged:
        fact += (
            f"; the part of `[FG]`'s token every image shares went {first.logged['shared_fg']:.2f} → "
            f"{last.logged['shared_fg']:.2f}"
        )
    if "shift_fg" in last.logged:
        fact += f", and the one shift every image's `[FG]` took on reached length {last.logged['shift_fg']:.2f}"
    return fact + "."


def _true_probability(explanation: Explanation, branch: str, true_class: str) -> float:
    return float(explanation.probabilities(branch)[explanation.classes.index(true_class)])


def part_drops(
    views: Sequence[EpochView], erased: dict[str, Sequence[EpochView]], true_class: str
) -> dict[str, list[tuple[float, float]]]:
    """For each erased part, at each epoch: how many points of the true class's probability `[CLS]` and `[FG]`
    lose when the bird is drawn again without that part (``erased[part]``: the timeline of that picture)."""
    return {part: timeline_drops(views, timeline, true_class) for part, timeline in erased.items()}


def timeline_drops(
    views: Sequence[EpochView], changed: Sequence[EpochView], true_class: str
) -> list[tuple[float, float]]:
    """At each epoch, the points of the true class's probability `[CLS]` and `[FG]` lose from the picture's
    timeline (``views``) to a changed picture's (``changed``)."""
    return [
        tuple(
            100.0
            * (
                _true_probability(view.explanation, branch, true_class)
                - _true_probability(without.explanation, branch, true_class)
            )
            for branch in ("cls", "fg")
        )
        for view, without in zip(views, changed)
    ]


def _pair(cls_drop: float, fg_drop: float) -> str:
    # + 0.0 after rounding: a drop of -0.04 reads 0.0, not -0.0
    return f"{round(cls_drop, 1) + 0.0:.1f} / {round(fg_drop, 1) + 0.0:.1f}"


def _leans(cls_drop: float, fg_drop: float) -> str:
    return "more than" if fg_drop > cls_drop else "less than" if fg_drop < cls_drop else "as much as"


def _erase_lines(
    views: Sequence[EpochView],
    erased: dict[str, Sequence[EpochView]],
    true_class: str,
    everything: Sequence[EpochView] | None = None,
) -> tuple[str, list[str]]:
    """The fact and the table's lines of erasing each part, epoch by epoch (``part_drops``); ``everything``: the
    timeline of the bird drawn without all its parts at once, a last column."""
    drops = part_drops(views, erased, true_class)
    means = [tuple(float(np.mean([drops[p][i][b] for p in drops])) for b in (0, 1)) for i in range(len(views))]
    (c0, f0), (c1, f1) = means[0], means[-1]
    start, end = epoch_name(views[0].epoch), epoch_name(views[-1].epoch)
    fact = (
        f"Erasing a part (the mean over this bird's {len(drops)} part{'s' if len(drops) > 1 else ''}) costs "
        f"`[CLS]` {c0:.1f} and `[FG]` {f0:.1f} points "
        f"of the true class's probability at the {start}, `[CLS]` {c1:.1f} and `[FG]` {f1:.1f} after {end}: `[FG]` "
        f"leans on the parts {_leans(c0, f0)} `[CLS]` at the {start} and {_leans(c1, f1)} `[CLS]` at the end."
    )
    every = timeline_drops(views, everything, true_class) if everything else None
    if every:
        (a0, g0), (a1, g1) = every[0], every[-1]
        fact += (
            f" With all {len(drops)} erased at once: `[CLS]` {a0:.1f} and `[FG]` {g0:.1f} at the {start}, "
            f"{a1:.1f} and {g1:.1f} after {end}."
        )
    header = ["epoch", *(part.replace("_", " ") for part in drops), "mean"] + ([ALL_PARTS] if every else [])
    source = ERASE_SOURCE + (ALL_PARTS_SOURCE if every else "")
    lines = ["", f"**Erasing each part** ({source})", "", markdown_row(header), markdown_rule(header)]
    for i, view in enumerate(views):
        cells = [_pair(*drops[p][i]) for p in drops] + [_pair(*means[i])] + ([_pair(*every[i])] if every else [])
        lines.append(markdown_row([epoch_name(view.epoch), *cells]))
    return fact, lines


def markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_rule(cells: Sequence[str]) -> str:
    return "|" + "|".join("---" for _ in cells) + "|"


def timeline_markdown(
    model_name: str,
    views: Sequence[EpochView],
    truth: PatchTruth | None,
    erased: dict[str, Sequence[EpochView]] | None = None,
    everything: Sequence[EpochView] | None = None,
) -> str:
    """What self-training did on this image, from the numbers: where SOAP's top patch went and how much of its
    weight is on the bird's parts (on a known toy image), each branch's answer, and the run's logged
    accuracies, epoch by epoch. ``erased``: the timeline of the same toy bird drawn without each of its parts, by
    part (a known toy image whose species the model has): how much each branch leans on each part; ``everything``:
    the same bird drawn without all of them at once."""
    first, last = views[0], views[-1]
    true_class = truth.true_class if truth is not None else None
    start, end = epoch_name(first.epoch), epoch_name(last.epoch)
    lines = [
        f"**{model_name}**: {len(views)} saved epochs ({start} to {end}). The maps are SOAP's pooling weights on "
        f"one colour scale, from 0 to {shared_top(views):.3f} (the largest weight any patch gets at any epoch), so a "
        "map that grows sharper or flatter shows as such."
    ]
    soap = [_soap_at(v.explanation, truth) for v in views]
    facts = [f"SOAP's top patch: {soap[0].top} at the {start}, {soap[-1].top} after {end}."]
    if truth is not None:
        facts.append(f"SOAP's weight on the parts' pixels: {soap[0].on_parts:.1%} → {soap[-1].on_parts:.1%}.")
    # `[FG]` without its shift where the run measured it: from its first measured epoch (the start has none)
    shifted = [v for v in views if v.explanation.logits_fg_unshifted is not None]
    for branch in BRANCHES:
        answers = [v.explanation.top_k(branch, 1)[0][0] for v in views]
        changes = sum(a != b for a, b in zip(answers, answers[1:]))
        moved = "never changes" if changes == 0 else f"changes {changes} time{'s' if changes > 1 else ''}"
        facts.append(
            f"{BRANCH_NAMES[branch]}: {_answer(first.explanation, branch, true_class)} → "
            f"{_answer(last.explanation, branch, true_class)} (its answer {moved})."
        )
    if shifted:
        facts.append(
            f"`[FG]` without its shift: {_answer(shifted[0].explanation, 'fg_unshifted', true_class)} after "
            f"{epoch_name(shifted[0].epoch)} → {_answer(shifted[-1].explanation, 'fg_unshifted', true_class)} after "
            f"{epoch_name(shifted[-1].epoch)} (the shift is the same on every image; taken away, what is left of "
            "`[FG]` is what it saw in this one)."
        )
    signed = [v for v in views if "agree_fg" in v.logged and "agree_cls" in v.logged]
    if signed:
        facts.append(_drift_fact(signed[0], signed[-1]))
    erase_fact, erase_table = (
        _erase_lines(views, erased, true_class, everything) if erased and true_class else (None, [])
    )
    if erase_fact:
        facts.append(erase_fact)
    if true_class is not None:
        facts.append(f"This toy image is a *{true_class}* (✓ marks a right answer).")
    lines += ["", *[f"- {fact}" for fact in facts]]
    # Two narrow tables, not one wide one: eight columns of class names and patches do not fit beside the maps.
    answers = ["epoch", "fused", "`[CLS]`", "`[FG]`", "run's accuracy"]
    lines += [
        "",
        "**Each branch's answer** (and the run's test accuracy then, fused / `[CLS]` / `[FG]`, in %)",
        "",
        markdown_row(answers),
        markdown_rule(answers),
    ]
    for view in views:
        e = view.explanation
        lines.append(
            markdown_row([epoch_name(view.epoch), *(_answer(e, b, true_class) for b in BRANCHES), _logged(view)])
        )
    if shifted:
        header = ["epoch", "shift", "`[FG]`", "`[FG]` without it", "run's `[FG]` accuracy"]
        lines += [
            "",
            f"**`[FG]` and its shared shift** ({SHIFT_SOURCE})",
            "",
            markdown_row(header),
            markdown_rule(header),
        ]
        lines += [markdown_row(_shift_row(v, true_class)) for v in views]
    if signed:
        header = ["epoch", "`[CLS]` alone = fused", "`[FG]` alone = fused", "shared by every image: `[CLS]` / `[FG]`"]
        lines += ["", f"**Without labels** ({SIGNS_SOURCE})", "", markdown_row(header), markdown_rule(header)]
        lines += [markdown_row([epoch_name(v.epoch), *_signs(v.logged)]) for v in signed]
    header = ["epoch", "SOAP's top patch", *(["weight on the parts"] if truth is not None else []), "null token"]
    lines += ["", "**SOAP's map**", "", markdown_row(header), markdown_rule(header)]
    for view, at in zip(views, soap):
        parts = [f"{at.on_parts:.1%}"] if at.on_parts is not None else []
        lines.append(markdown_row([epoch_name(view.epoch), at.top, *parts, f"{view.explanation.null_weight:.1e}"]))
    return "\n".join(lines + erase_table)


SPECIES_SOURCE = (
    "labels: how many of each epoch's training images self-training labelled as the class (no labels used); "
    "test accuracy: the run's, per class, in % (of the branch it reports: fused, or `[CLS]` for a baseline), at the "
    "start and after each epoch"
)
RIGHT_SOURCE = (
    "; labels right: of the labels the class got, how many were on its own images, and in brackets what its own "
    "training images were most often labelled instead (checked against their true classes, which self-training "
    "does not use)"
)
LEAD_SOURCE = (
    "; lead: how far ahead of its best rival the class's test images keep it, the mean over them of (its logit − the "
    "largest other class's logit), at the start and after the last epoch (logits of the branch it reports, scale 100; "
    "negative when they are, on average, called something else)"
)
MAX_SPECIES_ROWS = 20  # more classes than this: the rows self-training treated worst
SCARCE = 0.1  # a class the labels gave under this share of an even split of the epoch's images


def dotted_series(values: Sequence[float | None], form: str) -> str:
    return " · ".join("–" if v is None else format(v, form) for v in values)


def scarce_classes(counts: dict[str, int]) -> list[str]:
    """The classes the label ``counts`` gave under ``SCARCE`` of an even share, in the counts' order."""
    even = sum(counts.values()) / len(counts)
    return [c for c, n in counts.items() if n < SCARCE * even]


def labels_fact(counts: dict[str, int], epoch: int) -> tuple[str, list[str]]:
    """The label-free fact of the epoch's label counts, and the classes its labels gave under ``SCARCE`` of an even
    share."""
    total = sum(counts.values())
    even = total / len(counts)
    scarce = scarce_classes(counts)
    fact = (
        f"Without labels: in {epoch_name(epoch)} self-training labelled {total} training images, an even share "
        f"{even:.0f} a class; "
    )
    if not scarce:
        fewest = min(counts, key=counts.get)
        return fact + f"the fewest went to {fewest} ({counts[fewest]}).", scarce
    listed = ", ".join(f"{c} {counts[c]}" for c in scarce)
    return fact + f"{len(scarce)} class{'es' if len(scarce) > 1 else ''} got under a tenth of that: {listed}.", scarce


def _mistaken_for(confused: dict | None, name: str) -> str:
    """What the class's test images were most often wrongly called, and on what share: "zorsaik wren (82%)"."""
    other = (confused or {}).get(name)
    return "–" if not other else f"{other[0]} ({other[1]:.0f}%)"


def _accuracy_fact(
    start: dict, end: dict, first: int, last: int, confused: dict | None
) -> tuple[str, dict[str, float]]:
    """The test-accuracy fact from ``first`` to ``last`` epoch, and each class's change (points); ``confused``: the
    last epoch's commonest wrong answer per class, named after the largest fall."""
    change = {c: end[c] - start[c] for c in start if start[c] is not None and end.get(c) is not None}
    if not change:
        return "", change
    worst, best = min(change, key=change.get), max(change, key=change.get)
    rose, fell = sum(v > 0 for v in change.values()), sum(v < 0 for v in change.values())
    other = (confused or {}).get(worst)
    called = f"; {other[1]:.0f}% of them called {other[0]}" if other else ""
    extremes = [
        f"the largest {word} {c} ({start[c]:.0f}% → {end[c]:.0f}%{called if word == 'fall' else ''})"
        for word, c, happened in (("fall", worst, fell), ("rise", best, rose))
        if happened
    ]
    fact = (
        f"Test accuracy, {epoch_name(first)} to {epoch_name(last)}: it rose on {rose} "
        f"class{'es' if rose != 1 else ''} and fell on {fell}" + "".join(f"; {e}" for e in extremes) + "."
    )
    return fact, change


def _signed(value: float | None) -> str:
    return "–" if value is None else format(value, "+.1f").replace("-", "−")


def _leads(lead: dict[int, dict]) -> tuple[int, int] | None:
    """The first and last epoch that logged each class's lead; None when the run logged it once or never (runs from
    before round 29)."""
    epochs = sorted(lead)
    return (epochs[0], epochs[-1]) if len(epochs) > 1 else None


def _lead_fact(lead: dict[int, dict], first: int, last: int, subjects: Sequence[str]) -> str:
    """The spread of the classes' leads at ``first`` and ``last`` epoch, and how ``subjects``' leads went."""

    def spread(epoch: int) -> str:
        values = [v for v in lead[epoch].values() if v is not None]
        return f"from {_signed(min(values))} to {_signed(max(values))}" if values else "–"

    went = "; ".join(f"{c} {_signed(lead[first].get(c))} → {_signed(lead[last].get(c))}" for c in subjects)
    at_first = f"at the {epoch_name(first)}" if first == 0 else f"after {epoch_name(first)}"
    return (
        f"Each class's lead over its best rival on the test split: {spread(first)} {at_first}, {spread(last)} after "
        f"{epoch_name(last)}" + (f"; {went}." if went else ".")
    )


def _ties_fact(ties: dict[str, list[str]], last: dict[str, float | None], epoch: int, at_end: dict | None) -> str:
    """How many classes the descriptions tie to another (``toyworld.text.description_ties``), and which of the
    classes under half right at the end are among them, with their ties and what each is most often mistaken for."""
    tied = [c for c in last if ties.get(c)]
    lost = [c for c, acc in last.items() if acc is not None and acc < 50]
    fact = (
        f"The descriptions tie {len(tied)} of the {len(last)} classes to another: their images fit that class's "
        "description in full, so no reader of the lines can tell the two apart"
    )
    if not lost:
        return fact + f"; no class is under 50% after {epoch_name(epoch)}."

    def named(c: str) -> str:
        mistaken = (at_end or {}).get(c)
        return f"{c} (tied to {', '.join(ties.get(c) or []) or 'none'}" + (
            f"; mistaken most often for {mistaken[0]})" if mistaken else ")"
        )

    among = sum(1 for c in lost if ties.get(c))
    if among == len(lost):
        which = "it is" if among == 1 else ("both are" if among == 2 else f"all {among} are")
    else:
        which = f"{among} {'is' if among == 1 else 'are'}"
    return fact + (
        f". Of the {len(lost)} under 50% after {epoch_name(epoch)}, {which} tied: "
        + "; ".join(named(c) for c in lost)
        + "."
    )


def _labels_given(
    labels: dict[int, dict], right: dict[int, dict], confused: dict[int, dict]
) -> tuple[int, dict, dict, dict] | None:
    """The last labelled epoch that also logged how many labels were right: (epoch, counts, right, where each
    class's training images went); None when the run logged no true classes for its training images."""
    epochs = sorted(set(labels) & set(right) & set(confused))
    return (epochs[-1], labels[epochs[-1]], right[epochs[-1]], confused[epochs[-1]]) if epochs else None


def _labels_right_cell(name: str, counts: dict, right: dict, confused: dict) -> str:
    """ "0 of 2 (yovanel warbler 95%)": of the labels the class got, how many were right, and what its own training
    images were most often labelled instead."""
    other = confused.get(name)
    return f"{right[name]} of {counts[name]}" + (f" ({other[0]} {other[1]:.0f}%)" if other else "")


def _labels_right_fact(name: str, epoch: int, counts: dict, right: dict, confused: dict) -> str:
    """Where the class's labels and its own training images went in ``epoch``, checked against the true classes."""
    other, n, when = confused.get(name), counts[name], epoch_name(epoch)
    got = f"{name} got no label in {when}"
    if n:
        were = "was" if right[name] == 1 else "were"
        got = f"of the {n} label{'s' if n != 1 else ''} {name} got in {when}, {right[name]} {were} right"
    went = f"; {other[1]:.0f}% of its own training images were labelled {other[0]}" if other else ""
    return f"Checked against the training images' true classes (self-training never sees them): {got}{went}."


def _species_table(
    shown: Sequence[str],
    labels: dict[int, dict],
    accuracy: dict[int, dict],
    mistakes: dict | None,
    given: tuple[int, dict, dict, dict] | None = None,
    lead: dict[int, dict] | None = None,
) -> list[str]:
    """The table's lines: each shown class's labels and test accuracy per epoch, its lead over its best rival at the
    start and the end, its last epoch's mistakes and, where the training images had true classes, how many of the
    last epoch's labels were right."""
    label_epochs, acc_epochs = sorted(labels), sorted(accuracy)
    ends = _leads(lead or {})
    header = ["class"]
    if label_epochs:
        header.append(f"labels, {epoch_name(label_epochs[0])} to {epoch_name(label_epochs[-1])}")
    if acc_epochs:
        header.append(f"test accuracy, {epoch_name(acc_epochs[0])} to {epoch_name(acc_epochs[-1])}")
    if ends is not None:
        header.append(f"lead, {epoch_name(ends[0])} → {epoch_name(ends[1])}")
    if given is not None:
        header.append(f"labels right, {epoch_name(given[0])}")
    if mistakes:
        header.append(f"most often mistaken for, {epoch_name(acc_epochs[-1])}")
    lines = [markdown_row(header), markdown_rule(header)]
    for c in shown:
        cells = [c]
        if label_epochs:
            cells.append(dotted_series([labels[e][c] for e in label_epochs], "d"))
        if acc_epochs:
            cells.append(dotted_series([accuracy[e].get(c) for e in acc_epochs], ".0f"))
        if ends is not None:
            cells.append(f"{_signed(lead[ends[0]].get(c))} → {_signed(lead[ends[1]].get(c))}")
        if given is not None:
            cells.append(_labels_right_cell(c, *given[1:]))
        if mistakes:
            cells.append(_mistaken_for(mistakes, c))
        lines.append(markdown_row(cells))
    return lines


def species_markdown(
    labels: dict[int, dict[str, int]],
    accuracy: dict[int, dict[str, float | None]],
    confused: dict[int, dict[str, list | None]] | None = None,
    right: dict[int, dict[str, int]] | None = None,
    labels_confused: dict[int, dict[str, list | None]] | None = None,
    lead: dict[int, dict[str, float | None]] | None = None,
    ties: dict[str, list[str]] | None = None,
) -> str:
    """Each class through self-training, from what the run logged per epoch (``Timeline.per_class``): how many
    training images its labels gave the class, and, where the run had a test split, the class's test accuracy and
    (``confused``) what its test images were most often wrongly called; where the training images had true classes,
    how many of the last epoch's labels were right (``right``) and what the class's training images were most often
    labelled instead (``labels_confused``); where the run logged it, each class's lead over its best rival on the test
    split (``lead``); on the toy world, which classes the descriptions tie to another (``ties``,
    ``toyworld.text.description_ties``). The facts name the classes the labels all but stopped naming, what became
    of them on the test split and of their leads, the lost classes against the ties, the largest falls and rises,
    and where the largest fall's labels went. "" when the run logged neither labels nor accuracy (runs from before
    round 27)."""
    if not labels and not accuracy:
        return ""
    classes = list(next(iter((labels or accuracy).values())))
    label_epochs, acc_epochs = sorted(labels), sorted(accuracy)
    at_end = (confused or {}).get(acc_epochs[-1]) if acc_epochs else None  # the last epoch's mistakes
    facts, scarce, change = [], [], {}
    if label_epochs:
        fact, scarce = labels_fact(labels[label_epochs[-1]], label_epochs[-1])
        facts.append(fact)
    if len(acc_epochs) > 1:
        first, last = accuracy[acc_epochs[0]], accuracy[acc_epochs[-1]]
        fact, change = _accuracy_fact(first, last, acc_epochs[0], acc_epochs[-1], at_end)
        facts += [fact] if fact else []
        if scarce and all(c in change for c in scarce):
            went = ", ".join(f"{c} {first[c]:.0f}% → {last[c]:.0f}%" for c in scarce)
            facts.append(
                f"On the test split the class{'es' if len(scarce) > 1 else ''} with so few labels went: {went}."
            )
        if ties:  # the lost classes against what the descriptions cannot tell apart (docs/toyworld.md, round 30)
            facts.append(_ties_fact(ties, last, acc_epochs[-1], at_end))
    worst = min(change, key=change.get) if change else None  # the largest fall
    ends = _leads(lead or {})
    if ends is not None:  # why a starved class can still be named: its lead at the start (docs/toyworld.md, round 29)
        facts.append(_lead_fact(lead, *ends, scarce or ([worst] if worst is not None else [])))
    given = _labels_given(labels, right or {}, labels_confused or {})
    if given is not None and worst is not None:
        facts.append(_labels_right_fact(worst, *given))
    shown = classes
    if len(classes) > MAX_SPECIES_ROWS and (change or label_epochs):  # the largest falls, else the fewest labels
        key = (lambda c: change.get(c, 0.0)) if change else (lambda c: labels[label_epochs[-1]][c])
        shown = sorted(classes, key=key)[:MAX_SPECIES_ROWS]
    title = "**Each class through self-training**" + (
        f" ({len(shown)} of {len(classes)}: those it treated worst)" if len(shown) < len(classes) else ""
    )
    source = SPECIES_SOURCE + (LEAD_SOURCE if ends is not None else "") + (RIGHT_SOURCE if given is not None else "")
    # what each column means goes under the table, so that the facts sit right above the numbers they read
    lines = ["", title, "", *[f"- {fact}" for fact in facts], ""]
    lines += _species_table(shown, labels, accuracy, at_end, given, lead)
    return "\n".join([*lines, "", f"*Columns*: {source}."])


NO_EPOCHS = (
    "**{name}** has no saved epochs. A run keeps them with `python train.py ... --keep_epochs` "
    "(`RUN/epochs/epoch-N.safetensors`, the start as epoch 0); open it with `python app.py --ckpt-path "
    "RUN/checkpoint.safetensors` and its epochs are found beside it. The bundled toy model ships its own, and a "
    "run started in the Adapt tab keeps its own when it is saved."
)
