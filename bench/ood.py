"""Which numbers tell the toy model's own world from pictures outside it? Measured, then thresholds picked.

In-world: the 800 toy-world test images (``data/toybirds/test``) and the six bundled toy-bird examples.
Out-of-world: every picture we have locally that is not a toy bird: the example photos and scenes in
``assets/examples`` (a person, a flower, a sunset bird), scikit-learn's two sample photos, matplotlib's
sample images, each also as four corner crops, a centre crop and a mirror image; twelve more procedural
scenes (the example generator with other seeds); and noise, flat colours, gradients and checkerboards.

For each signal of ``ui.world.WorldSignals`` (the fused / [CLS] / [FG] logits, the probability margin, NCut's
coverage, the null weight, branch disagreement, and ``score_distance``: the Mahalanobis distance of the image's
class-score pattern to that of the toy *training* images, fitted here on every 2nd training image) the script
prints both distributions and the separation: the share of out-of-world images caught at a threshold that
flags at most 1% of the toy test images. Each of the app's bundled models (adapted, base zero-shot) is
measured on its own: the rules written with ``--write`` (to ``assets/toybirds/world.json``, keyed by the
model's name in the app, with the fitted statistics) are chosen greedily: the best signal, then each next one that
catches at least ``--min-gain`` (5%) more pictures while all of them together flag at most
``--max-false-flags`` (2%) of the toy test images.

    python bench/ood.py                                   # tables for each bundled model (~2 min on 2 CPU cores)
    python bench/ood.py --json bench/results/ood.json --write assets/toybirds/world.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from microclip.data.transforms import test_transform
from microclip.explain import explain_batch
from microclip.machine import cpu_name
from microclip.resources import PROJECT_ROOT as ROOT
from ui.registry import default_registry
from ui.world import WorldSignals, WorldStats, score_pattern

EXAMPLES = ROOT / "assets" / "examples"
FALSE_FLAG_BUDGET = 0.01  # at most this share of toy test images may be flagged
SIGNALS = ("score_distance", "top_cosine", "cls_cosine", "fg_cosine", "margin", "logit_gap", "ncut_coverage",
           "null_weight")
WHY = {"score_distance": "its pattern of class scores is unlike a toy bird's",
       "top_cosine": "no class matches it as well as a toy bird matches its class",
       "cls_cosine": "the global [CLS] token matches no class as well as on toy birds",
       "fg_cosine": "the fine-grained [FG] token matches no class as well as on toy birds",
       "margin": "no class wins with a clear margin",
       "logit_gap": "the top two classes are nearly tied",
       "ncut_coverage": "NCut's foreground covers unusually much or little of the image",
       "null_weight": "SOAP's null token took an unusual share"}


def photo_sources() -> dict[str, Image.Image]:
    """Local photographs (no download): the example photos/scenes and the sample images libraries ship."""
    sources = {p.name: Image.open(p).convert("RGB") for p in sorted(EXAMPLES.iterdir())
               if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and not p.name.startswith("toybird-")}
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
    boxes = [(0, 0, w, h), (width - w, 0, width, h), (0, height - h, w, height), (width - w, height - h, width, height),
             ((width - w) // 2, (height - h) // 2, (width + w) // 2, (height + h) // 2)]
    return [image, *(image.crop(box) for box in boxes), image.transpose(Image.FLIP_LEFT_RIGHT)]


def synthetic(rng: np.random.Generator, size: int = 128) -> dict[str, Image.Image]:
    """Noise, flat colours, gradients, checkerboards and procedural scenes with other seeds."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_generator", EXAMPLES / "generate.py")
    generate = importlib.util.module_from_spec(spec)  # assets/examples/generate.py: a script, not a module
    spec.loader.exec_module(generate)
    flower, sunset_bird = generate.flower, generate.sunset_bird

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


def explanations_of(model, images: list[Image.Image], batch: int = 64) -> list:
    transform = test_transform(model.backbone.image_size, crop="center")
    out = []
    for start in range(0, len(images), batch):
        out += explain_batch(model, torch.stack([transform(image) for image in images[start:start + batch]]))
    return out


