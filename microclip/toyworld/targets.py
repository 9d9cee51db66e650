"""Issue 14's targets, read off a `bench/toyworld.py --json` report, and the two rules that pick which world ships.

Among seeds of one recipe (`ship_choice`, fixed before the round-10 pretraining seeds were measured;
docs/toyworld.md, "Round 10"): a world is chosen by the targets its *base* meets, never by how adaptation went on
it. Adaptation's verdict on a base (microCLIP against the CLS-only baseline) swings with the draw by more than the
targets ask for, so choosing on it would ship a lucky draw and teach its luck as the method's.

Between recipes (`recipe_verdict`, fixed in round 13 before its candidate finished): a base replaces the shipped
one when one pretraining build makes it within the hour, and, counting every row but fused accuracy's two
margins (the rows that swing with the draw), it meets more rows than the shipped world and loses none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from microclip.uncertainty import PairedGap

# The maps SOAP competes with on deletion are every map but SOAP's own variants. "soap_rollout" is a peer: it is
# rollout's reading of SOAP's weights, not a map SOAP pools with. "soap_contribution" (SOAP's weights times its values,
# along the class) is SOAP's own accounting: not a peer, and not the weights the row was written about (round 41).
_SOAP_MAPS = ("soap", "soap_keys_ncut", "soap_contribution")
# Rounds 9 and 10 measured these two swing with the pretraining draw by more than the 5 points they ask for.
DRAW_MARGINS = ("fused_vs_zero_shot", "fused_vs_baseline")
MAX_BUILD_MINUTES = 60.0


@dataclass(frozen=True)
class Target:
    """One row of the issue's targets on one world."""

    key: str
    text: str
    stage: str  # "pretraining": measured on the base alone; "adaptation": needs the adapted model
    shown: str  # the measured value(s) as the table prints them
    met: bool | None  # None: the report lacks what the row needs


def targets(report: dict) -> list[Target]:
    """Every target the bench measures (the record's reproducibility is a test, not a bench row)."""
    accuracy = report.get("accuracy", {})
    names = accuracy.get("zero_shot_names")
    described = accuracy.get("zero_shot_descriptions")
    cut = report.get("ncut_on_bird", {}).get("base", {})
    spearman = report.get("names_by_frequency", {}).get("spearman")
    rows = [
        _row("names", "zero-shot by names 35-65%", "pretraining", names, lambda v: 35 <= v <= 65),
        _row(
            "spearman",
            "Spearman(frequency, per-species names) >= 0.7",
            "pretraining",
            spearman,
            lambda v: v >= 0.7,
            fmt="{:.3f}",  # 0.699 must not print as the 0.70 it misses
        ),
        _compare("descriptions", "descriptions >= names + 3", "pretraining", described, names, 3),
        _row(
            "cut_precision",
            "NCut pixel precision on the bird >= 55% (base tower)",
            "pretraining",
            cut.get("pixel_precision"),
            lambda v: v >= 55,
        ),
        _row(
            "cut_iou",
            "NCut IoU with the bird's patches >= 55% (base tower)",
            "pretraining",
            cut.get("iou"),
            lambda v: v >= 55,
        ),
        _row("part_probe", "part probe >= 70%", "pretraining", report.get("part_probe"), lambda v: v >= 70),
        _row("linear_probe", "linear probe >= 95%", "pretraining", accuracy.get("linear_probe"), lambda v: v >= 95),
    ]
    pointing = report.get("pointing", {})
    soap, legrad, bird_chance = pointing.get("soap"), pointing.get("legrad"), report.get("within_bird_chance")
    fused = accuracy.get("adapted_fused")
    best_zero_shot = None if names is None or described is None else max(names, described)
    rows += [
        _compare("soap_vs_legrad", "SOAP pointing >= LeGrad", "adaptation", soap, legrad, 0),
        _compare("soap_vs_chance", "SOAP pointing >= within-bird chance + 20", "adaptation", soap, bird_chance, 20),
        _compare(
            "fused_vs_zero_shot",
            "adapted fused >= max(names, descriptions) + 15",
            "adaptation",
            fused,
            best_zero_shot,
            15,
        ),
        _compare(
            "fused_vs_baseline",
            "adapted fused >= CLS-only baseline + 5",
            "adaptation",
            fused,
            accuracy.get("cls_baseline"),
            5,
        ),
        _fg_only(accuracy.get("adapted_fg"), accuracy.get("adapted_fg_unshifted")),
        _deletion(report.get("deletion"), report.get("deletion_vs_soap", {})),
        # whole birds resampled where the report has it (round 42): a bird's erased parts are not independent draws
        _part_removal(
            report.get("part_removal"), report.get("part_removal_gap_by_bird", report.get("part_removal_gap"))
        ),
    ]
    return rows


