"""The toy world's quality report: accuracy of every method, the pointing game of every map, the part probe.

    python bench/toyworld.py                      # tables on the toy test split (800 images)
    python bench/toyworld.py --json FILE          # and the numbers as JSON (keys below)
    python bench/toyworld.py --run_baseline       # also re-run the CLS-only self-training baseline
    python bench/toyworld.py --record             # store the shipped model's record for the tests
    python bench/toyworld.py --record --run_dir OUT --baseline_dir OUT2   # ... and the training runs behind it
    python bench/toyworld.py --base DIR --adapted FILE.safetensors   # your own pretraining / adaptation
    python bench/toyworld.py --base DIR --adapted FILE --baseline_dir OUT2   # ... with its CLS-only baseline
    python bench/toyworld.py --base DIR --adapted start --skip accuracy,names  # the base as adaptation starts
    python bench/toyworld.py --figure assets/toybirds/explainers.png  # SOAP and its peers on test images
    python bench/toyworld.py --epochs RUN     # the maps epoch by epoch through a train.py --keep_epochs run

Accuracy: zero-shot by names (templates), zero-shot by descriptions (the initial W*), the CLS-only
self-training baseline, microCLIP adapted (fused, [CLS]-only, [FG]-only) and a linear probe on the
frozen [CLS] (an oracle that sees labels).

Pointing game (microclip/scoring.py): on each test image, does the map's top patch touch a discriminative
part? Every map is computed on the same adapted visual tower; the class-specific ones (LeGrad, Grad-CAM, SOAP per class)
explain the true class's Ŵ* row. The NCut mask, a set rather than a score, counts the expected hit of a
patch drawn uniformly from it, and "random" is a uniform patch (the patch chance, exactly). Also the
share of each map's mass on the part pixels, and each explainer's cost in ms per image (median of ten
single-image calls). "soap_keys_ncut" is SOAP with the clean key-based NCut at inference; "soap_rollout" SOAP's
weights carried back through the earlier blocks' attention rollout (microclip.explainers), a peer;
"soap_contribution" each token's exact term in the true class's [FG] logit (SOAP's weight times its value, along
the class), SOAP's own accounting, not a peer.

Part probe (toyworld/part_probe.py): for each test image and each visible part its species'
descriptions name, is the patch whose projected value-path token is closest to that sentence on that
very part? Run on the base CLIP (with its text tower) and on the adapted visual tower.

JSON keys: {"accuracy": {zero_shot_names, zero_shot_descriptions, cls_baseline, adapted_fused, adapted_cls,
adapted_fg, adapted_fg_unshifted, adapted_fused_unshifted, linear_probe, start_fused}, "pointing": {soap, ncut,
cls_similarity, cls_attention, rollout, legrad, gradcam, random, ...}, "mass_inside": {...}, "cost_ms": {...},
"part_probe", "part_probe_adapted", "part_probe_chance", "part_probe_within_bird_chance", "part_probe_by_part": {part:
{accuracy, pairs, lands_on: {named part, another part, body or background: %}}}, "patch_chance", "within_bird_chance",
"deletion": {map: {branch}}, "deletion_vs_soap": {map: {branch: {gap, low, high, items}}} (SOAP's score minus the
map's, image by image, and the 95% bootstrap interval of that mean: microclip.uncertainty), "part_removal": {branch},
"part_removal_gap": {gap, low, high, items} ([FG]'s drop minus [CLS]'s, pair by pair), "part_removal_gap_by_bird"
(the same with whole birds resampled: {..., groups}), "cpu"}, all in %; also
"build": {wall_time_min, invocations}, the base's pretraining time from its pretrain.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from microclip.checkpoint import EPOCHS_FOLDER, load_model, read_adapted, saved_epochs
from microclip.data.datasets import build_dataset
from microclip.data.transforms import SeededDataset, test_transform
from microclip.engine import UNSHIFTED_BRANCHES, evaluate
from microclip.explainers import EXPLAINERS
from microclip.faithfulness import ROAD_SEED, deletion_drops
from microclip.files import atomic_write_text
from microclip.heads import BRANCHES
from microclip.machine import cpu_name
from microclip.model import MicroCLIP
from microclip.resources import PROJECT_ROOT as ROOT
from microclip.scoring import (
    cut_on_object,
    expected_hit,
    mass_inside,
    patch_coverage,
    patch_hits,
    percent,
    pointing_hits,
)
from microclip.toyworld.dataset import ensure_split, first_per_class, load_split_arrays, load_split_masks
from microclip.toyworld.metrics import class_weights_from_names, cut_foregrounds, encode_images, linear_probe_accuracy
from microclip.toyworld.part_probe import part_probe
from microclip.toyworld.pretrain import build_seconds
from microclip.toyworld.text import ASSETS_DIR, name_rate, read_assets
from microclip.uncertainty import LEVEL, PairedGap, clustered_gap, paired_gap

BASE = ROOT / "checkpoints" / "toybirds-base"
ADAPTED = ROOT / "checkpoints" / "toybirds-microclip.safetensors"
ASSETS = ASSETS_DIR  # the world this process draws (MICROCLIP_TOYWORLD_SPECIES)
RECORD = ROOT / "checkpoints" / "toybirds-microclip.json"
POINTING_PEERS = (
    "soap",
    "soap_contribution",
    "ncut",
    "cls_similarity",
    "cls_attention",
    "rollout",
    "soap_rollout",
    "legrad",
    "gradcam",
)


# Every table reads the same generated splits: decode them once per run (the arrays are only read).
_split_arrays = functools.cache(load_split_arrays)
_split_masks = functools.cache(load_split_masks)


def adapted_model(args: argparse.Namespace) -> MicroCLIP:
    """The adapted model, or with ``--adapted start`` the base as adaptation starts from it (SOAP at identity,
    W* from the descriptions): what a pretraining change does to the maps before any self-training."""
    if args.adapted != "start":
        return load_model(args.adapted)
    classes, templates, descriptions = _assets()
    model, _, _ = MicroCLIP.build(f"local-dir:{args.base}", None, classes, templates, descriptions)
    return model.eval()


def _assets() -> tuple[list[str], list[str], dict[str, list[str]]]:
    return read_assets(ASSETS)


def _test_set(data_root: str) -> SeededDataset:
    return SeededDataset(build_dataset("toybirds", "test", root=data_root), test_transform(64), seed=0)


# ------------------------------------------------------------------ accuracy


def accuracy_rows(args: argparse.Namespace) -> dict[str, float | None]:
    classes, templates, descriptions = _assets()
    test = _test_set(args.data_root)
    names, _, _ = MicroCLIP.build(f"local-dir:{args.base}", None, classes, templates, None)
    described, _, _ = MicroCLIP.build(f"local-dir:{args.base}", None, classes, templates, descriptions)
    start = evaluate(described, test)
    adapted = evaluate(adapted_model(args), test)

    import open_clip

    clip = open_clip.create_model(f"local-dir:{args.base}")
    train_images, train_labels = _split_arrays(args.data_root, "train")
    test_images, test_labels = _split_arrays(args.data_root, "test")
    probe = linear_probe_accuracy(
        encode_images(clip, train_images), train_labels, encode_images(clip, test_images), test_labels
    )
    return {
        "zero_shot_names": evaluate(names, test).accuracy("cls"),
        "zero_shot_descriptions": start.accuracy("cls"),
        "start_fused": start.accuracy("fused"),
        "cls_baseline": _baseline_accuracy(args),
        "adapted_fused": adapted.accuracy("fused"),
        "adapted_cls": adapted.accuracy("cls"),
        "adapted_fg": adapted.accuracy("fg"),
        # None for a checkpoint made before runs recorded `[FG]`'s shared shift (`python -m microclip drift --write`)
        **{f"adapted_{b}": adapted.accuracy(b) if b in adapted.predictions else None for b in UNSHIFTED_BRANCHES},
        "linear_probe": 100.0 * probe,
    }


def _baseline_accuracy(args: argparse.Namespace) -> float | None:
    if args.run_baseline:
        out = Path(args.work_dir) / "baseline"
        command = [
            sys.executable,
            str(ROOT / "train.py"),
            "--dataset",
            "toybirds",
            "--train_config",
            "toybirds",
            "--baseline",
            "--output_dir",
            str(out),
            "--data_root",
            args.data_root,
            "--no_progress",
        ]
        if not _is_shipped_base(args.base):
            command += ["--clip_model", f"local-dir:{args.base}"]
        subprocess.run(command, check=True, cwd=ROOT)
        return json.loads((out / "metrics.json").read_text())["acc_cls"]
    if args.baseline_dir:
        return json.loads((Path(args.baseline_dir) / "metrics.json").read_text())["acc_cls"]
    if RECORD.is_file() and _is_shipped_base(args.base):  # the record's baseline is the shipped base's only
        return json.loads(RECORD.read_text()).get("baseline", {}).get("metrics", {}).get("acc_cls")
    return None


def _is_shipped_base(base: str) -> bool:
    return Path(base).resolve() == BASE.resolve()


# ------------------------------------------------------------------ maps


def peer_maps(
    model: MicroCLIP,
    images: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    batch: int = 100,
    timing: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every explainer's (N, h*w) maps on the test images, and its cost in ms per image (batch of one)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    y = torch.as_tensor(labels, dtype=torch.long)
    maps, cost = {}, {}
    for name in names:
        explainer = EXPLAINERS[name]
        reason = explainer.unavailable_reason(model)
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
            continue
        if explainer.prepare is not None:
            explainer.prepare(model)
        chunks = [
            explainer(model, x[i : i + batch], y[i : i + batch]).flatten(1).float().cpu().numpy()
            for i in range(0, len(x), batch)
        ]
        maps[name] = np.concatenate(chunks)
        if not timing:
            continue
        timings = []
        for i in range(11):  # one image at a time, as the app runs them; the first call warms up
            start = time.perf_counter()
            explainer(model, x[i : i + 1], y[i : i + 1])
            timings.append(1000.0 * (time.perf_counter() - start))
        cost[name] = float(np.median(timings[1:]))
    return maps, cost


def score_maps(
    maps: dict[str, np.ndarray], on_part: np.ndarray, coverage: np.ndarray
) -> tuple[dict[str, float], dict[str, float]]:
    """Each map's pointing game and mass on the parts, in %."""
    pointing, inside = {}, {}
    for name, scores in maps.items():
        if name == "ncut":  # a set, not a ranking: the expected hit of a patch drawn from it
            pointing[name] = percent(expected_hit(scores > 0.5, on_part))
        else:
            pointing[name] = percent(pointing_hits(scores, on_part))
        inside[name] = percent(mass_inside(scores, coverage))
    return pointing, inside


