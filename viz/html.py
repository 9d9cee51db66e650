"""Maps and charts as light HTML the browser draws: arrays in, strings out. No Gradio here.

Every map of an explanation lives on the ViT's patch grid (8×8 for the toy model, 7×7 for a
ViT-B/32). Drawing it over a 448-px picture on the server, encoding that as PNG, writing it to a
file and having each client download it cost ~100× the forward pass. Here the picture is sent once
as a small JPEG, each map as a tiny RGBA PNG (the grid itself for masks and the raw view, a few
pixels per patch for smooth maps, so the colormap is applied to interpolated *values*), and the
browser scales them up and stacks them. Colour bars are CSS gradients labelled with the real values.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files

import cv2
import numpy as np

from viz.colormaps import (
    DIVERGING_COLORMAP,
    clip_normalize,
    colorize,
    colorize_diverging,
    light_background,
    signed_opacity,
)

SMOOTH_PIXELS_PER_PATCH = 8  # smooth maps are coloured at this many pixels per patch, then scaled by the browser
SMOOTH_MAX = 128  # ... but never more than this many pixels on a side
MASK_RGB = (0, 220, 90)  # NCut foreground tint: green reads as "kept" on most photos
MASK_MIN_OPACITY = 0.15  # the tint stays visible with the opacity slider at 0: a mask is not a heat map
CLS_COLOUR = "#4C72B0"  # [CLS] part of a logit
FG_COLOUR = "#DD8452"  # [FG] part of a logit

# The app's styles and scripts are package files (viz/static/), read once.
STUDIO_CSS = files("viz").joinpath("static/studio.css").read_text(encoding="utf-8")
MAPS_CSS = STUDIO_CSS  # the maps' Gradio HTML components pass it as css_template (scoped to them)
MAPS_JS = files("viz").joinpath("static/maps.js").read_text(encoding="utf-8")


# ------------------------------------------------------------------ encoding


def png_bytes(pixels: np.ndarray) -> bytes:
    """An (h, w, 3) RGB or (h, w, 4) RGBA uint8 array encoded as PNG."""
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def png_uri(pixels: np.ndarray) -> str:
    """A data URI of an (h, w, 3) RGB or (h, w, 4) RGBA uint8 array as PNG."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def jpeg_uri(pixels: np.ndarray, quality: int = 85) -> str:
    """A data URI of an (h, w, 3) RGB uint8 array as JPEG (the photo under the maps)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def photo_style(photo_uri: str) -> str:
    """The style attribute that makes ``photo_uri`` the picture under every map inside the element."""
    return f"--mc-photo:url({photo_uri})"


# ------------------------------------------------------------------ layers


def smooth_size(grid: tuple[int, int]) -> tuple[int, int]:
    scale = max(1, min(SMOOTH_PIXELS_PER_PATCH, SMOOTH_MAX // max(grid)))
    return grid[0] * scale, grid[1] * scale


def value_layer(
    values: np.ndarray, cmap: str, clip: tuple[float, float], opacity: float, threshold: float, smooth: bool
) -> np.ndarray:
    """An RGBA layer of an (h, w) map: percentile-clipped to [0, 1], coloured, transparent below ``threshold``.

    Smooth layers interpolate the values (bilinear) to a few pixels per patch before colouring, so the
    colours between two patches are the colormap's, not a blend of two colours.
    """
    unit = clip_normalize(values, *clip)
    if smooth:
        height, width = smooth_size(unit.shape)
        unit = cv2.resize(unit, (width, height), interpolation=cv2.INTER_LINEAR)
    alpha = np.where(unit >= threshold, float(np.clip(opacity, 0.0, 1.0)), 0.0)
    return np.dstack([colorize(unit, cmap), np.round(alpha * 255).astype(np.uint8)])


def mask_layer(mask: np.ndarray, opacity: float) -> np.ndarray:
    """An RGBA layer, one pixel per patch: the mask's patches tinted, the others clear."""
    mask = np.asarray(mask, dtype=bool)
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = MASK_RGB
    rgba[..., 3] = np.where(mask, round(255 * float(np.clip(max(opacity, MASK_MIN_OPACITY), 0.0, 1.0))), 0)
    return rgba


def diverging_layer(values: np.ndarray, limit: float, opacity: float) -> np.ndarray:
    """An RGBA layer, one pixel per patch, of a signed map: alpha grows with |value| / ``limit``."""
    rgb = colorize_diverging(values, limit)
    return np.dstack([rgb, np.round(signed_opacity(values, limit, opacity) * 255).astype(np.uint8)])


