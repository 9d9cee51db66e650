"""Where `[FG]`-only accuracy goes in self-training: a shift that every image's `[FG]` token takes on alike.

    python bench/fg_shift.py RUN [NAME=RUN ...] [--json FILE] [--data_root data] [--per_class N] [--base DIR]
                            [--part_removal N]

RUN is a ``train.py --keep_epochs`` output folder on the toy world (RUN/epochs/epoch-N.safetensors; a shipped
``*-epochs`` folder works too). Runs from before ``--keep_epochs`` saved the start need ``--base``, the pretrained
folder they adapted, to rebuild it. For each saved epoch, on the toy test split:

- ``fg``: `[FG]`-only accuracy as the model is evaluated (argmax of f·Ŵ*);
- ``fg_unshifted``: the same after taking away the shift of f's mean since the start, f − (mean f now − mean f at
  epoch 0), both means over the *train* split's images (no labels), re-normalised: the part of the fall a shift
  shared by every image explains;
- ``shared_fg`` / ``shared_cls``: how much of each token every image shares (mean cosine to the tokens' mean
  direction);
- ``cos_fg_cls``: the mean cosine between an image's f and its g;
- ``shift_fg`` / ``shift_cls``: the length of the shift of f's mean and of g's (the same measure on `[CLS]`), and
  ``cos_shifts`` the cosine between the two: whether both branches moved the same way;
- ``never_named_fg`` / ``top_share_fg``: how many classes `[FG]` alone never answers, and the commonest answer's
  share of all answers (1/16 when balanced);
- ``nearest_mean_fg``: a nearest-class-mean classifier on f, its class means from the train split's *labels*: not
  what the model answers, but whether f still keeps the classes apart;
- with ``--value_map``, on the last epoch: ``value_map``, where SOAP's value map W_v makes the shift. Its change
  since the start, split into the part that acts on the mean of what it is applied to (m: the patch tokens as SOAP
  weighs them, averaged over the train images at the start; minus the centre in a ``--centre_values`` run) and the
  rest: ``mean_part_share`` (that part's share of the change, squared norms) and, for W_v as trained, without
  that part, with only that part and at the start (everything else as trained), `[FG]`-only accuracy and the
  shift's length; the same with SOAP's query and key maps at the start (``query_key_at_start``: where SOAP looks
  moves the mean too) and with all three at the start (``soap_at_start``: what is left is the LayerNorms');
- with ``--part_removal N``, on every epoch: ``part_removal``, the mean drop of each branch's true-class
  probability when one part of the first N test birds of each class is erased (bench/toyworld.py's
  counterfactual), and of `[FG]`'s with the shift taken away from f before and after: when self-training turns
  `[FG]` off the parts (docs/toyworld.md, round 26); ``gap_by_bird``, `[FG]`'s drop minus `[CLS]`'s with its 95%
  interval, whole birds resampled (``microclip.uncertainty.clustered_gap``), as the bench's row.

docs/toyworld.md (round 20) reads these. Accuracies and shares in %.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from microclip.checkpoint import EPOCHS_FOLDER, load_model, saved_epochs
from microclip.drift import mean_value_input, shared_part, split_value_map, value_map_set_to
from microclip.files import atomic_write_text
from microclip.machine import cpu_name
from microclip.model import MicroCLIP
from microclip.toyworld.dataset import ensure_split, first_per_class, load_split_arrays, load_split_masks
from microclip.toyworld.text import ASSETS_DIR, read_assets
from microclip.uncertainty import PairedGap, clustered_gap

BATCH = 200
ASSETS = ASSETS_DIR  # the world this process draws (MICROCLIP_TOYWORLD_SPECIES)


def tensor_batches(images: np.ndarray) -> Iterator[torch.Tensor]:
    """uint8 (N, H, W, 3) images as (B, 3, H, W) tensors in [0, 1], ``BATCH`` at a time."""
    for start in range(0, len(images), BATCH):
        yield torch.from_numpy(images[start : start + BATCH]).permute(0, 3, 1, 2).float() / 255.0


def branch_embeddings(model: torch.nn.Module, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, f): the normalised `[CLS]` and `[FG]` embeddings of uint8 (N, H, W, 3) images."""
    gs, fs = [], []
    with torch.no_grad():
        for batch in tensor_batches(images):
            out = model(batch)
            gs.append(out.tokens.cls_embed)
            fs.append(out.fg_embed)
    return torch.cat(gs), torch.cat(fs)


