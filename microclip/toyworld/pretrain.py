"""Pretraining of the tiny CLIP on toy bird images and captions, in up to three stages.

    python -m microclip.toyworld.pretrain --out checkpoints/toybirds-base

Stage 1 (``steps``) is CLIP: open_clip's contrastive loss between the ``[CLS]`` embedding and the
caption. Stage 2 (``dense_steps``, its own warmup and cosine schedule) adds what modern CLIPs add for
dense understanding (cf. FG-CLIP's second, regional stage), computed on the value-path patch tokens that
microCLIP's SOAP pools (grounding.py): phrase grounding (each part a caption names, found among the
image's patches) and locality (a patch token does not change when other patches are replaced). Stage 3
(``object_steps``, since the fourth world) adds losses on the normalised cut the model makes of each image,
so that the cut finds the bird and the tokens SOAP pools know the species (objectness.py): the shipped
sixth world's asks SOAP's own ``[FG]`` for the caption (``--soap_pool_weight 1 --object_weight 0``, as the
fifth's) and spares the band next to the cut from the push across it (``--boundary_band 1 --band_terms
cut``), the fourth's asked every foreground token alone. Nothing but captions and images is used: no masks,
no labels.

Reads top to bottom: build data and model, then for each step draw a batch and its captions from a
rng seeded by (seed, step) -- so a resumed run continues exactly like an uninterrupted one -- take an
AdamW step, and checkpoint now and then. At the end the model is written as an open_clip `local-dir:`
folder and evaluated on the toybirds test split.

Checkpoints hold no pickle: tensors (model, optimizer state, torch rng) in `state.safetensors`, scalars
in `state.json` (and, for atomicity, the same JSON inside the safetensors metadata).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shlex
import sys
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from microclip.backbone import Backbone, last_block_cls_attention
from microclip.constants import CLIP_MEAN, CLIP_STD
from microclip.files import atomic_write, atomic_write_text
from microclip.soap import foreground_mask, soap_query
from microclip.state import load_run_state, save_run_state
from microclip.toyworld import MODEL_CONFIG_DIR, TOY_MODEL_NAME, register_model_configs
from microclip.toyworld.dataset import (
    ensure_other_birds_corpus,
    ensure_pretrain_corpus,
    ensure_split,
    load_pretrain_corpus,
    load_split_arrays,
    pretrain_scenes,
)
from microclip.toyworld.distill import SelfDistillation, block_mask
from microclip.toyworld.grounding import (
    PHRASE_FORMS,
    grounding_overlap_loss,
    phrase_grounding_loss,
    region_grounding_loss,
)
from microclip.toyworld.metrics import evaluate_toy_clip
from microclip.toyworld.objectness import (
    background_loss,
    boundary_band,
    cut_contrast_loss,
    object_token_loss,
    pool_centring_loss,
    soap_attention_loss,
    soap_pool_loss,
)
from microclip.toyworld.text import (
    LOOKALIKE_RULES,
    NAME_ZIPF,
    P_LOOKALIKE,
    P_NAME,
    TEMPLATES,
    Scene,
    descriptions,
    make_caption,
)
from microclip.toyworld.world import CLASS_NAMES, SPECIES_TABLE, bird, check_drawn_table, recorded_table

log = logging.getLogger(__name__)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp on the learned temperature


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (plain values; the CLI maps flags onto these)."""

    out: str
    steps: int = 1000  # stage 1: CLIP
    dense_steps: int = 1000  # stage 2: CLIP + the dense objectives; 0 = the first world's plain CLIP
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    dense_lr: float = 5e-4
    dense_warmup_steps: int = 40
    seed: int = 0
    n_images: int = 40000
    n_other_birds: int = 0  # images of the web's other birds (world.OTHER_SPECIES) beside the 16's; 0 = none
    other_birds_from_stage: int = 1  # batches draw other birds from this stage on (2: stage 1's CLIP sees the 16 only)
    data_root: str = "./data"
    resume: bool = False
    ckpt_every: int = 100
    stop_after: int | None = None  # stop (with a checkpoint) after this step, as if killed; for tests
    augment: bool = True
    zoom_min: float = 1.0  # zoom augmentation: smallest square side, as a share of the frame; 1 = off
    p_zoom: float = 0.5  # share of a batch's images zoomed when zoom_min < 1
    zoom_from_stage: int = 1  # zoom only from this stage on (2: stage 1 learns the names from whole frames)
    p_name: float = P_NAME  # how often a caption names the commonest species (the rest describe parts)
    name_zipf: float = NAME_ZIPF  # the name of frequency rank r appears p_name / (r + 1) ** name_zipf as often
    p_lookalike: float = P_LOOKALIKE  # a named caption names the species' look-alike this often
    lookalike_rule: str = "closest"  # which look-alike's name a noisy caption carries (text.LOOKALIKE_RULES)
    grounding_weight: float = 1.0  # weight of the phrase-grounding loss (grounding.py); 0 = plain CLIP
    grounding_pool_temperature: float = 0.1
    grounding_temperature: float = 0.05
    grounding_overlap_weight: float = 0.0  # two parts one caption names found in different patches; 0 = off
    locality_weight: float = 1.0  # weight of the context-consistency loss; 0 = off
    locality_paste: str = "block"  # what that loss pastes around the patches it tests (LOCALITY_PASTES)
    scene_words: bool = False  # dense-stage captions also name the bird's colour and the scene (tried; no gain)
    region_weight: float = 0.0  # colour/scene phrases by mean-pooled region grounding; 0 = pooled like parts
    centring_weight: float = 0.0  # token centring on the raw value-path tokens (tried: it fragments the background)
    pooled_weight: float = 0.0  # CLIP loss on the mean of the projected patch tokens (what SOAP pools); 0 = off
    fg_pool_weight: float = 0.0  # CLIP loss on the mean projected token of the cut's foreground (SOAP's query); 0 = off
    # iBOT-style patch self-distillation on the raw value-path tokens (distill.py); 0 = off
    distill_weight: float = 0.0
    distill_prototypes: int = 128
    distill_hidden: int = 0  # MLP width before the prototypes; 0 = prototypes on the normalised raw tokens
    distill_momentum: float = 0.996  # EMA teacher
    distill_mask_ratio: float = 0.4  # share of the student's patches masked, in blocks
    distill_student_temperature: float = 0.1  # DINO's
    distill_teacher_temperature: float = 0.04  # DINO's (sharpening)
    # stage 3, the object stage (objectness.py): stage 2's losses plus three on the model's own cut
    object_steps: int = 0  # 0 = no stage 3 (the worlds before the fourth)
    object_lr: float = 5e-4
    object_warmup_steps: int = 40
    object_weight: float = 1.0  # every foreground token picks its image's caption
    background_weight: float = 1.0  # the mean background token picks none
    cut_weight: float = 1.0  # raw tokens across the cut unlinked, within a side linked
    cut_margin: float = 0.1
    boundary_band: int = 0  # stage 3: background patches this close to the cut left out of its terms; 0 = off
    band_terms: str = "background,cut"  # which stage-3 terms leave the band out (comma-separated)
    band_weight: float = 0.0  # the weight the band's pairs keep in the cut term (0 = left out; a soft band in (0, 1))
    soap_pool_weight: float = 0.0  # CLIP loss on SOAP's [FG] at identity over the cut (objectness.py); 0 = off
    soap_attention_weight: float = 0.0  # SOAP's map at identity pulled to the last block's [CLS] attention; 0 = off
    pool_centring_weight: float = 0.0  # the images' SOAP inputs at identity pushed to share no mean; 0 = off
    soap_attention_radial: bool = False  # that pull's gradient only along each token: lengths, not the cut's cosines
    init: str = ""  # start from this open_clip local-dir folder's weights (a fine-tune) instead of random ones
    eval_train_per_class: int = 100
    eval_test_per_class: int = 50
    threads: int = 2
    command: str = field(default="")

    def __post_init__(self) -> None:
        if not 0.0 < self.zoom_min <= 1.0:
            raise ValueError(f"zoom_min {self.zoom_min}: the smallest zoomed square, a share of the frame in (0, 1]")
        if not 0.0 <= self.p_zoom <= 1.0:
            raise ValueError(f"p_zoom {self.p_zoom}: a share of the batch, in [0, 1]")
        if not self.banded_terms <= {"background", "cut"}:
            raise ValueError(f"band_terms {self.band_terms!r}: comma-separated, from background and cut")
        if not 0.0 <= self.band_weight < 1.0:
            raise ValueError(f"band_weight {self.band_weight}: the band's pair weight, in [0, 1) (1 would be no band)")
        if self.band_weight > 0 and (self.boundary_band <= 0 or "cut" not in self.banded_terms):
            raise ValueError(
                "band_weight softens the cut term's band: it needs --boundary_band > 0 and cut in --band_terms"
            )
        if self.locality_paste not in LOCALITY_PASTES:
            raise ValueError(f"locality_paste {self.locality_paste!r}: one of {', '.join(LOCALITY_PASTES)}")
        if self.zoom_from_stage not in (1, 2, 3):
            raise ValueError(f"zoom_from_stage {self.zoom_from_stage}: a stage, 1, 2 or 3")
        if self.other_birds_from_stage not in (1, 2, 3):
            raise ValueError(f"other_birds_from_stage {self.other_birds_from_stage}: a stage, 1, 2 or 3")
        if self.n_other_birds < 0:
            raise ValueError(f"n_other_birds {self.n_other_birds}: a number of images, 0 or more")
        if self.n_other_birds > 0 and self.scene_words:  # refused before any corpus is generated
            raise ValueError("--scene_words reads the scenes of the 16 species' corpus only; drop --n_other_birds")

    @property
    def banded_terms(self) -> frozenset[str]:
        """The stage-3 terms that leave --boundary_band's band out."""
        return frozenset(self.band_terms.split(","))