def _fg_only(evaluated: float | None, unshifted: float | None) -> Target:
    """`[FG]`-only as evaluated decides the row (the issue's); without its run's shared shift is shown beside it."""
    row = _row("fg_only", "[FG]-only >= 55%", "adaptation", evaluated, lambda v: v >= 55)
    return row if unshifted is None else replace(row, shown=f"{row.shown} ({unshifted:.1f} without its shift)")


def count_met(rows: list[Target], stage: str | None = None) -> int:
    """How many of these rows are met (only those of `stage`, when given)."""
    return sum(bool(t.met) for t in rows if stage is None or t.stage == stage)


def pretraining_met(report: dict) -> int:
    """How many of the targets measured on the base alone this world meets: the ship rule's score."""
    return count_met(targets(report), "pretraining")


def ship_choice(reports: dict[str, dict], incumbent: str) -> str:
    """The world to ship: most pretraining targets met; a tie keeps the incumbent, else the first listed.

    A tie keeps what ships because a new world changes the record, gallery and README for users with nothing
    gained on the targets.
    """
    if incumbent not in reports:
        raise ValueError(f"the incumbent {incumbent!r} is not among the reports ({', '.join(reports)})")
    scores = {name: pretraining_met(report) for name, report in reports.items()}
    best = max(scores.values())
    if scores[incumbent] == best:
        return incumbent
    return next(name for name, score in scores.items() if score == best)


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate world replaces the shipped one under the recipe rule, and why."""

    replaces: bool | None  # None: the candidate's report does not say how long its base took to build
    reasons: tuple[str, ...]


def recipe_verdict(candidate: dict, incumbent: dict, max_build_minutes: float = MAX_BUILD_MINUTES) -> Verdict:
    """The round-13 rule: (1) the candidate's base was built in at most `max_build_minutes` (its report's
    "build", from pretrain.json, counting every run it was fine-tuned from), (2) it meets more rows than the
    incumbent, fused accuracy's margins not counted, and (3) it fails no counted row the incumbent meets."""
    mine = {t.key: t for t in targets(candidate) if t.key not in DRAW_MARGINS}
    theirs = {t.key: t for t in targets(incumbent) if t.key not in DRAW_MARGINS}
    met, their_met = count_met(list(mine.values())), count_met(list(theirs.values()))
    lost = [key for key, t in theirs.items() if t.met and not mine[key].met]
    minutes = (candidate.get("build") or {}).get("wall_time_min")
    reasons = (
        "build time unknown" if minutes is None else f"built in {minutes:.1f} min (at most {max_build_minutes:g})",
        f"{met} rows met against {their_met} (fused accuracy's margins not counted)",
        "loses " + ", ".join(lost) if lost else "loses no row the incumbent meets",
    )
    if met <= their_met or lost:
        return Verdict(False, reasons)
    return Verdict(None if minutes is None else minutes <= max_build_minutes, reasons)


def _row(
    key: str, text: str, stage: str, value: float | None, test: Callable[[float], bool], fmt: str = "{:.1f}"
) -> Target:
    if value is None:
        return Target(key, text, stage, "n/a", None)
    return Target(key, text, stage, fmt.format(value), bool(test(value)))


def _compare(key: str, text: str, stage: str, value: float | None, other: float | None, margin: float) -> Target:
    """`value >= other + margin`, shown as both numbers."""
    if value is None or other is None:
        return Target(key, text, stage, "n/a", None)
    return Target(key, text, stage, f"{value:.1f} vs {other + margin:.1f}", value >= other + margin)


def _deletion(deletion: dict | None, versus_soap: dict) -> Target:
    key, text = "soap_deletion", "SOAP's [FG] deletion above every peer's"
    if not deletion or "soap" not in deletion:
        return Target(key, text, "adaptation", "n/a", None)
    peers = {name: row["fg"] for name, row in deletion.items() if name not in _SOAP_MAPS}
    best = max(peers, key=peers.get)
    soap = deletion["soap"]["fg"]
    shown = f"{soap:.1f} vs {best} {peers[best]:.1f}" + _gap_words(versus_soap.get(best, {}).get("fg"))
    return Target(key, text, "adaptation", shown, soap > peers[best])


def _part_removal(drop: dict | None, gap: dict | None) -> Target:
    key, text = "part_removal", "erasing a part hurts [FG] more than [CLS]"
    if not drop:
        return Target(key, text, "adaptation", "n/a", None)
    shown = f"{drop['fg']:.1f} vs {drop['cls']:.1f}" + _gap_words(gap)
    return Target(key, text, "adaptation", shown, drop["fg"] > drop["cls"])


def _gap_words(gap: dict | None) -> str:
    """The paired gap behind a comparison row, when the report has it (reports before round 31 do not)."""
    return "" if gap is None else f"; {PairedGap(**gap).words()}"