def epoch_rows(args: argparse.Namespace) -> list[dict]:
    """--epochs RUN: the maps at the start and after each epoch of a ``train.py --keep_epochs`` run, with the
    accuracies its log recorded then. Self-training trains SOAP's projections through the fused answer alone;
    this is where its map goes meanwhile."""
    run = Path(args.epochs)
    saved = [(epoch, str(path)) for epoch, path in saved_epochs(run / EPOCHS_FOLDER)]
    if not saved:
        raise SystemExit(f"{run / EPOCHS_FOLDER} holds no epoch-N.safetensors: adapt with train.py --keep_epochs")
    log_file = run / "log.jsonl"
    lines = log_file.read_text().splitlines() if log_file.is_file() else []
    logged = {row["epoch"]: row for row in map(json.loads, lines)}
    masks = _split_masks(args.data_root, "test")
    images, labels = _split_arrays(args.data_root, "test")
    peers = tuple(filter(None, args.epoch_peers.split(",")))
    rows = []
    if saved[0][0] != 0:  # runs from before --keep_epochs saved the start: rebuild it from the base
        saved.insert(0, (0, "start"))
    on_part = coverage = None  # every epoch is the same tower's grid: the parts' patches are found once
    for epoch, adapted in saved:
        model = adapted_model(argparse.Namespace(**{**vars(args), "adapted": adapted}))
        if on_part is None:
            grid = model.backbone.grid
            on_part, coverage = patch_hits(masks.part_mask, grid), patch_coverage(masks.part_mask, grid)
        maps, _ = peer_maps(model, images, labels, peers, timing=False)
        pointing, inside = score_maps(maps, on_part, coverage)
        accuracy = {k.removeprefix("test_"): v for k, v in logged.get(epoch, {}).items() if k.startswith("test_acc")}
        rows.append({"epoch": epoch, "pointing": pointing, "mass_inside": inside, "accuracy": accuracy})
        print(f"epoch {epoch}: SOAP pointing {pointing.get('soap', float('nan')):.1f}", file=sys.stderr)
    return rows