# A resume must match these.
RUN_DEFINING = (
    "seed",
    "steps",
    "dense_steps",
    "object_steps",
    "batch_size",
    "n_images",
    "n_other_birds",
    "other_birds_from_stage",
)
# ... except that a run stopped at the end of a stage may go on into a different next stage (its settings are
# only read from then on, and every invocation is kept in "commands"): the length of each later stage.
LATER_STAGES = {"dense_steps": lambda cfg: cfg.steps, "object_steps": lambda cfg: cfg.steps + cfg.dense_steps}

OBJECTIVE = {
    "stage 1 (steps)": "CLIP: symmetric InfoNCE between the [CLS] embedding and the caption (open_clip ClipLoss)",
    "stage 2 (dense_steps)": "CLIP, plus on the last block's value-path patch tokens (projected): phrase "
    "grounding (each visible part a caption names, found among the image's patches by "
    "a similarity softmax, contrasted against the batch's other phrases and images; "
    "grounding.py), and locality (1 - cosine between a patch token and the same "
    "patch's token after another image's block is pasted elsewhere). Options tried and "
    "left off (docs/toyworld.md): captions that also name the bird's colour and the scene "
    "(--scene_words), those phrases grounded by mean-pooled regions (--region_weight), "
    "centring of the raw tokens (--centring_weight), iBOT-style patch self-distillation (--distill_weight), "
    "CLIP on the mean of the projected patch tokens (--pooled_weight) or of the cut's foreground "
    "(--fg_pool_weight)",
    "augmentation": "every stage: shift by up to 4 px and horizontal flip; with zoom_min < 1, from stage "
    "zoom_from_stage on, a share p_zoom of the images first cut to a square of side U(zoom_min, 1) of the frame "
    "and resized back",
    "supervision": "captions and images only: no part masks, no species labels",
}
NUMBER_WORDS = ("no losses", "one", "two", "three", "four", "five")