# ------------------------------------------------------------------ pieces


def gradient_css(cmap: str, stops: int = 9) -> str:
    """A left-to-right CSS gradient sampled from an OpenCV colormap (or the diverging map)."""
    ramp = np.linspace(0.0, 1.0, stops, dtype=np.float32)[None]
    rgb = colorize_diverging(ramp * 2 - 1, 1.0) if cmap == DIVERGING_COLORMAP else colorize(ramp, cmap)
    colours = ", ".join(f"rgb({r},{g},{b})" for r, g, b in rgb[0])
    return f"background:linear-gradient(to right, {colours})"


def colorbar(cmap: str, ticks: Sequence[str], note: str = "", label: str = "") -> str:
    """The app's one colour bar: the gradient, its tick labels (left, middle, right), an optional note under it
    (e.g. the ``scale_note``) and an optional label over it."""
    labels = "".join(f"<span>{html.escape(t)}</span>" for t in ticks)
    title = f"<div class='mc-note'>{html.escape(label)}</div>" if label else ""
    extra = f"<div class='mc-note mc-scale'>{html.escape(note)}</div>" if note else ""
    return f"{title}<div class='mc-bar' style='{gradient_css(cmap)}'></div><div class='mc-ticks'>{labels}</div>{extra}"


def value_range(values: np.ndarray, clip: tuple[float, float]) -> tuple[float, float]:
    """The values drawn at the colormap's two ends (the clip percentiles)."""
    low, high = np.percentile(np.asarray(values, dtype=np.float64), clip)
    return float(low), float(high)


def word_list(words: Sequence[str]) -> str:
    """Words joined as a sentence lists them: "a", "a and b", "a, b and c"."""
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def num(value: float | None, digits: int = 4, scientific: bool = False) -> str:
    """The app's one number format: fixed-point with ``digits`` decimals, or scientific where that would
    print a non-zero value as zero (a null weight of 2.46e-05 must never read as 0.0000) or where asked
    (``scientific``: the null weight, in the same notation everywhere); "–" for None."""
    if value is None:
        return "–"
    if scientific or (value != 0 and abs(value) < 10 ** -(digits - 1)):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


fmt_value = num  # the name the map views used first


def cell_text(value: float, fmt: str) -> str:
    """A patch's value printed in its cell (``fmt`` as for ``format``): a short exponent where ``fmt`` would
    print a non-zero value as zero."""
    text = format(value, fmt)
    if value != 0 and float(text) == 0:
        return f"{value:.0e}"
    return text


def scale_note(clip: tuple[float, float] | None = None, diverging: bool = False, absolute: bool = False) -> str:
    """How a map's colours are scaled, said next to it: its own min–max, its own percentiles, ± its largest
    |value| around 0, or an absolute range fixed in advance."""
    if absolute:
        return "colours: a fixed range (the same for every image)"
    if diverging:
        return "colours: ± this map's largest |value|, 0 in the middle"
    if clip is None or tuple(clip) == (0.0, 100.0):
        return "colours: this map's own min–max"
    return f"colours: this map's own {clip[0]:g}th–{clip[1]:g}th percentiles (clipped outside)"


def _selection(selected: tuple[int, int] | None, grid: tuple[int, int]) -> str:
    if selected is None:
        return ""
    row, col = selected
    rows, cols = grid
    return (
        f"<div class='mc-sel' style='left:{100 * col / cols:.3f}%;top:{100 * row / rows:.3f}%;"
        f"width:{100 / cols:.3f}%;height:{100 / rows:.3f}%'></div>"
    )


def stage(
    layer_uri: str | None,
    grid: tuple[int, int],
    pixelated: bool,
    selected: tuple[int, int] | None,
    photo: bool = True,
    inner: str = "",
    elem_id: str = "",
) -> str:
    """One square map: the photo (if ``photo``), a scaled-up layer, an optional frame and inner markup."""
    rows, cols = grid
    layer = f"<img class='{'mc-px' if pixelated else ''}' src='{layer_uri}' alt=''>" if layer_uri else ""
    background = "" if photo else " style='background-image:none;background-color:#222'"
    ident = f" id='{elem_id}'" if elem_id else ""
    return (
        f"<div class='mc-stage'{ident} data-rows='{rows}' data-cols='{cols}'{background}>{layer}{inner}"
        f"{_selection(selected, grid)}</div>"
    )


