"""Issue 14's targets side by side for several toy worlds, and which one the ship rule picks.

    python bench/toyworld_targets.py [NAME=]REPORT.json [...] [--incumbent NAME] [--rule seeds|recipe]

Each REPORT is a `bench/toyworld.py --json` output (for a world other than the shipped one: `--base FOLDER
--adapted CHECKPOINT --baseline_dir TRAIN_OUTPUT`). Prints one markdown row per target (✓ met, · not, n/a not
measured), how many each world meets, and the world the rule ships: the most targets met among those measured
on the base alone (`microclip/toyworld/targets.py`), a tie keeping the incumbent (default: the first report).
Adaptation's rows are shown for every world but never choose.

`--rule recipe` compares worlds built by different recipes instead (round 13's rule): each other world
replaces the incumbent only if its base was built in at most 60 minutes (the report's "build"), it meets more
rows than the incumbent with fused accuracy's two margins not counted, and it fails no counted row the
incumbent meets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from microclip.toyworld.targets import Target, count_met, recipe_verdict, ship_choice, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="[NAME=]bench/toyworld.py --json output")
    parser.add_argument("--incumbent", default=None, help="the world that ships now (default: the first)")
    parser.add_argument(
        "--rule",
        choices=("seeds", "recipe"),
        default="seeds",
        help="seeds: pick among seeds of one recipe by the base's rows; recipe: may another recipe replace it",
    )
    args = parser.parse_args(argv)
    reports = {}
    for spec in args.reports:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).stem
        if name in reports:
            parser.error(f"two reports named {name!r}: name them NAME=PATH")
        try:
            reports[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            parser.error(f"{path}: not a readable bench/toyworld.py --json report ({error})")
    incumbent = args.incumbent or next(iter(reports))
    if incumbent not in reports:
        parser.error(f"--incumbent {incumbent!r} is not among the reports ({', '.join(reports)})")
    rows = {name: targets(report) for name, report in reports.items()}
    first = next(iter(rows.values()))
    print("| target | stage | " + " | ".join(reports) + " |")
    print("|---|---|" + "---|" * len(reports))
    for i, target in enumerate(first):
        cells = (_cell(rows[name][i]) for name in reports)
        print(f"| {target.text} | {target.stage} | " + " | ".join(cells) + " |")
    met = (str(count_met(rows[name])) for name in reports)
    print("| **targets met** | | " + " | ".join(met) + " |")
    pre = (str(count_met(rows[name], "pretraining")) for name in reports)
    print("| **of them on the base alone (the rule's score)** | | " + " | ".join(pre) + " |")
    if args.rule == "seeds":
        print(f"\nships by the rule (incumbent {incumbent}): {ship_choice(reports, incumbent)}")
        return 0
    print()
    for name, report in reports.items():
        if name == incumbent:
            continue
        verdict = recipe_verdict(report, reports[incumbent])
        answer = {True: "yes", False: "no", None: "undecided"}[verdict.replaces]
        print(f"{name} replaces {incumbent} by the recipe rule: {answer} ({'; '.join(verdict.reasons)})")
    return 0


def _cell(target: Target) -> str:
    mark = {True: " ✓", False: " ·", None: ""}[target.met]
    return f"{target.shown}{mark}"


if __name__ == "__main__":
    sys.exit(main())
