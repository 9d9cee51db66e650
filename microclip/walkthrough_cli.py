"""``python -m microclip walkthrough IMAGE [IMAGE ...]``: each image through the model, step by step, as one HTML file.

The page is the app's Walkthrough tab (``viz.steps``), written as a file that opens in any browser with no server and
no network and steps through as the tab does (``viz.steps.standalone_page``): a handout, made for a whole set of
pictures at once. The heads step weighs each class's descriptions when the checkpoint records them; on a known toy
image every step also says what is true of it, and the page ends with each part the bird shows erased in turn
(``microclip.toyworld.truth``); a picture that looks outside the model's world is flagged at the top, as in the
app (``microclip.world_check``). ``--classname FILE`` walks the pictures through among your own classes, as the tab's
typed class names do.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from microclip.cli import DEFAULT_CHECKPOINT, USER_ERRORS, setup_logging
from microclip.cliargs import add_adapted_model, new_parser
from microclip.engine import select_device
from microclip.files import atomic_write_text

log = logging.getLogger("microclip")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = new_parser(
        parser,
        prog="python -m microclip walkthrough",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="one or more image files")
    add_adapted_model(parser, str(DEFAULT_CHECKPOINT))
    parser.add_argument(
        "--out",
        default=".",
        help="a folder for the pages (default: here), each microclip-walkthrough-<image>.html; "
        "for one image, a path ending in .html names the file",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def page_path(out: str, image: Path, n_images: int) -> Path:
    """Where one image's page goes: ``out`` itself for a single image when it ends in .html, else
    ``out/microclip-walkthrough-<image stem>.html`` (the stem in characters every file system keeps)."""
    from viz.steps import handout_name

    target = Path(out)
    if n_images == 1 and target.suffix.lower() == ".html":
        return target
    return target / handout_name(image.name)


def run(args: argparse.Namespace) -> int:
    """``walkthrough`` with parsed arguments: every image is checked before the model loads."""
    setup_logging(args.verbose)
    try:
        images = [Path(image) for image in args.images]
        missing = [str(image) for image in images if not image.is_file()]
        if missing:
            raise FileNotFoundError(f"no such image file: {', '.join(missing)}")
        return _write_pages(images, args)
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2


def _write_pages(images: list[Path], args: argparse.Namespace) -> int:
    from microclip.checkpoint import load_model
    from microclip.data.images import load_image
    from microclip.data.names import read_classnames
    from microclip.model import base_text_encoder, with_own_classes
    from microclip.sentence_cache import CachedText
    from microclip.toyworld.truth import erase_each_part, toy_truth
    from microclip.walkthrough import walkthrough
    from microclip.world_check import check, page_flags
    from viz.overlay import display_crop
    from viz.steps import PICTURE_SIZE, erase_appendix, render_walkthrough, standalone_page

    device = select_device(args.device)
    model = load_model(args.ckpt_path, device)
    meta = model.meta
    own = read_classnames(args.classname) if args.classname else None
    if own:  # as the app's typed class names: heads from the names alone, no descriptions to weigh
        model = with_own_classes(model, own, meta.templates)
    descriptions = {} if own else meta.descriptions
    # the heads step weighs each description with the base model's text tower
    # (cached: with every class's sentences rebuilding W*'s start, each page would encode them all again)
    encoder = CachedText(base_text_encoder(meta.base, device)) if descriptions else None
    name = Path(args.ckpt_path).name
    for image in images:
        picture = load_image(image)  # a corrupt or huge file is a clear error before anything is written
        walk = walkthrough(
            model,
            picture,
            args.fusion_ratio,
            descriptions=descriptions,
            text_encoder=encoder,
            templates=meta.templates,
            truth=toy_truth(picture, tuple(model.backbone.grid)),
        )
        # as the app: a one-class label set, words the model never read, a CLS-only baseline and a picture outside
        # the world say so on the page
        verdict = check(model, picture)
        flag = page_flags(model, model.classes, bool(own), meta.mode, verdict)
        page = render_walkthrough(walk, display_crop(picture, PICTURE_SIZE), flag=flag)
        path = page_path(args.out, image, len(images))
        erased = erase_appendix(erase_each_part(model, picture, args.fusion_ratio), model.classes)
        atomic_write_text(path, standalone_page(page, f"microCLIP walkthrough: {image.name} under {name}", erased))
        top = walk.prediction.top["fused"][0]
        outside = " (looks outside the model's world)" if verdict.outside else ""
        print(f"{image.name}: {walk.prediction.prediction} ({top.probability:.1%}){outside} -> {path}")
    return 0


__all__ = ["build_parser", "main", "page_path", "run"]
