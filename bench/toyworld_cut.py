"""Where a toy base tower's normalised cut falls and what SOAP's [FG] makes of it, for docs/toyworld.md.

    python bench/toyworld_cut.py /work/runs/ssl-w1 [FOLDER ...] [--data_root data] [--json out.json]

Per open_clip `local-dir:` folder, on the toy test split: the cut's foreground as microCLIP computes it
(`MicroCLIP(...).mask`, the same call as `bench/toyworld.py: ncut_rows`) scored by pixel precision on the
bird and IoU with the bird's patches (those at least a quarter bird); the share of linked patch pairs of
the cut's graph (raw value-path tokens, dot product above the cut's tau) within the bird, within the
background and across; and zero-shot accuracy by names and by descriptions (`evaluate_exported`).

With `--pools`, also each branch's accuracy at the start of adaptation (W* from the descriptions, SOAP at
identity, as `train.py --eval` reports it) and [FG] with other queries and pools on the same tokens (the
bird's own patches as the query, their plain mean; one bird or background patch alone): is the cut or the
tokens the limit of [FG]?
It also reports SOAP's query at identity (the cut's mean token): what the foreground is made of (shares of its
patches on a part, the body, the background), each kind's mean cosine to the query, and how often the patch
with the largest logit is on a part (the pointing of SOAP's map at the start). The raw tokens all have nearly
the same length here (a LayerNorm's output), so the logit ranks patches by that cosine. And how much of the energy of
what SOAP pools (its value map's input, over the test images) is in the images' common mean: the part of that input
a change of the value map turns into one shift of every image's [FG] (docs/toyworld.md, rounds 23 and 25).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from microclip.constants import NCUT_TAU
from microclip.files import atomic_write_text
from microclip.model import MicroCLIP, ModelOutput
from microclip.scoring import (
    cut_on_object,
    foreground_makeup,
    patch_coverage,
    patch_hits,
    patch_kinds,
    percent,
    pointing_hits,
)
from microclip.soap import soap_query
from microclip.toyworld.dataset import ensure_split, load_split_arrays, load_split_masks
from microclip.toyworld.objectness import shared_share
from microclip.toyworld.pretrain import PretrainConfig, evaluate_exported
from microclip.toyworld.text import TEMPLATES, descriptions
from microclip.toyworld.world import CLASS_NAMES


def link_shares(linked: np.ndarray, on_object: np.ndarray) -> dict[str, float]:
    """Mean over images of the share of linked pairs (self-pairs included) within the object, within the
    background and across; images without such pairs are left out of that mean."""
    within, background, across = [], [], []
    for a, obj in zip(linked, on_object):
        if obj.sum() > 1:
            within.append(a[obj][:, obj].mean())
        if (~obj).sum() > 0:
            background.append(a[~obj][:, ~obj].mean())
        if 0 < obj.sum() < len(obj):
            across.append(a[obj][:, ~obj].mean())
    return {"bird": float(np.mean(within)), "background": float(np.mean(background)), "across": float(np.mean(across))}


def pool_report(model: MicroCLIP, out: ModelOutput, labels: np.ndarray, on_bird: np.ndarray) -> dict[str, float]:
    """Top-1 % of each branch at the start, and of [FG] from other queries and pools (see the module doc)."""
    y = torch.as_tensor(labels)
    bird = torch.as_tensor(on_bird)
    w_star = model.heads.w_star_hat()

    def top1(embeds: torch.Tensor) -> float:  # (B, E) un-normalised joint-space embeddings
        return percent(((torch.nn.functional.normalize(embeds, dim=-1) @ w_star.T).argmax(-1) == y).numpy())

    def patch_top1(tokens: torch.Tensor, where: torch.Tensor) -> float:  # each patch alone, over `where`
        hits = (model.backbone.project(tokens) @ w_star.T).argmax(-1) == y[:, None]
        return 100.0 * float(hits[where].float().mean())

    with torch.no_grad():
        tokens = out.tokens.patches
        bird_mean = soap_query(tokens, bird, out.tokens.cls_token)  # SOAP's query with the bird as the mask
        return {
            "start_fused": percent((out.logits.fused.argmax(-1) == y).numpy()),
            "start_cls": percent((out.logits.cls.argmax(-1) == y).numpy()),
            "start_fg": percent((out.logits.fg.argmax(-1) == y).numpy()),
            "fg_bird_query": top1(model.backbone.project(model.soap(tokens, bird_mean).pooled)),
            "bird_mean": top1(model.backbone.project(bird_mean)),
            "one_bird_patch": patch_top1(tokens, bird),
            "one_background_patch": patch_top1(tokens, ~bird),
        }


def query_report(out: ModelOutput, on_part: np.ndarray, on_bird: np.ndarray) -> dict:
    """SOAP's query against the patches it pools (see the module doc), from one forward pass."""
    tokens, foreground = out.tokens.patches, out.mask.cpu().numpy()
    cosine = torch.nn.functional.cosine_similarity(tokens, out.soap.query[:, None], dim=-1).numpy()
    logits = out.soap.logits[:, :-1].numpy()  # the patches' logits; the null token's is left out
    return {
        "makeup": {k: percent(v) for k, v in foreground_makeup(foreground, on_part, on_bird).items()},
        "cosine_to_query": {
            k: float(cosine[m & foreground].mean())
            for k, m in patch_kinds(on_part, on_bird).items()
            if (m & foreground).any()
        },
        "top_patch_on_part": percent(pointing_hits(logits, on_part)),
        "length_spread": float(np.linalg.norm(tokens.numpy(), axis=-1).std()),
        "pooled_shared_share": float(shared_share(out.soap.pooled.double())),
    }