def pointing_rows(args: argparse.Namespace) -> dict:
    model = adapted_model(args)
    masks = _split_masks(args.data_root, "test")
    images, labels = _split_arrays(args.data_root, "test")
    grid = model.backbone.grid
    on_part = patch_hits(masks.part_mask, grid)
    on_bird = patch_hits(masks.bird_mask, grid)
    coverage = patch_coverage(masks.part_mask, grid)
    maps, cost = peer_maps(model, images, labels, POINTING_PEERS)
    pointing, inside = score_maps(maps, on_part, coverage)
    pointing["random"] = percent(on_part.mean(axis=1))  # a uniform patch: exactly the patch chance
    # The same adapted weights with the reference's unused key-based NCut (the clean option) at inference.
    model.config = replace(model.config, ncut_features="keys")
    keys_maps, keys_cost = peer_maps(model, images, labels, ("soap",))
    pointing["soap_keys_ncut"] = percent(pointing_hits(keys_maps["soap"], on_part))
    inside["soap_keys_ncut"] = percent(mass_inside(keys_maps["soap"], coverage))
    cost["soap_keys_ncut"] = keys_cost["soap"]
    return {
        "pointing": pointing,
        "mass_inside": inside,
        "cost_ms": cost,
        "patch_chance": percent(on_part.mean(axis=1)),
        "within_bird_chance": percent(expected_hit(on_bird, on_part)),
    }


