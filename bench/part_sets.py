"""Erasing one part, two parts, every part: does `[FG]` lean on the parts together more than one at a time?
(docs/toyworld.md, round 42)

The target row erases one visible part of a test bird at a time (``bench/toyworld.py``'s ``part_removal``). A `[FG]`
that pools several part tokens may lose little when one of them goes and much when all do; `[CLS]` may not. For each
model this erases, in the same render (``render.rerender``), each visible part alone, every pair of visible parts, and
all of them at once, and reports each branch's mean drop of the true-class probability and `[FG]`'s minus `[CLS]`'s,
pair by pair, with its 95% interval.

    PYTHONPATH=. python bench/part_sets.py [NAME=CKPT ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bench.toyworld import ADAPTED, _split_masks, probability_drops
from microclip.checkpoint import load_model
from microclip.files import atomic_write_text
from microclip.machine import cpu_name
from microclip.resources import PROJECT_ROOT as ROOT
from microclip.toyworld.dataset import first_per_class
from microclip.uncertainty import PairedGap, clustered_gap, paired_gap

SET_SIZES = {"one": 1, "two": 2, "all": None}


def erase_sets(ckpt: str, data_root: str, per_class: int) -> dict:
    """``{set: {"drop": {branch: mean}, "gap": PairedGap dict, "pairs": n, "before", "share_lost"}}`` for one
    adapted checkpoint: ``before`` each branch's mean true-class probability on the originals (%), ``share_lost``
    the share of it the erasing took (summed drops over summed probabilities)."""
    model = load_model(ckpt).eval()
    masks = _split_masks(data_root, "test")
    rows = first_per_class(masks.labels, per_class)
    report = {}
    for name, size in SET_SIZES.items():
        originals, erased, truth, birds = masks.erased_set_pairs(rows, size)
        before, drop = probability_drops(model, originals, erased, truth)
        report[name] = {
            "drop": {branch: float(v.mean()) for branch, v in drop.items()},
            "gap": paired_gap(drop["fg"], drop["cls"]).to_dict(),
            "gap_by_bird": clustered_gap(drop["fg"], drop["cls"], np.asarray(birds)).to_dict(),  # birds resampled
            "pairs": len(truth),
            # report only (added after the first numbers, rule.md): what each branch had to lose, and what it kept
            "before": {branch: 100.0 * float(v.mean()) for branch, v in before.items()},
            "share_lost": {branch: float(drop[branch].sum() / (100.0 * before[branch].sum())) for branch in before},
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="NAME=CKPT (default: the shipped adapted model)")
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--faithfulness_per_class", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.models) if args.models else {"shipped": str(ADAPTED)}
    report = {"models": {}, "cpu": cpu_name()}
    for name, ckpt in models.items():
        rows = erase_sets(ckpt, args.data_root, args.faithfulness_per_class)
        report["models"][name] = {"checkpoint": ckpt, "sets": rows}
        for set_name, row in rows.items():
            drop, by_bird = row["drop"], PairedGap(**row["gap_by_bird"])
            print(
                f"{name:>24}  {set_name:>3} ({row['pairs']:>4} pairs): fused {drop['fused']:5.1f}  "
                f"[CLS] {drop['cls']:5.1f}  [FG] {drop['fg']:5.1f}; "
                f"[FG] minus [CLS]: {PairedGap(**row['gap']).words()}, "
                f"by bird {by_bird.low:+.1f} to {by_bird.high:+.1f}; "
                f"share of p lost [CLS] {row['share_lost']['cls']:.1%} [FG] {row['share_lost']['fg']:.1%} "
                f"(p before {row['before']['cls']:.1f} / {row['before']['fg']:.1f})"
            )
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