def objective(cfg: PretrainConfig) -> dict[str, str]:
    """What the run optimised, in words, stage 3 listing the terms its weights switch on (for pretrain.json)."""
    terms = [
        (cfg.object_weight, "every foreground token alone picks its image's caption from the batch's"),
        (cfg.background_weight, "the mean background token picks none (its caption distribution is pulled to uniform)"),
        (cfg.cut_weight, "across the cut the raw tokens' cosines are pushed below -cut_margin, within a side above it"),
        (
            cfg.soap_pool_weight,
            "the [FG] SOAP computes as adaptation starts (identity Q/K/V, the cut's mean token as the query, the "
            "null token) picks its image's caption (open_clip ClipLoss)",
        ),
        (
            cfg.soap_attention_weight,
            "SOAP's attention at identity is pulled (KL) toward the last block's [CLS] attention"
            + (", through the tokens' lengths only" if cfg.soap_attention_radial else ""),
        ),
        (
            cfg.pool_centring_weight,
            "the batch mean of what SOAP's value map is applied to at identity is pushed toward zero (its share "
            "of the pooled inputs' energy)",
        ),
    ]
    on = [text for weight, text in terms if weight > 0]
    listed = ", ".join(on[:-1]) + ", and " + on[-1] if len(on) > 2 else " and ".join(on)
    stage3 = (
        f"stage 2's losses, plus {NUMBER_WORDS[len(on)]} on the normalised cut the model makes of each image "
        f"(its raw value-path tokens, detached; objectness.py): {listed}"
    )
    if cfg.boundary_band > 0:
        which = " and ".join(t for t in ("background", "cut") if t in cfg.banded_terms)
        stage3 += f"; background patches within {cfg.boundary_band} patch(es) of the foreground are left out of the "
        stage3 += f"{which} term(s) (a band the next cut may grow into)"
        if cfg.band_weight > 0:
            stage3 += f", the band's pairs in the cut term kept at weight {cfg.band_weight:g} instead (a soft band)"
    stage2 = OBJECTIVE["stage 2 (dense_steps)"]
    if cfg.locality_paste == "lattice":
        stage2 = stage2.replace(
            "after another image's block is pasted elsewhere",
            "after another image is pasted everywhere but a lattice of every second patch, all its neighbours",
        )
    if cfg.grounding_overlap_weight > 0:
        stage2 += (
            "; and, for every two parts one caption names, the overlap of their grounding pools over the image's "
            "patches, pushed down (grounding.py's grounding_overlap_loss)"
        )
    out = OBJECTIVE | {"stage 2 (dense_steps)": stage2, "stage 3 (object_steps)": stage3}
    if cfg.n_other_birds > 0:
        stages = (
            "every stage draws"
            if cfg.other_birds_from_stage == 1
            else f"from stage {cfg.other_birds_from_stage} on batches draw"
        )
        out["corpus"] = (
            f"{cfg.n_images} images of the 16 species and {cfg.n_other_birds} of the web's other birds (every other "
            "combination of the five parts in turn, world.OTHER_SPECIES), whose captions name no species and give "
            f"their parts as for the 16's; {stages} from both"
        )
    return out


# ---------------------------------------------------------------- data for one step


def total_steps(cfg: PretrainConfig) -> int:
    return cfg.steps + cfg.dense_steps + cfg.object_steps


def in_dense_stage(step: int, cfg: PretrainConfig) -> bool:
    """Stage 2 or later: the dense objectives are on."""
    return step >= cfg.steps


def in_object_stage(step: int, cfg: PretrainConfig) -> bool:
    return cfg.object_steps > 0 and step >= cfg.steps + cfg.dense_steps


def stage_of(step: int, cfg: PretrainConfig) -> int:
    """1, 2 or 3: the stage `step` belongs to."""
    return 3 if in_object_stage(step, cfg) else 2 if in_dense_stage(step, cfg) else 1


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Each stage: linear warmup, then cosine decay to 0 at the stage's end."""
    if in_object_stage(step, cfg):
        start = cfg.steps + cfg.dense_steps
        return _warmup_cosine(step - start, cfg.object_steps, cfg.object_warmup_steps, cfg.object_lr)
    if in_dense_stage(step, cfg):
        return _warmup_cosine(step - cfg.steps, cfg.dense_steps, cfg.dense_warmup_steps, cfg.dense_lr)
    return _warmup_cosine(step, cfg.steps, cfg.warmup_steps, cfg.lr)


def _warmup_cosine(step: int, steps: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(step: int, cfg: PretrainConfig, n: int) -> np.ndarray:
    """Image indices of `step`: epoch-wise permutations, each seeded by (seed, epoch)."""
    start = step * cfg.batch_size
    out = []
    while len(out) < cfg.batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([cfg.seed, 7, epoch]).permutation(n)
        out.extend(perm[offset : offset + cfg.batch_size - len(out)].tolist())
    return np.array(out)


def augment(images: np.ndarray, rng: np.random.Generator, zoom_min: float = 1.0, p_zoom: float = 0.5) -> np.ndarray:
    """Random shift by up to 4 px (edge padding) and horizontal flip; parts keep their meaning.

    With `zoom_min` < 1, a share `p_zoom` of the images is first cut to a square of side U(zoom_min, 1) of the
    frame, placed uniformly, and resized back (bicubic, as adaptation's crop views are): CLIP's web images show a
    bird at many scales, and microCLIP's crop composite reads such zoomed views. Off (the default), no extra
    numbers are drawn, so runs made before the option existed are drawn exactly as they were."""
    if zoom_min < 1.0 and p_zoom > 0.0:
        images = _zoom(images, rng, zoom_min, p_zoom)
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 9, size=(2, n))
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def _zoom(images: np.ndarray, rng: np.random.Generator, zoom_min: float, p_zoom: float) -> np.ndarray:
    n, h, w, _ = images.shape
    chosen = rng.random(n) < p_zoom
    sides = rng.uniform(zoom_min, 1.0, size=n)
    corners = rng.random((n, 2))  # where the square sits, as a share of the room it has
    out = images.copy()
    for i in np.flatnonzero(chosen):
        side = max(1, int(sides[i] * min(h, w)))
        left, top = int(corners[i, 0] * (w - side + 1)), int(corners[i, 1] * (h - side + 1))
        crop = Image.fromarray(images[i]).crop((left, top, left + side, top + side))
        out[i] = np.asarray(crop.resize((w, h), Image.Resampling.BICUBIC))
    return out


