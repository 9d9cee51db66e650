"""What is true of a known toy image on a model's patch grid: where the bird and each of its parts are.

A known image (a bundled example or a generated split's, recognised by its pixels: ``lookup``) gives back the
sample that drew it; its pixel masks, shared out over the patches of the crop the model sees, are what the
walkthrough, Explore and the command line state as facts of *this* image ("9 of the 13 foreground patches are on
the bird"). Any other image has no truth, and nothing is claimed of it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from microclip.explainers import mask_on_grid
from microclip.scoring import patch_coverage
from microclip.toyworld.lookup import find_toyworld_sample
from microclip.toyworld.render import Sample
from microclip.toyworld.world import PARTS, SPECIES
from microclip.walkthrough import PatchTruth


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


__all__ = ["sample_truth", "toy_sample", "toy_truth"]