def unshifted(embeds: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeds - shift, dim=-1)


def accuracy(embeds: torch.Tensor, weights: torch.Tensor, labels: np.ndarray) -> float:
    return 100.0 * float(((embeds @ weights.T).argmax(1).numpy() == labels).mean())


def answer_spread(predictions: np.ndarray, n_classes: int) -> dict[str, float]:
    counts = np.bincount(predictions, minlength=n_classes)
    return {"never_named": int((counts == 0).sum()), "top_share": 100.0 * float(counts.max()) / len(predictions)}


def nearest_mean_accuracy(
    train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray
) -> float:
    classes = np.unique(train_labels)
    means = torch.stack([F.normalize(train[torch.from_numpy(train_labels == c)].mean(0), dim=0) for c in classes])
    return 100.0 * float((classes[(test @ means.T).argmax(1).numpy()] == test_labels).mean())


def start_model(base: str) -> MicroCLIP:
    """The model as adaptation starts from ``base`` with the toy assets (SOAP at identity, W* from descriptions)."""
    classes, templates, descriptions = read_assets(ASSETS)
    model, _, _ = MicroCLIP.build(f"local-dir:{base}", None, classes, templates, descriptions)
    return model


Split = tuple[np.ndarray, np.ndarray]  # uint8 (N, H, W, 3) images and their labels


def saved_models(run: Path, base: str | None = None) -> list[tuple[int, Path | None]]:
    """(epoch, file) from epoch 0 on; file None is the start, rebuilt from ``base``."""
    folder = run / EPOCHS_FOLDER if (run / EPOCHS_FOLDER).is_dir() else run
    saved: list[tuple[int, Path | None]] = list(saved_epochs(folder))
    if saved and saved[0][0] != 0 and base:
        saved.insert(0, (0, None))
    if not saved or saved[0][0] != 0:
        raise SystemExit(f"{folder}: no epoch-0.safetensors (adapt with train.py --keep_epochs, or pass --base)")
    return saved


# SplitMasks.erased_set_pairs(rows, 1): originals, erased, labels, and the bird each pair erases a part of
Pairs = tuple[list[np.ndarray], list[np.ndarray], list[int], list[int]]


def part_removal(model: torch.nn.Module, shift: torch.Tensor, pairs: Pairs) -> dict:
    """Mean drop (points) of each branch's true-class probability when one part is erased, of `[FG]`'s with the
    shared shift taken away from both pictures' f, and ``gap_by_bird``: `[FG]`'s drop minus `[CLS]`'s with its
    interval, whole birds resampled (a bird's erased parts are not independent draws)."""
    originals, erased, labels, birds = pairs
    rows, truth = torch.arange(len(labels)), torch.as_tensor(labels)

    def true_class(pictures: list[np.ndarray]) -> dict[str, torch.Tensor]:
        g, f = branch_embeddings(model, np.stack(pictures))
        with torch.no_grad():
            logits = model.heads.branch_logits(g, f)
            unshifted_fg = model.heads.branch_logits(g, unshifted(f, shift)).fg
        by_branch = {"cls": logits.cls, "fg": logits.fg, "fused": logits.fused, "fg_unshifted": unshifted_fg}
        return {name: x.softmax(-1)[rows, truth] for name, x in by_branch.items()}

    before, after = true_class(originals), true_class(erased)
    drops = {name: 100.0 * (before[name] - after[name]).numpy() for name in before}
    report: dict = {name: float(drop.mean()) for name, drop in drops.items()}
    report["gap_by_bird"] = clustered_gap(drops["fg"], drops["cls"], np.asarray(birds)).to_dict()
    return report


