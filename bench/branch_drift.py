"""How each branch moved during adaptation: start, peak and end test accuracy of fused, [CLS] and [FG], and two
label-free measures of each branch on the weak view, read from train.py's log.jsonl: its agreement with the fused
answer, and how much of its token every image shares (microclip.drift; [FG]'s grows as it drifts, round 20).

    python bench/branch_drift.py RUN_DIR [NAME=RUN_DIR ...] [--json FILE]

A run whose fused accuracy holds while one branch falls is one where the loss, which sees only the fused logits,
let that branch drift (docs/toyworld.md, round 11). `agree` needs no labels, so it is the column to watch on data
without class folders; the test columns need the labelled test split train.py evaluates each epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BRANCHES = ("fused", "cls", "fg")


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (is {run_dir} a train.py output folder?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not any("test_acc_fg" in row for row in rows):
        raise ValueError(f"{path}: no per-branch test accuracy (a CLS-only baseline, or --eval_every 0)")
    return rows


def drift(rows: list[dict]) -> dict:
    """Per branch: start (epoch 0), peak and its epoch, end; per branch, the first and last epoch's agreement."""
    evaluated = [row for row in rows if "test_acc_fg" in row]
    out: dict = {}
    for branch in BRANCHES:
        key = f"test_acc_{branch}"
        series = [(row["epoch"], row[key]) for row in evaluated if key in row]
        peak_epoch, peak = max(series, key=lambda point: (point[1], -point[0]))
        out[branch] = {"start": series[0][1], "peak": peak, "peak_epoch": peak_epoch, "end": series[-1][1]}
    for measure in ("agree", "shared"):  # shared: logged since round 20 (microclip.drift.shared_part)
        trained = [row for row in rows if f"train_{measure}_fg" in row]
        if trained:
            for branch in ("cls", "fg"):
                out[branch][f"{measure}_first"] = trained[0][f"train_{measure}_{branch}"]
                out[branch][f"{measure}_last"] = trained[-1][f"train_{measure}_{branch}"]
    return out


def _row(name: str, report: dict) -> str:
    cells = []
    for branch in BRANCHES:
        b = report[branch]
        cell = f"{b['start']:.1f} → {b['peak']:.1f} (e{b['peak_epoch']}) → {b['end']:.1f}"
        if "agree_first" in b:
            cell += f"; agrees {b['agree_first']:.1f} → {b['agree_last']:.1f}"
        if "shared_first" in b:
            cell += f"; shared {b['shared_first']:.2f} → {b['shared_last']:.2f}"
        cells.append(cell)
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="train.py output folders, optionally NAME=FOLDER")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    reports = {}
    for spec in args.runs:
        name, _, folder = spec.rpartition("=")
        name = name or Path(folder).name
        if name in reports:
            parser.error(f"two runs named {name!r}: name them NAME=FOLDER")
        try:
            reports[name] = drift(read_log(Path(folder)))
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print("| run | fused: start → peak (epoch) → end | [CLS] | [FG] |")
    print("|---|---|---|---|")
    for name, report in reports.items():
        print(_row(name, report))
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