def signals_of(model, images: list[Image.Image], stats: WorldStats) -> list[WorldSignals]:
    return [WorldSignals.of(e, stats) for e in explanations_of(model, images)]


def toy_images(root: Path, step: int = 1) -> list[Image.Image]:
    paths = sorted(root.glob("*/*.png"))[::step]
    if not paths:
        raise SystemExit(f"no toy test images under {root}: generate them with `python train.py --dataset toybirds` "
                         "or microclip.toyworld.dataset.ensure_split")
    return [Image.open(p).convert("RGB") for p in paths]


def separation(inside: np.ndarray, outside: np.ndarray, budget: float = FALSE_FLAG_BUDGET) -> dict:
    """Best one-sided rule for one signal: flag below the ``budget`` quantile of in-world values, or above
    the ``1 - budget`` quantile, whichever catches more out-of-world images."""
    low, high = float(np.quantile(inside, budget)), float(np.quantile(inside, 1.0 - budget))
    caught_low, caught_high = float(np.mean(outside < low)), float(np.mean(outside > high))
    if caught_low >= caught_high:
        return {"side": "below", "threshold": low, "caught": caught_low, "false_flags": float(np.mean(inside < low))}
    return {"side": "above", "threshold": high, "caught": caught_high, "false_flags": float(np.mean(inside > high))}


def summary(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0])
    return dict(zip(("min", "p1", "p5", "median", "p95", "p99", "max"), map(float, q)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "toybirds"), help="toy world with train/ and test/")
    parser.add_argument("--json", default=None, help="write every number to this file")
    parser.add_argument("--write", default=None, help="write the chosen rules here (the app reads "
                                                      "assets/toybirds/world.json)")
    parser.add_argument("--max-false-flags", type=float, default=2 * FALSE_FLAG_BUDGET,
                        help="rules are added while all of them together flag at most this share of toy test images")
    parser.add_argument("--min-gain", type=float, default=0.05,
                        help="a further rule must catch at least this share of the outside pictures more")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    registry = default_registry("cpu")  # the app's bundled models, built exactly as the app builds them

    train_images = toy_images(Path(args.data) / "train", step=2)
    inside_images = toy_images(Path(args.data) / "test")
    examples = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("toybird-*.png"))]
    outside_named: dict[str, Image.Image] = {}
    for name, image in photo_sources().items():
        for index, variant in enumerate(variants(image)):
            outside_named[f"{name}#{index}"] = variant
    outside_named.update(synthetic(np.random.default_rng(0)))
    print(f"\n## Out-of-world signals ({cpu_name()}; torch {torch.__version__}, 1 thread)\n")
    print(f"In-world: {len(inside_images)} toy test images (+ {len(examples)} toy examples checked separately); the "
          f"score pattern is fitted on {len(train_images)} toy training images. Out-of-world: {len(outside_named)} "
          f"pictures ({len(photo_sources())} photos × 7 variants, {len(outside_named) - 7 * len(photo_sources())} "
          "procedural/synthetic).")
    results, shipped = {}, {}
    for model_name in registry.names():
        model = registry.get(model_name).model
        results[model_name], shipped[model_name] = measure(model_name, model, train_images, inside_images, examples,
                                                           outside_named, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__, "models": results},
                                              indent=2))
    if args.write:
        Path(args.write).write_text(json.dumps({"measured_by": "bench/ood.py", "false_flag_budget": FALSE_FLAG_BUDGET,
                                                "models": shipped}) + "\n")


