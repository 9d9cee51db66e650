"""How self-training would label a picture (Explore's "How would adaptation label this picture?").

``microclip.label_view`` computes DKA's label of one picture with the crops and halves behind it; this adds what the
app knows beside the model: the model's own recipe (its γ, K and crop sizes; the reference's for a zero-shot model),
and on a known toy bird its species and which parts each crop holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from microclip.label_view import PictureLabel, label_draws, label_picture, recipe_crops
from microclip.toyworld.truth import toy_sample
from microclip.toyworld.world import PARTS, SPECIES
from studio.redescribe import sentences_in_use
from studio.registry import ModelRegistry

PART_INSIDE = 0.5  # a crop "holds" a part when at least this share of the part's pixels is inside it


@dataclass(frozen=True)
class CropTruth:
    """What one crop of a known toy bird holds."""

    bird: float  # share of the bird's pixels inside the crop
    parts: tuple[str, ...]  # the parts at least PART_INSIDE inside, in PARTS order


@dataclass(frozen=True)
class LabelStory:
    """A picture's DKA label, the recipe it was made with, and on a known toy bird the truth beside it."""

    label: PictureLabel
    recipe: str  # whose settings: "its adaptation's" or "the reference's (a zero-shot model)"
    debiased: bool  # the model's run also took a running class marginal out of its labels (not shown here)
    mode: str = "microclip"  # how the model's own run labelled its images (Recipe.mode)
    redescribed: tuple[str, ...] = ()  # classes whose sentences were replaced (the heads then built as a run starts)
    true_class: str | None = None
    crops: tuple[CropTruth, ...] | None = None  # one per crop, on a known toy bird
    draws: tuple[int, ...] = ()  # the label with the crops drawn from seeds seed, seed + 1, ... (more than one asked)

    @property
    def right(self) -> bool | None:
        """Whether the label names the toy bird's species (None where there is no truth)."""
        if self.true_class is None:
            return None
        return self.label.classes[self.label.label] == self.true_class


def crop_truth(part_labels: np.ndarray, bird_mask: np.ndarray, box: tuple[int, int, int, int]) -> CropTruth:
    """What the crop ``box`` (left, top, right, bottom) of a toy sample holds; ``part_labels``: 0 for none, 1 + the
    part's index in PARTS."""
    left, top, right, bottom = box
    inside = np.zeros(bird_mask.shape, bool)
    inside[top:bottom, left:right] = True
    bird = bird_mask.astype(bool)
    parts = []
    for index, name in enumerate(PARTS):
        pixels = part_labels == 1 + index
        if pixels.any() and (pixels & inside).sum() >= PART_INSIDE * pixels.sum():
            parts.append(name)
    share = float((bird & inside).sum() / bird.sum()) if bird.any() else 0.0
    return CropTruth(share, tuple(parts))


def label_story(
    registry: ModelRegistry,
    picture: Image.Image,
    model_name: str | None,
    classes: Sequence[str] | None = None,
    given: dict[str, list[str]] | None = None,
    seed: int = 0,
    typed: dict[str, list[str]] | None = None,
    draws: int = 1,
) -> LabelStory:
    """DKA's label of ``picture`` under the named model (for ``classes`` with ``given`` descriptions, as Explore
    answers), with its adaptation's γ, K and crop sizes, its crops drawn from ``seed``. ``typed`` (class → sentences,
    Explore's what-if): those classes' sentences replaced, ``W_LLM`` and ``Ŵ*`` built from the result, as an
    adaptation from this model with them starts. ``draws`` > 1: the label again with the crops drawn from each of
    ``draws`` seeds from ``seed`` on, as a run draws new crops every epoch."""
    classes = list(classes or registry.get(model_name).classes)
    # typed sentences replace those Explore answers with; with_classes gives the model itself when nothing changed
    described = {**sentences_in_use(registry, model_name, classes, given), **typed} if typed else given
    model = registry.with_classes(model_name, classes, described)
    recipe = registry.adapted_recipe(model_name)
    settings = recipe_crops(recipe)
    label = label_picture(model, picture, seed=seed, **settings)
    drawn = label_draws(model, picture, range(seed, seed + draws), **settings) if draws > 1 else []
    sample = toy_sample(picture)
    truth = SPECIES[sample.species].name if sample is not None else None
    crops = None
    if sample is not None and label.picture.shape[:2] == sample.part_labels.shape:
        crops = tuple(crop_truth(sample.part_labels, sample.bird_mask, c.box) for c in label.crops)
    return LabelStory(
        label=label,
        recipe="its adaptation's" if recipe is not None else "the reference's (a zero-shot model)",
        debiased=bool(recipe is not None and recipe.label_debias),
        mode=recipe.mode if recipe is not None else "microclip",
        redescribed=tuple(sorted(typed or ())),
        true_class=truth if truth in label.classes else None,
        crops=crops,
        draws=tuple(drawn),
    )
