"""Speed benchmarks for microCLIP: the cost of explaining and of training, against plain CLIP passes.

Seven benchmarks, all on random weights and random images (no data loading, no network):

* ``explain``: one :func:`microclip.explain.explain_batch` (MicroCLIP forward with NCut + SOAP +
  heads + every explanation map, copied to NumPy) against open_clip's ``encode_image`` on the
  same visual tower, at batch 1 and 32, in fp32 and bf16. Target: explain / encode_image <= 1.10.
* ``train``: one training step (``microclip.engine.train_step`` + backward + AdamW step, microclip
  mode, K crops) against the passes it cannot avoid, timed one by one: the weak forward (no grad),
  the K crops' ``encode_cls`` (no grad) and the strong forward + backward. Target: step / passes <= 1.10.
* ``views``: one of Explore's "what if" views of a picture (SOAP's three queries: three explanations that differ
  only after the backbone, :func:`studio.queries.query_views`), which share one backbone pass, against one
  ``explain_image`` call and against the three explanations each with its own pass. Target: view / explain <= 1.5
  (three separate passes cost about 3).
* ``redescribe``: Explore's "what if the descriptions said something else?" of a picture (three explanations that
  differ only in their heads, :func:`microclip.explain.explain_sharing_the_tower`) against one ``explain_image`` call
  and against the three each with its own pass. Target: redescribe / explain <= 1.5.
* ``label``: Explore's "how would adaptation label this picture?" (the weak view and K = 8 crops through the tower,
  :func:`microclip.label_view.label_picture`) against one ``explain_image`` call. Target: label / explain <= K + 2.
* ``walkthrough``: the walkthrough of one picture (:func:`microclip.walkthrough.walkthrough`, with 102 classes of 5
  cached descriptions each, step 8 rebuilding every class's W* at its start) against one ``explain_image`` call and
  against the same walkthrough without the start. Target: walkthrough / explain <= 1.25.
* ``download``: Explore's *Download this explanation* of one explained picture (three maps drawn and the photo,
  encoded as PNGs, with every number as JSON, in a zip) against the ``explain_image`` call that made the explanation.
  Target: download / explain <= 10 (a button, pressed once per picture at most).
* ``--epoch``: wall time and peak memory of one epoch of ``--steps`` steps (the GPU reference does a
  Flowers epoch in 72 s with 5.35 GB).

Times are medians over ``--repeats`` runs after warmup, interleaved so that a slow spell on a
shared machine hits every column alike. Nothing here asserts a time.

    python bench/speed.py                      # CPU/GPU table, fp32 + bf16
    python bench/speed.py --quick              # smaller and shorter
    python bench/speed.py --device cuda --json out/speed.json
    python bench/speed.py --device cuda --epoch --amp none
    python bench/speed.py --threads 1 --clock cpu  # steadier ratios on a shared CPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from microclip.backbone import Backbone, create_clip, get_tokenizer
from microclip.engine import OptimizerStep, autocast, select_device, train_step
from microclip.explain import explain_batch
from microclip.files import atomic_write_text
from microclip.heads import Heads, TextEncoder
from microclip.losses import FairnessRegulariser
from microclip.model import MicroCLIP
from microclip.recipe import AmpMode, Recipe
from microclip.soap import foreground_mask

N_CLASSES = 102  # Flowers-102
TARGET_RATIO = 1.10
REFERENCE_EPOCH_S = 72.0  # the reference's Flowers epoch on its GPU
REFERENCE_EPOCH_GB = 5.35


# ------------------------------------------------------------------ timing


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock: Callable[[], float] = time.perf_counter  # set by main(): --clock


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, synchronised on both ends."""
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


