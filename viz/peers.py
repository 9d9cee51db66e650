"""Several saliency maps of one image side by side, on one colour scale, with ground-truth outlines.

Methods produce maps in unrelated units (pooling weights, cosines, gradients), so each map is
min-max normalised over its own patches before colouring: 0 is that map's lowest patch, 1 its
highest. A signed map (a term that adds to or takes from the class) is drawn instead on a diverging
scale around zero, to its own largest |value|: red adds, blue takes, a zero leaves the picture as it
is. Maps are drawn with one flat block per patch (nearest upsampling), the resolution every method
actually has.
"""

from __future__ import annotations

import cv2
import numpy as np

from viz.colormaps import DEFAULT_COLORMAP, clip_normalize, colorize, colorize_diverging, signed_opacity
from viz.overlay import blend, outline_mask, overlay_map, overlay_signed

SCALE_NOTE = "each map min-max normalised over its own patches: 0 = its lowest patch, 1 = its highest"
SIGNED_NOTE = (
    "a signed map (SOAP, per class) is drawn around zero instead: red adds to the class, blue takes from it, "
    "the picture shows through where a patch adds nothing, full colour at the map's largest |value|"
)


def unit_scale(saliency: np.ndarray) -> np.ndarray:
    """An (h, w) map scaled to [0, 1] over its own patches (a constant map becomes all zeros)."""
    return clip_normalize(saliency, 0.0, 100.0)


def peer_panel(
    picture: np.ndarray,
    saliency: np.ndarray,
    cmap: str = DEFAULT_COLORMAP,
    opacity: float = 0.6,
    outline: np.ndarray | None = None,
    signed: bool = False,
) -> np.ndarray:
    """One map over the (S, S, 3) picture on the shared [0, 1] scale (``signed``: on the diverging scale around
    zero, ``SIGNED_NOTE``); ``outline``: a pixel mask to outline."""
    if signed:
        panel = overlay_signed(picture, saliency, opacity)
    else:
        panel = overlay_map(
            picture, unit_scale(saliency), opacity=opacity, cmap=cmap, clip=(0.0, 100.0), interpolation="nearest"
        )
    return panel if outline is None else outline_mask(panel, outline)


def colorbar(cmap: str = DEFAULT_COLORMAP, width: int = 448, height: int = 56, signed: bool = False) -> np.ndarray:
    """A horizontal colour bar for the shared scale, labelled 0 / 0.5 / 1, as (height, width, 3) uint8; with
    ``signed`` the diverging scale's bar (SIGNED_NOTE) under it, labelled − / 0 / +."""
    bar = _bar(colorize(_ramp(width, height // 2), cmap), ("0 = lowest patch", "0.5", "1 = highest patch"), height)
    if not signed:
        return bar
    # Over white, at the panels' opacity for each |value|: what a signed panel shows where the picture is white.
    ramp = _ramp(width, height // 2) * 2.0 - 1.0
    strip = blend(np.full((*ramp.shape, 3), 255, np.uint8), colorize_diverging(ramp, 1.0), signed_opacity(ramp, 1.0, 1))
    labels = ("- takes from the class", "0", "+ adds to the class")  # Hershey fonts draw ASCII only
    return np.concatenate([bar, _bar(strip, labels, height)], axis=0)


def _ramp(width: int, height: int) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, width)))


def _bar(strip: np.ndarray, texts: tuple[str, str, str], height: int) -> np.ndarray:
    """A colour strip over a white band with three labels: at the left edge, the middle and the right edge."""
    width = strip.shape[1]
    labels = np.full((height - strip.shape[0], width, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    for text, x in zip(texts, (2, width // 2, width)):
        (text_width, text_height), _ = cv2.getTextSize(text, font, scale, 1)
        left = min(max(x - text_width // 2, 2), width - text_width - 2) if x != 2 else 2
        cv2.putText(labels, text, (left, text_height + 6), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, labels], axis=0)
