"""Which species self-training loses, against the ties its descriptions leave, over many runs on the toy world.

    python bench/description_ties.py RUN [RUN ...] [--under 50] [--json FILE]
    MICROCLIP_TOYWORLD_SPECIES=colour python bench/description_ties.py RUN ...   # runs of the colour table

RUN is a ``train.py`` output folder on the toy world (its ``checkpoint.safetensors`` carries the descriptions it
adapted with, its ``log.jsonl`` each class's test accuracy and commonest mistake after the last epoch), or a shipped
checkpoint with its record's log (``checkpoints/toybirds-microclip.safetensors``). A class is *tied* when its images
fit another class's description in full (``text.description_ties``: a perfect reader of the lines cannot tell them
apart), and *lost* when it ends under ``--under`` % on the test split. For every run: the lost classes, how many of
them are tied, and how many are mistaken most often for a class they are tied to; then the same summed over the runs,
with how often a tied and an untied class is lost. Round 30 (docs/toyworld.md) reads 26 runs with it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from microclip.checkpoint import read_adapted
from microclip.files import atomic_write_text
from microclip.toyworld.text import description_ties
from microclip.toyworld.world import SPECIES_TABLE


def run_files(run: Path) -> tuple[Path, Path]:
    """(checkpoint, log) of a train.py output folder or of a checkpoint file with its record's log beside it."""
    if run.is_dir():
        return run / "checkpoint.safetensors", run / "log.jsonl"
    record = run.with_suffix(".json")
    return run, record


def last_epoch(log: Path) -> dict:
    """The last evaluated row of a run's log (``log.jsonl``), or of a shipped record's ``log``."""
    if log.suffix == ".jsonl":
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    else:
        rows = json.loads(log.read_text())["log"]
    rows = [row for row in rows if row.get("test_per_class")]
    if not rows:
        raise ValueError(f"{log}: no epoch with per-class test accuracy (runs before round 27 did not log it)")
    return rows[-1]


def lost_against_ties(
    accuracy: dict[str, float], confused: dict[str, list | None], ties: dict[str, list[str]], under: float = 50.0
) -> dict:
    """One run's classes under ``under`` % against the ties: which are tied, which went to a class they are tied to."""
    lost = sorted(c for c, acc in accuracy.items() if acc < under)
    tied = sorted(c for c in accuracy if ties.get(c))
    to_rival = sorted(c for c in lost if (confused.get(c) or [None])[0] in ties.get(c, []))
    return {
        "classes": len(accuracy),
        "lost": lost,
        "tied": tied,
        "lost_tied": sorted(set(lost) & set(tied)),
        "lost_to_a_tie": to_rival,
    }


def summarise(runs: dict[str, dict]) -> dict:
    """Counts over the runs: lost, lost and tied, lost to a tie; the chance a tied and an untied class is lost."""
    lost = sum(len(r["lost"]) for r in runs.values())
    lost_tied = sum(len(r["lost_tied"]) for r in runs.values())
    tied = sum(len(r["tied"]) for r in runs.values())
    untied = sum(r["classes"] for r in runs.values()) - tied
    return {
        "runs": len(runs),
        "lost": lost,
        "lost_tied": lost_tied,
        "lost_to_a_tie": sum(len(r["lost_to_a_tie"]) for r in runs.values()),
        "tied": tied,
        "p_lost_if_tied": 100.0 * lost_tied / tied if tied else None,
        "p_lost_if_untied": 100.0 * (lost - lost_tied) / untied if untied else None,
    }


def measure(run: Path, under: float) -> dict:
    checkpoint, log = run_files(run)
    _, meta = read_adapted(checkpoint)
    ties = description_ties(meta.descriptions)
    if ties is None:
        raise ValueError(f"{checkpoint}: its descriptions are not the toy LLM's ({SPECIES_TABLE} table)")
    row = last_epoch(log)
    result = lost_against_ties(row["test_per_class"], row.get("test_confused_with") or {}, ties, under)
    return {"epoch": row.get("epoch"), "mode": (meta.training.get("config") or {}).get("mode"), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--under", type=float, default=50.0, help="a class ending under this (%%) is lost")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    runs = {run: measure(Path(run), args.under) for run in args.runs}
    for name, r in runs.items():
        print(
            f"{name}: {len(r['lost'])} lost, {len(r['lost_tied'])} of them tied, {len(r['lost_to_a_tie'])} to a class "
            f"they are tied to; {len(r['tied'])} tied"
            + (f"; lost untied: {', '.join(untied)}" if (untied := sorted(set(r["lost"]) - set(r["tied"]))) else "")
        )
    summary = summarise(runs)
    share = lambda p: "–" if p is None else f"{p:.0f}%"  # noqa: E731  (descriptions with no ties: none tied)
    print(
        f"over {summary['runs']} runs: {summary['lost']} lost, {summary['lost_tied']} tied, "
        f"{summary['lost_to_a_tie']} to a tie; a tied class is lost {share(summary['p_lost_if_tied'])} of the time, "
        f"an untied one {share(summary['p_lost_if_untied'])}"
    )
    if args.json:
        report = {"species_table": SPECIES_TABLE, "under": args.under, "runs": runs, "summary": summary}
        atomic_write_text(Path(args.json), json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
