"""What is true of a known toy image on a model's patch grid: where the bird and each of its parts are; and what
each branch answers when the same bird is drawn again without some of its parts.

A known image (a bundled example or a generated split's, recognised by its pixels: ``lookup``) gives back the
sample that drew it; its pixel masks, shared out over the patches of the crop the model sees, are what the
walkthrough, Explore and the command line state as facts of *this* image ("9 of the 13 foreground patches are on
the bird"). Any other image has no truth, and nothing is claimed of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from microclip.explain import Explanation, explain_image
from microclip.explainers import mask_on_grid
from microclip.model import MicroCLIP
from microclip.scoring import patch_coverage
from microclip.toyworld.lookup import enlarge, find_toyworld_sample
from microclip.toyworld.render import Sample, rerender
from microclip.toyworld.world import PARTS, SPECIES
from microclip.walkthrough import BranchChange, PatchTruth, branch_changes


def toy_sample(picture: Image.Image) -> Sample | None:
    """The toy world's ground truth of a known toy image (square, so the model's centre crop is all of it)."""
    if picture.width != picture.height:
        return None
    return find_toyworld_sample(np.asarray(picture.convert("RGB")))


def toy_truth(picture: Image.Image, grid: tuple[int, int]) -> PatchTruth | None:
    """Where the bird and each of its parts are on the model's patch grid, for a known toy image; else None."""
    sample = toy_sample(picture)
    return sample_truth(sample, grid) if sample is not None else None


def sample_truth(sample: Sample, grid: tuple[int, int]) -> PatchTruth:
    """A known toy sample's bird and parts on the model's patch grid."""

    def share(mask: np.ndarray) -> np.ndarray:
        return patch_coverage(mask_on_grid(mask, grid)[None], grid)[0].reshape(grid)

    parts = {name: share(sample.part_labels == 1 + index) for index, name in enumerate(PARTS)}
    return PatchTruth(share(sample.bird_mask), parts, SPECIES[sample.species].name)


@dataclass(frozen=True)
class Erased:
    """The same bird drawn again without ``parts`` (erased together), and each branch's answer before and after."""

    parts: tuple[str, ...]
    original: np.ndarray  # (S, S, 3) uint8: the sample as the world drew it
    erased: np.ndarray  # (S, S, 3) uint8: the same seed, pose, colours and background, the parts left unpainted
    changes: tuple[BranchChange, ...]
    species: str  # the bird's true species


def erase(
    model: MicroCLIP,
    picture: Image.Image,
    sample: Sample,
    parts: Sequence[str],
    ratio: float | None = None,
    before: Explanation | None = None,
) -> Erased:
    """``picture`` (a known toy image, ``sample`` its truth) against the same bird without ``parts``, both explained
    by ``model`` at ``ratio`` (``before``: the picture's explanation, when the caller has it). The erased bird is
    enlarged as the picture was (the bundled examples are nearest-neighbour enlargements), so both are read alike."""
    parts = tuple(part for part in PARTS if part in parts)
    erased = rerender(sample, parts).image
    factor = picture.width // sample.image.shape[0]
    erased_picture = Image.fromarray(enlarge(erased, factor) if factor > 1 else erased)
    before = before if before is not None else explain_image(model, picture, ratio)
    species = SPECIES[sample.species].name
    changes = branch_changes(before, explain_image(model, erased_picture, ratio), species)
    return Erased(parts, sample.image, erased, changes, species)


def erase_each_part(model: MicroCLIP, picture: Image.Image, ratio: float | None = None) -> list[Erased]:
    """Each part the bird shows erased on its own, in PARTS order, then (when it shows more than one) all of them
    together; nothing for a picture that is not a known toy image. One forward pass for the picture and one per
    erased bird."""
    sample = toy_sample(picture)
    if sample is None:
        return []
    before = explain_image(model, picture, ratio)
    shown = sample.visible_parts()
    alone = [erase(model, picture, sample, (part,), ratio, before) for part in shown]
    return alone + ([erase(model, picture, sample, tuple(shown), ratio, before)] if len(shown) > 1 else [])


__all__ = ["Erased", "erase", "erase_each_part", "sample_truth", "toy_sample", "toy_truth"]