def measure(model_name: str, model, train_images: list[Image.Image], inside_images: list[Image.Image],
            examples: list[Image.Image], outside_named: dict[str, Image.Image],
            args: argparse.Namespace) -> tuple[dict, dict]:
    """Every signal's separation for one model, the rules chosen, and what the app ships (rules + stats)."""
    # The typical score pattern is fitted on training images (every 2nd), never on the test images it judges.
    stats = WorldStats.fit(np.stack([score_pattern(e) for e in explanations_of(model, train_images)]))
    example_photos = [n for n in outside_named if n.endswith("#0") and (EXAMPLES / n[:-2]).is_file()]
    inside = signals_of(model, inside_images, stats)
    toy_examples = signals_of(model, examples, stats)
    outside = dict(zip(outside_named, signals_of(model, list(outside_named.values()), stats)))
    table = {}
    for key in SIGNALS:
        a = np.array([getattr(s, key) for s in inside])
        b = np.array([getattr(s, key) for s in outside.values()])
        table[key] = {"inside": summary(a), "outside": summary(b), **separation(a, b)}
    disagree_in = float(np.mean([s.disagree for s in inside]))
    disagree_out = float(np.mean([s.disagree for s in outside.values()]))

    print(f"\n### {model_name}\n")
    print("| signal | toy test: p1 / median / p99 | outside: min / median / max | rule at ≤1% false flags | "
          "outside caught | toy test flagged |")
    print("|---|---|---|---|---:|---:|")
    for key, row in table.items():
        i, o = row["inside"], row["outside"]
        rule = f"{row['side']} {row['threshold']:.4g}"
        print(f"| {key} | {i['p1']:.4g} / {i['median']:.4g} / {i['p99']:.4g} | {o['min']:.4g} / {o['median']:.4g} / "
              f"{o['max']:.4g} | {rule} | {row['caught']:.0%} | {row['false_flags']:.1%} |")
    print(f"| disagree ([CLS] ≠ [FG]) | {disagree_in:.1%} of toy test | {disagree_out:.1%} of outside | — | — | — |")

    def fires(c: dict, s: WorldSignals) -> bool:
        return (getattr(s, c["signal"]) < c["below"]) if "below" in c else (getattr(s, c["signal"]) > c["above"])

    def flagged(s: WorldSignals, rules: list[dict] | None = None) -> bool:
        return any(fires(c, s) for c in (checks if rules is None else rules))

    # Greedy: the best signal first, then each next one if it catches more while all together stay in budget.
    checks: list[dict] = []
    for key in sorted(table, key=lambda k: -table[k]["caught"]):
        rule = {"signal": key, table[key]["side"]: float(f"{table[key]['threshold']:.4g}"), "why": WHY[key]}
        trial = [*checks, rule]
        gain = sum(flagged(s, trial) for s in outside.values()) - sum(flagged(s, checks) for s in outside.values())
        in_budget = np.mean([flagged(s, trial) for s in inside]) <= args.max_false_flags
        if gain >= max(1, args.min_gain * len(outside)) and in_budget:
            checks = trial

    caught = [n for n, s in outside.items() if flagged(s)]
    missed = [n for n, s in outside.items() if not flagged(s)]
    false_flags = float(np.mean([flagged(s) for s in inside]))
    examples_flagged = [flagged(s) for s in toy_examples]
    photos_flagged = {n: flagged(outside[n]) for n in example_photos}
    print(f"\nRules kept (greedy, all together within {args.max_false_flags:.0%} false flags): "
          + "; ".join(f"{c['signal']} {'<' if 'below' in c else '>'} {c.get('below', c.get('above'))}"
                      for c in checks))
    print(f"Together: {len(caught)}/{len(outside)} out-of-world pictures flagged ({len(caught) / len(outside):.0%}), "
          f"{false_flags:.1%} of toy test images flagged, toy examples flagged: {sum(examples_flagged)}/"
          f"{len(examples_flagged)}, example photos flagged: {sum(photos_flagged.values())}/{len(photos_flagged)} "
          f"({', '.join(n[:-2] + (': yes' if v else ': no') for n, v in photos_flagged.items())}).")
    print(f"Missed: {', '.join(missed) or 'none'}\n")

    result = {"n_inside": len(inside), "n_outside": len(outside), "signals": table,
              "disagree": {"inside": disagree_in, "outside": disagree_out}, "checks": checks,
              "combined": {"caught": len(caught) / len(outside), "false_flags": false_flags, "missed": missed,
                           "toy_examples_flagged": int(sum(examples_flagged)),
                           "example_photos_flagged": photos_flagged},
              "outside_signals": {n: s.as_dict() for n, s in outside.items()}}
    return result, {"checks": checks, "stats": stats.to_dict()}


if __name__ == "__main__":
    main()
