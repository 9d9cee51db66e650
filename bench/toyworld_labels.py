"""How right DKA's pseudo-labels are at the start of adaptation, half by half, on a toy base tower.

    python bench/toyworld_labels.py checkpoints/toybirds-base [FOLDER ...] [--data_root data] [--images 480]
        [--descriptions FILE | --named] [--per_class]

For each open_clip `local-dir:` folder, on a fixed sample of the toy train split, with the heads microCLIP
starts from (W* and W_LLM from the toy descriptions, SOAP at identity): the dynamic half (fused weak view
against Ŵ*), the static half (the crop composite against W_LLM), their DKA aggregate (γ = 0.5), and three
diagnostics that swap the image side or the head (the crop composite against Ŵ*, the whole image's [CLS]
against W_LLM and against Ŵ*), and the [CLS] of a centred square of side 0.75 or 0.6 against Ŵ*
(a zoomed view with the bird whole in it). docs/toyworld.md reads the answer: which half makes the labels weak.
`--descriptions FILE` (CuPL format, every toy class) swaps the world's descriptions for another wording;
`--named` for the world's own, worded around each class name as CuPL's are (`text.descriptions(named=True)`).
`--per_class` adds, per species, each half's accuracy and what the static half calls it when wrong: the species
self-training will lose. `--preference CKPT` (one folder: the base CKPT was adapted from; CKPT records `[FG]`'s
shared shift) asks whether the class preference the shift adds (100 · s · Ŵ*) follows how many more labels
each class gets than it has images, half by half (Spearman over the classes; docs/toyworld.md, round 22).
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from microclip.data.descriptions import load_descriptions
from microclip.data.transforms import CropViews, weak_transform
from microclip.labeling import dka_pass
from microclip.model import MicroCLIP
from microclip.toyworld.dataset import ensure_split, load_split_arrays
from microclip.toyworld.text import TEMPLATES, descriptions
from microclip.toyworld.world import CLASS_NAMES

GAMMA = 0.5  # the toybirds dataset config's, and the reference's
N_CROPS, ALPHA, BETA, SIZE = 8, 0.5, 0.9, 64  # the recipe's crops at the toy input size
CENTRED_SIDES = (0.75, 0.6)  # zoomed views the bird fits in whole (it fills about a fifth of the frame)


def accuracies(y: torch.Tensor, predictions: dict[str, torch.Tensor]) -> dict[str, float]:
    """Top-1 (%) of each set of labels over the sample."""
    return {name: 100.0 * float((predicted == y).float().mean()) for name, predicted in predictions.items()}


def per_class(y: torch.Tensor, predictions: dict[str, torch.Tensor], keys: tuple[str, ...]) -> list[str]:
    """One line per species: each label set's accuracy on it, and what the static half calls it when wrong."""
    lines = []
    for c, name in enumerate(CLASS_NAMES):
        mine = y == c
        cells = [f"{k} {100.0 * float((predictions[k][mine] == c).float().mean()):5.1f}%" for k in keys]
        wrong = predictions["static"][mine]
        wrong = wrong[wrong != c]
        instead = CLASS_NAMES[int(wrong.mode().values)] if len(wrong) else "-"
        lines.append(f"  {name:<18} " + "  ".join(cells) + f"  static's commonest other: {instead}")
    return lines


