"""The toy world's quality report: accuracy of every method and the pointing game of every map.

    python bench/toyworld.py                      # table on the toy test split (800 images)
    python bench/toyworld.py --run_baseline       # also re-run the CLS-only self-training baseline

Accuracy rows: zero-shot by names (templates), zero-shot by descriptions (the initial W*), the
CLS-only self-training baseline, microCLIP adapted (fused, [CLS]-only, [FG]-only) and a linear
probe on the frozen [CLS] (an oracle that sees labels).

Pointing game: on each test image, does the map's top patch fall on a discriminative part?
A patch is "on a part" if any of its pixels is in the ground-truth part mask. Binary maps
(the NCut mask) score the expected hit rate of a patch drawn uniformly from the mask, and so
does the uniform random patch. Chance is reported two ways: over all patches, and over the
patches on the bird (pointing at the bird is easy; pointing at the right part of it is not).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from microclip.backbone import last_block_cls_attention  # noqa: E402
from microclip.checkpoint import load_model  # noqa: E402
from microclip.data.datasets import build_dataset  # noqa: E402
from microclip.data.transforms import SeededDataset, test_transform  # noqa: E402
from microclip.engine import evaluate  # noqa: E402
from microclip.model import MicroCLIP  # noqa: E402
from microclip.toyworld.dataset import load_split_arrays, load_split_masks  # noqa: E402
from microclip.toyworld.metrics import encode_images, linear_probe_accuracy  # noqa: E402

BASE = ROOT / "checkpoints" / "toybirds-base"
ADAPTED = ROOT / "checkpoints" / "toybirds-microclip.safetensors"
ASSETS = ROOT / "assets" / "toybirds"
RECORD = ROOT / "checkpoints" / "toybirds-microclip.json"


def patch_hits(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W) pixel masks → (N, h*w) bool: does each patch contain any masked pixel."""
    n, height, width = mask.shape
    h, w = grid
    blocks = mask.reshape(n, h, height // h, w, width // w)
    return blocks.any(axis=(2, 4)).reshape(n, h * w)


def pointing(scores: np.ndarray, on_part: np.ndarray) -> float:
    """Fraction of images whose top-scoring patch is on a part (%)."""
    top = scores.argmax(axis=1)
    return 100.0 * on_part[np.arange(len(top)), top].mean()


def expected_hit(selection: np.ndarray, on_part: np.ndarray) -> float:
    """Expected hit rate (%) of a patch drawn uniformly from each image's selected set."""
    chosen = selection.sum(1)
    rate = np.where(chosen > 0, (selection & on_part).sum(1) / np.maximum(chosen, 1), 0.0)
    return 100.0 * rate.mean()


@torch.no_grad()
def saliency_maps(model: MicroCLIP, images: np.ndarray, batch: int = 200) -> dict[str, np.ndarray]:
    maps: dict[str, list[np.ndarray]] = {"soap": [], "ncut": [], "cls_similarity": [], "cls_attention": []}
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 255.0
        out = model(x)
        maps["soap"].append(out.soap.weights[:, :-1].numpy())
        maps["ncut"].append(out.mask.numpy())
        similarity = torch.nn.functional.cosine_similarity(out.tokens.patches, out.tokens.cls_token[:, None], dim=-1)
        maps["cls_similarity"].append(similarity.numpy())
        maps["cls_attention"].append(last_block_cls_attention(model.backbone, x).numpy())
    return {k: np.concatenate(v) for k, v in maps.items()}


def accuracy_rows(args: argparse.Namespace) -> list[tuple[str, float | None, str]]:
    classes = json.loads((ASSETS / "classes.json").read_text())
    templates = json.loads((ASSETS / "templates.json").read_text())
    descriptions = json.loads((ASSETS / "descriptions.json").read_text())
    test = SeededDataset(build_dataset("toybirds", "test", root=args.data_root), test_transform(64), seed=0)

    rows = []
    names, _, _ = MicroCLIP.build(f"local-dir:{BASE}", None, classes, templates, None)
    rows.append(("zero-shot by names (templates, [CLS])", evaluate(names, test).accuracy("cls"), ""))
    described, _, _ = MicroCLIP.build(f"local-dir:{BASE}", None, classes, templates, descriptions)
    start = evaluate(described, test)
    rows.append(("zero-shot by descriptions (initial W*, [CLS])", start.accuracy("cls"), ""))
    rows.append(("  same start, TokenFusion (SOAP at identity)", start.accuracy("fused"), ""))

    baseline = _baseline_accuracy(args)
    rows.append(("CLS-only self-training baseline (--baseline)", baseline, "same recipe as microCLIP"))

    adapted = evaluate(load_model(ADAPTED), test)
    rows.append(("microCLIP adapted: TokenFusion", adapted.accuracy("fused"), "the shipped checkpoint"))
    rows.append(("microCLIP adapted: [CLS] only", adapted.accuracy("cls"), ""))
    rows.append(("microCLIP adapted: [FG] only", adapted.accuracy("fg"), ""))

    import open_clip

    clip = open_clip.create_model(f"local-dir:{BASE}")
    train_images, train_labels = load_split_arrays(args.data_root, "train")
    test_images, test_labels = load_split_arrays(args.data_root, "test")
    probe = linear_probe_accuracy(encode_images(clip, train_images), train_labels,
                                  encode_images(clip, test_images), test_labels)
    rows.append(("linear probe on frozen [CLS] (oracle: uses labels)", 100.0 * probe, ""))
    return rows


def _baseline_accuracy(args: argparse.Namespace) -> float | None:
    if args.run_baseline:
        out = Path(args.work_dir) / "baseline"
        command = [sys.executable, str(ROOT / "train.py"), "--dataset", "toybirds", "--train_config", "toybirds",
                   "--baseline", "--output_dir", str(out), "--data_root", args.data_root, "--no_progress"]
        subprocess.run(command, check=True, cwd=ROOT)
        return json.loads((out / "metrics.json").read_text())["acc_cls"]
    if RECORD.is_file():
        return json.loads(RECORD.read_text()).get("baseline", {}).get("acc_cls")
    return None


def pointing_rows(args: argparse.Namespace) -> tuple[list[tuple[str, float]], float, float]:
    model = load_model(ADAPTED)
    masks = load_split_masks(args.data_root, "test")
    images, _ = load_split_arrays(args.data_root, "test")
    grid = model.backbone.grid
    on_part = patch_hits(masks.part_mask, grid)
    on_bird = patch_hits(masks.bird_mask, grid)
    maps = saliency_maps(model, images)
    rng = np.random.default_rng(0)
    rows = [
        ("SOAP weights (adapted)", pointing(maps["soap"], on_part)),
        ("NCut foreground mask (uniform patch in mask)", expected_hit(maps["ncut"], on_part)),
        ("CLS-similarity map (value-path tokens)", pointing(maps["cls_similarity"], on_part)),
        ("last-layer CLS attention (heads averaged)", pointing(maps["cls_attention"], on_part)),
        ("uniform random patch", pointing(rng.random(on_part.shape), on_part)),
    ]
    # The same adapted weights with the clean NCut options (method.md §10.2) at inference time.
    model.config.ncut_features, model.config.ncut_sign = "keys", "symmetric"
    clean = saliency_maps(model, images)
    rows[2:2] = [("SOAP weights, clean NCut (--ncut_features keys --ncut_sign symmetric)",
                  pointing(clean["soap"], on_part)),
                 ("NCut mask, clean options (uniform patch in mask)", expected_hit(clean["ncut"], on_part))]
    patch_chance = 100.0 * on_part.mean()
    bird_chance = expected_hit(on_bird, on_part)
    return rows, patch_chance, bird_chance


SUBSET_STEP = 4  # every 4th test image: the fixed 200-image subset the tests check the record on


def subset_accuracies(data_root: str) -> dict[str, float]:
    """Zero-shot (initial W*) and adapted top-1 on the fixed 200-image subset of the test split."""
    from torch.utils.data import Subset

    classes = json.loads((ASSETS / "classes.json").read_text())
    templates = json.loads((ASSETS / "templates.json").read_text())
    descriptions = json.loads((ASSETS / "descriptions.json").read_text())
    test = SeededDataset(build_dataset("toybirds", "test", root=data_root), test_transform(64), seed=0)
    subset = Subset(test, range(0, len(test), SUBSET_STEP))
    start, _, _ = MicroCLIP.build(f"local-dir:{BASE}", None, classes, templates, descriptions)
    return {"zero_shot_cls": evaluate(start, subset).accuracy("cls"),
            "adapted_fused": evaluate(load_model(ADAPTED), subset).accuracy("fused")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--run_baseline", action="store_true", help="re-run the CLS-only baseline (~10 min)")
    parser.add_argument("--work_dir", default=str(ROOT / "output" / "bench-toyworld"))
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--record", action="store_true",
                        help=f"store the 200-image subset accuracies in {RECORD.name} (for the tests)")
    args = parser.parse_args(argv)
    if args.record:
        record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
        record["subset200"] = subset_accuracies(args.data_root)
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record["subset200"]))
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))

    accuracy = accuracy_rows(args)
    pointing_table, patch_chance, bird_chance = pointing_rows(args)
    print("| toy test split (800 images, 16 species, chance 6.25%) | top-1 % | note |")
    print("|---|---|---|")
    for name, value, note in accuracy:
        print(f"| {name} | {'n/a' if value is None else f'{value:.1f}'} | {note} |")
    print()
    print(f"| pointing game (top patch on a part) | hit % | vs patch chance {patch_chance:.1f} | "
          f"vs within-bird chance {bird_chance:.1f} |")
    print("|---|---|---|---|")
    for name, value in pointing_table:
        print(f"| {name} | {value:.1f} | {value - patch_chance:+.1f} | {value - bird_chance:+.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "accuracy": {name: value for name, value, _ in accuracy},
            "pointing": dict(pointing_table), "patch_chance": patch_chance, "within_bird_chance": bird_chance,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
