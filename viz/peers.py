"""Several saliency maps of one image side by side, on one colour scale, with ground-truth outlines.

Methods produce maps in unrelated units (pooling weights, cosines, gradients), so each map is
min-max normalised over its own patches before colouring: 0 is that map's lowest patch, 1 its
highest. Maps are drawn with one flat block per patch (nearest upsampling), the resolution every
method actually has.
"""

from __future__ import annotations

import cv2
import numpy as np

from viz.colormaps import DEFAULT_COLORMAP, clip_normalize, colorize
from viz.overlay import outline_mask, overlay_map

SCALE_NOTE = "each map min-max normalised over its own patches: 0 = its lowest patch, 1 = its highest"


def unit_scale(saliency: np.ndarray) -> np.ndarray:
    """An (h, w) map scaled to [0, 1] over its own patches (a constant map becomes all zeros)."""
    return clip_normalize(saliency, 0.0, 100.0)


def peer_panel(
    picture: np.ndarray,
    saliency: np.ndarray,
    cmap: str = DEFAULT_COLORMAP,
    opacity: float = 0.6,
    outline: np.ndarray | None = None,
) -> np.ndarray:
    """One map over the (S, S, 3) picture on the shared [0, 1] scale; ``outline``: a pixel mask to outline."""
    panel = overlay_map(
        picture, unit_scale(saliency), opacity=opacity, cmap=cmap, clip=(0.0, 100.0), interpolation="nearest"
    )
    return panel if outline is None else outline_mask(panel, outline)


def colorbar(cmap: str = DEFAULT_COLORMAP, width: int = 448, height: int = 56) -> np.ndarray:
    """A horizontal colour bar for the shared scale, labelled 0 / 0.5 / 1, as (height, width, 3) uint8."""
    bar_height = height // 2
    strip = colorize(np.broadcast_to(np.linspace(0.0, 1.0, width, dtype=np.float32), (bar_height, width)), cmap)
    labels = np.full((height - bar_height, width, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    for text, x in (("0 = lowest patch", 2), ("0.5", width // 2), ("1 = highest patch", width)):
        (text_width, text_height), _ = cv2.getTextSize(text, font, scale, 1)
        left = min(max(x - text_width // 2, 2), width - text_width - 2) if x != 2 else 2
        cv2.putText(labels, text, (left, text_height + 6), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, labels], axis=0)
