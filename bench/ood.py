"""Does the out-of-world flag catch pictures outside the toy world and leave toy birds alone? Fitted, then measured.

In-world: the toy world's images (``data/toybirds``; generated on a clean run). The token statistics of
``microclip.world_check`` are fitted on every 2nd training image, each threshold is the 99.7% quantile on the other
training images (held out), and the flag is then measured on the 800 test images and the six bundled toy-bird
examples, which it has never seen. Out-of-world: every picture we have locally that is not a toy bird: the example
photos and scenes in ``assets/examples`` (a person, a flower, a sunset bird: the ⚠ examples), scikit-image's bundled
photographs (an astronaut, a cat, coffee, a rocket, a motorcycle, a camera man, coins, a clock, the moon, ...),
scikit-learn's two and matplotlib's sample images, each also as four corner crops, a centre crop and a mirror image;
twelve more procedural scenes (the example generator with other seeds); noise, flat colours, gradients, checkerboards.

The world is fitted once per base weights, on the base model's visual tower, and stored under the weights' sha256
with the toy pretraining's caption vocabulary; every bundled model on those weights is then measured with it.

    python bench/ood.py                                                  # tables only (~3 min on 2 CPU cores)
    python bench/ood.py --json bench/results/ood.json --write assets/toybirds/world.json   # what the app reads
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from microclip.files import atomic_write_json
from microclip.machine import cpu_name
from microclip.resources import PROJECT_ROOT as ROOT
from microclip.toyworld.dataset import ensure_split
from microclip.toyworld.text import caption_vocabulary
from microclip.world_check import World, fit_world, save_worlds, token_summaries, verdicts
from studio.registry import default_registry

EXAMPLES = ROOT / "assets" / "examples"
QUANTILE = 0.997  # each threshold: this quantile of held-out toy images (well under 1% of toy images flagged)
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "clock",
    "moon",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "colorwheel",
)


def photo_sources() -> dict[str, Image.Image]:
    """Local photographs (no download): the example photos/scenes and the sample images libraries ship."""
    sources = {
        p.name: Image.open(p).convert("RGB")
        for p in sorted(EXAMPLES.iterdir())
        if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and not p.name.startswith("toybird-")
    }
    try:  # scikit-image's wheel bundles these photographs (a test dependency: requirements-dev.txt)
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            sources[f"skimage-{name}"] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        sources["skimage-motorcycle"] = Image.fromarray(skimage.data.stereo_motorcycle()[0]).convert("RGB")
    except ImportError:
        print("scikit-image is not installed: its photographs are left out (pip install -r requirements-dev.txt)")
    try:
        from sklearn.datasets import load_sample_images

        for name, array in zip(("sklearn-china", "sklearn-flower"), load_sample_images().images):
            sources[name] = Image.fromarray(array)
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        for name in ("Minduka_Present_Blue_Pack.png", "logo2.png"):
            sources[f"mpl-{name}"] = Image.open(cbook.get_sample_data(name, asfileobj=False)).convert("RGB")
    except (ImportError, OSError, ValueError):
        pass
    return sources


def variants(image: Image.Image) -> list[Image.Image]:
    """The image, its four corner crops (60 %), its centre crop (60 %) and its mirror image."""
    width, height = image.size
    w, h = int(width * 0.6), int(height * 0.6)
    boxes = [
        (0, 0, w, h),
        (width - w, 0, width, h),
        (0, height - h, w, height),
        (width - w, height - h, width, height),
        ((width - w) // 2, (height - h) // 2, (width + w) // 2, (height + h) // 2),
    ]
    return [image, *(image.crop(box) for box in boxes), image.transpose(Image.FLIP_LEFT_RIGHT)]


def synthetic(rng: np.random.Generator, size: int = 128) -> dict[str, Image.Image]:
    """Noise, flat colours, gradients, checkerboards and procedural scenes with other seeds."""
    from microclip.toyworld.example_pictures import flower, sunset_bird

    out: dict[str, Image.Image] = {}
    for seed in range(3, 9):
        out[f"scene-sunset-bird-{seed}"] = Image.fromarray(sunset_bird(seed=seed))
        out[f"scene-flower-{seed}"] = Image.fromarray(flower(seed=seed))
    out["noise-uniform"] = Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
    smooth = cv2.resize(rng.random((6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    out["noise-smooth"] = Image.fromarray((np.clip(smooth, 0, 1) * 255).astype(np.uint8))
    for name, colour in (("flat-white", 255), ("flat-grey", 128), ("flat-black", 0)):
        out[name] = Image.new("RGB", (size, size), (colour,) * 3)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    out["gradient"] = Image.fromarray(np.stack([np.broadcast_to(ramp, (size, size))] * 3, -1).astype(np.uint8))
    yy, xx = np.mgrid[:size, :size]
    for cells in (4, 16):
        board = (((yy // (size // cells)) + (xx // (size // cells))) % 2 * 255).astype(np.uint8)
        out[f"checkerboard-{cells}"] = Image.fromarray(np.stack([board] * 3, -1))
    return out


def toy_images(root: Path, split: str) -> list[Image.Image]:
    folder = ensure_split(root, split)  # a clean run generates the split (the same images train.py uses)
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*/*.png"))]


def outside_pictures() -> dict[str, Image.Image]:
    named: dict[str, Image.Image] = {}
    for name, image in photo_sources().items():
        for index, variant in enumerate(variants(image)):
            named[f"{name}#{index}"] = variant
    named.update(synthetic(np.random.default_rng(0)))
    return named


def group(name: str) -> str:
    """Which kind of out-of-world picture a name is, for the table."""
    if name.split("#")[0] in {p.name for p in EXAMPLES.iterdir()}:
        return "⚠ examples (+ crops)"
    if name.startswith("skimage-"):
        return "scikit-image photos"
    if name.startswith(("sklearn-", "mpl-")):
        return "scikit-learn / matplotlib images"
    if name.startswith("scene-"):
        return "procedural scenes"
    return "noise, flat, gradients, checkerboards"


def summary(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.0, 0.01, 0.5, 0.99, 1.0])
    return dict(zip(("min", "p1", "median", "p99", "max"), map(float, q)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT / "data"), help="folder holding toybirds/{train,test} (generated there when missing)"
    )
    parser.add_argument("--json", default=None, help="write every number to this file")
    parser.add_argument(
        "--write", default=None, help="add the fitted worlds to this file (the app reads assets/toybirds/world.json)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    registry = default_registry("cpu")  # the app's bundled models, built exactly as the app builds them

    train = toy_images(Path(args.data), "train")
    inside = toy_images(Path(args.data), "test")
    examples = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("toybird-*.png"))]
    outside = outside_pictures()
    print(f"\n## Out-of-world flag ({cpu_name()}; torch {torch.__version__}, 1 thread)\n")
    print(
        f"Fitted on {len(train[::2])} toy training images, thresholds at the {QUANTILE:.1%} quantile of "
        f"{len(train[1::2])} others; measured on {len(inside)} toy test images, {len(examples)} toy examples and "
        f"{len(outside)} out-of-world pictures.\n"
    )

    loaded = [registry.get(name) for name in registry.names()]
    worlds: dict[str, World] = {}
    for entry in sorted(loaded, key=lambda m: m.meta is not None):  # base models first: the world is theirs
        sha = entry.model.base.weights_sha256 if entry.model.base else None
        if sha and sha not in worlds:
            worlds[sha] = fit_world(
                entry.model, train[::2], train[1::2], sha, entry.model.base.describe(), QUANTILE, caption_vocabulary()
            )
    results = {
        entry.name: measure(entry, worlds, inside, examples, outside)
        for entry in loaded
        if entry.model.base and entry.model.base.weights_sha256 in worlds
    }
    if args.json:
        atomic_write_json(
            args.json, {"cpu": cpu_name(), "torch": torch.__version__, "quantile": QUANTILE, "models": results}
        )
    if args.write:  # only the worlds of the weights measured now: a re-trained base leaves no stale entry
        save_worlds(worlds.values(), args.write, keep_others=False)
        print(f"wrote {len(worlds)} world(s) to {args.write}")


def measure(
    entry,
    worlds: dict[str, World],
    inside: list[Image.Image],
    examples: list[Image.Image],
    outside: dict[str, Image.Image],
) -> dict:
    """The flag of one model against its base weights' world: toy test, toy examples, each out-of-world group."""
    world = worlds[entry.model.base.weights_sha256]
    judged = {
        kind: verdicts(world, token_summaries(entry.model, images))
        for kind, images in (("inside", inside), ("examples", examples), ("outside", list(outside.values())))
    }
    flags = {kind: np.array([v.outside for v in found]) for kind, found in judged.items()}
    values = {kind: np.array([v.signals["token_distance"] for v in found]) for kind, found in judged.items()}
    names = list(outside)
    groups: dict[str, list[bool]] = {}
    for name, flagged in zip(names, flags["outside"]):
        groups.setdefault(group(name), []).append(bool(flagged))
    warned = {
        n[:-2]: bool(f) for n, f in zip(names, flags["outside"]) if n.endswith("#0") and (EXAMPLES / n[:-2]).is_file()
    }
    rule = "; ".join(f"{r.signal} > {r.above:.4g}" for r in world.rules)
    print(
        f"### {entry.name}\n\nRule: {rule}. token_distance: toy test median {np.median(values['inside']):.3g} "
        f"(max {values['inside'].max():.3g}), out-of-world median {np.median(values['outside']):.3g} "
        f"(min {values['outside'].min():.3g}).\n"
    )
    print("| pictures | n | flagged |\n|---|---:|---:|")
    print(f"| toy test images | {len(inside)} | {flags['inside'].mean():.1%} |")
    print(f"| toy-bird examples | {len(examples)} | {int(flags['examples'].sum())} |")
    for kind, found in groups.items():
        print(f"| {kind} | {len(found)} | {np.mean(found):.1%} |")
    print(f"| **all out-of-world** | {len(names)} | **{flags['outside'].mean():.1%}** |")
    missed = [n for n, f in zip(names, flags["outside"]) if not f]
    said = ", ".join(f"{n}: {'yes' if v else 'no'}" for n, v in warned.items())
    print(f"\n⚠ examples flagged: {said}. Missed: {', '.join(missed) or 'none'}\n")
    return {
        "rules": [r.__dict__ for r in world.rules],
        "n_inside": len(inside),
        "n_outside": len(names),
        "caught": float(flags["outside"].mean()),
        "false_flags": float(flags["inside"].mean()),
        "toy_examples_flagged": int(flags["examples"].sum()),
        "warning_examples_flagged": warned,
        "groups": {k: {"n": len(v), "caught": float(np.mean(v))} for k, v in groups.items()},
        "token_distance": {k: summary(v) for k, v in values.items()},
        "missed": missed,
        "outside_distance": dict(zip(names, map(float, values["outside"]))),
    }


if __name__ == "__main__":
    main()