@dataclass(frozen=True)
class Batch:
    """One step's data: images in [0, 1], caption tokens, and the part phrases each caption names."""

    images: torch.Tensor  # (B, 3, H, W)
    tokens: torch.Tensor  # (B, L)
    phrases: list[str]  # distinct part phrases of the batch's captions, worded for embedding
    image_index: torch.Tensor  # (P,) image of each (image, phrase) pair
    phrase_index: torch.Tensor  # (P,) index into `phrases`
    pasted: torch.Tensor  # (B, 3, H, W) the images with a block of another image pasted in
    intact: torch.Tensor  # (B, N) bool: patches the pasted block left untouched
    regions: list[str] = field(default_factory=list)  # distinct region phrases (with region grounding on)
    region_kind: torch.Tensor | None = None  # (Q,) 0 the bird's colour, 1 the scene
    region_image: torch.Tensor | None = None  # (R,) image of each (image, region phrase) pair
    region_phrase: torch.Tensor | None = None  # (R,) index into `regions`
    distill_mask: torch.Tensor | None = None  # (B, N) bool: patches hidden from the self-distillation student


def make_batch(
    step: int, cfg: PretrainConfig, images: np.ndarray, species: np.ndarray, tokenizer, scenes: np.ndarray | None = None
) -> Batch:
    """The batch of `step`: a pure function of (seed, step)."""
    stage = stage_of(step, cfg)
    # The other birds follow the 16 species' images in `images`; before their stage a batch draws from the 16's.
    shown = len(images) if stage >= cfg.other_birds_from_stage else len(images) - cfg.n_other_birds
    idx = batch_indices(step, cfg, shown)
    rng = np.random.default_rng([cfg.seed, 11, step])
    zoom_min = cfg.zoom_min if stage >= cfg.zoom_from_stage else 1.0
    pixels = augment(images[idx], rng, zoom_min, cfg.p_zoom) if cfg.augment else images[idx]
    dense = in_dense_stage(step, cfg) and cfg.scene_words and scenes is not None
    captions = [
        make_caption(
            bird(int(species[i])),
            rng,
            cfg.p_name,
            cfg.name_zipf,
            cfg.p_lookalike,
            Scene(int(scenes[i, 0]), int(scenes[i, 1])) if dense else None,
            cfg.lookalike_rule,
        )
        for i in idx
    ]
    separate = cfg.region_weight > 0  # region phrases go to their own loss instead of the part grounding
    parts = [tuple(p for p in c.phrases if not (separate and p in c.regions)) for c in captions]
    distinct = sorted({p for phrases in parts for p in phrases})
    form = PHRASE_FORMS[int(rng.integers(len(PHRASE_FORMS)))]
    image_index, phrase_index = _pairs(parts, distinct)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0
    pasted, intact = LOCALITY_PASTES[cfg.locality_paste](x, rng)
    regions = sorted({p for c in captions for p in c.regions}) if separate else []
    region_image, region_phrase = _pairs([c.regions for c in captions] if separate else [], regions)
    region_kind = torch.tensor([0 if p.endswith(" bird") else 1 for p in regions], dtype=torch.long)
    distill_mask = None
    if in_dense_stage(step, cfg) and cfg.distill_weight > 0:  # its own generator: other draws stay as they were
        grid = (x.shape[-2] // PATCH, x.shape[-1] // PATCH)
        distill_mask = block_mask(np.random.default_rng([cfg.seed, 13, step]), len(idx), grid, cfg.distill_mask_ratio)
    return Batch(
        images=x,
        tokens=tokenizer([c.text for c in captions]),
        phrases=[form.format(p) for p in distinct],
        image_index=image_index,
        phrase_index=phrase_index,
        pasted=pasted,
        intact=intact,
        regions=regions,
        region_kind=region_kind,
        region_image=region_image,
        region_phrase=region_phrase,
        distill_mask=distill_mask,
    )


def _pairs(phrases_per_image: list[tuple[str, ...]], distinct: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, phrase) index pairs of every phrase each image's caption names."""
    pairs = [(i, distinct.index(p)) for i, phrases in enumerate(phrases_per_image) for p in phrases]
    if not pairs:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return tuple(torch.tensor(list(column), dtype=torch.long) for column in zip(*pairs))  # type: ignore[return-value]


PATCH = 8  # the toy ViT's patch size: pasted blocks are aligned to it


def paste_blocks(images: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a random patch-aligned block of the next image of the batch into each image (CutMix-like)."""
    b, _, size, _ = images.shape
    grid = size // PATCH
    pasted = images.clone()
    intact = torch.ones(b, grid, grid, dtype=torch.bool)
    heights, widths = rng.integers(2, grid // 2 + 2, size=(2, b))
    for i in range(b):
        h, w = int(heights[i]), int(widths[i])
        top, left = int(rng.integers(0, grid - h + 1)), int(rng.integers(0, grid - w + 1))
        rows, cols = slice(top * PATCH, (top + h) * PATCH), slice(left * PATCH, (left + w) * PATCH)
        pasted[i, :, rows, cols] = images[(i + 1) % b, :, rows, cols]
        intact[i, top : top + h, left : left + w] = False
    return pasted, intact.view(b, -1)


def paste_lattice(images: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep every second patch of every second row (a random one of the four lattices per image) and paste the
    next image of the batch everywhere else, so each kept patch has all its neighbours replaced.

    A random block (`paste_blocks`) borders few of the patches it leaves intact, so the loss mostly checks
    patches far from any change. Tried for the part probe (docs/toyworld.md, round 18): it did not move.
    """
    b, _, size, _ = images.shape
    grid = size // PATCH
    offsets = rng.integers(0, 2, size=(b, 2))
    rows, cols = torch.arange(grid)[:, None], torch.arange(grid)[None, :]
    intact = torch.stack([(rows % 2 == int(oy)) & (cols % 2 == int(ox)) for oy, ox in offsets])  # (B, g, g)
    keep = intact.repeat_interleave(PATCH, dim=1).repeat_interleave(PATCH, dim=2)[:, None]  # (B, 1, H, W)
    pasted = torch.where(keep, images, images.roll(-1, dims=0))
    return pasted, intact.view(b, -1)


LOCALITY_PASTES = {"block": paste_blocks, "lattice": paste_lattice}


def locality_weight(step: int, cfg: PretrainConfig) -> float:
    """0 during the dense stage's warmup, then a linear ramp to cfg.locality_weight over as many steps.

    The cheapest way to keep tokens unchanged by pasted context is to make them all the same; the
    grounding loss first gives them something to keep.
    """
    warmup = max(1, cfg.dense_warmup_steps)
    return cfg.locality_weight * min(1.0, max(0.0, (step - cfg.steps - warmup) / warmup))


def centring_loss(patches: torch.Tensor) -> torch.Tensor:
    """The share of the raw patch tokens' energy in their per-image mean: ‖mean_j t_ij‖² / mean_j ‖t_ij‖².

    The cut reads the raw value-path tokens' dot products; when one image-wide component dominates them
    (half their energy in the second world), every pair is linked and the graph has no cut to find.
    Driving this share down is DINO's centring (which TokenCut's cuts rest on) applied within an image:
    what remains in the tokens is what tells patches apart.
    """
    mean = patches.mean(dim=1)  # (B, D)
    energy = patches.pow(2).sum(-1).mean(dim=1).clamp_min(1e-6)  # (B,)
    return (mean.pow(2).sum(-1) / energy).mean()


def batch_loss(
    model: torch.nn.Module,
    backbone: Backbone,
    batch: Batch,
    cfg: PretrainConfig,
    tokenizer,
    clip_loss: torch.nn.Module,
    step: int,
    distill: SelfDistillation | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss and its parts: CLIP on [CLS]; in the dense stage also grounding and locality (and,
    when on, patch self-distillation); in the object stage also the three losses on the model's own cut."""
    tokens = backbone(batch.images)  # the visual forward microCLIP runs: [CLS] and value-path patch tokens
    text = F.normalize(model.encode_text(batch.tokens), dim=-1)
    scale = model.logit_scale.exp()
    terms = {"clip": (1.0, clip_loss(tokens.cls_embed, text, scale))}
    if in_dense_stage(step, cfg):
        patch_embeds = F.normalize(backbone.project(tokens.patches), dim=-1)  # (B, N, E)
        grounded = batch.phrases and (cfg.grounding_weight > 0 or cfg.grounding_overlap_weight > 0)
        phrase_embeds = F.normalize(model.encode_text(tokenizer(batch.phrases)), dim=-1) if grounded else None
        if cfg.grounding_weight > 0 and phrase_embeds is not None:
            terms["grounding"] = (
                cfg.grounding_weight,
                phrase_grounding_loss(
                    patch_embeds,
                    batch.image_index,
                    batch.phrase_index,
                    phrase_embeds,
                    cfg.grounding_pool_temperature,
                    cfg.grounding_temperature,
                ),
            )
        if cfg.grounding_overlap_weight > 0 and phrase_embeds is not None:
            terms["overlap"] = (
                cfg.grounding_overlap_weight,
                grounding_overlap_loss(
                    patch_embeds, batch.image_index, batch.phrase_index, phrase_embeds, cfg.grounding_pool_temperature
                ),
            )
        if cfg.region_weight > 0 and batch.regions:
            region_embeds = F.normalize(model.encode_text(tokenizer(batch.regions)), dim=-1)
            terms["regions"] = (
                cfg.region_weight,
                region_grounding_loss(
                    patch_embeds, batch.region_image, batch.region_phrase, batch.region_kind, region_embeds
                ),
            )
        if cfg.pooled_weight > 0:  # the pooled patch tokens, not only [CLS], must match the caption
            pooled = F.normalize(patch_embeds.mean(dim=1), dim=-1)
            terms["pooled"] = (cfg.pooled_weight, clip_loss(pooled, text, scale))
        if cfg.fg_pool_weight > 0:  # what [FG] pools, before any adaptation: the cut's foreground tokens
            fg = foreground_mask(tokens.patches.detach())
            pooled = soap_query(patch_embeds, fg, tokens.cls_embed)  # the mean foreground token, as SOAP's query
            terms["fg_pool"] = (cfg.fg_pool_weight, clip_loss(F.normalize(pooled, dim=-1), text, scale))
        if cfg.centring_weight > 0:
            terms["centring"] = (cfg.centring_weight, centring_loss(tokens.patches))
        weight = locality_weight(step, cfg)
        if weight > 0:
            context = F.normalize(backbone.project(backbone(batch.pasted).patches), dim=-1)
            change = 1.0 - (patch_embeds * context).sum(-1)  # (B, N) 1 - cosine
            terms["locality"] = (weight, (change * batch.intact).sum() / batch.intact.sum().clamp_min(1))
        if distill is not None and batch.distill_mask is not None:
            terms["distill"] = (cfg.distill_weight, distill.loss(backbone, batch.images, batch.distill_mask))
        if in_object_stage(step, cfg):
            cut_terms = object_terms(tokens.patches, patch_embeds, text, scale, cfg, backbone, batch.images, clip_loss)
            terms.update(cut_terms)
    loss = sum(w * term for w, term in terms.values())
    return loss, {name: term.item() for name, (_, term) in terms.items()}


def object_terms(
    patches: torch.Tensor,
    patch_embeds: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    cfg: PretrainConfig,
    backbone: Backbone,
    images: torch.Tensor,
    clip_loss: torch.nn.Module,
) -> dict[str, tuple[float, torch.Tensor]]:
    """Stage 3's losses (objectness.py), each on the cut SOAP would make of the image now."""
    foreground = foreground_mask(patches.detach())
    band = boundary_band(foreground, backbone.grid, cfg.boundary_band) if cfg.boundary_band > 0 else None
    bg_band, cut_band = (band if term in cfg.banded_terms else None for term in ("background", "cut"))
    terms = {
        "object": (cfg.object_weight, object_token_loss(patch_embeds, foreground, text, scale)),
        "background": (cfg.background_weight, background_loss(patch_embeds, foreground, text, scale, bg_band)),
        "cut": (cfg.cut_weight, cut_contrast_loss(patches, foreground, cfg.cut_margin, cut_band, cfg.band_weight)),
    }
    if cfg.soap_pool_weight > 0:
        terms["soap_pool"] = (
            cfg.soap_pool_weight,
            soap_pool_loss(patches, foreground, text, scale, backbone.project, clip_loss),
        )
    if cfg.soap_attention_weight > 0:
        with torch.no_grad():  # the teacher is detached in the loss: building its graph costs time and memory
            teacher = last_block_cls_attention(backbone, images)
        attention = soap_attention_loss(patches, foreground, teacher, radial=cfg.soap_attention_radial)
        terms["soap_attention"] = (cfg.soap_attention_weight, attention)
    if cfg.pool_centring_weight > 0:
        terms["pool_centring"] = (cfg.pool_centring_weight, pool_centring_loss(patches, foreground))
    return terms


# ---------------------------------------------------------------- model and optimizer


def build_model(init: str = "") -> torch.nn.Module:
    """The toy CLIP: random weights, or (a fine-tune) those of the open_clip local-dir folder `init`."""
    register_model_configs()
    import open_clip

    model = open_clip.create_model(TOY_MODEL_NAME)
    if init:
        record = init_record(init)
        if record:
            check_drawn_table(recorded_table(record), f"--init {init}")
        start = open_clip.create_model(f"local-dir:{init}")
        model.load_state_dict({k: v.float() for k, v in start.state_dict().items()})
    return model


def init_record(init: str) -> dict:
    """The `pretrain.json` of the folder a fine-tune starts from ({} for random weights or a folder without one).

    A fine-tune's record lists the invocations that made its starting weights before its own, so the
    commands in one record rebuild the model from nothing.
    """
    path = Path(init) / "pretrain.json" if init else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def build_seconds(record: dict) -> float | None:
    """How long the model a `pretrain.json` describes took to build from nothing: a fine-tune's whole chain
    (`total_wall_time_s`), else its one run's time; None for a record without either."""
    return record.get("total_wall_time_s", record.get("wall_time_s"))


def build_optimizer(
    model: torch.nn.Module, cfg: PretrainConfig, extra: torch.nn.Module | None = None
) -> torch.optim.AdamW:
    """AdamW; no weight decay on gains, biases, embeddings' scalars and the logit scale (as open_clip).

    `extra` (the self-distillation head) gets a third group of its own, so the first two -- and a run
    state saved without it -- keep their layout.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg.weight_decay}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    if extra is not None:
        add_head_group(opt, extra, cfg)
    return opt


def add_head_group(opt: torch.optim.AdamW, head: torch.nn.Module, cfg: PretrainConfig) -> None:
    opt.add_param_group({"params": list(head.parameters()), "weight_decay": cfg.weight_decay})


def build_distill(model: torch.nn.Module, cfg: PretrainConfig) -> SelfDistillation | None:
    """The EMA teacher and heads when self-distillation is on (teacher = the tower as it starts)."""
    if cfg.distill_weight <= 0:
        return None
    return SelfDistillation(
        model.visual,
        cfg.distill_prototypes,
        cfg.distill_hidden,
        cfg.distill_student_temperature,
        cfg.distill_teacher_temperature,
    )


# ---------------------------------------------------------------- checkpoints (no pickle)


def save_state(
    out: Path, model: torch.nn.Module, opt: torch.optim.AdamW, scalars: dict, distill: SelfDistillation | None = None
) -> None:
    """state.safetensors (the run state, scalars included) and, for people, the scalars in state.json."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if distill is not None:
        tensors.update({f"distill.{k}": v for k, v in distill.state_dict().items()})
    save_run_state(out / "state.safetensors", tensors, opt, scalars)
    atomic_write_text(out / "state.json", json.dumps(scalars, indent=2) + "\n")


def load_state(
    out: Path, model: torch.nn.Module, opt: torch.optim.AdamW, distill: SelfDistillation | None = None
) -> dict:
    """Restore model, optimizer, RNGs (and teacher, heads, centre) from `out/state.safetensors`; the scalars.

    A state saved without self-distillation (say, the end of stage 1) may go on with it: its optimizer is
    restored first, the head's group added after, and the teacher starts as the restored tower.
    """
    path = out / "state.safetensors"
    with safe_open(str(path), framework="pt") as reader:
        saved_distill = any(k.startswith("distill.") for k in reader.keys())
    head_group = opt.param_groups.pop() if distill is not None and not saved_distill else None  # not saved
    tensors, scalars = load_run_state(path, opt)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if distill is not None and saved_distill:
        distill.load_state_dict({k[len("distill.") :]: v for k, v in tensors.items() if k.startswith("distill.")})
    elif distill is not None:
        opt.add_param_group(head_group)
        distill.restart_teacher(model.visual)
    return scalars


def export_open_clip_folder(model: torch.nn.Module, out: Path) -> None:
    """Write `open_clip_config.json` + fp16 `open_clip_model.safetensors`, loadable as 'local-dir:OUT'."""
    model_cfg = json.loads((MODEL_CONFIG_DIR / f"{TOY_MODEL_NAME}.json").read_text())
    preprocess_cfg = {
        "size": model_cfg["vision_cfg"]["image_size"],
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    weights = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "open_clip_model.safetensors", lambda p: save_file(weights, p))
    config_text = json.dumps(config, indent=2) + "\n"
    atomic_write(out / "open_clip_config.json", lambda p: Path(p).write_text(config_text))


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    """A run in progress: its data, model and optimizer, and what it has logged so far."""

    cfg: PretrainConfig
    out: Path
    tokenizer: object
    images: np.ndarray
    species: np.ndarray
    scenes: np.ndarray | None
    model: torch.nn.Module
    backbone: Backbone
    opt: torch.optim.AdamW
    loss_fn: torch.nn.Module
    distill: SelfDistillation | None
    probe: Batch
    step: int = 0
    losses: list = field(default_factory=list)
    part_losses: list = field(default_factory=list)
    elapsed: float = 0.0
    commands: list = field(default_factory=list)
    probe_loss_start: float | None = None

    def scalars(self) -> dict:
        return {
            "step": self.step,
            "steps": self.cfg.steps,
            "seed": self.cfg.seed,
            "batch_size": self.cfg.batch_size,
            "losses": self.losses,
            "part_losses": self.part_losses,
            "elapsed_s": self.elapsed,
            "probe_loss_start": self.probe_loss_start,
            "commands": self.commands,
            "config": asdict(self.cfg),
            "species_table": SPECIES_TABLE,
        }

    def probe_loss(self) -> float:
        return _probe_loss(self.model, self.backbone, self.probe, self.cfg, self.tokenizer, self.loss_fn, self.distill)

    def save(self) -> None:
        save_state(self.out, self.model, self.opt, self.scalars(), self.distill)


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining; returns the summary also written to `out/pretrain.json` when done."""
    torch.set_num_threads(cfg.threads)
    run = start_run(cfg)
    total = total_steps(cfg)
    train(run, total if cfg.stop_after is None else min(total, cfg.stop_after))
    if run.step < total:
        return run.scalars()  # stopped early on purpose; --resume continues
    return finish(run)


def start_run(cfg: PretrainConfig) -> Run:
    """Data, model, optimizer and (with --resume) the state a stopped run left."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    import open_clip

    register_model_configs()
    tokenizer = open_clip.get_tokenizer(TOY_MODEL_NAME)
    corpus = ensure_pretrain_corpus(cfg.data_root, cfg.n_images, cfg.seed)
    images, species = load_pretrain_corpus(corpus)
    if cfg.n_other_birds > 0:
        other_images, other_species = load_pretrain_corpus(
            ensure_other_birds_corpus(cfg.data_root, cfg.n_other_birds, cfg.seed)
        )
        images, species = np.concatenate([images, other_images]), np.concatenate([species, other_species])
    scenes = pretrain_scenes(cfg.n_images, cfg.seed) if cfg.scene_words else None  # only its captions read them

    # All batch, caption and augmentation randomness comes from per-step numpy generators seeded by
    # (seed, step), so there is no numpy state to checkpoint; the global seeds are for library code.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.init)
    distill = build_distill(model, cfg)
    run = Run(
        cfg=cfg,
        out=out,
        tokenizer=tokenizer,
        images=images,
        species=species,
        scenes=scenes,
        model=model,
        backbone=Backbone(model.visual),  # shares the visual tower's parameters
        opt=build_optimizer(model, cfg, distill.head if distill is not None else None),
        loss_fn=open_clip.ClipLoss(),
        distill=distill,
        # The first training batch: its loss before and after training shows that learning happened.
        probe=make_batch(0, cfg, images, species, tokenizer),
        commands=init_record(cfg.init).get("commands", []) + [cfg.command],
    )
    if cfg.resume and (out / "state.safetensors").is_file():
        _resume(run)
    if run.probe_loss_start is None:
        run.probe_loss_start = run.probe_loss()
    return run


def train(run: Run, last: int) -> None:
    """AdamW steps (and the teacher's EMA) until step `last`, checkpointing every `ckpt_every` and at the end."""
    cfg, model = run.cfg, run.model
    model.train()
    t0 = time.time()
    bar = tqdm(total=last, initial=run.step, desc="pretrain", mininterval=5.0, disable=None)
    while run.step < last:
        batch = make_batch(run.step, cfg, run.images, run.species, run.tokenizer, run.scenes)
        for g in run.opt.param_groups:
            g["lr"] = lr_at(run.step, cfg)
        loss, parts = batch_loss(model, run.backbone, batch, cfg, run.tokenizer, run.loss_fn, run.step, run.distill)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if run.distill is not None and "distill" in parts:
            run.distill.update(model.visual, cfg.distill_momentum)
        run.step += 1
        run.losses.append(round(loss.item(), 5))
        run.part_losses.append({k: round(v, 5) for k, v in parts.items()})
        bar.update(1)
        bar.set_postfix(
            loss=f"{np.mean(run.losses[-20:]):.3f}",
            scale=f"{model.logit_scale.exp().item():.1f}",
            **{k: f"{v:.3f}" for k, v in parts.items()},
        )
        if run.step % cfg.ckpt_every == 0 or run.step == last:
            run.elapsed += time.time() - t0
            t0 = time.time()
            run.save()
            _log_progress(run, parts)
    bar.close()


def _log_progress(run: Run, parts: dict[str, float]) -> None:
    recent = run.part_losses[-20:]
    log.info(
        "step %d/%d loss(avg20) %.4f %s  %.1f img/s",
        run.step,
        total_steps(run.cfg),
        np.mean(run.losses[-20:]),
        # a loss that ramps in after a stage's warmup is averaged over the steps that had it (not shown as nan)
        {k: round(float(np.mean([p[k] for p in recent if k in p])), 4) for k in parts},
        run.step * run.cfg.batch_size / max(run.elapsed, 1e-9),
    )


def caption_settings(cfg: PretrainConfig) -> dict:
    """How the run's captions name species (bench/toyworld.py reads the name frequencies back from it)."""
    return {k: getattr(cfg, k) for k in ("p_name", "name_zipf", "p_lookalike", "lookalike_rule")}


def finish(run: Run) -> dict:
    """Export the open_clip folder, evaluate it and write `pretrain.json`."""
    cfg = run.cfg
    export_open_clip_folder(run.model, run.out)
    summary = {
        "command": cfg.command,
        "commands": run.commands,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "dense_steps": cfg.dense_steps,
        "object_steps": cfg.object_steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "dense_lr": cfg.dense_lr,
        "n_images": cfg.n_images,
        "n_other_birds": cfg.n_other_birds,
        "other_birds_from_stage": cfg.other_birds_from_stage,
        "species_table": SPECIES_TABLE,
        "captions": caption_settings(cfg),
        "objective": objective(cfg),
        "wall_time_s": round(run.elapsed, 1),
        "final_loss": float(np.mean(run.losses[-50:])),
        "probe_loss_start": run.probe_loss_start,
        "probe_loss_end": run.probe_loss(),
        "final_loss_parts": {
            k: float(np.mean([p[k] for p in run.part_losses[-50:] if k in p])) for k in run.part_losses[-1]
        },
    }
    if cfg.init:
        summary["init"] = cfg.init
        before = build_seconds(init_record(cfg.init))
        if before is not None:  # the whole build's time, the fine-tune's and every run before it
            summary["total_wall_time_s"] = round(run.elapsed + before, 1)
    if cfg.object_steps > 0:
        summary["object_stage"] = (
            {k: v for k, v in asdict(cfg).items() if k.startswith("object_")}
            | {"background_weight": cfg.background_weight, "cut_weight": cfg.cut_weight, "cut_margin": cfg.cut_margin}
            | {
                k: getattr(cfg, k)
                for k in ("soap_pool_weight", "soap_attention_weight", "soap_attention_radial", "pool_centring_weight")
                if getattr(cfg, k)
            }
            | ({"boundary_band": cfg.boundary_band, "band_terms": cfg.band_terms} if cfg.boundary_band > 0 else {})
            | ({"band_weight": cfg.band_weight} if cfg.band_weight > 0 else {})
        )
    if cfg.zoom_min < 1.0:
        summary["zoom"] = {k: getattr(cfg, k) for k in ("zoom_min", "p_zoom", "zoom_from_stage")}
    if cfg.distill_weight > 0:
        summary["distill"] = {k: v for k, v in asdict(cfg).items() if k.startswith("distill_")}
    summary["metrics"] = evaluate_exported(run.out, cfg)
    atomic_write(run.out / "pretrain.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n"))
    log.info("done: %s", json.dumps(summary))
    return summary


def _resume(run: Run) -> None:
    """Restore a stopped run (checking it is the same run): weights, step, losses, time, commands, probe loss."""
    cfg = run.cfg
    state = load_state(run.out, run.model, run.opt, run.distill)
    saved_cfg = PretrainConfig(**{k: v for k, v in state["config"].items() if k in PretrainConfig.__dataclass_fields__})
    defining = [k for k in RUN_DEFINING if not (k in LATER_STAGES and state["step"] <= LATER_STAGES[k](saved_cfg))]
    saved = {k: getattr(saved_cfg, k) for k in defining}  # a state older than a field has its default
    if saved != {k: getattr(cfg, k) for k in defining}:
        raise ValueError(
            f"--resume: checkpoint in {run.out} was made with {saved}; pass the same values or use a new --out"
        )
    check_drawn_table(recorded_table(state), f"--resume: the run in {run.out}")
    log.info("resumed from %s at step %d", run.out, state["step"])
    run.step = state["step"]
    run.losses = state["losses"]
    run.part_losses = state.get("part_losses", [])
    run.elapsed = state["elapsed_s"]
    run.commands = state.get("commands", []) + [cfg.command]  # every invocation that built this model
    run.probe_loss_start = state["probe_loss_start"]


@torch.no_grad()
def _probe_loss(
    model, backbone: Backbone, batch: Batch, cfg: PretrainConfig, tokenizer, loss_fn, distill=None
) -> float:
    model.eval()
    loss = float(batch_loss(model, backbone, batch, cfg, tokenizer, loss_fn, total_steps(cfg), distill)[0])
    model.train()
    return loss


def evaluate_exported(folder: Path, cfg: PretrainConfig) -> dict:
    """Load `local-dir:folder` (checks the export) and measure it on the toybirds splits."""
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    # The world's own splits (ensure_split's default seed), whatever seed trained the model: runs of different
    # seeds are measured on the same images, and no run rewrites the splits train.py and the app read.
    ensure_split(cfg.data_root, "train", cfg.eval_train_per_class)
    ensure_split(cfg.data_root, "test", cfg.eval_test_per_class)
    metrics = evaluate_toy_clip(
        model,
        tokenizer,
        load_split_arrays(cfg.data_root, "train"),
        load_split_arrays(cfg.data_root, "test"),
        CLASS_NAMES,
        TEMPLATES,
        descriptions(),
    )
    return metrics.as_dict()


NUMBER_FLAGS = (  # PretrainConfig's int and float fields given as --name flags, in --help's order
    "steps",
    "dense_steps",
    "object_steps",
    "batch_size",
    "warmup_steps",
    "dense_warmup_steps",
    "object_warmup_steps",
    "seed",
    "n_images",
    "n_other_birds",
    "other_birds_from_stage",
    "ckpt_every",
    "threads",
    "eval_train_per_class",
    "eval_test_per_class",
    "distill_prototypes",
    "distill_hidden",
    "lr",
    "dense_lr",
    "object_lr",
    "weight_decay",
    "p_name",
    "grounding_weight",
    "grounding_pool_temperature",
    "grounding_temperature",
    "grounding_overlap_weight",
    "locality_weight",
    "centring_weight",
    "pooled_weight",
    "fg_pool_weight",
    "object_weight",
    "background_weight",
    "cut_weight",
    "cut_margin",
    "boundary_band",
    "band_weight",
    "soap_pool_weight",
    "soap_attention_weight",
    "pool_centring_weight",
    "region_weight",
    "name_zipf",
    "p_lookalike",
    "distill_weight",
    "distill_momentum",
    "distill_mask_ratio",
    "distill_student_temperature",
    "distill_teacher_temperature",
    "zoom_min",
    "p_zoom",
    "zoom_from_stage",
)
FLAG_HELP = {"p_name": "share of the commonest species' captions that name it"}


def parse_args(argv: list[str] | None = None) -> PretrainConfig:
    defaults = PretrainConfig(out="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint folder (becomes an open_clip local-dir)")
    hints = typing.get_type_hints(PretrainConfig)  # each number flag's type is its field's
    for name in NUMBER_FLAGS:
        p.add_argument(f"--{name}", type=hints[name], default=getattr(defaults, name), help=FLAG_HELP.get(name))
    p.add_argument("--lookalike_rule", choices=LOOKALIKE_RULES, default=defaults.lookalike_rule)
    p.add_argument(
        "--locality_paste",
        choices=tuple(LOCALITY_PASTES),
        default=defaults.locality_paste,
        help="the locality loss pastes one random block of another image, or everything but a lattice of "
        "every second patch (each kept patch loses all its neighbours)",
    )
    p.add_argument("--band_terms", default=defaults.band_terms, help="stage-3 terms --boundary_band applies to")
    p.add_argument("--data_root", default=defaults.data_root)
    p.add_argument("--init", default="", help="fine-tune: start from this open_clip local-dir folder's weights")
    p.add_argument("--stop_after", type=int, default=None, help="stop after this step (resumable)")
    p.add_argument("--no_augment", dest="augment", action="store_false")
    p.add_argument("--scene_words", action="store_true", help="dense-stage captions also name colour and scene")
    p.add_argument(
        "--soap_attention_radial",
        action="store_true",
        help="--soap_attention_weight's gradient along each token only (lengths, not the cosines the cut reads)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    args = p.parse_args(argv)
    argv_list = sys.argv[1:] if argv is None else argv
    command = "python -m microclip.toyworld.pretrain " + shlex.join(argv_list)
    try:
        return PretrainConfig(**vars(args), command=command)
    except ValueError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = pretrain(parse_args(argv))
    print(json.dumps(summary.get("metrics", {"stopped_at_step": summary.get("step")}), indent=2))


if __name__ == "__main__":
    main()