SOAP_QUERY_KEY = ("soap.query_proj.weight", "soap.key_proj.weight")


def value_map_parts(
    start: torch.nn.Module, model: torch.nn.Module, test: Split, train: Split, start_mean: torch.Tensor | None = None
) -> dict:
    """``value_map`` (module docstring) for ``model`` against the run's ``start``; ``model`` is left as it was.
    ``start_mean``: the start's mean f over ``train``, when the caller has it."""
    (test_images, test_labels), (train_images, _) = test, train
    split = split_value_map(start.soap.value_proj.weight.detach(), model.soap.value_proj.weight.detach().clone(),
                            mean_value_input(start, tensor_batches(train_images)))  # fmt: skip
    if start_mean is None:
        start_mean = branch_embeddings(start, train_images)[1].mean(0)
    w_hat = model.heads.w_star_hat().detach()
    report: dict = {"mean_part_share": split.mean_part_share}

    def score() -> dict:
        f_test = branch_embeddings(model, test_images)[1]
        f_train = branch_embeddings(model, train_images)[1]
        return {"fg": accuracy(f_test, w_hat, test_labels), "shift_fg": float((f_train.mean(0) - start_mean).norm())}

    for name in ("as_trained", "without_mean_part", "only_mean_part", "at_start"):
        with value_map_set_to(model, getattr(split, name)):
            report[name] = score()
    # where SOAP looks moves the mean too: its query and key maps back at the start, W_v as trained and at the start
    # (what is left then is the LayerNorms')
    trained, begin = model.adapted_state(), start.adapted_state()
    try:
        model.load_adapted_state({k: begin[k] if k in SOAP_QUERY_KEY else v for k, v in trained.items()})
        report["query_key_at_start"] = score()
        with value_map_set_to(model, split.at_start):
            report["soap_at_start"] = score()
    finally:
        model.load_adapted_state(trained)
    return report


def measure_epochs(
    saved: list[tuple[int, Path | None]],
    test: Split,
    train: Split,
    base: str | None = None,
    pairs: Pairs | None = None,
    value_map: bool = False,
) -> list[dict]:
    """One row per saved model; the shift is measured against the first (the start). With ``pairs``, every row
    also carries the part-removal drops (:func:`part_removal`); with ``value_map``, the last :func:`value_map_parts`."""
    (test_images, test_labels), (train_images, train_labels) = test, train
    rows, start_mean, first = [], None, None
    for epoch, path in saved:
        model = (start_model(base) if path is None else load_model(path)).eval()
        g, f = branch_embeddings(model, test_images)
        g_train, f_train = branch_embeddings(model, train_images)
        if start_mean is None:
            start_mean, start_cls_mean, first = f_train.mean(0), g_train.mean(0), model
        shift, cls_shift = f_train.mean(0) - start_mean, g_train.mean(0) - start_cls_mean
        w_hat = model.heads.w_star_hat().detach()
        spread = answer_spread((f @ w_hat.T).argmax(1).numpy(), w_hat.shape[0])
        rows.append(
            {
                "epoch": epoch,
                "fg": accuracy(f, w_hat, test_labels),
                "fg_unshifted": accuracy(unshifted(f, shift), w_hat, test_labels),
                "cls": accuracy(g, w_hat, test_labels),
                "shared_fg": shared_part(f),
                "shared_cls": shared_part(g),
                "cos_fg_cls": float((f * g).sum(1).mean()),
                "shift_fg": float(shift.norm()),
                "shift_cls": float(cls_shift.norm()),
                "cos_shifts": float(F.cosine_similarity(shift, cls_shift, dim=0)) if epoch else None,
                "never_named_fg": spread["never_named"],
                "top_share_fg": spread["top_share"],
                "nearest_mean_fg": nearest_mean_accuracy(f_train, train_labels, f, test_labels),
            }
        )
        if pairs is not None:
            rows[-1]["part_removal"] = part_removal(model, shift, pairs)
        if value_map and epoch == saved[-1][0]:
            rows[-1]["value_map"] = value_map_parts(first, model, test, train, start_mean)
        print(f"epoch {epoch}: [FG] {rows[-1]['fg']:.1f}, unshifted {rows[-1]['fg_unshifted']:.1f}", file=sys.stderr)
    return rows


