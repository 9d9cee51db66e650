"""How self-training would label one picture: DKA's crops, its two halves and the label they make (docs/method.md §5).

microCLIP never reads a label: each training image gets one from Dynamic Knowledge Aggregation. K random square crops
of the weak view are each read by `[CLS]` and blended into a composite z, weighted by how like the whole picture each
crop is; z against the frozen `W_LLM` is the *static* half, the weak view's `normalize(g + f)` against the learnable
`Ŵ*` the *dynamic* half, and the label is the argmax of γ·static + (1 − γ)·dynamic. This module runs that on one
picture with the same code self-training runs (``labeling.dka_pass``), its crops drawn from a seed, so the app can
show which crops a label came from and which half decided it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from microclip.data.images import to_rgb
from microclip.data.seeded import isolated_rng
from microclip.data.transforms import CropViews, UndoNearestEnlargement, weak_transform
from microclip.labeling import dka_pass
from microclip.model import MicroCLIP
from microclip.modes import eval_mode
from microclip.recipe import Recipe

HALVES = ("static", "dynamic", "combined", "cls")  # the score vectors a PictureLabel holds


@dataclass(frozen=True)
class CropLabel:
    """One of the K crops: where it is, its share of z, and what it says alone against ``W_LLM``."""

    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the picture's pixels
    weight: float  # its share of the composite z (the K shares sum to 1)
    top_class: int  # argmax of this crop's [CLS] embedding against W_LLM
    top_score: float  # that cosine


@dataclass(frozen=True)
class PictureLabel:
    """DKA's label of one picture, with what it was made of. Scores are plain cosines, as DKA's are (no ×100)."""

    classes: tuple[str, ...]
    picture: np.ndarray  # (H, W, 3) uint8: the picture the crops were cut from (an exact enlargement undone)
    gamma: float
    alpha: float
    beta: float
    seed: int
    crops: tuple[CropLabel, ...]
    static: np.ndarray  # (C,) ⟨z, W_LLM⟩
    dynamic: np.ndarray  # (C,) ⟨normalize(g + f), Ŵ*⟩
    combined: np.ndarray  # (C,) γ·static + (1 − γ)·dynamic: the label is its argmax
    cls: np.ndarray  # (C,) ⟨g, Ŵ*⟩: the weak view's [CLS] alone, as a CLS-only self-training labels

    @property
    def label(self) -> int:
        return int(np.argmax(self.combined))

    def winner(self, half: str) -> int:
        """The class one of ``HALVES`` names."""
        return int(np.argmax(self.scores(half)))

    def scores(self, half: str) -> np.ndarray:
        if half not in HALVES:
            raise KeyError(f"no half {half!r}; expected one of {', '.join(HALVES)}")
        return getattr(self, half)

    def top(self, half: str, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` classes one half scores highest, with their scores (ties in class order)."""
        scores = self.scores(half)
        return [(self.classes[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]


def recipe_crops(recipe: Recipe | None) -> dict:
    """``label_picture``'s settings from an adapted model's recipe (the reference's defaults for a zero-shot one)."""
    recipe = recipe if recipe is not None else Recipe()
    return {"gamma": recipe.gamma, "n_crops": recipe.n_crops, "alpha": recipe.alpha, "beta": recipe.beta}


def _views(
    model: MicroCLIP, image: Image.Image, n_crops: int, alpha: float, beta: float, seed: int
) -> tuple[Image.Image, torch.Tensor, list[tuple[int, int, int, int]], torch.Tensor]:
    """The picture (an exact enlargement undone), its weak view, its crops' boxes and the crops, drawn from ``seed``."""
    if n_crops < 1:
        raise ValueError(f"DKA needs at least one crop, got n_crops={n_crops}")
    size = model.backbone.image_size
    picture = UndoNearestEnlargement(size)(to_rgb(image))
    views = CropViews(n_crops, alpha, beta, size)
    with isolated_rng(seed):  # the weak view's crop of a picture that is not square draws from torch
        weak = weak_transform(size)(picture)
    boxes = views.draw_boxes(*picture.size, random.Random(seed))
    return picture, weak, boxes, views.crop(picture, boxes)


@torch.no_grad()
def label_draws(
    model: MicroCLIP,
    image: Image.Image,
    seeds: Sequence[int],
    gamma: float = 0.5,
    n_crops: int = 8,
    alpha: float = 0.5,
    beta: float = 0.9,
) -> list[int]:
    """The label ``label_picture`` gives ``image`` with its crops drawn from each of ``seeds``, in one batch: how
    the label moves as a run draws new crops every epoch."""
    drawn = [_views(model, image, n_crops, alpha, beta, seed) for seed in seeds]
    device = next(model.parameters()).device
    weak = torch.stack([views[1] for views in drawn]).to(device)
    crops = torch.stack([views[3] for views in drawn]).to(device)
    with eval_mode(model):
        return dka_pass(model, weak, crops, gamma).labels.labels.tolist()


@torch.no_grad()
def label_picture(
    model: MicroCLIP,
    image: Image.Image,
    gamma: float = 0.5,
    n_crops: int = 8,
    alpha: float = 0.5,
    beta: float = 0.9,
    seed: int = 0,
) -> PictureLabel:
    """DKA's pseudo-label of ``image`` under ``model``, its ``n_crops`` crops of side U(``alpha``, ``beta``) × the
    short side drawn from ``seed`` (a training run draws them per image and epoch instead)."""
    picture, weak, boxes, crops = _views(model, image, n_crops, alpha, beta, seed)
    device = next(model.parameters()).device
    with eval_mode(model):
        dka = dka_pass(model, weak[None].to(device), crops[None].to(device), gamma)
    w_llm, w_star_hat = model.heads.w_llm.float(), model.heads.w_star_hat().float()
    alone = dka.crop_embeds[0] @ w_llm.T  # (K, C): each crop against W_LLM
    cls = dka.output.tokens.cls_embed.float()[0] @ w_star_hat.T
    return PictureLabel(
        classes=tuple(model.classes),
        picture=np.asarray(picture),
        gamma=float(gamma),
        alpha=float(alpha),
        beta=float(beta),
        seed=int(seed),
        crops=tuple(
            CropLabel(box, float(weight), int(row.argmax()), float(row.max()))
            for box, weight, row in zip(boxes, dka.crop_weights[0].tolist(), alone)
        ),
        static=dka.labels.static[0].cpu().numpy(),
        dynamic=dka.labels.dynamic[0].cpu().numpy(),
        combined=dka.labels.scores[0].cpu().numpy(),
        cls=cls.cpu().numpy(),
    )
