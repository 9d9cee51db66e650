"""Does a base tower's normalised cut follow the bird's size? For docs/toyworld.md.

    python bench/toyworld_framing.py checkpoints/toybirds-base --scales 0.20,0.25 0.25,0.30 [--n 400] [--json F]

On the toy test split, the cut (`MicroCLIP(...).mask`, as `bench/toyworld.py` computes it) scored by pixel
precision on the bird and IoU with the bird's patches (those at least a quarter bird), in bins of the bird's
size; then on `--n` images drawn again at each other framing (`render_bird(..., bird_scale=...)`: the body's
half-length as a share of the frame; the world's own is `render.BIRD_SCALE`), species in turn, seeded.
The tower was pretrained at the world's framing only, so the other rows say what the cut does with a bird
of another size, not what a world drawn at that size would learn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from microclip.files import atomic_write_text
from microclip.model import MicroCLIP
from microclip.scoring import cut_on_object, patch_coverage, percent
from microclip.toyworld.dataset import ensure_split, load_split_arrays, load_split_masks
from microclip.toyworld.metrics import cut_foregrounds
from microclip.toyworld.render import BIRD_SCALE, render_bird
from microclip.toyworld.text import TEMPLATES, descriptions
from microclip.toyworld.world import CLASS_NAMES

SIZE_BINS = ((0, 15), (15, 18), (18, 20), (20, 65))  # the bird's patches (at least a quarter bird)


def cut_scores(model: MicroCLIP, images: np.ndarray, bird_masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: pixel precision, IoU, foreground size and the bird's size in patches."""
    foreground = cut_foregrounds(model, images)
    coverage = patch_coverage(bird_masks, model.backbone.grid)
    return cut_on_object(foreground, coverage) | {
        "foreground_patches": foreground.sum(axis=1),
        "bird_patches": (coverage >= 0.25).sum(axis=1),
    }


def summary(scores: dict[str, np.ndarray], where: np.ndarray | None = None) -> dict[str, float]:
    where = np.ones(len(scores["iou"]), bool) if where is None else where
    return {
        "images": int(where.sum()),
        "pixel_precision": percent(scores["pixel_precision"][where]),
        "iou": percent(scores["iou"][where]),
        "foreground_patches": float(scores["foreground_patches"][where].mean()),
        "bird_patches": float(scores["bird_patches"][where].mean()),
    }


def framing_report(folder: str, data_root: str, scales: list[tuple[float, float]], n: int) -> dict:
    ensure_split(data_root, "test", 50, 0)
    model, _, _ = MicroCLIP.build(f"local-dir:{folder}", None, CLASS_NAMES, TEMPLATES, descriptions())
    images, _ = load_split_arrays(data_root, "test")
    scores = cut_scores(model, images, load_split_masks(data_root, "test").bird_mask)
    by_size = {
        f"{lo}-{hi - 1}": summary(scores, (scores["bird_patches"] >= lo) & (scores["bird_patches"] < hi))
        for lo, hi in SIZE_BINS
    }
    drawn = {}
    for scale in scales:
        rngs = (np.random.default_rng([99, i]) for i in range(n))
        samples = [render_bird(i % len(CLASS_NAMES), rng, bird_scale=scale) for i, rng in enumerate(rngs)]
        scored = cut_scores(model, np.stack([s.image for s in samples]), np.stack([s.bird_mask for s in samples]))
        drawn[f"{scale[0]:.2f}-{scale[1]:.2f}"] = summary(scored)
    return {
        "world_scale": list(BIRD_SCALE),
        "test_split": summary(scores),
        "by_bird_patches": by_size,
        "redrawn": drawn,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--scales", nargs="*", default=["0.20,0.25", "0.25,0.30", "0.28,0.33", "0.32,0.38"])
    p.add_argument("--n", type=int, default=400, help="images drawn at each framing")
    p.add_argument("--data_root", default="data")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    scales = [tuple(float(v) for v in s.split(",")) for s in args.scales]
    report = framing_report(args.folder, args.data_root, scales, args.n)
    rows = {"test split": report["test_split"]}
    rows |= {f"  bird of {k} patches": v for k, v in report["by_bird_patches"].items()}
    rows |= {f"redrawn at scale {k}": v for k, v in report["redrawn"].items()}
    print("| images | n | cut pixels on the bird % | IoU % | foreground patches | bird patches |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['images']} | {r['pixel_precision']:.1f} | {r['iou']:.1f} | "
            f"{r['foreground_patches']:.1f} | {r['bird_patches']:.1f} |"
        )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
