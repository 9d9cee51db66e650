"""``python -m microclip explain IMAGE | DIR | ZIP``: what the model saw and why.

One image: top-k per branch, the [CLS]/[FG] contributions, the null weight and the NCut count; with ``--epochs``,
its answers and SOAP's top patch at the start and after every epoch the checkpoint's run saved.
A folder or a zip of images (``--out BUNDLE.zip``): every image explained into a bundle, as the
app's Batch tab writes it (:mod:`microclip.batch`), and a one-line summary per image.
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

from microclip.cli import DEFAULT_CHECKPOINT, USER_ERRORS, setup_logging
from microclip.cliargs import add_adapted_model, new_parser
from microclip.engine import select_device
from microclip.files import atomic_write_text
from microclip.formats import BRANCH_LABELS, small_number

log = logging.getLogger("microclip")
OVERLAY_SIZE = 224  # the overlays are drawn larger than a toy model's 64 px input, to be readable


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = new_parser(
        parser,
        prog="python -m microclip explain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="an image file, a folder of images (searched recursively) or a zip")
    add_adapted_model(parser, str(DEFAULT_CHECKPOINT))
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--json", default=None, help="one image: write the full Explanation as JSON here")
    parser.add_argument(
        "--epochs",
        action="store_true",
        help="one image: explain it at every epoch saved beside the checkpoint (train.py --keep_epochs)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="the bundle to write, as the Batch tab's (a folder or zip: by default microclip-batch-<name>.zip in the "
        "working directory; one image: only with this flag)",
    )
    parser.add_argument("--max_images", type=int, default=None, help="folder or zip: explain at most this many")
    parser.add_argument("--no_overlays", action="store_true", help="bundle without overlay PNGs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """``explain`` with parsed arguments."""
    setup_logging(args.verbose)
    try:
        from microclip.checkpoint import load_model
        from microclip.data.names import read_classnames
        from microclip.model import with_own_classes
        from microclip.world_check import unseen_words_flag

        source = Path(args.image)
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such file or folder")
        if args.epochs:
            if args.classname:
                raise ValueError("--epochs explains the run's own classes; leave out --classname")
            return _explain_epochs(source, args)
        model = load_model(args.ckpt_path, select_device(args.device))
        mode = model.meta.mode
        if args.fusion_ratio is not None:
            model.config.fusion_ratio = args.fusion_ratio
        own = read_classnames(args.classname) if args.classname else None
        if own:  # as the app's typed class names: the adapted visual tower, heads from the names alone
            model = with_own_classes(model, own, model.meta.templates)
        if source.is_dir() or zipfile.is_zipfile(source) or args.out:
            unseen = unseen_words_flag(model, model.classes) if own else ""
            if unseen:
                print(unseen.replace("**", ""))
            if source.is_file() and not zipfile.is_zipfile(source):  # one image with --out: a bundle of one
                return _explain_alone_into_bundle(model, source, args)
            return _explain_many(model, source, args)
        return _explain_one(model, source, args, bool(own), mode)
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2


def _explain_one(model, source: Path, args: argparse.Namespace, own_classes: bool, mode: str | None) -> int:
    from microclip.data.images import load_image
    from microclip.explain import explain_image
    from microclip.world_check import check, page_flags

    picture = load_image(source)
    explanation = explain_image(model, picture)
    print(f"{source.name} under {Path(args.ckpt_path).name} (ρ = {explanation.ratio:g}):")
    # as the app says it: one class, words never read, a baseline, a picture outside the world
    flags = page_flags(model, model.classes, own_classes, mode, check(model, picture))
    for flag in filter(None, flags.split("\n\n")):
        print("  " + flag.replace("**", ""))
    for branch, label in BRANCH_LABELS.items():
        ranked = ", ".join(f"{name} {prob:.1%}" for name, prob in explanation.top_k(branch, args.top_k))
        print(f"  {label:12s} {ranked}")
    shifted = explanation.logits_fg_unshifted is not None
    if shifted:  # the shift self-training gave every image's [FG], recorded in the checkpoint
        ranked = ", ".join(f"{name} {prob:.1%}" for name, prob in explanation.top_k("fg_unshifted", args.top_k))
        print(f"  [FG] without its shared shift: {ranked}")
    order = explanation.logits_fused.argsort()[::-1][: max(2, min(args.top_k, 3))]
    print(
        "  contributions to the fused logit ([CLS] part + [FG] part"
        + (", of which the shared shift)" if shifted else ")")
        + ":"
    )
    for index in order:
        cls_part, fg_part = explanation.contributions(int(index))
        line = f"    {explanation.classes[index]:30s} {cls_part:8.3f} + {fg_part:8.3f} = {cls_part + fg_part:8.3f}"
        print(line + (f"   (shift {explanation.shift_part(int(index)):+.3f})" if shifted else ""))
    print(
        f"  SOAP null-token weight {small_number(explanation.null_weight)}; NCut foreground "
        f"{int(explanation.ncut_mask.sum())} of {explanation.ncut_mask.size} patches"
    )
    if args.json:
        atomic_write_text(args.json, explanation.to_json())
        print(f"  full explanation written to {args.json}")
    return 0


def _explain_epochs(source: Path, args: argparse.Namespace) -> int:
    """``--epochs``: one line per saved epoch: each branch's answer, SOAP's top patch and its weight."""
    import json

    from microclip.checkpoint import CheckpointError, epochs_beside
    from microclip.data.images import load_image
    from microclip.timeline import Timeline, epoch_name
    from microclip.walkthrough import top_patch

    if source.is_dir() or zipfile.is_zipfile(source):
        raise ValueError(f"{source}: --epochs explains one image, not a folder or a zip")
    files = epochs_beside(args.ckpt_path)
    if not files:
        raise CheckpointError(
            f"{args.ckpt_path}: no saved epochs beside it (train.py --keep_epochs writes "
            "RUN/epochs/epoch-N.safetensors beside RUN/checkpoint.safetensors)"
        )
    views = Timeline(files, select_device(args.device)).explain(load_image(source), args.fusion_ratio)
    print(f"{source.name} under the {len(views)} saved epochs of {Path(args.ckpt_path).name}:")
    labels = dict(BRANCH_LABELS)
    if any(v.explanation.logits_fg_unshifted is not None for v in views):  # the epochs recorded [FG]'s shift
        labels["fg_unshifted"] = f"{BRANCH_LABELS['fg']}, no shift"
    print(f"  {'epoch':8s} " + " ".join(f"{label:28s}" for label in labels.values()) + " SOAP's top patch")
    rows = []
    for view in views:
        e = view.explanation
        known = [b for b in labels if b != "fg_unshifted" or e.logits_fg_unshifted is not None]  # none at the start
        answers = {branch: e.top_k(branch, 1)[0] for branch in known}
        top = top_patch(e.soap_weights)
        shown = (answers.get(branch) for branch in labels)
        cells = " ".join(f"{'–' if a is None else f'{a[0]} {a[1]:.0%}':28s}" for a in shown)
        print(f"  {epoch_name(view.epoch):8s} {cells} {top}, weight {e.soap_weights[top]:.3f}")
        rows.append(
            {
                "epoch": view.epoch,
                "answers": {b: {"class": name, "probability": prob} for b, (name, prob) in answers.items()},
                "soap_top_patch": list(top),
                "soap_top_weight": float(e.soap_weights[top]),
                "null_weight": float(e.null_weight),
                "logged": view.logged,
            }
        )
    if args.json:
        atomic_write_text(args.json, json.dumps({"image": source.name, "epochs": rows}, indent=2) + "\n")
        print(f"  epochs written to {args.json}")
    return 0


def _explain_alone_into_bundle(model, source: Path, args: argparse.Namespace) -> int:
    """``explain IMAGE --out BUNDLE.zip``: the Batch tab's bundle of that one picture (its overlay, the CSV and the
    JSON), as for a folder holding only it."""
    import shutil
    import tempfile

    from microclip.data.images import load_image

    load_image(source)  # one picture named: a file that is not one is an error, not a bundle of none
    with tempfile.TemporaryDirectory(prefix="microclip-one-") as folder:
        shutil.copy2(source, Path(folder) / source.name)
        return _explain_many(model, Path(folder), args, given=source)


def _explain_many(model, source: Path, args: argparse.Namespace, given: Path | None = None) -> int:
    """A folder or zip into the Batch tab's bundle; ``given``: what the user named, if not ``source`` itself."""
    import tempfile

    from microclip import batch

    render = None if args.no_overlays else _renderer()
    with tempfile.TemporaryDirectory(prefix="microclip-explain-") as work:
        result = batch.run(
            model,
            source,
            args.out or f"microclip-batch-{source.stem}.zip",
            work=work,
            cap=args.max_images,
            picture=render[0] if render else None,
            draw_overlay=render[1] if render else None,
            checkpoint=str(args.ckpt_path),
            overlay=None if render is None else "SOAP weights",
            **({"input": str(given)} if given is not None else {}),  # settings.json names the user's file
        )
    for item in result.items:
        top = item.explanation.top_k("fused", 1)[0]
        print(f"{item.name}: {top[0]} ({top[1]:.1%}){'  ⚠ looks outside the model’s world' if item.outside else ''}")
    for name, reason in result.skipped:
        print(f"skipped {name}: {reason}")
    print(
        f"{len(result.items)} explained, {len(result.skipped)} skipped{'; ' + result.note if result.note else ''}; "
        f"bundle {result.bundle}"
    )
    return 0


def _renderer():
    """(picture, overlay) drawers from ``viz`` (the rendering layer) when it is installed beside the library."""
    try:
        from viz.overlay import display_crop, overlay_map
    except ImportError:
        log.warning("viz is not installed: the bundle has no overlay PNGs")
        return None
    return (lambda image: display_crop(image, OVERLAY_SIZE)), overlay_map