MAX_ROUNDS = 100


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int, budget_s: float = 0.0
) -> dict[str, list[float]]:
    """Warm every function up, then time them in turn, round after round; seconds per call.

    At least ``repeats`` rounds; with ``budget_s``, more rounds while the timed rounds so far
    took less than that many (wall-clock) seconds, at most ``MAX_ROUNDS``: cheap measurements
    get more rounds and so a steadier median.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (rounds < MAX_ROUNDS and time.perf_counter() - start < budget_s):
        for name, fn in fns.items():
            times[name].append(time_call(fn, device))
        rounds += 1
    return times


def median_ms(values: list[float]) -> float:
    """Median of times in seconds, in milliseconds."""
    return 1000.0 * statistics.median(values)


@contextlib.contextmanager
def peak_memory(device: torch.device, sink: dict) -> Iterator[None]:
    """Record ``torch.cuda.max_memory_allocated`` (GiB) over the block into ``sink['peak_gib']``."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield
    torch.cuda.synchronize(device)
    sink["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30


# ------------------------------------------------------------------ models and data


@dataclass
class Setup:
    """A random-weight open_clip model and the MicroCLIP built on its visual tower (shared modules)."""

    clip: nn.Module
    model: MicroCLIP
    device: torch.device
    image_size: int
    text: TextEncoder | None = None  # the text tower of ``clip`` (the walkthrough's heads step reads it)


def build(model_name: str, device: torch.device, seed: int = 0) -> Setup:
    """open_clip ``model_name`` with seeded random weights, random normalised heads (C=102)."""
    clip, spec = create_clip(model_name, "none", seed=seed)
    backbone = Backbone(clip.visual)
    generator = torch.Generator().manual_seed(seed)
    embed = backbone.embed_dim
    w_llm = F.normalize(torch.randn(N_CLASSES, embed, generator=generator), dim=-1)
    w_star = F.normalize(torch.randn(N_CLASSES, embed, generator=generator), dim=-1)
    heads = Heads([f"class_{i}" for i in range(N_CLASSES)], w_llm, w_star)
    model = MicroCLIP(backbone, heads).to(device)
    clip.to(device)
    text = TextEncoder(clip, get_tokenizer(spec), device=device)
    return Setup(clip=clip, model=model, device=device, image_size=backbone.image_size, text=text)


def random_images(*shape: int, device: torch.device, seed: int) -> torch.Tensor:
    """Uniform [0, 1] images, as the loaders deliver them (not normalised)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator).to(device)


# ------------------------------------------------------------------ explain vs encode_image


@dataclass
class Row:
    """One line of the table."""

    bench: str
    precision: str
    batch: int
    times_ms: dict[str, float]
    ratio: float
    ratio_name: str
    extra: dict = field(default_factory=dict)
    target: float = TARGET_RATIO

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "bench": self.bench,
            "precision": self.precision,
            "batch": self.batch,
            "times_ms": self.times_ms,
            self.ratio_name: self.ratio,
            "target": self.target,
            **self.extra,
        }


def precision_context(device: torch.device, precision: str, method: str):
    """The autocast context of a precision (a null context for fp32 and for bf16 by weight cast)."""
    if precision == "bf16" and method == "autocast":
        return autocast(device, "bf16")
    return contextlib.nullcontext()


def bf16_copy(setup: Setup) -> Setup:
    """A copy of the models with every weight cast by ``.to(torch.bfloat16)`` (sharing kept)."""
    clip, model = copy.deepcopy((setup.clip, setup.model))
    return Setup(
        clip=clip.to(torch.bfloat16), model=model.to(torch.bfloat16), device=setup.device, image_size=setup.image_size
    )


def bench_explain(
    setup: Setup, precision: str, method: str, batch: int, warmup: int, repeats: int, budget_s: float = 0.0
) -> Row:
    """explain_batch vs clip.encode_image (normalised pixels) at one batch size and precision.

    ``setup`` must already hold bf16 weights when ``precision`` is bf16 and ``method`` is cast.
    """
    model, clip, device = setup.model, setup.clip, setup.device
    images = random_images(batch, 3, setup.image_size, setup.image_size, device=device, seed=batch)
    if precision == "bf16" and method == "cast":
        images = images.to(torch.bfloat16)
    with torch.no_grad():
        normalized = model.backbone.normalize_pixels(images)
    model.eval()
    clip.eval()

    def run_explain() -> object:
        with torch.no_grad(), precision_context(device, precision, method):
            return explain_batch(model, images)

    def run_encode() -> object:
        with torch.no_grad(), precision_context(device, precision, method):
            return clip.encode_image(normalized)

    sink: dict = {}
    with peak_memory(device, sink):
        times = interleaved(
            {"explain": run_explain, "encode_image": run_encode}, device, max(warmup, 1), repeats, budget_s
        )
    repeats = len(times["explain"])
    ratios = [e / c for e, c in zip(times["explain"], times["encode_image"], strict=True)]
    times_ms = {name: median_ms(values) for name, values in times.items()}
    times_ms |= ncut_diagnostics(setup, images, precision, method, warmup, min(repeats, 10))
    extra = {
        "ratio_of_medians": times_ms["explain"] / times_ms["encode_image"],
        "repeats": repeats,
        "bf16_method": method if precision == "bf16" else None,
        **sink,
    }
    label = precision if precision == "fp32" else f"{precision} {method}"
    return Row("explain", label, batch, times_ms, statistics.median(ratios), "explain/encode_image", extra)


VIEWS_TARGET = 1.5


def random_picture(setup: Setup, seed: int):
    """A random RGB picture at the model's input size, as an upload arrives (PIL)."""
    from PIL import Image

    pixels = random_images(setup.image_size, setup.image_size, 3, device=torch.device("cpu"), seed=seed)
    return Image.fromarray((255 * pixels.numpy()).astype("uint8"))


def shared_pass_row(
    bench: str,
    shared: Callable[[], object],
    separate: Callable[[], object],
    explain: Callable[[], object],
    setup: Setup,
    warmup: int,
    repeats: int,
    budget_s: float,
    target: float,
) -> Row:
    """One of Explore's what-if views, whose explanations share one backbone pass (``shared``), against one
    explanation (``explain``) and against the same explanations each with its own pass (``separate``)."""
    functions = {bench: shared, "separate": separate, "explain": explain}
    row = explain_ratio_row(bench, functions, setup, warmup, repeats, budget_s, target)
    row.extra["separate/explain"] = row.times_ms["separate"] / row.times_ms["explain"]
    return row


def explain_ratio_row(
    bench: str,
    functions: dict[str, Callable[[], object]],
    setup: Setup,
    warmup: int,
    repeats: int,
    budget_s: float,
    target: float,
    extra: dict | None = None,
) -> Row:
    """``functions[bench]`` against ``functions["explain"]`` (one explanation), all timed interleaved: the row of
    their median times and the median of the per-round ratios."""
    times = interleaved(functions, setup.device, max(warmup, 1), repeats, budget_s)
    ratios = [v / e for v, e in zip(times[bench], times["explain"], strict=True)]
    times_ms = {name: median_ms(values) for name, values in times.items()}
    extra = {**(extra or {}), "repeats": len(times[bench])}
    return Row(bench, "fp32", 1, times_ms, statistics.median(ratios), f"{bench}/explain", extra, target)


def bench_views(setup: Setup, warmup: int, repeats: int, budget_s: float = 0.0) -> Row:
    """Explore's three "what if SOAP asked another question?" panels of one picture (one shared backbone pass)
    against one explanation, and against the same three explanations each with its own pass (what the panels cost
    before they shared it)."""
    from microclip.explain import explain_image
    from microclip.soap import DETERMINISTIC_QUERIES
    from studio.queries import query_views

    model = setup.model.eval()
    picture = random_picture(setup, seed=7)
    asked = [model.asking(query=q) for q in DETERMINISTIC_QUERIES]
    return shared_pass_row(
        "views",
        lambda: query_views(model, picture),
        lambda: [explain_image(view, picture) for view in asked],
        lambda: explain_image(model, picture),
        setup,
        warmup,
        repeats,
        budget_s,
        VIEWS_TARGET,
    )


REDESCRIBE_TARGET = 1.5


def bench_redescribe(setup: Setup, warmup: int, repeats: int, budget_s: float = 0.0) -> Row:
    """Explore's "what if the descriptions said something else?" of one picture: three explanations that differ only
    in their heads (the model, W* from its descriptions, W* from the typed ones), which share one backbone pass
    (:func:`microclip.explain.explain_sharing_the_tower`), against one explanation and against three each with its
    own pass. The heads are built before the clock starts, as the registry keeps them between clicks."""
    from microclip.explain import explain_image, explain_sharing_the_tower

    model = setup.model.eval()
    generator = torch.Generator().manual_seed(11)
    models = [model]
    for _ in range(2):
        w = F.normalize(torch.randn(model.heads.w_star.shape, generator=generator), dim=-1).to(setup.device)
        heads = Heads(model.classes, model.heads.w_llm.detach(), w)
        models.append(MicroCLIP(model.backbone, heads, model.config).to(setup.device).eval())
    picture = random_picture(setup, seed=13)
    return shared_pass_row(
        "redescribe",
        lambda: explain_sharing_the_tower(models, picture),
        lambda: [explain_image(m, picture) for m in models],
        lambda: explain_image(model, picture),
        setup,
        warmup,
        repeats,
        budget_s,
        REDESCRIBE_TARGET,
    )


WALK_SENTENCES = 5  # descriptions a class in the walkthrough row (102 classes: 612 sentences with the templates)
WALK_TARGET = 1.25


@contextlib.contextmanager
def walkthrough_start(on: bool) -> Iterator[None]:
    """The walkthrough with or without step 8's W* at its start (its sentence cap set to 0 turns it off)."""
    import microclip.walkthrough as walk_module

    kept = walk_module.MAX_START_SENTENCES
    walk_module.MAX_START_SENTENCES = kept if on else 0
    try:
        yield
    finally:
        walk_module.MAX_START_SENTENCES = kept


def bench_walkthrough(setup: Setup, warmup: int, repeats: int, budget_s: float = 0.0) -> Row:
    """The walkthrough of one picture (every step's numbers; step 8 rebuilds every class's W* at its start from the
    sentence cache, as the app keeps it between pictures) against one explanation, and against the same walkthrough
    without the start."""
    from microclip.explain import explain_image
    from microclip.sentence_cache import CachedText
    from microclip.walkthrough import walkthrough

    model = setup.model.eval()
    encoder = CachedText(setup.text)
    descriptions = {
        name: [f"a photo of a {name}, which has feature number {j}." for j in range(WALK_SENTENCES)]
        for name in model.classes
    }
    picture = random_picture(setup, seed=19)
    templates = ("a photo of a {}.",)

    def walk(start: bool) -> object:
        with walkthrough_start(start):
            return walkthrough(model, picture, descriptions=descriptions, text_encoder=encoder, templates=templates)

    functions = {
        "walkthrough": lambda: walk(True),
        "without_start": lambda: walk(False),
        "explain": lambda: explain_image(model, picture),
    }
    extra = {"classes": len(model.classes), "sentences": len(model.classes) * (WALK_SENTENCES + len(templates))}
    return explain_ratio_row("walkthrough", functions, setup, warmup, repeats, budget_s, WALK_TARGET, extra)


LABEL_CROPS = 8  # the reference's K


def bench_label(setup: Setup, warmup: int, repeats: int, budget_s: float = 0.0) -> Row:
    """Explore's "how would adaptation label this picture?" (:func:`microclip.label_view.label_picture`: the weak
    view and K = 8 crops through the tower, as a training step labels one image) against one explanation of the
    same picture. The target allows the K + 1 images it reads and one more: what batching the crops saves is the
    row's news."""
    from microclip.explain import explain_image
    from microclip.label_view import label_picture

    model = setup.model.eval()
    picture = random_picture(setup, seed=17)
    functions = {
        "label": lambda: label_picture(model, picture, n_crops=LABEL_CROPS),
        "explain": lambda: explain_image(model, picture),
    }
    extra = {"crops": LABEL_CROPS}
    return explain_ratio_row("label", functions, setup, warmup, repeats, budget_s, LABEL_CROPS + 2.0, extra)


DOWNLOAD_TARGET = 10.0  # a click on a button, not on every picture: within ten forward passes


def bench_download(setup: Setup, warmup: int, repeats: int, budget_s: float = 0.0) -> Row:
    """Explore's *Download this explanation* of one explained picture (the photo and three maps drawn and encoded
    as PNGs, the summary and every number as JSON, in a zip: :func:`studio.export.write_explanation_zip`) against
    one ``explain_image`` call that made the explanation."""
    import tempfile

    from PIL import Image

    from microclip.explain import explain_image
    from studio.explore import PHOTO_SIZE, ExploreSession
    from studio.export import write_explanation_zip
    from viz.html import jpeg_uri
    from viz.overlay import display_crop

    model = setup.model.eval()
    pixels = random_images(setup.image_size, setup.image_size, 3, device=torch.device("cpu"), seed=7)
    picture = Image.fromarray((255 * pixels.numpy()).astype("uint8"))
    session = ExploreSession(explain_image(model, picture), jpeg_uri(display_crop(picture, PHOTO_SIZE)), "random", {})
    display = (0.5, "viridis", 0.0, 100.0, 0.0, "soap", False)  # Explore's defaults
    with tempfile.TemporaryDirectory(prefix="microclip-bench-download-") as folder:

        def download() -> object:
            return write_explanation_zip(session, display, Path(folder))

        def explain() -> object:
            return explain_image(model, picture)

        functions = {"download": download, "explain": explain}
        extra = {"photo_px": PHOTO_SIZE}
        return explain_ratio_row("download", functions, setup, warmup, repeats, budget_s, DOWNLOAD_TARGET, extra)


def ncut_diagnostics(
    setup: Setup, images: torch.Tensor, precision: str, method: str, warmup: int, repeats: int
) -> dict[str, float]:
    """Median ms of the NCut mask alone; off CPU also of its batched ``eigh``, on the device and on CPU.

    Timed after (not among) the explain/encode_image rounds, so the ratio does not include them.
    """
    model, device = setup.model, setup.device
    with torch.no_grad(), precision_context(device, precision, method):
        patches = model.backbone(images).patches
    batch, n_patches = patches.shape[:2]

    def ncut() -> object:
        with torch.no_grad(), precision_context(device, precision, method):
            return foreground_mask(patches)

    fns: dict[str, Callable[[], object]] = {"ncut": ncut}
    if device.type != "cpu":
        generator = torch.Generator().manual_seed(0)
        matrix = torch.randn(batch, n_patches, n_patches, generator=generator)
        matrix = (matrix @ matrix.mT / n_patches).to(device)
        fns["eigh"] = lambda: torch.linalg.eigh(matrix)
        fns["eigh_on_cpu"] = lambda: [t.to(device) for t in torch.linalg.eigh(matrix.cpu())]
    times = interleaved(fns, device, warmup, repeats)
    return {name: median_ms(values) for name, values in times.items()}


# ------------------------------------------------------------------ train step vs its passes


@dataclass
class TrainParts:
    """Everything one training step needs, plus a step closure that mirrors ``engine.fit``."""

    model: MicroCLIP
    config: Recipe
    optimizer: OptimizerStep
    fairness: FairnessRegulariser
    views: torch.Tensor  # (B, 2 + K, 3, S, S)
    targets: torch.Tensor  # (B,)
    device: torch.device

    def step(self) -> float:
        """``train_step`` + the optimiser step ``fit`` takes (the same :class:`OptimizerStep`)."""
        out = train_step(self.model, self.model, self.views, self.targets, self.config, self.fairness, self.device)
        self.optimizer(out.loss)
        return out.loss.item()

    def timed_functions(self) -> dict[str, Callable[[], object]]:
        """The step and, as separate calls, the three passes it cannot avoid."""
        model, device, amp = self.model, self.device, self.config.amp
        # The passes read contiguous copies: any copy the step makes counts as step overhead.
        weak = self.views[:, 0].contiguous()
        strong = self.views[:, 1].contiguous()
        crops = self.views[:, 2:].flatten(0, 1).contiguous()
        labels = self.targets

        def weak_pass() -> object:
            with torch.no_grad(), autocast(device, amp):
                return model(weak)

        def crops_pass() -> object:
            with torch.no_grad(), autocast(device, amp):
                return model.encode_cls(crops)

        def strong_pass() -> object:
            model.zero_grad(set_to_none=True)
            with autocast(device, amp):
                logits = model(strong).logits.fused.float()
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            return loss

        return {"step": self.step, "weak": weak_pass, "crops": crops_pass, "strong": strong_pass}


def train_parts(setup: Setup, batch: int, n_crops: int, amp: AmpMode, seed: int = 0) -> TrainParts:
    """A fresh optimiser step on the trainable set and random views in [0, 1]; targets are random labels."""
    model, device = setup.model, setup.device
    model.train()
    config = Recipe(batch_size=batch, n_crops=n_crops, mode="microclip", amp=amp)
    size = setup.image_size
    views = random_images(batch, 2 + n_crops, 3, size, size, device=device, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(N_CLASSES, (batch,), generator=generator).to(device)
    return TrainParts(
        model, config, OptimizerStep(model, config, device), FairnessRegulariser(), views, targets, device
    )


def bench_train(
    setup: Setup, amp: AmpMode, batch: int, n_crops: int, warmup: int, repeats: int, small_warmup: bool = False
) -> Row:
    """One full training step vs weak forward + crops forward + strong forward/backward, timed apart.

    ``small_warmup`` warms every function up once at batch 2 with 2 crops instead of ``warmup``
    full-size rounds (on CPU a full-size round costs as much as a timed one).
    """
    if small_warmup:
        for fn in train_parts(setup, 2, 2, amp, seed=1).timed_functions().values():
            fn()
        warmup = 0
    parts = train_parts(setup, batch, n_crops, amp)
    sink: dict = {}
    with peak_memory(setup.device, sink):
        times = interleaved(parts.timed_functions(), setup.device, warmup, repeats)
    parts.model.zero_grad(set_to_none=True)
    parts.model.eval()
    passes = [w + c + s for w, c, s in zip(times["weak"], times["crops"], times["strong"], strict=True)]
    ratios = [step / total for step, total in zip(times["step"], passes, strict=True)]
    times_ms = {name: median_ms(values) for name, values in times.items()}
    times_ms["passes"] = median_ms(passes)
    extra = {"ratio_of_medians": times_ms["step"] / times_ms["passes"], "repeats": repeats, "n_crops": n_crops, **sink}
    precision = "fp32" if amp == "none" else f"{amp} autocast"
    return Row("train", precision, batch, times_ms, statistics.median(ratios), "step/passes", extra)


# ------------------------------------------------------------------ one epoch


def bench_epoch(setup: Setup, amp: AmpMode, batch: int, n_crops: int, steps: int, warmup: int) -> dict:
    """Wall time of ``steps`` training steps on one fixed random batch, and the peak CUDA memory."""
    parts = train_parts(setup, batch, n_crops, amp)
    device = setup.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        parts.step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        parts.step()
    synchronize(device)
    seconds = time.perf_counter() - start
    result = {
        "bench": "epoch",
        "amp": amp,
        "batch": batch,
        "n_crops": n_crops,
        "steps": steps,
        "warmup": warmup,
        "epoch_s": seconds,
        "step_ms": 1000.0 * seconds / steps,
        "reference_epoch_s": REFERENCE_EPOCH_S,
        "reference_peak_gb": REFERENCE_EPOCH_GB,
    }
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    setup.model.eval()
    return result


def epoch_table(result: dict) -> str:
    """The epoch timing next to the reference, as a markdown table."""
    peak = f"{result['peak_gb']:.2f} GB" if "peak_gb" in result else "n/a (not CUDA)"
    precision = "fp32" if result["amp"] == "none" else f"{result['amp']} autocast"
    return "\n".join(
        [
            "| epoch | precision | batch | K | steps | time | per step | peak memory |",
            "|---|---|---|---|---|---|---|---|",
            f"| this run | {precision} | {result['batch']} | {result['n_crops']} | {result['steps']} | "
            f"{result['epoch_s']:.1f} s | {result['step_ms']:.0f} ms | {peak} |",
            f"| reference (Flowers) | fp32 | 64 | 8 | 64 | {REFERENCE_EPOCH_S:.0f} s | "
            f"{1000 * REFERENCE_EPOCH_S / 64:.0f} ms | {REFERENCE_EPOCH_GB:.2f} GB |",
        ]
    )


# ------------------------------------------------------------------ report


def environment(device: torch.device) -> dict:
    """Versions, device and thread count (and the GPU and TF32 settings on CUDA)."""
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = os.getloadavg()[0]  # 1-minute, at the start
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        info["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return info


def format_ms(value: float) -> str:
    """One decimal below 100 ms, none above."""
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _separate(row: Row) -> str:
    return f"three separate passes {format_ms(row.times_ms['separate'])}"


# bench -> (its label in the table, its breakdown column) for the rows timed against one explanation
AGAINST_EXPLAIN: dict[str, tuple[str, Callable[[Row], str]]] = {
    "views": ("three what-if panels / one explain", _separate),
    "redescribe": ("three descriptions what-if columns / one explain", _separate),
    "label": (
        "DKA's label of one picture / one explain",
        lambda r: f"the weak view and {r.extra['crops']} crops, batched",
    ),
    "walkthrough": (
        "the walkthrough of one picture / one explain",
        lambda r: (
            f"without step 8's W* start {format_ms(r.times_ms['without_start'])} "
            f"({r.extra['classes']} classes, {r.extra['sentences']} sentences, cached)"
        ),
    ),
    "download": ("Explore's download / one explain", lambda r: f"photo and maps at {r.extra['photo_px']} px"),
}


def table(rows: list[Row], cuda: bool) -> str:
    """The results as a markdown table (with a peak-memory column on CUDA)."""
    peak = " peak GiB |" if cuda else ""
    lines = [
        f"| bench | precision | batch | MicroCLIP (ms) | baseline (ms) | ratio | target |{peak} breakdown (ms) |",
        "|---|---|---|---|---|---|---|" + ("---|" if cuda else "") + "---|",
    ]
    for row in rows:
        if row.bench == "explain":
            ours, base = row.times_ms["explain"], row.times_ms["encode_image"]
            breakdown = f"NCut mask alone {format_ms(row.times_ms['ncut'])}" if "ncut" in row.times_ms else ""
            if "eigh" in row.times_ms:
                breakdown += (
                    f" (batched eigh on device {format_ms(row.times_ms['eigh'])}, "
                    f"via CPU {format_ms(row.times_ms['eigh_on_cpu'])})"
                )
            label = "explain / encode_image"
        elif row.bench in AGAINST_EXPLAIN:
            ours, base = row.times_ms[row.bench], row.times_ms["explain"]
            label, describe = AGAINST_EXPLAIN[row.bench]
            breakdown = describe(row)
        else:
            ours, base = row.times_ms["step"], row.times_ms["passes"]
            breakdown = (
                f"weak {format_ms(row.times_ms['weak'])} + crops {format_ms(row.times_ms['crops'])} "
                f"+ strong f+b {format_ms(row.times_ms['strong'])}"
            )
            label = f"train step / passes (K={row.extra['n_crops']})"
        verdict = "ok" if row.ratio <= row.target else "OVER"
        mem = ""
        if cuda:
            mem = f" {row.extra['peak_gib']:.2f} |" if "peak_gib" in row.extra else " |"
        lines.append(
            f"| {label} | {row.precision} | {row.batch} | {format_ms(ours)} | {format_ms(base)} | "
            f"{row.ratio:.3f}× | ≤ {row.target:.2f}× {verdict} |{mem} {breakdown} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring and bench/README.md)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: cuda when available)")
    parser.add_argument("--model", default="ViT-B-32-quickgelu", help="open_clip model name (random weights)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per measurement, at least (default: explain 3 on CPU, 20 on "
        "CUDA; train 2 on CPU, 10 on CUDA)",
    )
    parser.add_argument(
        "--round-budget",
        type=float,
        default=None,
        help="explain: add rounds while they fit in about this many seconds (default 20 "
        "on CPU, 5 on CUDA, 8 with --quick; 0: exactly --repeats)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed rounds first (default 1 on CPU, 3 on CUDA; CPU train warms up once at batch 2 instead)",
    )
    parser.add_argument("--quick", action="store_true", help="train batch 8, fewer rounds")
    parser.add_argument("--precisions", default="fp32,bf16", help="explain precisions: fp32, bf16")
    parser.add_argument(
        "--train-precisions",
        default=None,
        help="train precisions (default fp32 on CPU: CPU bf16 autocast is very slow, see README; fp32,bf16 on CUDA)",
    )
    parser.add_argument(
        "--bf16-method",
        choices=("auto", "autocast", "cast"),
        default="auto",
        help="bf16 for explain and encode_image alike: torch.autocast, or weights "
        ".to(bfloat16); auto: cast on CPU (faster there), autocast on CUDA",
    )
    parser.add_argument(
        "--only",
        choices=("explain", "views", "redescribe", "label", "walkthrough", "download", "train"),
        default=None,
        help="run one benchmark",
    )
    parser.add_argument("--explain-batches", default="1,32", help="comma list of explain batch sizes")
    parser.add_argument(
        "--batch", type=int, default=None, help="train batch (default 32 CPU, 8 with --quick, 64 CUDA; 64 for --epoch)"
    )
    parser.add_argument("--crops", type=int, default=8, help="K, crops per image")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall (default) or cpu: process CPU time, steadier on a shared machine (use with --threads 1; CPU only)",
    )
    parser.add_argument("--epoch", action="store_true", help="time one epoch of --steps steps instead")
    parser.add_argument("--steps", type=int, default=64, help="steps in the --epoch timing")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="--epoch precision")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the results here (merged into the file if it exists)"
    )
    return parser.parse_args(argv)