def _pretrain_record(base: str) -> dict:
    try:
        return json.loads((Path(base) / "pretrain.json").read_text())
    except (OSError, ValueError):
        return {}


def build_row(base: str) -> dict | None:
    """How long the base took to build, every run it was fine-tuned from included, and with how many
    invocations (pretrain.json); None for a base without that record. The recipe rule reads the minutes."""
    record = _pretrain_record(base)
    seconds = build_seconds(record)
    if seconds is None:
        return None
    return {"wall_time_min": seconds / 60.0, "invocations": len(record.get("commands") or [record.get("command")])}


def _name_tail(base: str) -> dict:
    """The base's caption tail (pretrain.json's "captions"), or text.py's defaults for a base without one."""
    captions = _pretrain_record(base).get("captions", {})
    return {arg: captions[k] for k, arg in (("p_name", "p_name"), ("name_zipf", "zipf")) if k in captions}


def names_by_frequency(args: argparse.Namespace) -> dict:
    """Zero-shot by names per species, beside how often its name appears in the pretraining captions."""
    from scipy.stats import spearmanr

    classes, templates, _ = _assets()
    import open_clip

    clip = open_clip.create_model(f"local-dir:{args.base}").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{args.base}")
    images, labels = _split_arrays(args.data_root, "test")
    predicted = encode_images(clip, images) @ class_weights_from_names(clip, tokenizer, classes, templates).T
    predicted = predicted.argmax(dim=1).numpy()
    per_species = {name: percent(predicted[labels == i] == i) for i, name in enumerate(classes)}
    frequency = {name: 100.0 * name_rate(name, **_name_tail(args.base)) for name in classes}
    rho = spearmanr([frequency[c] for c in classes], [per_species[c] for c in classes]).statistic
    return {
        "spearman": float(rho),
        "per_species": {
            c: {"name_frequency": frequency[c], "accuracy": per_species[c]}
            for c in sorted(classes, key=frequency.get, reverse=True)
        },
    }


def ncut_rows(args: argparse.Namespace) -> dict:
    """How much of the NCut foreground is bird (pixels), and its IoU with the bird's patches, per tower."""
    masks = _split_masks(args.data_root, "test")
    images, _ = _split_arrays(args.data_root, "test")
    towers = {"adapted": adapted_model(args)}
    classes, templates, _ = _assets()
    towers["base"], _, _ = MicroCLIP.build(f"local-dir:{args.base}", None, classes, templates, None)
    out = {}
    for name, model in towers.items():
        foreground = cut_foregrounds(model, images)
        scores = cut_on_object(foreground, patch_coverage(masks.bird_mask, model.backbone.grid))
        out[name] = {
            "pixel_precision": percent(scores["pixel_precision"]),
            "iou": percent(scores["iou"]),
            "foreground_patches": float(foreground.sum(axis=1).mean()),
        }
    perfect = patch_coverage(masks.bird_mask, towers["base"].backbone.grid) >= 0.25
    out["perfect_mask_pixel_precision"] = percent(
        cut_on_object(perfect, patch_coverage(masks.bird_mask, towers["base"].backbone.grid))["pixel_precision"]
    )
    return {
        "ncut_on_bird": {
            **out["adapted"],
            "base": out["base"],
            "perfect_mask_pixel_precision": out["perfect_mask_pixel_precision"],
        }
    }


