"""Patch-grid maps drawn over the image the model saw.

Every map in an ``Explanation`` lives on the ViT's (h, w) patch grid; these functions upsample it
to the picture (bilinear for continuous maps, nearest for masks) and blend it in. Scaling is done
on the grid, so percentiles count each patch once, whatever the display size.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from PIL import Image

from viz.colormaps import (
    DEFAULT_COLORMAP,
    clip_normalize,
    colorize,
    colorize_diverging,
    signed_opacity,
    symmetric_limit,
)

Interpolation = Literal["bilinear", "nearest"]
_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def display_crop(image: Image.Image, size: int) -> np.ndarray:
    """The model's centre crop of ``image`` (short side resized, square centre cut) at ``size`` pixels.

    Same geometry as ``microclip.data.transforms.test_transform(crop="center")``, drawn larger so the
    maps can be read; every map is aligned with this picture, not with the uploaded original.
    """
    width, height = image.size
    scale = size / min(width, height)
    resized = image.convert("RGB").resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def upsample(grid_map: np.ndarray, size: tuple[int, int], interpolation: Interpolation = "bilinear") -> np.ndarray:
    """Resize an (h, w) map to ``size`` = (H, W) as float32 (bool masks come back as 0.0 / 1.0)."""
    if interpolation not in _CV2_INTERPOLATION:
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    height, width = size
    values = np.asarray(grid_map, dtype=np.float32)
    return cv2.resize(values, (width, height), interpolation=_CV2_INTERPOLATION[interpolation])


def blend(image: np.ndarray, colours: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """Per-pixel ``image·(1−α) + colours·α`` in uint8; ``alpha`` is a scalar or an (H, W) array."""
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim == 2:
        alpha = alpha[..., None]
    mixed = image.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def overlay_map(
    image: np.ndarray,
    grid_map: np.ndarray,
    opacity: float = 0.5,
    cmap: str = DEFAULT_COLORMAP,
    clip: tuple[float, float] = (0.0, 100.0),
    threshold: float = 0.0,
    interpolation: Interpolation = "bilinear",
) -> np.ndarray:
    """Colour an (h, w) map over an (H, W, 3) uint8 image.

    ``clip`` = (lo, hi) percentiles scale the map to [0, 1]; ``threshold`` is on that [0, 1] scale
    (so one slider means the same for every map), and pixels whose scaled value is below it stay
    the original image. ``opacity`` 0 returns the image unchanged.
    """
    return overlay_unit(image, clip_normalize(grid_map, *clip), opacity, cmap, threshold, interpolation)


def overlay_unit(
    image: np.ndarray,
    unit_map: np.ndarray,
    opacity: float = 0.5,
    cmap: str = DEFAULT_COLORMAP,
    threshold: float = 0.0,
    interpolation: Interpolation = "bilinear",
) -> np.ndarray:
    """Colour an (h, w) map that is already on the [0, 1] scale (values outside are clipped) over the image:
    for maps the caller scales together, so that one colour means one value in all of them."""
    unit = upsample(np.clip(unit_map, 0.0, 1.0), image.shape[:2], interpolation)
    alpha = float(np.clip(opacity, 0.0, 1.0)) * (unit >= threshold)
    return blend(image, colorize(unit, cmap), alpha)


def overlay_signed(
    image: np.ndarray, grid_map: np.ndarray, opacity: float = 0.5, interpolation: Interpolation = "nearest"
) -> np.ndarray:
    """Colour a signed (h, w) map over the image on a diverging scale centred at zero (red above, blue below),
    each pixel's opacity growing with |value| so a zero leaves the picture as it is; full colour at the map's
    largest |value| (``symmetric_limit``)."""
    limit = symmetric_limit(grid_map)
    values = upsample(grid_map, image.shape[:2], interpolation)
    return blend(image, colorize_diverging(values, limit), signed_opacity(values, limit, opacity))


def outline_mask(
    image: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] = (255, 255, 255),
    thickness: int = 2,
    halo: tuple[int, int, int] | None = (0, 0, 0),
) -> np.ndarray:
    """A copy of ``image`` with the borders of a boolean pixel mask drawn (e.g. ground-truth parts).

    The mask may have any resolution covering the same picture; it is resized with nearest-neighbour.
    Inner borders (holes, such as an eye ring's) are drawn too; ``halo`` is a darker stroke under the
    line so it reads on every colormap.
    """
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(mask, dtype=np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(resized, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    out = np.ascontiguousarray(image.copy())
    if halo is not None:
        cv2.drawContours(out, contours, -1, halo, thickness + 2)
    cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def difference_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a − b`` for two patch maps; if the grids differ, both are resampled to the finer one first."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        shape = (max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]))
        a, b = upsample(a, shape), upsample(b, shape)
    return a - b