def write_json(path: Path, key: str, payload: dict) -> None:
    """Merge ``payload`` under ``key`` into the JSON file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = payload
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def split_list(text: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks the command line asks for and print (and optionally save) the results."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # create_clip's random-weights banner is expected here
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    cuda = device.type == "cuda"
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu measures host CPU time: use it with --device cpu only")
    global clock
    clock = CLOCKS[args.clock]
    env = environment(device) | {"clock": args.clock}
    print(
        f"torch {env['torch']} | device {device}{' (' + env['gpu'] + ')' if cuda else ''} | "
        f"threads {env['threads']} | model {args.model} (random weights)",
        flush=True,
    )
    busy = env.get("load_average", 0.0) > (os.cpu_count() or 1) - 0.5
    if device.type == "cpu" and busy and env["threads"] > 1 and args.clock == "wall":
        print(
            f"note: load average {env['load_average']:.1f} on {os.cpu_count()} CPUs; with {env['threads']} "
            "threads every parallel op waits for descheduled threads, so wall times are very noisy: "
            "try --threads 1 --clock cpu",
            flush=True,
        )
    setup = build(args.model, device)
    started = time.perf_counter()

    if args.epoch:
        batch = args.batch or 64
        result = bench_epoch(setup, args.amp, batch, args.crops, args.steps, warmup=2 if cuda else 1)
        print(epoch_table(result))
        if args.json:
            write_json(args.json, f"epoch_{args.amp}", {"environment": env, **result})
        return

    repeats = args.repeats or (20 if cuda else (2 if args.quick else 3))
    budget = args.round_budget
    if budget is None:
        budget = 5.0 if cuda else (8.0 if args.quick else 20.0)
    train_repeats = args.repeats or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    train_batch = args.batch or (64 if cuda else (8 if args.quick else 32))
    method = args.bf16_method if args.bf16_method != "auto" else ("autocast" if cuda else "cast")
    train_precisions = split_list(args.train_precisions or ("fp32,bf16" if cuda else "fp32"))
    rows: list[Row] = []

    def progress(what: str) -> None:
        """One line per finished measurement, so that a long CPU run shows it is alive."""
        print(f"  [{time.perf_counter() - started:5.0f} s] {what} done", flush=True)

    if args.only in (None, "explain"):
        cast_setup = bf16_copy(setup) if method == "cast" and "bf16" in split_list(args.precisions) else None
        for batch in (int(b) for b in split_list(args.explain_batches)):
            for precision in split_list(args.precisions):
                on = cast_setup if precision == "bf16" and cast_setup is not None else setup
                rows.append(bench_explain(on, precision, method, batch, warmup, repeats, budget))
                progress(f"explain {precision} batch {batch}")
        del cast_setup
    for name, bench in (
        ("views", bench_views),
        ("redescribe", bench_redescribe),
        ("label", bench_label),
        ("walkthrough", bench_walkthrough),
        ("download", bench_download),
    ):
        if args.only in (None, name):
            rows.append(bench(setup, warmup, repeats, budget))
            progress(name)
    if args.only in (None, "train"):
        for precision in train_precisions:
            amp: AmpMode = "none" if precision == "fp32" else "bf16"
            rows.append(
                bench_train(
                    setup,
                    amp,
                    train_batch,
                    args.crops,
                    warmup,
                    train_repeats,
                    small_warmup=not cuda and args.warmup is None,
                )
            )
            progress(f"train {precision} batch {train_batch}")

    print()
    print(
        f"torch {env['torch']}, device {device}, {env['threads']} threads, {args.clock} clock; "
        f"bf16 explain via {method}, "
        "bf16 training via autocast (as engine.fit); times are medians, ratio = median of per-round ratios"
    )
    print()
    print(table(rows, cuda))
    if cuda:
        print(f"\npeak CUDA memory over the run: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        payload = {
            "environment": env,
            "bf16_method_explain": method,
            "rows": [row.to_dict() for row in rows],
            "table": table(rows, cuda),
        }
        write_json(args.json, "speed", payload)


if __name__ == "__main__":
    main()