def deletion_rows(args: argparse.Namespace) -> dict:
    """ROAD most-relevant-first deletion (grad-cam's) of every map, per branch, on the first images of each class."""
    model = adapted_model(args)
    images, labels = _split_arrays(args.data_root, "test")
    rows = first_per_class(labels, args.faithfulness_per_class)
    maps, _ = peer_maps(model, images[rows], labels[rows], POINTING_PEERS, timing=False)
    maps["random"] = np.random.default_rng(0).random(maps["soap"].shape)
    x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float() / 255.0
    drops = {name: {b: 100.0 * v for b, v in deletion_drops(model, x, scores).items()} for name, scores in maps.items()}
    return {
        "deletion": {name: {branch: float(v.mean()) for branch, v in row.items()} for name, row in drops.items()},
        # SOAP's score minus each other map's, image by image: how far the mean gap would move on other images
        "deletion_vs_soap": {
            name: {b: paired_gap(drops["soap"][b], v).to_dict() for b, v in row.items()}
            for name, row in drops.items()
            if name != "soap"
        },
        "deletion_images": int(len(rows)),
        "deletion_seed": ROAD_SEED,  # ties' order and the imputer's noise (microclip.faithfulness)
    }


def part_removal_rows(args: argparse.Namespace) -> dict:
    """Each visible part of a test bird erased in turn (the same render otherwise): the mean drop of each
    branch's true-class probability (percentage points)."""
    model = adapted_model(args).eval()
    masks = _split_masks(args.data_root, "test")
    originals, erased, truth, birds = masks.erased_set_pairs(
        first_per_class(masks.labels, args.faithfulness_per_class), 1
    )
    _, drop = probability_drops(model, originals, erased, truth)
    return {
        "part_removal": {branch: float(v.mean()) for branch, v in drop.items()},
        "part_removal_gap": paired_gap(drop["fg"], drop["cls"]).to_dict(),  # [FG]'s drop minus [CLS]'s, pair by pair
        # the same gap with whole birds resampled: a bird's several erased parts are not independent draws
        "part_removal_gap_by_bird": clustered_gap(drop["fg"], drop["cls"], np.asarray(birds)).to_dict(),
        "part_removal_pairs": len(drop["fg"]),
    }


