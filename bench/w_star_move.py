"""How much of an adapted model's answer is W*'s own adaptation: the model as it ended against the same visual tower
and SOAP with W* put back where adaptation started it (the mean of each class's descriptions), on the toy test split.

    python bench/w_star_move.py                        # every bundled model
    python bench/w_star_move.py --json FILE            # and the numbers as JSON (with the CPU)

Explore's "What if the descriptions said something else?" shows the two on one picture (its first two columns,
``studio.redescribe``); this is the same over the 800 test birds, each branch's accuracy and how far W* turned (the
mean angle between each class's row and its start). On a zero-shot model the two are the same model.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from microclip.data.datasets import build_dataset
from microclip.data.transforms import SeededDataset, test_transform
from microclip.engine import evaluate
from microclip.files import atomic_write_text
from microclip.machine import cpu_name
from microclip.model import MicroCLIP
from microclip.toyworld.dataset import ensure_split
from studio.registry import ModelRegistry, default_registry


@torch.no_grad()
def turned_degrees(model: MicroCLIP, start: MicroCLIP) -> float:
    """The mean angle, in degrees, between each class's Ŵ* row and the same row at its start."""
    cos = (model.heads.w_star_hat() * start.heads.w_star_hat()).sum(-1).clamp(-1.0, 1.0)
    return float(torch.rad2deg(torch.acos(cos)).mean())


def w_star_rows(registry: ModelRegistry, names: list[str], dataset) -> dict[str, dict]:
    """For each model: each branch's accuracy (%) as it is and with W* at its start, and how far W* turned."""
    rows = {}
    for name in names:
        loaded = registry.get(name)
        start = registry.with_classes(name, list(loaded.classes), loaded.descriptions)
        with torch.no_grad():
            shipped, reset = evaluate(loaded.model, dataset), evaluate(start, dataset)
        rows[name] = {
            "as_it_is": {branch: shipped.accuracy(branch) for branch in shipped.predictions},
            "w_star_at_start": {branch: reset.accuracy(branch) for branch in reset.predictions},
            "w_star_turned_degrees": turned_degrees(loaded.model, start),
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default="./data")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the same numbers on any CPU count)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ensure_split(args.data_root, "test")
    dataset = SeededDataset(build_dataset("toybirds", "test", root=args.data_root), test_transform(64), seed=0)
    registry = default_registry()
    rows = w_star_rows(registry, registry.names(), dataset)
    for name, row in rows.items():
        shown = ", ".join(
            f"{branch} {row['as_it_is'][branch]:.2f} → {row['w_star_at_start'][branch]:.2f}"
            for branch in ("fused", "cls", "fg")
        )
        turned = row["w_star_turned_degrees"]
        print(f"{name}: W* turned {turned:.2f}° on average; as it is → W* at its start: {shown}")
    if args.json:
        report = {"cpu": cpu_name(), "models": rows}
        atomic_write_text(args.json, json.dumps(report, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
