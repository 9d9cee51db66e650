"""Faithfulness of a saliency map: does a branch's decision depend on the patches the map ranks first?

Pointing (plausibility) asks whether a map looks at the evidence; deletion asks whether the *model*
uses what the map shows. The score is ROAD's (Rong et al. 2022) most-relevant-first deletion, computed
by `grad-cam`'s own implementation (``ROADMostRelevantFirstAverage``: the map's top pixels removed at
each percentile and filled in by noisy linear imputation, so that the hole itself carries no signal):
the mean drop of a branch's probability for the class it predicted on the intact image. A larger drop
means a more faithful map. All three branches (fused, ``[CLS]``, ``[FG]``) are scored from the same
imputed images.

ROAD reads only a map's order, and removes at each percentile every pixel whose value reaches the
percentile's value. A map with many equal values loses them all at once: on a 0/1 mask (the NCut
foreground) every percentile below the background's share takes the whole image, so a mask scored as if
it had found everything the model uses (docs/toyworld.md, round 24). Each map is therefore handed over as
its patches' ranks, equal scores in a seeded random order (:func:`patch_ranks`), so that every percentile
removes its share of whole patches; on maps without ties nothing changes. The imputer's noise comes from the
same fixed seed, so a score is reproducible and every map of an image is scored under the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microclip.heads import BRANCHES
from microclip.model import MicroCLIP
from microclip.modes import eval_mode

ROAD_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# Fixes the order of equal scores and the imputer's noise: a map's score is the same on every call, and every map of
# an image is scored under the same noise, so that two maps' scores differ by their maps alone.
ROAD_SEED = 0


class _BranchProbabilities(nn.Module):
    """images → (B, 3, C) class probabilities of the fused, [CLS] and [FG] branches."""

    def __init__(self, model: MicroCLIP) -> None:
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images).logits
        return torch.stack([logits.fused, logits.cls, logits.fg], dim=1).float().softmax(dim=-1)


class _PredictedClass:
    """grad-cam target: the probability of each branch's own predicted class (one per branch)."""

    def __init__(self, classes: Sequence[int]) -> None:
        self.classes = list(classes)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:  # output: (3, C)
        return output[torch.arange(len(self.classes)), self.classes]


def upsample_maps(maps: np.ndarray, grid: tuple[int, int], size: int) -> np.ndarray:
    """(B, h*w) patch scores → (B, size, size) float32 pixel maps (nearest: each patch's pixels share its score)."""
    scores = torch.as_tensor(np.asarray(maps, dtype=np.float32)).reshape(-1, 1, *grid)
    return F.interpolate(scores, size=(size, size), mode="nearest")[:, 0].numpy()


def patch_ranks(maps: np.ndarray, seed: int = ROAD_SEED) -> np.ndarray:
    """(B, h*w) patch scores → (B, h*w) their ranks scaled to [0, 1]: the same order, equal scores in a random order
    drawn from ``seed`` (the first image's draw first), so that no two patches tie."""
    scores = np.asarray(maps, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"maps must be (images, patches), got shape {scores.shape}")
    rng = np.random.default_rng(seed)
    ranks = np.empty_like(scores)
    positions = np.arange(scores.shape[1], dtype=np.float64)
    for row, values in enumerate(scores):
        order = np.lexsort((rng.random(len(values)), values))  # by score, then by a random key
        ranks[row, order] = positions
    return ranks / max(scores.shape[1] - 1, 1)


def road_cams(maps: np.ndarray, grid: tuple[int, int], size: int, seed: int = ROAD_SEED) -> np.ndarray:
    """(B, h*w) patch scores → the (B, size, size) maps ROAD thresholds: the patches' tie-free ranks, each patch's
    pixels sharing its rank."""
    return upsample_maps(patch_ranks(maps, seed), grid, size)


def deletion_drops(
    model: MicroCLIP,
    images: torch.Tensor,
    maps: np.ndarray,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = ROAD_SEED,
) -> dict[str, np.ndarray]:
    """ROAD most-relevant-first deletion for one map per image.

    Args:
        images: (B, 3, S, S) in [0, 1].
        maps: (B, h*w) patch scores on ``model``'s grid (higher = more relevant; only their order counts).
    Returns: {branch: (B,) mean drop of the branch's predicted-class probability} (positive = it fell).
    """
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage

    with eval_mode(model):
        wrapped = _BranchProbabilities(model)
        predicted = wrapped(images).argmax(dim=-1)  # (B, 3)
        targets = [_PredictedClass(row.tolist()) for row in predicted]
        cams = road_cams(maps, model.backbone.grid, images.shape[-1], seed)
        with torch.random.fork_rng(devices=[]):  # the imputer's noise, drawn without moving the caller's stream
            torch.manual_seed(seed)
            change = ROADMostRelevantFirstAverage(percentiles=list(percentiles))(images, cams, targets, wrapped)
    change = np.asarray(change, dtype=np.float64).reshape(len(images), len(BRANCHES))
    return {branch: -change[:, i] for i, branch in enumerate(BRANCHES)}


def deletion_scores(
    model: MicroCLIP,
    images: torch.Tensor,
    maps: dict[str, np.ndarray],
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = ROAD_SEED,
) -> dict[str, dict[str, float]]:
    """{map name: {branch: mean ROAD deletion drop over the images}} for several maps of the same images."""
    out = {}
    for name, scores in maps.items():
        drops = deletion_drops(model, images, scores, percentiles, seed)
        out[name] = {branch: float(values.mean()) for branch, values in drops.items()}
    return out