def probability_drops(
    model: MicroCLIP, originals: list[np.ndarray], erased: list[np.ndarray], truth: list[int]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(before, drop): each branch's true-class probability on the originals, and on the original minus on the
    erased picture, pair by pair (points)."""
    before, after = true_class_probabilities(model, originals, truth), true_class_probabilities(model, erased, truth)
    return before, {branch: 100.0 * (before[branch] - after[branch]) for branch in before}


def true_class_probabilities(model: MicroCLIP, pictures: list[np.ndarray], truth: list[int]) -> dict[str, np.ndarray]:
    """Each branch's probability of ``truth[i]`` on ``pictures[i]`` (uint8 RGB at the model's size)."""
    x = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        logits = model(x).logits
    y = torch.as_tensor(truth)
    return {branch: getattr(logits, branch).float().softmax(-1)[torch.arange(len(y)), y].numpy() for branch in BRANCHES}


def probe_rows(args: argparse.Namespace) -> dict[str, float]:
    classes, templates, descriptions = _assets()
    base, _, text = MicroCLIP.build(f"local-dir:{args.base}", None, classes, templates, descriptions, keep_text=True)
    masks = _split_masks(args.data_root, "test")
    images, _ = _split_arrays(args.data_root, "test")
    on_base = part_probe(base.backbone, text, images, masks)
    on_adapted = part_probe(adapted_model(args).backbone, text, images, masks)
    return {
        "part_probe": on_base.accuracy,
        "part_probe_adapted": on_adapted.accuracy,
        "part_probe_chance": percent(on_base.patch_chance),
        "part_probe_within_bird_chance": percent(on_base.bird_chance),
        "part_probe_by_part": on_base.by_part(),
    }


# ------------------------------------------------------------------ the shipped model's record


def record_accuracies(data_root: str) -> dict[str, float]:
    """Zero-shot start, adapted top-1 and the base's part probe on the whole test split: what the
    shipped-record test checks. One image is 0.125 points of accuracy, so the 0.3-point tolerance allows
    two flips between machines.
    """
    classes, templates, descriptions = _assets()
    test = _test_set(data_root)
    start, _, text = MicroCLIP.build(f"local-dir:{BASE}", None, classes, templates, descriptions, keep_text=True)
    adapted = evaluate(load_model(ADAPTED), test)
    images, _ = _split_arrays(data_root, "test")
    probe = part_probe(start.backbone, text, images, _split_masks(data_root, "test"))
    return {
        "zero_shot_cls": evaluate(start, test).accuracy("cls"),
        "adapted_fused": adapted.accuracy("fused"),
        "adapted_cls": adapted.accuracy("cls"),
        "adapted_fg": adapted.accuracy("fg"),
        "part_probe": probe.accuracy,
    }


def training_record(run_dir: Path) -> dict:
    """What a train.py output folder says about its run: the command, its metrics and per-epoch log."""
    _, meta = read_adapted(run_dir / "checkpoint.safetensors")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return {
        "command": "python " + meta.training["command"],
        "seed": meta.training["seed"],
        "cpu": cpu_name(),
        "metrics": metrics,
        "log": log,
    }


# ------------------------------------------------------------------ figure


def explainer_figure(args: argparse.Namespace, n_images: int = 5, size: int = 128) -> np.ndarray:
    """Rows: test images (one per species, spread over the split); columns: the image, then every map of
    the adapted tower on one [0, 1] scale (a signed map around zero, red adding), parts outlined. (H, W, 3) uint8."""
    import cv2

    from viz.peers import colorbar, peer_panel

    model = adapted_model(args)
    masks = _split_masks(args.data_root, "test")
    images, labels = _split_arrays(args.data_root, "test")
    rows = np.linspace(0, len(images) - 1, n_images).round().astype(int)
    x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float() / 255.0
    y = torch.as_tensor(labels[rows], dtype=torch.long)
    names = [n for n in POINTING_PEERS if EXPLAINERS[n].unavailable_reason(model) is None]
    maps = {}
    for name in names:
        if EXPLAINERS[name].prepare is not None:
            EXPLAINERS[name].prepare(model)
        maps[name] = EXPLAINERS[name](model, x, y).float().cpu().numpy()
    header_height, pad = 22, 3
    lines = []
    for r, index in enumerate(rows):
        picture = cv2.resize(images[index], (size, size), interpolation=cv2.INTER_NEAREST)
        tiles = [picture] + [
            peer_panel(picture, maps[n][r], outline=masks.part_mask[index], signed=EXPLAINERS[n].signed) for n in names
        ]
        lines.append(
            np.concatenate([np.pad(t, ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for t in tiles], axis=1)
        )
    header = np.full((header_height, lines[0].shape[1], 3), 255, np.uint8)
    for c, title in enumerate(["image"] + names):
        cv2.putText(
            header,
            title,
            (c * (size + 2 * pad) + pad + 2, header_height - 7),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.42,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    bar = colorbar(width=min(lines[0].shape[1], 448), signed=any(EXPLAINERS[n].signed for n in names))
    bar = np.pad(bar, ((4, 0), (0, lines[0].shape[1] - bar.shape[1]), (0, 0)), constant_values=255)
    return np.concatenate([header, *lines, bar], axis=0)


# ------------------------------------------------------------------ report


def print_report(report: dict) -> None:
    accuracy = report["accuracy"]
    print(f"CPU: {report['cpu']}")
    build = report.get("build")
    if build:
        print(f"base built in {build['wall_time_min']:.1f} min ({build['invocations']} pretraining invocation(s))")
    print()
    if accuracy:
        _print_accuracy(accuracy)
    if "pointing" in report:
        _print_pointing(report)
    if "names_by_frequency" in report:
        names = report["names_by_frequency"]
        print(
            f"\nzero-shot by names per species, commonest name first (Spearman with frequency {names['spearman']:.2f}):"
        )
        _print_table(
            ("species", "named in % of its captions", "names top-1 %"),
            (
                (species, f"{row['name_frequency']:.2f}", f"{row['accuracy']:.1f}")
                for species, row in names["per_species"].items()
            ),
        )
    if "ncut_on_bird" in report:
        cut = report["ncut_on_bird"]
        print(
            f"\nNCut foreground on the bird (adapted tower): pixel precision {cut['pixel_precision']:.1f}%, IoU with "
            f"the bird's patches {cut['iou']:.1f}%, {cut['foreground_patches']:.1f} patches; base tower "
            f"{cut['base']['pixel_precision']:.1f}% / {cut['base']['iou']:.1f}% (a perfect patch mask: "
            f"{cut['perfect_mask_pixel_precision']:.1f}% precision)"
        )
    if "deletion" in report:
        print(
            f"\nROAD deletion (most relevant first, grad-cam; mean drop of the predicted class's probability, "
            f"points; higher = more faithful; {report['deletion_images']} images)"
        )
        versus = report.get("deletion_vs_soap", {})

        def soap_minus(name: str) -> str:
            gap = versus.get(name, {}).get("fg")
            return "" if gap is None else f"{gap['gap']:+.1f} ({gap['low']:+.1f} to {gap['high']:+.1f})"

        _print_table(
            ("map", "fused", "[CLS]", "[FG]", f"[FG]: SOAP minus the map ({LEVEL:.0%} interval)"),
            (
                (name, *(f"{row[b]:.1f}" for b in ("fused", "cls", "fg")), soap_minus(name))
                for name, row in report["deletion"].items()
            ),
        )
    if "part_removal" in report:
        drop = report["part_removal"]
        print(
            f"\none part erased ({report['part_removal_pairs']} image-part pairs): true-class probability drops "
            f"fused {drop['fused']:.1f}, [CLS] {drop['cls']:.1f}, [FG] {drop['fg']:.1f} points"
            + (
                f"; [FG] minus [CLS]: {PairedGap(**report['part_removal_gap']).words()}"
                if "part_removal_gap" in report
                else ""
            )
            + (
                f"; resampling whole birds: {PairedGap(**report['part_removal_gap_by_bird']).words()}"
                if "part_removal_gap_by_bird" in report
                else ""
            )
        )
    if "part_probe" in report:
        print(
            f"\npart probe (closest patch to the sentence is on the named part): base {report['part_probe']:.1f}%, "
            f"adapted tower {report['part_probe_adapted']:.1f}% (chance {report['part_probe_chance']:.1f}%, "
            f"within the bird {report['part_probe_within_bird_chance']:.1f}%)"
        )
        for part, row in report.get("part_probe_by_part", {}).items():
            ranked = sorted(row["lands_on"].items(), key=lambda kv: -kv[1])
            lands = ", ".join(f"{where} {share:.0f}%" for where, share in ranked)
            print(f"  {part:<11} {row['accuracy']:5.1f}% of {row['pairs']} (the closest patch holds: {lands})")


def _print_accuracy(accuracy: dict) -> None:
    titles = {
        "zero_shot_names": "zero-shot by names (templates, [CLS])",
        "zero_shot_descriptions": "zero-shot by descriptions (initial W*, [CLS])",
        "start_fused": "  same start, TokenFusion (SOAP at identity)",
        "cls_baseline": "CLS-only self-training baseline (--baseline, same recipe)",
        "adapted_fused": "**microCLIP adapted, TokenFusion**",
        "adapted_cls": "microCLIP adapted, [CLS] only",
        "adapted_fg": "microCLIP adapted, [FG] only",
        "adapted_fg_unshifted": "  same, without its shared shift (no labels)",
        "adapted_fused_unshifted": "  TokenFusion without the shift's part",
        "linear_probe": "linear probe on frozen [CLS] (oracle: uses labels)",
    }
    _print_table(
        ("toy test split (800 images, 16 species, chance 6.25%)", "top-1 %"),
        ((title, _cell(accuracy.get(key), "n/a")) for key, title in titles.items()),
    )


def _print_pointing(report: dict) -> None:
    patch, bird = report["patch_chance"], report["within_bird_chance"]
    print()
    _print_table(
        (
            "map (adapted tower)",
            "pointing %",
            f"vs patch chance {patch:.1f}",
            f"vs within-bird chance {bird:.1f}",
            "mass on parts %",
            "ms / image",
        ),
        (
            (name, f"{value:.1f}", f"{value - patch:+.1f}", f"{value - bird:+.1f}")
            + (_cell(report["mass_inside"].get(name)), _cell(report["cost_ms"].get(name)))
            for name, value in report["pointing"].items()
        ),
    )


def print_epochs(rows: list[dict]) -> None:
    """One line per epoch: each map's pointing (mass on the parts), then the logged accuracies."""
    maps = list(rows[0]["pointing"])
    branches = ("acc_fused", "acc_cls", "acc_fg")
    _print_table(
        ("epoch", *(f"{name} pointing (mass) %" for name in maps), "fused / [CLS] / [FG] %"),
        (
            (
                str(row["epoch"]),
                *(f"{row['pointing'][name]:.1f} ({row['mass_inside'][name]:.1f})" for name in maps),
                " / ".join(_cell(row["accuracy"].get(b)) for b in branches),
            )
            for row in rows
        ),
    )


