"""HTML pieces for the walkthrough's numbers, laid out by the browser: coloured grids with their values,
colour bars with the value range, tiny PNGs scaled up by the browser, horizontal bars, tables.
(The Explore and Compare maps are in ``viz.html``; the encoders are shared.)

Maps are sent at the patch grid's resolution (a few hundred bytes) and enlarged with
``image-rendering: pixelated``, so no large picture is encoded per request.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from viz.colormaps import DIVERGING_COLORMAP, colorize, colorize_diverging, symmetric_limit
from viz.html import gradient_css, jpeg_uri, png_uri, text_colour

MAX_NUMBERED = 10  # grids up to this many patches a side print each value in its cell (7x7 B/32, 8x8 toy)


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(picture: np.ndarray, fmt: str = "PNG", quality: int = 88) -> str:
    """An (H, W, 3) uint8 picture as a ``data:`` URI: PNG, or JPEG for photos."""
    picture = np.ascontiguousarray(picture)
    return png_uri(picture) if fmt.upper() == "PNG" else jpeg_uri(picture, quality)


def img(picture: np.ndarray, width: int, alt: str, fmt: str = "PNG", pixelated: bool = True,
        style: str = "") -> str:
    """An ``<img>`` of ``picture`` drawn ``width`` CSS pixels wide (nearest-neighbour when ``pixelated``)."""
    rendering = "image-rendering:pixelated;" if pixelated else ""
    return (f'<img src="{data_uri(picture, fmt)}" alt="{escape(alt)}" width="{width}" '
            f'style="{rendering}{style}">')


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def colours(values: np.ndarray, cmap: str = "viridis", lo: float | None = None, hi: float | None = None,
            diverging: bool = False) -> tuple[np.ndarray, float, float]:
    """RGB of each value and the range they were scaled to: [lo, hi] (default min..max), or ±limit
    around zero for a diverging scale."""
    values = np.asarray(values, dtype=np.float64)
    if diverging:
        limit = symmetric_limit(values)
        return colorize_diverging(values, limit), -limit, limit
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    unit = np.zeros_like(values) if hi - lo <= 1e-12 else (values - lo) / (hi - lo)
    return colorize(unit.astype(np.float32), cmap), lo, hi


def colorbar(lo: float, hi: float, cmap: str = "viridis", diverging: bool = False, fmt: str = "{:.3g}",
             label: str = "") -> str:
    """A CSS gradient bar with its two ends labelled by value."""
    gradient = gradient_css(DIVERGING_COLORMAP if diverging else cmap)
    title = f'<span class="wt-bar-label">{escape(label)}</span>' if label else ""
    return (f'<div class="wt-colorbar">{title}<span>{escape(fmt.format(lo))}</span>'
            f'<span class="wt-gradient" style="{gradient}"></span>'
            f'<span>{escape(fmt.format(hi))}</span></div>')


def heat_grid(values: np.ndarray, fmt: str = "{:.2f}", cmap: str = "viridis", diverging: bool = False,
              lo: float | None = None, hi: float | None = None, outline: np.ndarray | None = None,
              label: str = "", size: int = 272, bar_fmt: str = "{:.3g}") -> str:
    """An (h, w) map as a table of coloured cells with their values, and its colour bar.

    ``outline`` (h, w) bool frames the cells that are True (e.g. the NCut foreground). Larger grids
    come as a tiny PNG the browser scales up, since their numbers would not fit.
    """
    values = np.asarray(values, dtype=np.float64)
    rgb, lo, hi = colours(values, cmap, lo, hi, diverging)
    rows, cols = values.shape
    bar = colorbar(lo, hi, cmap, diverging, bar_fmt, label)
    if max(rows, cols) > MAX_NUMBERED:
        return f'<div class="wt-map">{img(_framed(rgb, outline), size, label or "map")}{bar}</div>'
    cell = max(14, size // max(rows, cols))
    font = max(8, min(12, cell // 3))
    body = []
    for r in range(rows):
        cells = []
        for c in range(cols):
            colour = rgb[r, c]
            framed = " wt-on" if outline is not None and bool(outline[r][c]) else ""
            cells.append(f'<td class="wt-cell{framed}" title="patch ({r}, {c}): {escape(fmt.format(values[r, c]))}" '
                         f'style="background:{_hex(colour)};color:{text_colour(colour)};width:{cell}px;height:{cell}px;'
                         f'font-size:{font}px">{escape(fmt.format(values[r, c]))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wt-map"><table class="wt-grid">{"".join(body)}</table>{bar}</div>'


def _framed(rgb: np.ndarray, outline: np.ndarray | None, cell: int = 8) -> np.ndarray:
    """The (h, w, 3) colours as cell×cell blocks, with the cells where ``outline`` is True framed in red."""
    picture = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    if outline is not None:
        for r, c in zip(*np.nonzero(np.asarray(outline, dtype=bool))):
            block = picture[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
            block[[0, -1], :] = (228, 87, 46)
            block[:, [0, -1]] = (228, 87, 46)
    return picture


def hbar(value: float, scale: float, colour: str = "#4c78a8", width: int = 120) -> str:
    """A horizontal bar of ``value / scale`` of ``width`` pixels (negative values drawn empty)."""
    fraction = 0.0 if scale <= 0 else min(max(value / scale, 0.0), 1.0)
    return (f'<span class="wt-hbar" style="width:{width}px"><span style="width:{fraction * 100:.1f}%;'
            f'background:{colour}"></span></span>')


def table(header: Sequence[str], rows: Sequence[Sequence[object]], classes: str = "") -> str:
    """A plain table; cells are escaped unless they are already HTML (wrapped in ``Markup``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="wt-table {classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Markup(str):
    """A string that is already HTML (not escaped again by :func:`table`)."""