def label_predictions(
    folder: str, data_root: str, n_images: int, seed: int = 0, class_descriptions: dict[str, list[str]] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sample's true classes, and each set of labels the probe reads (see the module docstring)."""
    random.seed(seed)  # the crop boxes come from `random`, as in training
    texts = descriptions() if class_descriptions is None else class_descriptions
    model, _, _ = MicroCLIP.build(f"local-dir:{folder}", None, CLASS_NAMES, TEMPLATES, texts)
    model.eval()
    ensure_split(data_root, "train", 100, 0)
    images, labels = load_split_arrays(data_root, "train")
    pick = np.random.default_rng(seed).choice(len(images), min(n_images, len(images)), replace=False)
    pil = [Image.fromarray(images[i]) for i in pick]
    y = torch.as_tensor(labels[pick])
    weak, crops = weak_transform(SIZE), CropViews(N_CROPS, ALPHA, BETA, SIZE)
    with torch.no_grad():
        weak_views = torch.stack([weak(im) for im in pil])
        dka_views = dka_pass(model, weak_views, torch.stack([crops(im) for im in pil]), GAMMA)
        cls, composite, dka = dka_views.output.tokens.cls_embed.float(), dka_views.composite, dka_views.labels
        # one centred square per image, the bird whole in it: how well the tower reads a zoomed view
        centred = {
            side: F.normalize(
                model.encode_cls(torch.stack([weak(centre_square(im, side)) for im in pil])).float(), dim=-1
            )
            for side in CENTRED_SIDES
        }
        w_star, w_llm = model.heads.w_star_hat(), model.heads.w_llm

    unit_cls, unit_llm = F.normalize(cls, dim=-1), F.normalize(w_llm, dim=-1)
    return y, {
        "dynamic": dka.dynamic_labels,
        "static": dka.static_labels,
        "dka": dka.labels,
        "crops_w_star": (composite @ w_star.T).argmax(1),
        "cls_w_llm": (unit_cls @ unit_llm.T).argmax(1),
        "cls_w_star": (unit_cls @ w_star.T).argmax(1),
        **{f"centred_{side}_w_star": (e @ w_star.T).argmax(1) for side, e in centred.items()},
    }


def preference_line(checkpoint: str, y: torch.Tensor, predictions: dict[str, torch.Tensor]) -> str:
    """Spearman, over the classes, between what the checkpoint's shift adds to each class's `[FG]` logit and how
    many more of the sample's labels each class gets than it has images, for DKA and each half."""
    from scipy.stats import spearmanr

    from microclip.checkpoint import load_model
    from microclip.drift import shift_class_logits

    part = shift_class_logits(load_model(checkpoint))
    if part is None:
        raise SystemExit(f"{checkpoint}: no recorded shift (python -m microclip drift --ckpt-path ... --write)")
    preference = part.detach().numpy()
    truth = np.bincount(y.numpy(), minlength=len(preference))
    rows = []
    for key in ("dka", "dynamic", "static"):
        excess = np.bincount(predictions[key].numpy(), minlength=len(preference)) - truth
        result = spearmanr(preference, excess)
        rows.append(f"{key} {result.statistic:+.2f} (p {result.pvalue:.2f})")
    return f"{checkpoint}: the shift's class preference vs each class's excess of labels, Spearman: " + ", ".join(rows)


def centre_square(image: Image.Image, side: float) -> Image.Image:
    """The centred square of side `side` × the shorter edge."""
    edge = max(1, int(round(side * min(image.size))))
    return TF.center_crop(image, [edge, edge])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--data_root", default="data")
    p.add_argument("--images", type=int, default=480)
    p.add_argument("--per_class", action="store_true", help="each species' labels: which ones DKA's halves lose")
    wording = p.add_mutually_exclusive_group()
    wording.add_argument("--descriptions", help="a CuPL-format descriptions file to use instead of the world's")
    wording.add_argument("--named", action="store_true", help="the world's descriptions, every line naming its class")
    p.add_argument("--preference", metavar="CKPT", help="an adapted checkpoint of the one folder, with its shift")
    args = p.parse_args(argv)
    if args.preference and len(args.folders) != 1:
        p.error("--preference reads one base folder: the one its checkpoint was adapted from")
    torch.set_num_threads(1)
    texts = load_descriptions(args.descriptions, CLASS_NAMES) if args.descriptions else None
    if args.named:
        texts = descriptions(named=True)
    for folder in args.folders:
        y, predictions = label_predictions(folder, args.data_root, args.images, class_descriptions=texts)
        print(f"{folder}: " + ", ".join(f"{k} {v:.1f}%" for k, v in accuracies(y, predictions).items()))
        if args.per_class:
            print("\n".join(per_class(y, predictions, ("dynamic", "static", "dka"))))
        if args.preference:
            print(preference_line(args.preference, y, predictions))


if __name__ == "__main__":
    sys.exit(main())
