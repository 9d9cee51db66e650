"""Values → colours: percentile clipping, OpenCV colormaps, and a diverging map for signed values."""

from __future__ import annotations

import cv2
import numpy as np
from matplotlib import colormaps

# OpenCV colormaps offered in the app (perceptually uniform ones first; jet for familiarity).
COLORMAPS: dict[str, int] = {
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "cividis": cv2.COLORMAP_CIVIDIS,
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
}
DEFAULT_COLORMAP = "viridis"  # one default for every map view (issue 17); signed values use DIVERGING_COLORMAP
DIVERGING_COLORMAP = "RdBu_r"  # red = positive, blue = negative, white = zero


def clip_normalize(values: np.ndarray, lo: float = 0.0, hi: float = 100.0) -> np.ndarray:
    """Scale ``values`` to [0, 1] between their ``lo``-th and ``hi``-th percentiles, clipping outside.

    Percentile clipping keeps one extreme patch from washing out the rest of the map.
    A constant map (no spread between the percentiles) becomes all zeros.
    """
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got lo={lo}, hi={hi}")
    values = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(values, [lo, hi])
    if high - low <= 1e-12:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def colorize(unit: np.ndarray, cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Map values in [0, 1] of any 2-D shape to RGB uint8 with an OpenCV colormap (``COLORMAPS``)."""
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colormap {cmap!r}; choose one of {', '.join(COLORMAPS)}")
    levels = np.round(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(levels, COLORMAPS[cmap])
    return np.ascontiguousarray(bgr[..., ::-1])  # OpenCV returns BGR


def light_background(rgb) -> bool:
    """Whether black text reads better than white on this RGB colour (Rec. 601 luma above 140)."""
    return 0.299 * float(rgb[0]) + 0.587 * float(rgb[1]) + 0.114 * float(rgb[2]) > 140


def symmetric_limit(values: np.ndarray, percentile: float = 100.0) -> float:
    """The half-range of a diverging scale: the ``percentile``-th percentile of |values| (never 0)."""
    limit = float(np.percentile(np.abs(values), percentile)) if np.size(values) else 0.0
    return limit if limit > 1e-12 else 1.0


def colorize_diverging(values: np.ndarray, limit: float | None = None, cmap: str = DIVERGING_COLORMAP) -> np.ndarray:
    """Map signed values to RGB uint8 with zero at the colormap's centre (white for RdBu).

    ``limit`` is the value drawn at full colour; by default the largest |value|.
    """
    limit = symmetric_limit(values) if limit is None else float(limit)
    unit = np.clip(0.5 + np.asarray(values, dtype=np.float64) / (2.0 * limit), 0.0, 1.0)
    rgba = colormaps[cmap](unit)  # (..., 4) floats in [0, 1]
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def signed_opacity(values: np.ndarray, limit: float, opacity: float) -> np.ndarray:
    """Per-value opacity of a signed map drawn over a picture: ``opacity`` at |value| ≥ ``limit``, 0 at zero, so
    a value that adds nothing leaves the picture as it is."""
    return float(np.clip(opacity, 0.0, 1.0)) * np.clip(np.abs(np.asarray(values, dtype=np.float64)) / limit, 0.0, 1.0)