def _print_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A markdown table of ready-formatted cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _cell(value: float | None, missing: str = "") -> str:
    return missing if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--run_baseline", action="store_true", help="re-run the CLS-only baseline (~5 min)")
    parser.add_argument("--work_dir", default=str(ROOT / "output" / "bench-toyworld"))
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--base", default=str(BASE), help="the base CLIP (an open_clip local-dir folder)")
    parser.add_argument(
        "--adapted",
        default=str(ADAPTED),
        help="an adapted checkpoint of that base, or 'start': the base as adaptation starts (SOAP at identity)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: accuracy, pointing, probe, names, ncut, deletion, part_removal",
    )
    parser.add_argument(
        "--faithfulness_per_class",
        type=int,
        default=10,
        help="deletion and part removal on the first N test images of each class",
    )
    parser.add_argument("--run_dir", default=None, help="with --record: the train.py output of the shipped model")
    parser.add_argument(
        "--baseline_dir",
        default=None,
        help="the train.py --baseline output of this base: its accuracy is the baseline row (with --record: stored)",
    )
    parser.add_argument("--figure", default=None, help="write a PNG of SOAP and its peers on test images, and exit")
    parser.add_argument(
        "--epochs",
        default=None,
        help="a train.py --keep_epochs output folder: the maps' pointing at the start and after each epoch, "
        "and exit (--base: the run's base)",
    )
    parser.add_argument("--epoch_peers", default="soap,cls_attention,legrad", help="with --epochs: the maps")
    parser.add_argument(
        "--record", action="store_true", help=f"store the test-split accuracies in {RECORD.name} (for the tests)"
    )
    args = parser.parse_args(argv)
    for split in ("train", "test"):
        ensure_split(args.data_root, split)
    if args.figure:
        import cv2

        cv2.imwrite(args.figure, cv2.cvtColor(explainer_figure(args), cv2.COLOR_RGB2BGR))
        print(args.figure)
        return 0
    if args.epochs:
        rows = epoch_rows(args)
        print_epochs(rows)
        if args.json:
            atomic_write_text(Path(args.json), json.dumps({"epochs": rows, "cpu": cpu_name()}, indent=2) + "\n")
        return 0
    if args.record:
        record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
        if args.run_dir:
            record.update(training_record(Path(args.run_dir)))
        if args.baseline_dir:
            record["baseline"] = training_record(Path(args.baseline_dir))
        record["test_split"] = record_accuracies(args.data_root)
        record["test_split_cpu"] = cpu_name()
        record.pop("subset200", None)
        atomic_write_text(RECORD, json.dumps(record, indent=2) + "\n")
        print(json.dumps(record["test_split"]))
        return 0
    skip = set(filter(None, args.skip.split(",")))
    report = {
        "accuracy": {} if "accuracy" in skip else accuracy_rows(args),
        **({} if "pointing" in skip else pointing_rows(args)),
        **({} if "probe" in skip else probe_rows(args)),
        **({} if "names" in skip else {"names_by_frequency": names_by_frequency(args)}),
        **({} if "ncut" in skip else ncut_rows(args)),
        **({} if "deletion" in skip else deletion_rows(args)),
        **({} if "part_removal" in skip else part_removal_rows(args)),
        "build": build_row(args.base),
        "cpu": cpu_name(),
    }
    print_report(report)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