def figure(title: str, body: str, footer: str = "") -> str:
    return f"<figure class='mc-map'><figcaption>{html.escape(title)}</figcaption>{body}{footer}</figure>"


@dataclass(frozen=True)
class ColourScale:
    """How a map's values become colours: a colormap over the values between two percentiles of the map."""

    cmap: str
    clip: tuple[float, float] = (0.0, 100.0)

    def bar(self, values: np.ndarray, *notes: str) -> str:
        """The colour bar labelled with the real values at its ends, then the notes and how it is scaled."""
        low, high = value_range(values, self.clip)
        said = " · ".join(filter(None, [*notes[:1], scale_note(self.clip), *notes[1:]]))
        return colorbar(self.cmap, (num(low), num((low + high) / 2), num(high)), said)


def value_figure(
    title: str,
    values: np.ndarray,
    scale: ColourScale,
    opacity: float,
    threshold: float,
    selected: tuple[int, int] | None,
    note: str = "",
) -> str:
    """A continuous map over the photo with its colour bar labelled by the real values at its ends."""
    low, high = value_range(values, scale.clip)
    layer = png_uri(value_layer(values, scale.cmap, scale.clip, opacity, threshold, smooth=True))
    hidden = f"below {num(low + threshold * (high - low))} transparent" if threshold > 0 else ""
    return figure(title, stage(layer, values.shape, False, selected), scale.bar(values, note, hidden))


def mask_figure(title: str, mask: np.ndarray, opacity: float, selected: tuple[int, int] | None, note: str = "") -> str:
    """The NCut mask over the photo, with a legend that counts its patches (and an optional note)."""
    mask = np.asarray(mask, dtype=bool)
    layer = png_uri(mask_layer(mask, opacity))
    r, g, b = MASK_RGB
    legend = (
        f"<div class='mc-note'><span class='mc-swatch' style='background:rgb({r},{g},{b})'></span>"
        f"foreground: {int(mask.sum())} of {mask.size} patches ({mask.mean():.0%}); clear: the other side of "
        "the cut</div>"
    )
    if note:
        legend += f"<div class='mc-note'>{html.escape(note)}</div>"
    return figure(title, stage(layer, mask.shape, True, selected), legend)


def text_colour(rgb: np.ndarray) -> str:
    """CSS colour of text on a cell of this RGB colour: black on light cells, white on dark ones."""
    return "#000" if light_background(rgb) else "#fff"


def raw_figure(
    title: str,
    values: np.ndarray,
    scale: ColourScale,
    numbers: bool,
    fmt: str,
    selected: tuple[int, int] | None,
    diverging_limit: float | None = None,
) -> str:
    """The bare patch grid: one flat block per patch (no photo), optionally with each value printed."""
    values = np.asarray(values, dtype=np.float64)
    rows, cols = values.shape
    if diverging_limit is not None:
        rgb = colorize_diverging(values, diverging_limit)
        ticks = (num(-diverging_limit), "0", num(diverging_limit))
        bar = colorbar(DIVERGING_COLORMAP, ticks, scale_note(diverging=True))
    else:
        rgb = colorize(clip_normalize(values, *scale.clip), scale.cmap)
        bar = scale.bar(values)
    inner = ""
    if numbers:
        cells = "".join(
            f"<span style='color:{text_colour(rgb[r, c])}'>{cell_text(values[r, c], fmt)}</span>"
            for r in range(rows)
            for c in range(cols)
        )
        inner = (
            f"<div class='mc-cells' style='grid-template-columns:repeat({cols},1fr);"
            f"grid-template-rows:repeat({rows},1fr)'>{cells}</div>"
        )
    layer = png_uri(np.dstack([rgb, np.full((rows, cols), 255, np.uint8)]))
    return figure(title, stage(layer, (rows, cols), True, selected, photo=False, inner=inner), bar)


def maps_block(photo_uri: str | None, figures: Sequence[str]) -> str:
    """Several figures in a responsive row, sharing one photo (sent once; None for views without it)."""
    style = f" style='{photo_style(photo_uri)}'" if photo_uri else ""
    return f"<div class='mc-maps'{style}>{''.join(figures)}</div>"


# ------------------------------------------------------------------ the contribution chart


@dataclass(frozen=True)
class ContributionRow:
    name: str
    mark: str  # "predicted", "runner-up", "[CLS] pick", ... or ""
    cls_part: float
    fg_part: float

    @property
    def total(self) -> float:
        return self.cls_part + self.fg_part


