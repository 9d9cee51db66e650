"""SOAP's weights against SOAP's terms: which reading of SOAP is faithful to `[FG]` (docs/toyworld.md, round 41)?

`[FG]` is f = normalize(P·Σ_j α_j v_j), so each patch token's term in `[FG]`'s score along a direction d is
100·α_j·(P·v_j)·d / ‖P·h‖ (``microclip.explainers.soap_terms``). Three readings of it beside the weights α:

- ``soap_contribution``: d = ŵ*_c, the term in the class's `[FG]` logit (the explainer of that name);
- ``soap_contrast``: d = ŵ*_c − Σ_k p_k ŵ*_k with p `[FG]`'s probabilities: the term in log p_c, to first order;
- ``soap_value_norm``: α_j·‖P·v_j‖, the weights times the values' lengths (Kobayashi et al. 2020), class-agnostic.

Each is scored as the bench scores SOAP and its peers (class = the true class): pointing and mass on the parts over
the test split, and ROAD deletion (grad-cam's) on the first N test images of each species, with SOAP's and every
reading's `[FG]` gap to ``soap_rollout`` image by image.

    PYTHONPATH=. python bench/soap_terms.py [--adapted CKPT] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from bench.toyworld import ADAPTED, POINTING_PEERS, _split_arrays, _split_masks, peer_maps, score_maps
from microclip.checkpoint import load_model
from microclip.explain import soap_fg_parts
from microclip.faithfulness import deletion_drops
from microclip.files import atomic_write_text
from microclip.machine import cpu_name
from microclip.model import MicroCLIP
from microclip.resources import PROJECT_ROOT as ROOT
from microclip.scoring import patch_coverage, patch_hits
from microclip.toyworld.dataset import first_per_class
from microclip.uncertainty import paired_gap

MAPS = ("soap", "soap_contribution", "soap_rollout", "rollout")


@torch.no_grad()
def extra_readings(model: MicroCLIP, images: np.ndarray, labels: np.ndarray, batch: int = 100) -> dict[str, np.ndarray]:
    """The two report-only readings of SOAP's terms, (N, h*w) each, from one forward pass a batch."""
    contrast, norm = [], []
    w_hat = model.heads.w_star_hat()
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float() / 255.0
        y = torch.as_tensor(labels[i : i + batch], dtype=torch.long)
        out = model(x)
        parts = soap_fg_parts(model, out.soap)[:, :-1]  # (B, N, E): each patch's share of 100·f
        direction = w_hat[y] - out.logits.fg.softmax(-1) @ w_hat  # ŵ*_c minus the probability-weighted mean
        contrast.append((parts @ direction.unsqueeze(-1)).squeeze(-1))
        norm.append(parts.norm(dim=-1))  # 100·α_j·‖P·v_j‖ / ‖P·h‖
    return {"soap_contrast": torch.cat(contrast).numpy(), "soap_value_norm": torch.cat(norm).numpy()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--adapted", default=str(ADAPTED))
    parser.add_argument("--faithfulness_per_class", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    assert set(MAPS) <= set(POINTING_PEERS)
    model = load_model(args.adapted).eval()
    images, labels = _split_arrays(args.data_root, "test")
    masks = _split_masks(args.data_root, "test")
    grid = model.backbone.grid
    maps, _ = peer_maps(model, images, labels, MAPS, timing=False)
    maps.update(extra_readings(model, images, labels))
    pointing, inside = score_maps(maps, patch_hits(masks.part_mask, grid), patch_coverage(masks.part_mask, grid))
    rows = first_per_class(labels, args.faithfulness_per_class)
    x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float() / 255.0
    drops = {name: {b: 100.0 * v for b, v in deletion_drops(model, x, m[rows]).items()} for name, m in maps.items()}
    report = {
        "adapted": args.adapted,
        "pointing": pointing,
        "mass_inside": inside,
        "deletion": {name: {b: float(v.mean()) for b, v in row.items()} for name, row in drops.items()},
        "fg_vs_soap_rollout": {
            name: paired_gap(row["fg"], drops["soap_rollout"]["fg"]).to_dict()
            for name, row in drops.items()
            if name != "soap_rollout"
        },
        "deletion_images": int(len(rows)),
        "cpu": cpu_name(),
    }
    print(f"{args.adapted} ({report['cpu']}; deletion on {len(rows)} images)")
    print("| map | pointing % | mass on parts % | deletion fused | `[CLS]` | `[FG]` | `[FG]` minus soap_rollout |")
    print("|---|---|---|---|---|---|---|")
    for name, row in report["deletion"].items():
        gap = report["fg_vs_soap_rollout"].get(name)
        shown = f"{gap['gap']:+.1f} ({gap['low']:+.1f} to {gap['high']:+.1f})" if gap else "–"
        print(
            f"| {name} | {pointing[name]:.1f} | {inside[name]:.1f} | {row['fused']:.1f} | {row['cls']:.1f} | "
            f"{row['fg']:.1f} | {shown} |"
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
