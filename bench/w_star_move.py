"""How much of an adapted model's answer is W*'s own adaptation: the model as it ended against the same visual tower
and SOAP with W* put back where adaptation started it (the mean of each class's descriptions), on the toy test split.

    python bench/w_star_move.py                        # every bundled model
    python bench/w_star_move.py --json FILE            # and the numbers as JSON (with the CPU)

Explore's "What if the descriptions said something else?" shows the two on one picture (its first two columns,
``studio.redescribe``); this is the same over the 800 test birds, each branch's accuracy and how far W* turned (the
mean angle between each class's row and its start). On a zero-shot model the two are the same model. An adapted
model beside its zero-shot base also gets the other half of the two-by-two: its W* alone on the base's tower,
LayerNorms and SOAP.
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
from microclip.heads import Heads
from microclip.machine import cpu_name
from microclip.model import MicroCLIP
from microclip.toyworld.dataset import ensure_split
from studio.registry import ModelRegistry, default_registry


@torch.no_grad()
def turned_degrees(model: MicroCLIP, start: MicroCLIP) -> float:
    """The mean angle, in degrees, between each class's Ŵ* row and the same row at its start."""
    cos = (model.heads.w_star_hat() * start.heads.w_star_hat()).sum(-1).clamp(-1.0, 1.0)
    return float(torch.rad2deg(torch.acos(cos)).mean())


def zero_shot_of(registry: ModelRegistry, name: str) -> MicroCLIP | None:
    """The registry's zero-shot model on the same base weights and classes as ``name`` (None when it has none)."""
    model = registry.get(name).model
    for other in registry.names():
        if other != name and registry.zero_shot(other):
            base = registry.get(other).model
            if base.base == model.base and base.classes == model.classes:
                return base
    return None


def with_w_star(base: MicroCLIP, model: MicroCLIP) -> MicroCLIP:
    """``base`` (its tower, LayerNorms and SOAP as pretrained) answering with ``model``'s W*: adaptation's W* alone."""
    heads = Heads(base.classes, base.heads.w_llm.detach(), model.heads.w_star.detach())
    mixed = MicroCLIP(base.backbone, heads, base.config, base.base)
    mixed.soap.load_state_dict(base.soap.state_dict())
    return mixed.eval()


def accuracies(model: MicroCLIP, dataset) -> dict[str, float]:
    with torch.no_grad():
        result = evaluate(model, dataset)
    return {branch: result.accuracy(branch) for branch in result.predictions}


def w_star_rows(registry: ModelRegistry, names: list[str], dataset) -> dict[str, dict]:
    """For each model: each branch's accuracy (%) as it is, with W* at its start, and (an adapted model beside its
    zero-shot base) with only its W* on the base's tower; and how far W* turned."""
    rows = {}
    for name in names:
        loaded = registry.get(name)
        start = registry.with_classes(name, list(loaded.classes), loaded.descriptions)
        base = None if registry.zero_shot(name) else zero_shot_of(registry, name)
        rows[name] = {
            "as_it_is": accuracies(loaded.model, dataset),
            "w_star_at_start": accuracies(start, dataset),
            "only_w_star_adapted": accuracies(with_w_star(base, loaded.model), dataset) if base is not None else None,
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
        cells = ("as_it_is", "w_star_at_start", "only_w_star_adapted")
        shown = "; ".join(
            f"{cell.replace('_', ' ')} " + " / ".join(f"{row[cell][b]:.2f}" for b in ("fused", "cls", "fg"))
            for cell in cells
            if row[cell] is not None
        )
        print(f"{name}: W* turned {row['w_star_turned_degrees']:.2f}° on average; fused / [CLS] / [FG]: {shown}")
    if args.json:
        report = {"cpu": cpu_name(), "models": rows}
        atomic_write_text(args.json, json.dumps(report, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
