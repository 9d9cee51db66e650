"""What DKA's labels cost against the right ones: the supervised mode on labels made wrong on purpose.
(docs/toyworld.md, round 45)

``train.py --fully_supervised`` trains the method's parameters on the true labels. Here the same run (the same
command line, the same data order, crops and seed) trains on labels fixed per training image before it starts:

- ``truth``: the true labels (reproduces ``train.py --fully_supervised`` to the tensor);
- ``uniform``: each image keeps its class with probability ``right`` (the share DKA got right in a run's last epoch,
  or ``--right``) and otherwise takes one of the other classes, uniformly;
- ``confusion``: each image of class c takes its label from row c of a run's last-epoch label counts (its
  ``labels_given``: what DKA gave the images of each class), so the labels are wrong as often and between the same
  classes as DKA's, but fixed per image instead of following the image and the model step by step.

    PYTHONPATH=. python bench/label_noise.py --labels truth|uniform|confusion --labels_from RUN_DIR --output_dir OUT
        -- TRAIN.PY FLAGS (--dataset toybirds --train_config toybirds --data_root data --seed 0 ...)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from microclip.checkpoint import save_adapted
from microclip.cli import _prepare, _recipe, build_train_parser, load_train_config, resolve_base
from microclip.engine import select_device
from microclip.files import atomic_write_json
from microclip.machine import cpu_name
from microclip.recipe import Recipe

KINDS = ("truth", "uniform", "confusion")


def last_epoch_counts(run_dir: str | Path) -> np.ndarray:
    """(C, C) a run's last-epoch labels: row the images' true class, column the label DKA gave them."""
    from safetensors.torch import load_file

    given = load_file(str(Path(run_dir) / "train_state.safetensors")).get("labels_given")
    if given is None:
        raise ValueError(f"{run_dir}: its train state has no labels_given (a run older than the label counts)")
    counts = given.numpy()[:-1]  # the last row counts images without a true class
    if counts.shape[0] != counts.shape[1] or counts.sum() == 0:
        raise ValueError(f"{run_dir}: labels_given of shape {given.shape} holds no labelled images")
    return counts.astype(np.float64)


def noisy_labels(
    targets: np.ndarray, kind: str, counts: np.ndarray, seed: int, right: float | None = None
) -> np.ndarray:
    """Each training image's label for ``kind`` (see the module's docstring), from one generator seeded by ``seed``;
    ``right`` sets the share ``uniform`` keeps instead of the run's."""
    rng = np.random.default_rng(seed)
    n_classes = counts.shape[0]
    if kind == "truth":
        return targets.copy()
    if kind == "uniform":
        right = np.trace(counts) / counts.sum() if right is None else right
        keep = rng.random(len(targets)) < right
        other = (targets + rng.integers(1, n_classes, len(targets))) % n_classes  # any class but the true one
        return np.where(keep, targets, other)
    if kind == "confusion":
        rows = counts / counts.sum(1, keepdims=True)
        return np.array([rng.choice(n_classes, p=rows[t]) for t in targets])
    raise ValueError(f"unknown labels {kind!r}; choose from {', '.join(KINDS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", choices=KINDS, required=True)
    parser.add_argument("--labels_from", required=True, help="a train.py run folder (its train_state's labels_given)")
    parser.add_argument("--noise_seed", type=int, default=0)
    parser.add_argument("--right", type=float, default=None, help="uniform: the share kept (default: the run's)")
    parser.add_argument("--out", required=True, help="folder for checkpoint.safetensors and labels.json")
    ours, rest = parser.parse_known_args(argv)
    if ours.right is not None and not 0.0 <= ours.right <= 1.0:
        parser.error(f"--right {ours.right:g} is outside 0..1")
    args = build_train_parser().parse_args([a for a in rest if a != "--"] + ["--fully_supervised"])

    counts = last_epoch_counts(ours.labels_from)
    train_cfg = load_train_config(args.train_config)
    config: Recipe = _recipe(args, Recipe.for_dataset(args.dataset))
    run = _prepare(args, train_cfg, config, resolve_base(args, train_cfg), select_device(args.device))
    data = run.train_set.base  # the ImageDataset the run reads, in its order
    targets = np.array(data.targets)
    labels = noisy_labels(targets, ours.labels, counts, ours.noise_seed, ours.right)
    data.samples = [(path, int(label)) for (path, _), label in zip(data.samples, labels, strict=True)]

    result = run.fit()
    test = run.evaluate()
    out = Path(ours.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = run.checkpoint_meta(result, training={"labels": ours.labels}, drift=run.measure_drift())
    save_adapted(out / "checkpoint.safetensors", run.model.adapted_state(), meta)
    report = {
        "labels": ours.labels,
        "labels_from": str(ours.labels_from),
        "noise_seed": ours.noise_seed,
        "right": ours.right,
        "dka_right_share": float(np.trace(counts) / counts.sum()),
        "labels_right_share": float((labels == targets).mean()),
        "labels_per_class": np.bincount(labels, minlength=counts.shape[0]).tolist(),
        "test": {branch: test.accuracy(branch) for branch in ("fused", "cls", "fg")},
        "history": result.history,
        "command": " ".join(sys.argv),
        "cpu": cpu_name(),
    }
    atomic_write_json(out / "labels.json", json.loads(json.dumps(report, default=float)))
    print(json.dumps({k: report[k] for k in ("labels", "labels_right_share", "test")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
