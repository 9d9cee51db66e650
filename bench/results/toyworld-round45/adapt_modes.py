"""Round 45's teaching numbers: the Adapt tab's default toy run (150 steps, 8 birds a species, seed 0) with each of
its three Labels, through the app's own runner; each saved model scored on the toy test split (800 images).

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/results/toyworld-round45/adapt_modes.py OUT  (data/: the bench's)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from microclip.checkpoint import load_model
from microclip.data import build_dataset
from microclip.data.seeded import SeededDataset
from microclip.data.transforms import test_transform
from microclip.engine import evaluate_as
from microclip.recipe import Recipe
from studio.adapt_request import ADAPT_MODES, AdaptRequest
from studio.jobs import AdaptationRunner
from studio.registry import default_registry


def main(out: Path) -> None:
    torch.set_num_threads(1)
    registry = default_registry()
    runner = AdaptationRunner(registry, out / "work", runs_dir=out / "saved")
    test = build_dataset("toybirds", "test", root="data")
    report = {}
    for mode in ADAPT_MODES:
        started = time.perf_counter()
        job = runner.submit(AdaptRequest(source="toybirds", steps=150, toy_per_class=8, seed=0, mode=mode))
        snapshot = runner.wait(job)
        model = load_model(runner.save(job, f"toy {mode}")).eval()
        data = SeededDataset(test, test_transform(model.backbone.image_size), seed=0)
        result = evaluate_as(model, data, Recipe.for_dataset("toybirds"), torch.device("cpu"))
        right = None
        if snapshot.labels_right is not None and snapshot.labels is not None:
            right = sum(snapshot.labels_right.values()) / max(1, sum(snapshot.labels[1].values()))
        report[mode] = {
            "status": snapshot.status.value,
            "seconds": time.perf_counter() - started,
            "test": {branch: result.accuracy(branch) for branch in ("fused", "cls", "fg")},
            "labels_right_last_epoch": right,
        }
        print(mode, report[mode], flush=True)
    (out / "adapt-modes.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