def cut_report(folder: str, data_root: str, pools: bool = False) -> dict:
    ensure_split(data_root, "test", 50, 0)
    images, labels = load_split_arrays(data_root, "test")
    masks = load_split_masks(data_root, "test")
    model, _, _ = MicroCLIP.build(f"local-dir:{folder}", None, CLASS_NAMES, TEMPLATES, descriptions())
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        out = model(x)  # one pass: the cut, the tokens its graph links and SOAP's query and logits
    foreground = out.mask.cpu().numpy()
    patches = out.tokens.patches.double()
    linked = (patches @ patches.transpose(1, 2) > NCUT_TAU).numpy()
    coverage = patch_coverage(masks.bird_mask, model.backbone.grid)
    scores = cut_on_object(foreground, coverage)
    metrics = evaluate_exported(Path(folder), PretrainConfig(out=folder, data_root=data_root))
    extra = {}
    if pools:
        on_part, on_bird = patch_hits(masks.part_mask, model.backbone.grid), coverage > 0
        extra = {
            "pools": pool_report(model, out, labels, coverage.reshape(len(x), -1) >= 0.25),
            "soap_query": query_report(out, on_part, on_bird),
        }
    return extra | {
        "pixel_precision": percent(scores["pixel_precision"]),
        "iou": percent(scores["iou"]),
        "foreground_patches": float(foreground.sum(axis=1).mean()),
        "links": link_shares(linked, coverage >= 0.25),
        "zero_shot_names": 100.0 * metrics["zero_shot_names"],
        "zero_shot_descriptions": 100.0 * metrics["zero_shot_descriptions"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--data_root", default="data")
    p.add_argument("--json", default=None)
    p.add_argument("--pools", action="store_true", help="also [FG] at the start and with other queries and pools")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report = {folder: cut_report(folder, args.data_root, args.pools) for folder in args.folders}
    for folder, row in report.items():
        links = row["links"]
        print(
            f"{folder}: cut pixels on bird {row['pixel_precision']:.1f}% IoU {row['iou']:.1f}% "
            f"({row['foreground_patches']:.1f} patches), links bird/background/across "
            f"{links['bird']:.2f}/{links['background']:.2f}/{links['across']:.2f}, "
            f"names {row['zero_shot_names']:.1f}% descriptions {row['zero_shot_descriptions']:.1f}%"
        )
        if "pools" in row:
            print("  " + ", ".join(f"{k} {v:.1f}%" for k, v in row["pools"].items()))
            query = row["soap_query"]
            print(
                "  SOAP's query at identity: foreground "
                + " / ".join(f"{k} {v:.1f}%" for k, v in query["makeup"].items())
                + "; cosine to the query "
                + " / ".join(f"{k} {v:.3f}" for k, v in query["cosine_to_query"].items())
                + f"; top patch on a part {query['top_patch_on_part']:.1f}%"
                + f" (token lengths' sd {query['length_spread']:.3f}); the images' pooled inputs share "
                + f"{query['pooled_shared_share']:.1%} of their energy in their mean"
            )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
