"""The raw patch grid: each patch drawn as one block (optionally with its number), and patch geometry.

Overlays smooth a map over the picture; this view shows exactly what the model computed, one
value per patch, which is what users of other saliency tools keep asking for.
"""

from __future__ import annotations

import cv2
import numpy as np

from viz.colormaps import (
    DEFAULT_COLORMAP,
    clip_normalize,
    colorize,
    colorize_diverging,
    light_background,
    symmetric_limit,
)


def patch_at(x: float, y: float, size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) of the patch under pixel (x, y) of a picture of ``size`` = (W, H) covering ``grid``.

    Clicks on the last pixel row or column are clamped into the grid.
    """
    width, height = size
    rows, cols = grid
    row = min(max(int(y * rows / height), 0), rows - 1)
    col = min(max(int(x * cols / width), 0), cols - 1)
    return row, col


def patch_box(row: int, col: int, size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1), end-exclusive, of one patch in a picture of ``size`` = (W, H)."""
    width, height = size
    rows, cols = grid
    return (round(col * width / cols), round(row * height / rows),
            round((col + 1) * width / cols), round((row + 1) * height / rows))


def outline_patch(image: np.ndarray, row: int, col: int, grid: tuple[int, int],
                  colour: tuple[int, int, int] = (255, 255, 255), thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` with one patch framed (to show which patch a click selected)."""
    x0, y0, x1, y1 = patch_box(row, col, (image.shape[1], image.shape[0]), grid)
    out = image.copy()
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, thickness)
    return out


def _blocks(colours: np.ndarray, cell: int) -> np.ndarray:
    """Repeat each (h, w) colour into a cell × cell block."""
    return np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)


def _write_numbers(image: np.ndarray, values: np.ndarray, cell: int, fmt: str) -> None:
    """Print each grid value, centred in its block (in place)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.25, cell / 90.0)
    for (row, col), value in np.ndenumerate(values):
        text = format(float(value), fmt)
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        origin = (col * cell + (cell - tw) // 2, row * cell + (cell + th) // 2)
        colour = (0, 0, 0) if light_background(image[row * cell + cell // 2, col * cell + cell // 2]) \
            else (255, 255, 255)
        cv2.putText(image, text, origin, font, scale, colour, 1, cv2.LINE_AA)


def grid_view(values: np.ndarray, cell: int = 32, cmap: str = DEFAULT_COLORMAP,
              clip: tuple[float, float] = (0.0, 100.0), numbers: bool = False, fmt: str = ".3f") -> np.ndarray:
    """The raw (h, w) map as an (h·cell, w·cell, 3) uint8 picture, one flat block per patch.

    Colours use the same percentile clipping as the overlays; ``numbers`` prints the raw values.
    """
    image = _blocks(colorize(clip_normalize(values, *clip), cmap), cell)
    if numbers:
        _write_numbers(image, np.asarray(values), cell, fmt)
    return image


def difference_grid_view(difference: np.ndarray, cell: int = 32, limit: float | None = None,
                         numbers: bool = False, fmt: str = "+.3f") -> np.ndarray:
    """A signed (h, w) map as blocks in a diverging colormap (red > 0, blue < 0, white = 0)."""
    limit = symmetric_limit(difference) if limit is None else limit
    image = _blocks(colorize_diverging(difference, limit), cell)
    if numbers:
        _write_numbers(image, np.asarray(difference), cell, fmt)
    return image


def cell_size(grid: tuple[int, int], target: int) -> int:
    """The block size that makes a grid about ``target`` pixels on its longer side (at least 4)."""
    return max(4, target // max(grid))
