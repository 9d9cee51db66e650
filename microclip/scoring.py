"""Score saliency maps against ground-truth masks (the toy world's parts, or any masks a data set has).

Maps are patch grids, one score per patch, flattened to (N_images, P) with P = h * w in raster order.
Pixel masks come from the renderer at image resolution and are reduced to the grid here.

* **Pointing game**: is the map's top patch on a part? A patch is "on" a mask if any of its pixels is; when
  several patches tie for the top, the share of them that are.
* **Mass inside**: the share of the map's mass that falls on the mask's pixels, with the map shifted
  so its lowest patch has zero mass (maps such as cosine similarities can be negative) and each
  patch's mass spread evenly over its pixels.
* **Chance**: a uniform patch over the image, and a uniform patch over the bird (pointing at the bird
  is easy; pointing at the right part of it is not).
"""

from __future__ import annotations

import numpy as np


def patch_coverage(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool pixel masks → (N, h*w) float: the fraction of each patch's pixels in the mask."""
    n, height, width = masks.shape
    h, w = grid
    if height % h or width % w:
        raise ValueError(f"a {height}x{width} mask does not tile into a {h}x{w} patch grid")
    blocks = masks.reshape(n, h, height // h, w, width // w)
    return blocks.mean(axis=(2, 4)).reshape(n, h * w)


def patch_hits(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool pixel masks → (N, h*w) bool: does each patch hold any masked pixel."""
    return patch_coverage(masks, grid) > 0


def pointing_hits(scores: np.ndarray, on_mask: np.ndarray) -> np.ndarray:
    """(N,) float: is each map's top patch on the mask (1 or 0); where several patches tie for the top, the share
    of them that are (a flat map, such as a plain mean's pooling weights, is not scored by whichever tied patch
    comes first)."""
    scores = np.asarray(scores)
    return expected_hit(scores == scores.max(axis=1, keepdims=True), on_mask)


def mass_inside(scores: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """(N,) share of each map's mass on the mask (see the module docstring); 0 for a constant map."""
    scores = np.asarray(scores, dtype=np.float64)
    mass = scores - scores.min(axis=1, keepdims=True)
    total = mass.sum(axis=1)
    inside = (mass * coverage).sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)


def expected_hit(selection: np.ndarray, on_mask: np.ndarray) -> np.ndarray:
    """(N,) hit rate of a patch drawn uniformly from each image's selected patches (0 if none)."""
    chosen = selection.sum(axis=1)
    return np.where(chosen > 0, (selection & on_mask).sum(axis=1) / np.maximum(chosen, 1), 0.0)


def percent(values: np.ndarray) -> float:
    """Mean of hits or shares, in %."""
    return 100.0 * float(np.mean(values))


def cut_on_object(foreground: np.ndarray, coverage: np.ndarray, min_cover: float = 0.25) -> dict[str, np.ndarray]:
    """How well a foreground patch set finds the object, per image.

    Args:
        foreground: (N, P) bool, the cut's foreground patches.
        coverage: (N, P) the share of each patch's pixels on the object (:func:`patch_coverage`).
    Returns ``pixel_precision`` (the share of the foreground's pixels that are the object; 0 for an empty
    foreground) and ``iou`` with the object's patches (those at least ``min_cover`` object).
    """
    object_patches = coverage >= min_cover
    size = foreground.sum(axis=1)
    precision = np.where(size > 0, (coverage * foreground).sum(axis=1) / np.maximum(size, 1), 0.0)
    union = (foreground | object_patches).sum(axis=1)
    iou = np.where(union > 0, (foreground & object_patches).sum(axis=1) / np.maximum(union, 1), 0.0)
    return {"pixel_precision": precision, "iou": iou}


def patch_kinds(on_part: np.ndarray, on_bird: np.ndarray) -> dict[str, np.ndarray]:
    """Each patch's kind, as (N, P) bool masks: on a part, on the bird but no part (the body), off both."""
    return {"part": on_part, "body": on_bird & ~on_part, "background": ~on_bird & ~on_part}


def foreground_makeup(foreground: np.ndarray, on_part: np.ndarray, on_bird: np.ndarray) -> dict[str, np.ndarray]:
    """What a foreground patch set is made of, per image: the shares of its patches of each
    :func:`patch_kinds` kind. The three shares sum to 1; all are 0 for an empty foreground.

    SOAP's query at identity is the mean of these patches, so their makeup decides what it looks like.
    All arguments are (N, P) bool.
    """
    size = np.maximum(foreground.sum(axis=1), 1)
    return {kind: (foreground & mask).sum(axis=1) / size for kind, mask in patch_kinds(on_part, on_bird).items()}