def load_split(data_root: str, split: str, per_class: int | None) -> Split:
    ensure_split(data_root, split)
    images, labels = load_split_arrays(data_root, split)
    if per_class is None:
        return images, labels
    keep = first_per_class(labels, per_class)
    return images[keep], labels[keep]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="train.py --keep_epochs output folders, optionally NAME=FOLDER")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--per_class", type=int, default=None, help="only the first N images of each class")
    parser.add_argument("--base", default=None, help="the pretrained folder, for runs without epoch-0")
    parser.add_argument(
        "--part_removal",
        type=int,
        default=0,
        metavar="N",
        help="also erase each part of the first N test birds of each class, on every epoch (the bench uses 10)",
    )
    parser.add_argument(
        "--value_map", action="store_true", help="also split SOAP's value map's change on the last epoch (value_map)"
    )
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test = load_split(args.data_root, "test", args.per_class)
    train = load_split(args.data_root, "train", args.per_class)
    pairs = None
    if args.part_removal:
        masks = load_split_masks(args.data_root, "test")
        pairs = masks.erased_set_pairs(first_per_class(masks.labels, args.part_removal), 1)
    reports: dict = {}
    for spec in args.runs:
        name, _, folder = spec.rpartition("=")
        name = name or Path(folder).name
        if name in reports:
            parser.error(f"two runs named {name!r}: name them NAME=FOLDER")
        saved = saved_models(Path(folder), args.base)
        reports[name] = measure_epochs(saved, test, train, args.base, pairs, args.value_map)
    print(
        "| run | epoch | [FG] | [FG] unshifted | shared f / g | cos(f, g) | shift f / g (cos) | classes [FG] never "
        "names | top class share | nearest mean (labels) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in reports.items():
        for r in rows:
            print(
                f"| {name} | {r['epoch']} | {r['fg']:.1f} | {r['fg_unshifted']:.1f} | {r['shared_fg']:.2f} / "
                f"{r['shared_cls']:.2f} | {r['cos_fg_cls']:.2f} | {r['shift_fg']:.3f} / {r['shift_cls']:.3f} "
                f"({'–' if r['cos_shifts'] is None else format(r['cos_shifts'], '.2f')}) | "
                f"{r['never_named_fg']} | {r['top_share_fg']:.1f} | "
                f"{r['nearest_mean_fg']:.1f} |"
            )
    for name, rows in reports.items():
        for r in rows:
            if "part_removal" in r:
                removal = dict(r["part_removal"])
                gap = PairedGap(**removal.pop("gap_by_bird"))
                drops = ", ".join(f"{branch} {drop:.1f}" for branch, drop in removal.items())
                print(
                    f"{name}, epoch {r['epoch']}, erasing a part (points of true-class probability lost): {drops}; "
                    f"[FG] minus [CLS] {gap.words()}"
                )
    for name, rows in reports.items():
        if "value_map" in rows[-1]:
            parts = rows[-1]["value_map"]
            shown = ", ".join(
                f"{variant.replace('_', ' ')} {parts[variant]['fg']:.1f} (shift {parts[variant]['shift_fg']:.2f})"
                for variant in (
                    "as_trained",
                    "without_mean_part",
                    "only_mean_part",
                    "at_start",
                    "query_key_at_start",
                    "soap_at_start",
                )
            )
            print(
                f"{name}, SOAP's value map (last epoch; its change's part on the mean input: "
                f"{100 * parts['mean_part_share']:.0f}%): [FG] with W_v {shown}"
            )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"runs": reports, "cpu": cpu_name()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