def contribution_html(rows: Sequence[ContributionRow], ratio: float) -> str:
    """Why this class? Each class's fused logit split into its exact [CLS] and [FG] parts, with the values,
    and its gap to the prediction on its own (zoomed) axis, split into the two parts' shares.

    The totals of the top classes often differ by a fraction of a logit out of ~60, invisible on an axis
    from 0; so the left bars show the composition from 0 and the right column the gap, scaled to the
    largest gap shown, where the margin that decides the prediction is readable.
    """
    if not rows:
        return ""
    top = rows[0]
    # One axis for every row: 0 where the longest negative stack ends, positive parts stacked to its right,
    # negative ones to its left (a [FG] part can be negative: the class vector points away from [FG]).
    negative = max(sum(-p for p in (r.cls_part, r.fg_part) if p < 0) for r in rows)
    positive = max(sum(p for p in (r.cls_part, r.fg_part) if p > 0) for r in rows)
    span = max(negative + positive, 1e-9)
    zero = 100 * negative / span
    gaps = [top.total - r.total for r in rows]
    gap_span = max(max(gaps), 1e-9)
    legend = (
        f"<span class='mc-swatch' style='background:{CLS_COLOUR}'></span>[CLS] part = ρ·100·cos(g, class)"
        f" &nbsp; <span class='mc-swatch' style='background:{FG_COLOUR}'></span>[FG] part = "
        f"(1−ρ)·100·cos(f, class) &nbsp; at ρ = {ratio:.2f}; the thin line is 0"
    )
    body = []
    for row, gap in zip(rows, gaps):
        name = html.escape(row.name) + (f" <i>({html.escape(row.mark)})</i>" if row.mark else "")
        segments, right, left = [], zero, zero
        for part, colour, title in ((row.cls_part, CLS_COLOUR, "[CLS] part"), (row.fg_part, FG_COLOUR, "[FG] part")):
            width = 100 * abs(part) / span
            if part >= 0:
                start, right = right, right + width
            else:
                left -= width
                start = left
            segments.append(
                f"<div title='{title} {part:.3f}' style='position:absolute;top:0;bottom:0;"
                f"left:{start:.2f}%;width:{width:.2f}%;background:{colour}'></div>"
            )
        bars = (
            f"<div style='position:relative;height:14px'>{''.join(segments)}<div style='position:absolute;"
            f"top:-2px;bottom:-2px;left:{zero:.2f}%;width:1px;background:#000'></div></div>"
        )
        if gap <= 0:
            gap_cell = "<b>top</b>"
        else:
            d_cls, d_fg = top.cls_part - row.cls_part, top.fg_part - row.fg_part
            width = 100 * gap / gap_span
            gap_cell = (
                f"<div style='background:#999;height:8px;width:{width:.2f}%'></div><span>−{gap:.3f}</span> "
                f"<span class='mc-note'>([CLS] {-d_cls:+.3f}, [FG] {-d_fg:+.3f})</span>"
            )
        body.append(
            f"<tr><td>{name}</td><td style='text-align:right'>{row.cls_part:.3f}</td>"
            f"<td style='text-align:right'>{row.fg_part:.3f}</td><td style='text-align:right'>"
            f"<b>{row.total:.3f}</b></td><td style='width:28%'>{bars}</td><td style='width:28%'>{gap_cell}</td>"
            "</tr>"
        )
    margin = ""
    if len(rows) > 1:
        runner = next((r for r in rows[1:] if r.mark == "runner-up"), rows[1])
        d_cls, d_fg = top.cls_part - runner.cls_part, top.fg_part - runner.fg_part
        margin = (
            f"<p><b>Margin to the runner-up ({html.escape(runner.name)}): {top.total - runner.total:.3f} "
            f"logits</b> = [CLS] {d_cls:+.3f} + [FG] {d_fg:+.3f}."
            " Softmax turns logit gaps into probabilities, so a gap of 1 is already a 2.7× odds ratio.</p>"
        )
    head = (
        "<tr><th>class</th><th>[CLS] part</th><th>[FG] part</th><th>fused logit</th>"
        "<th>composition (from 0)</th><th>gap to the top (zoomed)</th></tr>"
    )
    return (
        f"<div class='mc-contrib'><div><b>Why this class?</b> The fused logit of each class, split exactly. "
        f"</div>{margin}<table style='width:100%;font-size:0.9em'>{head}{''.join(body)}</table>"
        f"<div class='mc-note'>{legend}</div></div>"
    )
