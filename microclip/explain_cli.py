"""``python -m microclip explain IMAGE --ckpt-path P``: print what the model saw and why."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from microclip.cli import DEFAULT_CHECKPOINT, USER_ERRORS, setup_logging
from microclip.data.images import load_image
from microclip.engine import select_device

log = logging.getLogger("microclip")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m microclip explain", description=__doc__)
    parser.add_argument("image", help="an image file")
    parser.add_argument("--ckpt-path", "--ckpt_path", dest="ckpt_path", default=str(DEFAULT_CHECKPOINT),
                        help="adapted checkpoint (.safetensors); default: the bundled toy-world model")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--fusion_ratio", type=float, default=None, help="override ρ (weight of [CLS])")
    parser.add_argument("--json", default=None, help="write the full Explanation as JSON here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        from microclip.checkpoint import load_model
        from microclip.explain import explain_image

        model = load_model(args.ckpt_path, select_device(args.device))
        explanation = explain_image(model, load_image(args.image), ratio=args.fusion_ratio)
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2
    print(f"{Path(args.image).name} under {Path(args.ckpt_path).name} (ρ = {explanation.ratio:g}):")
    for branch, label in (("fused", "TokenFusion"), ("cls", "[CLS] only"), ("fg", "[FG] only")):
        ranked = ", ".join(f"{name} {prob:.1%}" for name, prob in explanation.top_k(branch, args.top_k))
        print(f"  {label:12s} {ranked}")
    order = explanation.logits_fused.argsort()[::-1][: max(2, min(args.top_k, 3))]
    print("  contributions to the fused logit ([CLS] part + [FG] part):")
    for index in order:
        cls_part, fg_part = explanation.contributions(int(index))
        print(f"    {explanation.classes[index]:30s} {cls_part:8.3f} + {fg_part:8.3f} = {cls_part + fg_part:8.3f}")
    print(f"  SOAP null-token weight {explanation.null_weight:.3f}; NCut foreground "
          f"{int(explanation.ncut_mask.sum())} of {explanation.ncut_mask.size} patches")
    if args.json:
        Path(args.json).write_text(explanation.to_json())
        print(f"  full explanation written to {args.json}")
    return 0
