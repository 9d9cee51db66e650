"""How far ahead of its runner-up each class's own images keep their class, epoch by epoch of a self-training run.

    python bench/class_margins.py RUN [--split train] [--classes "sarnith finch" "brennic finch"] [--data_root data]
                                  [--per_class N] [--json FILE]

RUN is a ``train.py --keep_epochs`` output folder on the toy world (a shipped ``*-epochs`` folder works too). For every
saved epoch and every class c, over the split's images of class c (centre view, as a test image is seen), for each
branch (fused, `[CLS]`, `[FG]`, the model's own logits at scale 100):

- ``margin``: the mean of (logit of c − the largest other logit), ``engine.own_lead``: positive while the image is
  still called c (a run's log has the same on the test split as ``test_lead_per_class``);
- ``right``: the share of them called c (%);
- ``rival``: the class most often runner-up or winner against c, and ``rival_share`` its share of the images (%).

The labels the run trained on are in its ``log.jsonl``; this says what the trained answer did with them: round 29
(docs/toyworld.md) reads it to see why sarnith finch, 97% of whose training images were labelled gorrasc warbler in
every epoch, is still called sarnith finch at the end, while brennic finch is not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from microclip.checkpoint import load_model
from microclip.engine import own_lead
from microclip.files import atomic_write_text
from microclip.machine import cpu_name
from microclip.toyworld.world import CLASS_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fg_shift import load_split, saved_models, tensor_batches  # noqa: E402

BRANCHES = ("fused", "cls", "fg")


def class_margins(logits: torch.Tensor, labels: np.ndarray, classes: list[str]) -> dict[str, dict[str, float | str]]:
    """Per class present in ``labels``: the mean margin of its images' own logit over their best other logit, the
    share called right (%), and the commonest best-other class (by name) with its share (%)."""
    labels_t = torch.as_tensor(labels)
    lead = own_lead(logits, labels_t)
    rival = logits.scatter(1, labels_t[:, None], float("-inf")).argmax(1)
    out: dict[str, dict[str, float | str]] = {}
    for c in np.unique(labels):
        keep = labels_t == int(c)
        counts = torch.bincount(rival[keep], minlength=len(classes))
        out[classes[int(c)]] = {
            "margin": float(lead[keep].mean()),
            "right": 100.0 * float((lead[keep] > 0).float().mean()),
            "rival": classes[int(counts.argmax())],
            "rival_share": 100.0 * float(counts.max()) / int(keep.sum()),
        }
    return out


def branch_logits(model: torch.nn.Module, images: np.ndarray) -> dict[str, torch.Tensor]:
    """The model's own logits of uint8 (N, H, W, 3) images, per branch."""
    parts: dict[str, list[torch.Tensor]] = {branch: [] for branch in BRANCHES}
    with torch.no_grad():
        for batch in tensor_batches(images):
            logits = model(batch).logits
            parts["fused"].append(logits.fused)
            parts["cls"].append(logits.cls)
            parts["fg"].append(logits.fg)
    return {branch: torch.cat(chunks) for branch, chunks in parts.items()}


def measure_run(run: Path, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    rows = []
    for epoch, path in saved_models(run):
        logits = branch_logits(load_model(path), images)
        rows.append(
            {"epoch": epoch, **{branch: class_margins(logits[branch], labels, CLASS_NAMES) for branch in BRANCHES}}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a train.py --keep_epochs output folder (or a shipped *-epochs folder)")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--classes", nargs="+", default=None, help="only these classes in the table (JSON: all)")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--per_class", type=int, default=None, help="only the first N images of each class")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.classes or ()) - set(CLASS_NAMES))
    if unknown:
        parser.error(f"not toy-world classes: {', '.join(unknown)}")
    torch.set_num_threads(1)
    images, labels = load_split(args.data_root, args.split, args.per_class)
    rows = measure_run(Path(args.run), images, labels)
    print("| class | branch | " + " | ".join(f"epoch {row['epoch']}" for row in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for name in args.classes or CLASS_NAMES:
        for branch in BRANCHES:
            cells = (
                f"{row[branch][name]['margin']:+.2f} ({row[branch][name]['right']:.0f}%, {row[branch][name]['rival']})"
                for row in rows
            )
            print(f"| {name} | {branch} | " + " | ".join(cells) + " |")
    if args.json:
        report = {"run": args.run, "split": args.split, "epochs": rows, "cpu": cpu_name()}
        atomic_write_text(Path(args.json), json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
