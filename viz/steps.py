"""The walkthrough as HTML: a ``microclip.walkthrough.Walkthrough`` (numbers only) in, one page out.

All the walkthrough's words live here: each step's title, why the method does it, and what is true of
*this* image ("6 patches in the foreground, 1 on the bird"), built from the numbers and, on images
whose masks are known, from ``MaskFacts``; no sentence the picture can contradict. The page is one
HTML string (styles: ``viz/static/studio.css``; step navigation: ``viz/static/walkthrough.js``), so
moving between steps happens in the browser. The shared pieces (number format, colour bar, scale
notes, PNG/JPEG encoders) come from ``viz.html``, the app's one HTML kit.

Maps are sent at the patch grid's resolution (a few hundred bytes) and enlarged with
``image-rendering: pixelated``, so no large picture is encoded per request.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from microclip.describe import article_for
from microclip.files import slug
from microclip.heads import BRANCHES
from microclip.toyworld.text import tie_sentence
from microclip.walkthrough import (
    BACKGROUND,
    MAX_START_SENTENCES,
    OBJECT,
    START_TOLERANCE_DEGREES,
    STEP_IDS,
    MaskFacts,
    Walkthrough,
    top_patch,
)
from viz.colormaps import DEFAULT_COLORMAP, DIVERGING_COLORMAP, colorize, colorize_diverging, symmetric_limit
from viz.html import STUDIO_CSS, cell_text, colorbar, jpeg_uri, num, png_uri, scale_note, text_colour, word_list

if TYPE_CHECKING:
    from microclip.toyworld.truth import Erased

WALKTHROUGH_JS = files("viz").joinpath("static/walkthrough.js").read_text(encoding="utf-8")
MAX_NUMBERED = 10  # grids up to this many patches a side print each value in its cell (7x7 B/32, 8x8 toy)
PICTURE_SIZE = 256  # CSS pixels of the crop and of every patch map
WAITING_HTML = "<div class='wt'>Pick an example or upload an image: the walkthrough starts at once.</div>"
SPLIT_RGB = (228, 87, 46)  # the foreground frame and the affinity picture's split lines
POSITIVE, NEGATIVE = "#4c78a8", "#d1495b"  # bar colours of signed values

SHORT_NAMES = {
    "patches": "Patches",
    "tokens": "Tokens",
    "graph": "Graph + NCut",
    "query": "Query",
    "soap": "SOAP",
    "fg": "[FG]",
    "fusion": "Fusion",
    "heads": "Two heads",
    "prediction": "Prediction",
}
TITLES = {
    "patches": "Cut the image into patches",
    "tokens": "Value-path patch tokens",
    "graph": "Affinity graph and its normalised cut",
    "query": "The query: the mean foreground token",
    "soap": "SOAP's attention weights and the null token",
    "fg": "[FG]: the pooled token, projected",
    "fusion": "Fusion with [CLS]",
    "heads": "The two heads: which descriptions build which class vector",
    "prediction": "The prediction",
}
# Why the method does each step: statements about the method, never about what happened to this image.
WHY = {
    "patches": "A ViT reads an image as a sequence of square patches, one token each, so every later map has "
    "exactly one value per patch.",
    "tokens": "microCLIP reads the last block with its attention replaced by the identity, so each token "
    "describes its own patch instead of a mix of the whole image.",
    "graph": "Patches whose tokens agree are linked; the normalised cut splits the graph where cutting costs "
    "least relative to each side's links. microCLIP takes one side as the object, without any label; "
    "whether it is the object is this image's question (below).",
    "query": "Averaging the foreground tokens gives one vector for what the cut found, and SOAP asks every "
    "patch how well it matches it.",
    "soap": "One softmax over the patches plus a zero null token decides how much each patch contributes; the "
    "null token takes weight when no patch matches the query.",
    "fg": "The weighted sum of the patches' values, through CLIP's own projection and normalised, is the "
    "fine-grained token: it sees only where SOAP looked.",
    "fusion": "The global [CLS] token and the fine [FG] token vote together: each class's fused logit is exactly "
    "ρ × its [CLS] logit plus (1 − ρ) × its [FG] logit.",
    "heads": "Each class is a text vector: W_LLM (frozen, built from descriptions) makes pseudo-labels while "
    "adapting, and W* (learned, started as the plain mean of the same descriptions) scores the image.",
    "prediction": "The class with the largest fused logit wins; its margin over the runner-up, and the range of ρ "
    "over which it stays ahead, say how firm the decision is.",
}
# What SOAP's query is and how [FG] is pooled, in words, for the method and the reference's ablations: a model
# trained with an ablation says so wherever the method's words would be wrong.
QUERY_PHRASES = {
    "ncut": "the mean of the cut's foreground tokens",
    "global": "the [CLS] token",
    "token_avg": "the mean of every patch token",
    "random": "one patch token drawn at random on every call",
}
POOL_PHRASES = {
    "attention": "SOAP's attention over the patches and a null token",
    "ncut_avg": "the plain mean of the cut's foreground tokens",
    "naive_avg": "the plain mean of every patch token",
}
QUERY_WHY = {
    "global": "SOAP asks every patch how well it matches the whole image's summary, and the cut does not steer where "
    "it looks.",
    "token_avg": "a question nearly the same for every image, background included; the cut does not steer where it "
    "looks.",
    "random": "the cut does not steer where SOAP looks, and its weights change from one call to the next.",
}


def query_sentence(mode: str, pool: str = "attention") -> str:
    """What SOAP's query is, said after the NCut foreground's count (Explore's summary); with a plain-mean pooling
    there is no query to speak of, and the sentence says how [FG] is pooled instead."""
    if pool != "attention":
        return f"[FG] is {POOL_PHRASES[pool]} here (an ablation): no query, no attention, no null token."
    if mode == "ncut":
        return "SOAP's query is their mean."
    return f"SOAP's query is not their mean here: this model takes {QUERY_PHRASES[mode]} (an ablation)."


def step_words(step_id: str, walk: Walkthrough) -> tuple[str, str]:
    """A step's title and why, as true of the model shown: its query and pooling may be the reference's ablations."""
    query, pool = walk.query.mode, walk.soap.pool
    if step_id == "query" and query != "ncut":
        title = f"The query: {QUERY_PHRASES[query]} (an ablation)"
        why = f"This model was trained with the reference's ablation whose query is {QUERY_PHRASES[query]}: "
        why += QUERY_WHY[query]
    else:
        title, why = TITLES[step_id], WHY[step_id]
    if step_id == "query" and pool != "attention":
        why += " This model pools [FG] without it (next step)."
    if step_id == "soap" and pool != "attention":
        title = f"SOAP's weights: {POOL_PHRASES[pool]} (an ablation)"
        why = (
            f"This model pools [FG] as {POOL_PHRASES[pool]} (the reference's ablation): each of them gets the same "
            "weight, and the query and the null token play no part."
        )
    return title, why


# ------------------------------------------------------------------ small pieces


class Markup(str):
    """A string that is already HTML (not escaped again by :func:`table` or :func:`kv`)."""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def img(picture: np.ndarray, width: int, alt: str, fmt: str = "PNG", pixelated: bool = True) -> str:
    """An ``<img>`` of an (H, W, 3) uint8 ``picture`` drawn ``width`` CSS pixels wide."""
    picture = np.ascontiguousarray(picture)
    uri = png_uri(picture) if fmt.upper() == "PNG" else jpeg_uri(picture, 88)
    rendering = ' style="image-rendering:pixelated"' if pixelated else ""
    return f'<img src="{uri}" alt="{escape(alt)}" width="{width}"{rendering}>'


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def colours(values: np.ndarray, diverging: bool = False) -> tuple[np.ndarray, float, float]:
    """RGB of each value and the range they were scaled to: the map's own min..max (viridis), or ± its
    largest |value| around zero (the diverging map)."""
    values = np.asarray(values, dtype=np.float64)
    if diverging:
        limit = symmetric_limit(values)
        return colorize_diverging(values, limit), -limit, limit
    lo, hi = float(values.min()), float(values.max())
    unit = np.zeros_like(values) if hi - lo <= 1e-12 else (values - lo) / (hi - lo)
    return colorize(unit.astype(np.float32), DEFAULT_COLORMAP), lo, hi


def _framed(rgb: np.ndarray, outline: np.ndarray | None, cell: int = 8) -> np.ndarray:
    """The (h, w, 3) colours as cell×cell blocks, with the cells where ``outline`` is True framed."""
    picture = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    if outline is not None:
        for r, c in zip(*np.nonzero(np.asarray(outline, dtype=bool))):
            block = picture[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
            block[[0, -1], :] = SPLIT_RGB
            block[:, [0, -1]] = SPLIT_RGB
    return picture


def heat_grid(
    values: np.ndarray,
    fmt: str = ".2f",
    diverging: bool = False,
    outline: np.ndarray | None = None,
    label: str = "",
    size: int = 272,
) -> str:
    """An (h, w) map as a table of coloured cells with their values, its colour bar and how it is scaled.

    ``outline`` (h, w) bool frames the cells that are True (e.g. the NCut foreground). Larger grids
    come as a tiny PNG the browser scales up, since their numbers would not fit.
    """
    values = np.asarray(values, dtype=np.float64)
    rgb, lo, hi = colours(values, diverging)
    rows, cols = values.shape
    ticks = (num(lo), "0" if diverging else num((lo + hi) / 2), num(hi))
    bar = colorbar(DIVERGING_COLORMAP if diverging else DEFAULT_COLORMAP, ticks, scale_note(diverging=diverging), label)
    if max(rows, cols) > MAX_NUMBERED:
        return f'<div class="wt-map">{img(_framed(rgb, outline), size, label or "map")}{bar}</div>'
    cell = max(14, size // max(rows, cols))
    font = max(8, min(12, cell // 3))
    body = []
    for r in range(rows):
        cells = []
        for c in range(cols):
            text = escape(cell_text(values[r, c], fmt))
            framed = " wt-on" if outline is not None and bool(outline[r][c]) else ""
            cells.append(
                f'<td class="wt-cell{framed}" title="patch ({r}, {c}): {text}" style="background:'
                f"{_hex(rgb[r, c])};color:{text_colour(rgb[r, c])};width:{cell}px;height:{cell}px;"
                f'font-size:{font}px">{text}</td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wt-map"><table class="wt-grid">{"".join(body)}</table>{bar}</div>'


def bar(value: float, scale: float, width: int = 120) -> str:
    """A horizontal bar of ``value / scale`` (values ≥ 0, e.g. probabilities)."""
    fraction = 0.0 if scale <= 0 else min(max(value / scale, 0.0), 1.0)
    return (
        f'<span class="wt-hbar" style="width:{width}px"><span style="width:{fraction * 100:.1f}%;'
        f'background:{POSITIVE}"></span></span>'
    )


def signed_bar(value: float, scale: float, width: int = 120) -> str:
    """A bar from a centre line: positive values to the right, negative ones to the left in another colour,
    each at least one pixel, so no value is drawn as an empty bar."""
    fraction = 0.0 if scale <= 0 else min(abs(value) / scale, 1.0)
    fill = f'<span style="width:max(1px,{fraction * 100:.1f}%);background:{POSITIVE if value >= 0 else NEGATIVE}">'
    left, right = (fill + "</span>", "") if value < 0 else ("", fill + "</span>")
    return (
        f'<span class="wt-sbar" style="width:{width}px" title="{value:+.4f}"><span class="wt-sbar-half">{left}'
        f'</span><span class="wt-sbar-half">{right}</span></span>'
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]], classes: str = "") -> str:
    """A plain table; cells are escaped unless they are already HTML (wrapped in ``Markup``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="wt-table {classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv(rows: Sequence[tuple[str, object]]) -> str:
    """A two-column table of named values (no header)."""
    body = "".join(
        f"<tr><td>{escape(k)}</td><td>{v if isinstance(v, Markup) else escape(v)}</td></tr>" for k, v in rows
    )
    return f'<table class="wt-table wt-kv"><tbody>{body}</tbody></table>'


def fig(title: str, body: str, caption: str = "", extra_class: str = "") -> str:
    cap = f'<div class="wt-caption">{escape(caption)}</div>' if caption else ""
    return f'<div class="wt-fig {extra_class}"><b>{escape(title)}</b>{body}{cap}</div>'


def markdown_line(text: str) -> str:
    """A line of the app's Markdown notes (``**bold**`` only) as HTML, everything else escaped."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(text))


# ------------------------------------------------------------------ what is true of this image


def region_phrase(region: str) -> str:
    """Where a patch is, in words: "the beak", "the bird, off its parts", "the background"."""
    if region == BACKGROUND:
        return "the background"
    if region == OBJECT:
        return f"the {OBJECT}, off its parts"
    return "the " + region.replace("_", " ")


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 'es' if noun.endswith(('ch', 's')) else 's'}"


def foreground_fact(n_foreground: int, n_patches: int, facts: MaskFacts | None) -> str:
    """The NCut foreground of this image: how many patches, and (with masks) how many are on the bird."""
    text = f"{n_foreground} of {count(n_patches, 'patch')} in the foreground"
    if facts is None:
        return text + "."
    return (
        f"{text}, {facts.n_foreground_on_object} of them on the {OBJECT} (which covers "
        f"{count(facts.n_object, 'patch')}, at least a quarter of each)."
    )


def soap_fact(weights: np.ndarray, null_weight: float, facts: MaskFacts | None) -> str:
    """SOAP's top patch of this image and where its weight went."""
    top = top_patch(weights)
    text = (
        f"SOAP's top patch {top} takes {num(float(weights[top]), 3)} of the weight "
        f"(null token {num(null_weight, scientific=True)})"
    )
    if facts is None:
        return text + "."
    return (
        f"{text}; it is on {region_phrase(facts.soap_top_region)}. {facts.soap_on_object:.1%} of the "
        f"patches' weight lies on the {OBJECT}'s pixels, {facts.soap_on_parts:.1%} on its parts."
    )


def fg_term_fact(terms: np.ndarray, null_term: float | None, class_name: str, facts: MaskFacts | None) -> str:
    """Which patch adds most to a class's [FG] logit (each patch's term: its SOAP weight times its value, along the
    class), where it lies when the masks are known, and how many patches take from the class."""
    top = top_patch(terms)
    total = float(terms.sum()) + (null_term or 0.0)
    text = f"Of {class_name}'s [FG] logit ({total:.2f}), patch {top} adds the most ({float(terms[top]):+.2f})"
    if facts is not None and facts.fg_term_top_region is not None:
        text += f", on {region_phrase(facts.fg_term_top_region)}"
    negative = int((terms < 0).sum())
    if not negative:
        return text + "; no patch takes from it."
    return text + f"; {count(negative, 'patch')} {'takes' if negative == 1 else 'take'} from it."


def cls_fact(cosines: np.ndarray, facts: MaskFacts | None) -> str:
    """The patch most like [CLS] in this image."""
    top = tuple(int(i) for i in np.unravel_index(int(np.argmax(cosines)), cosines.shape))
    text = f"The token most like [CLS] is patch {top} (cos {float(cosines[top]):+.2f})"
    return text + (f", on {region_phrase(facts.cls_top_region)}." if facts is not None else ".")


def start_fact(walk: Walkthrough) -> str:
    """What the answer would be with W* where adaptation starts it, and how far adaptation turned W* ("" when the
    walkthrough could not rebuild the start: no text tower, or too many sentences)."""
    start, prediction = walk.heads.start, walk.prediction
    if start is None:
        return ""
    if not start.adapted:
        return (
            f"W* is where adaptation starts it (every class within {START_TOLERANCE_DEGREES}° of it): a zero-shot "
            "model, or a label set this model was not adapted to."
        )
    first, turned = start.top[0], start.turned_degrees
    truth = walk.facts.true_class if walk.facts is not None else None

    def verdict(name: str) -> str:
        return "" if truth is None else ("right" if name == truth else "wrong")

    now, then = prediction.prediction, first.class_name
    if then == now:
        outcome = f"{then} ({first.probability:.1%}), as now" + (f": {verdict(now)}" if truth else "")
    else:
        outcome = f"{then} ({first.probability:.1%}" + (f", {verdict(then)}" if truth else "") + ")"
        outcome += f" where now it gives {now}" + (f" ({verdict(now)})" if truth else "")
    return (
        f"Adaptation turned W* {turned.min():.1f}–{turned.max():.1f}° (mean {turned.mean():.1f}°) across the "
        f"{count(len(turned), 'class')}. Put back at its start (each class's mean description embedding; the adapted "
        f"tower and SOAP kept), W* gives {outcome}."
    )


def _here_graph(walk: Walkthrough) -> str:
    g, n = walk.graph, walk.patches.n_patches
    pairs = n * (n - 1) // 2  # one unit throughout: a pair of distinct patches, counted once
    return (
        f"{g.n_links:,} of {pairs:,} pairs of patches are linked ({g.n_links / pairs:.0%}); the split cuts "
        f"{g.cut_edges:,} of those links and keeps {g.n_links - g.cut_edges:,} within a side. "
        + foreground_fact(g.n_foreground, n, walk.facts)
    )


def _here_query(walk: Walkthrough) -> str:
    q = walk.query
    top = tuple(int(i) for i in np.unravel_index(int(np.argmax(q.cos_to_patches)), q.cos_to_patches.shape))
    used = f"q averages {count(q.n_used, 'token')}"
    if walk.facts is not None and q.mode == "ncut":
        used += f", {walk.facts.n_foreground_on_object} of them on the {OBJECT}"
    return f"{used}. The patch most like q is {top} (cos {float(q.cos_to_patches[top]):+.2f})."


def _here_prediction(walk: Walkthrough) -> str:
    p = walk.prediction
    picks = ", ".join(
        f"{name} → {p.branch_predictions[b]}" for b, name in (("fused", "fused"), ("cls", "[CLS]"), ("fg", "[FG]"))
    )
    truth = walk.facts.true_class if walk.facts is not None else None
    if truth is None:
        return f"{picks}."
    right = [
        name for b, name in (("fused", "fused"), ("cls", "[CLS]"), ("fg", "[FG]")) if p.branch_predictions[b] == truth
    ]
    verdict = f"right: {', '.join(right)}" if right else "no branch gets it right"
    return f"This {OBJECT} is {article_for(truth)} {truth}. {picks} ({verdict})."


def _here_fg(walk: Walkthrough) -> str:
    top = walk.fg.top[0]
    text = (
        f"[FG] alone predicts {top.class_name} ({top.probability:.1%}); cos([FG], [CLS]) = {walk.fg.cos_fg_cls:+.2f}."
    )
    if walk.fg.top_terms is not None:
        text += " " + fg_term_fact(walk.fg.top_terms, walk.fg.top_null_term, top.class_name, walk.facts)
    if walk.fg.top_unshifted is not None:
        alone = walk.fg.top_unshifted[0]
        same = "the same class" if alone.class_name == top.class_name else f"{alone.class_name} instead"
        text += (
            f" Without the shift self-training gave every image's [FG] alike, it predicts {same} "
            f"({alone.probability:.1%})."
        )
    if walk.fg.top_cut_mean is not None:
        plain = walk.fg.top_cut_mean[0]
        same = "the same class" if plain.class_name == top.class_name else plain.class_name
        truth = walk.facts.true_class if walk.facts is not None else None
        verdict = "" if truth is None else (", right" if plain.class_name == truth else ", wrong")
        text += (
            f" Pooled as the plain mean of the cut's foreground instead (no attention, the same weights), it would "
            f"predict {same} ({plain.probability:.1%}{verdict})."
        )
    return text


def here(step_id: str, walk: Walkthrough) -> str:
    """One sentence of what each step found on this image (from the masks when known, else the numbers)."""
    facts = walk.facts
    if step_id == "patches":
        text = f"{walk.patches.grid[0]}×{walk.patches.grid[1]} = {walk.patches.n_patches} patches."
        if facts is not None:
            text += (
                f" The {OBJECT} covers {count(facts.n_object, 'patch')} (at least a quarter of each); its "
                f"parts ({', '.join(p.replace('_', ' ') for p in facts.parts_shown) or 'none'}) touch "
                f"{count(facts.n_part, 'patch')}."
            )
        return text
    if step_id == "tokens":
        return cls_fact(walk.tokens.cos_to_cls, facts)
    if step_id == "graph":
        return _here_graph(walk)
    if step_id == "query":
        return _here_query(walk)
    if step_id == "soap":
        return soap_fact(walk.soap.weights, walk.soap.null_weight, facts)
    if step_id == "fg":
        return _here_fg(walk)
    if step_id == "fusion":
        p = walk.prediction
        return f"At ρ = {walk.ratio:.2f} {p.prediction} leads" + (
            f" {p.runner_up} by {num(p.margin, 3)} logits." if p.runner_up else "."
        )
    if step_id == "heads":
        text = f"The {len(walk.heads.classes)} classes with the largest fused logits, of {walk.heads.n_classes}."
        if walk.heads.start is not None:
            text += " " + start_fact(walk)
        truth, ties = (walk.facts.true_class if walk.facts is not None else None), walk.heads.ties
        if truth is not None and ties is not None and truth in ties:  # what no reader of the lines could tell apart
            text += f" This {OBJECT} is {article_for(truth)} {truth}: {tie_sentence(truth, ties)}"
        return text
    return _here_prediction(walk)


# ------------------------------------------------------------------ one renderer per step


def _grid_picture(picture: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """The crop with the patch borders drawn in white."""
    out = picture.copy()
    size = out.shape[0]
    rows, cols = grid
    for r in range(1, rows):
        out[round(r * size / rows), :] = 255
    for c in range(1, cols):
        out[:, round(c * size / cols)] = 255
    return out


def _affinity_picture(affinity: np.ndarray, order: Sequence[int], split: int) -> np.ndarray:
    """The 0/1 affinity matrix with rows and columns in ``order`` (foreground first), the split in red."""
    n = len(order)
    cell = max(1, 256 // n)
    sorted_affinity = affinity[np.ix_(order, order)]
    picture = np.where(sorted_affinity[..., None] > 0, np.array([40, 40, 70]), np.array([235, 235, 240]))
    picture = np.repeat(np.repeat(picture.astype(np.uint8), cell, 0), cell, 1)
    if 0 < split < n:
        at = split * cell
        picture[max(at - 1, 0) : at + 1, :] = SPLIT_RGB
        picture[:, max(at - 1, 0) : at + 1] = SPLIT_RGB
    return picture


def _topk_table(rows) -> str:
    scale = max((r.probability for r in rows), default=1.0)
    return table(
        ["class", "logit", "probability", ""],
        [(r.class_name, f"{r.logit:.3f}", f"{r.probability:.1%}", Markup(bar(r.probability, scale))) for r in rows],
    )


def _patches(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.patches
    mosaic = np.round(s.patch_mean_rgb * 255).astype(np.uint8)
    h, w = s.grid
    return (
        fig(
            f"The model's {s.image_size}×{s.image_size} crop, cut into {h}×{w} patches",
            img(_grid_picture(picture, s.grid), PICTURE_SIZE, "crop with patch grid", "JPEG", False),
        )
        + fig(
            "Mean colour of each patch",
            img(mosaic, PICTURE_SIZE, "patch mosaic"),
            "What one token starts from: the pixels of its own patch (shown here as their average).",
        )
        + kv(
            [
                ("input size", f"{s.image_size} px (centre crop)"),
                ("patch size", f"{s.patch_pixels} px"),
                ("patch grid", f"{h} × {w}"),
                ("patch tokens", s.n_patches),
                ("plus", "one [CLS] token for the whole image"),
            ]
        )
    )


def _tokens(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.tokens
    samples = table(
        ["patch", "‖t‖", *[f"d{i}" for i in range(s.dims_shown)]],
        [(f"({p.patch[0]}, {p.patch[1]})", f"{p.norm:.2f}", *[f"{v:+.2f}" for v in p.values]) for p in s.sample],
    )
    return (
        fig(
            "Length ‖t‖ of each value-path token",
            heat_grid(s.norms, ".2f", label="‖t‖"),
            f"From {s.norms.min():.2f} to {s.norms.max():.2f}.",
        )
        + fig(
            "Cosine of each token to [CLS]",
            heat_grid(s.cos_to_cls, "+.2f", diverging=True, label="cos"),
            "How much of each patch the global token already summarises.",
        )
        + fig(
            f"A few tokens: the first {s.dims_shown} of {s.width} dimensions",
            samples,
            f"Each patch is a {s.width}-d vector; [CLS] has length {s.cls_norm:.2f}.",
        )
    )


def _graph(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.graph
    n = s.affinity.shape[0]
    eig = ", ".join(num(float(v), 4) for v in s.eigenvalues)
    rule = ("e > std(e)" if s.threshold_rule == "std" else "e > mean(e)") + (
        " — then flipped, as the reference's solver rule does" if s.flipped else ""
    )
    what = "value-path tokens" if s.features == "values" else "normalised key features"
    return (
        fig(
            f"Affinity A ({n}×{n}), foreground first",
            img(_affinity_picture(s.affinity, s.order, s.n_foreground), PICTURE_SIZE, "affinity matrix"),
            f"Dark: ⟨t_i, t_j⟩ > τ = {s.tau} (a link). The red lines split the {s.n_foreground} foreground "
            f"patches from the other {n - s.n_foreground}; {2 * s.cut_edges:,} of the {s.n_edges:,} dark cells "
            "lie across them (the two off-diagonal blocks).",
        )
        + fig(
            "Fiedler vector e (second eigenvector of L)",
            heat_grid(s.fiedler, "+.2f", diverging=True, outline=s.mask, label="e"),
            f"Framed: the foreground, {rule} with threshold {s.threshold:.3f}.",
        )
        + kv(
            [
                ("graph built on", what),
                ("dot products", f"{s.dot_range[0]:.1f} … {s.dot_range[1]:.1f}"),
                ("dark cells of A (A = 1)", f"{s.n_edges:,} of {n * n:,}"),
                ("links (pairs of patches)", f"{s.n_links:,} of {n * (n - 1) // 2:,}"),
                ("smallest eigenvalues of L", eig),
                ("foreground patches", f"{s.n_foreground} of {n}"),
                ("links the split cuts", f"{s.cut_edges:,}"),
                ("NCut value", num(s.ncut_value, 4)),
            ]
        )
    )


def _query(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.query
    how = f"the mean of the {s.n_used} foreground tokens" if s.mode == "ncut" else f"{QUERY_PHRASES[s.mode]} (ablation)"
    return fig(
        "Cosine of the query q to each patch token",
        heat_grid(s.cos_to_patches, "+.2f", diverging=True, outline=walk.graph.mask, label="cos(q, t)"),
        "Framed: the foreground patches, averaged into q."
        if s.mode == "ncut"
        else "Framed: the cut's foreground patches, which this query does not use.",
    ) + kv([("q is", how), ("‖q‖", f"{s.norm:.3f}"), ("cos(q, [CLS])", f"{s.cos_to_cls:+.3f}")])


def _soap(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.soap
    h, w = s.weights.shape
    rgb, _, _ = colours(s.weights)
    overlay = (
        f'<span class="wt-stack">{img(picture, PICTURE_SIZE, "crop", "JPEG", False)}'
        f"{img(rgb, PICTURE_SIZE, 'SOAP weights')}</span>"
    )
    top = ", ".join(f"({p.patch[0]}, {p.patch[1]}) {num(p.weight, 3)}" for p in s.top_patches)
    rows = [
        ("scale 1/√D", f"{s.scale:.4f}"),
        ("null token's logit", num(s.null_logit, 3)),
        ("null weight α_null", num(s.null_weight, scientific=True)),
        (
            "Σ patch weights + α_null",
            f"{s.weights.sum():.6f} + {num(s.null_weight, scientific=True)} = {s.weight_sum:.6f}",
        ),
        (f"uniform weight 1/(N+1), N = {h * w}", num(s.uniform)),
        ("effective patches e^H", f"{s.effective_patches:.1f} of {h * w + 1} (patches and null)"),
        ("top patches", top),
    ]
    figures = fig(
        "SOAP weight α of each patch",
        heat_grid(s.weights, ".3f", label="α"),
        "These weights are the pooling itself: [FG] is built from exactly these shares.",
    )
    if s.logits is not None:
        figures += fig(
            "Attention logit (W_q q)·(W_k t)/√D",
            heat_grid(s.logits, ".1f", label="logit"),
            "The null token's key is zero, so its logit is always 0: a patch needs a logit above 0 to beat it.",
        )
    else:
        figures += fig(
            "No attention",
            f"<div>pooling: {escape(s.pool)} (ablation) — the weights are fixed "
            "shares, the null token takes none</div>",
        )
    note = (
        "A zero null token adds nothing to the pooled vector and only shrinks it, so after normalisation "
        "[FG] is the same as a softmax over the patches alone; its weight says how little any patch matched."
        if not s.learnable_null
        else "This model learned its null token, so it also shifts [FG]."
    )
    return (
        figures
        + fig("Weights over the picture", overlay, "Brighter: more weight (this map's own min–max).")
        + kv(rows)
        + f'<div class="wt-note">{escape(note)}</div>'
    )


def _fg(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.fg
    dims = table(
        ["dimension", "[FG] f", "[CLS] g"],
        [(f"d{i}", f"{a:+.3f}", f"{b:+.3f}") for i, (a, b) in enumerate(zip(s.fg_sample, s.cls_sample))],
    )
    return (
        kv(
            [
                (
                    "h = Σ α_j (W_v (s_j − c) + c)" if s.centre_values else "h = Σ α_j W_v s_j",
                    f"‖h‖ = {s.pooled_norm:.3f} ({s.width}-d)",
                ),
                *(
                    [("c", "the training images' mean patch token, fixed before self-training (not the reference's)")]
                    if s.centre_values
                    else []
                ),
                ("f = normalize(h · P)", f"{s.embed_dim}-d, length 1 (P: CLIP's own projection)"),
                ("cos(f, g)", f"{s.cos_fg_cls:+.3f}"),
            ]
        )
        + fig(
            "First dimensions of the two tokens",
            dims,
            "[CLS] and [FG] go through the same frozen projection P, so they live in the same space.",
        )
        + fig("What [FG] alone would predict", _topk_table(s.top))
        + (
            ""
            if s.top_cut_mean is None
            else fig(
                "... and pooled as the plain mean of the cut's foreground (no attention)",
                _topk_table(s.top_cut_mean),
                "The reference's --use_ncut_token_avg ablation on the same weights: every foreground token weighs "
                "the same and SOAP's projections play no part, so the two tables differ by what SOAP's attention "
                "adds over the cut.",
            )
        )
    )


def _fusion(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.fusion
    rho = s.ratio
    best = max(r.fused for r in s.rows)
    shifted = all(r.shift_part is not None for r in s.rows)
    rows = [
        (
            r.class_name,
            f"{r.cls_logit:.3f}",
            f"{r.fg_logit:.3f}",
            f"{r.cls_part:.3f}",
            f"{r.fg_part:.3f}",
            *([f"{r.shift_part:+.3f}"] if shifted else []),
            Markup(f"<b>{r.fused:.3f}</b>"),
            "winner" if r.fused == best else f"{r.fused - best:+.3f}",
        )
        for r in s.rows
    ]
    header = ["class", "[CLS] logit", "[FG] logit", f"{rho:.2f} × [CLS]", f"{1 - rho:.2f} × [FG]"]
    header += (["of which the shared shift"] if shifted else []) + ["fused", "vs winner"]
    note = "Logits are 100 × cosine to the class vector Ŵ*. Each row adds up exactly."
    if shifted:
        note += (
            " Self-training moved every image's [FG] by one shared vector s (measured on its training images, no "
            "labels): its part of the [FG] term, (1 − ρ) × 100 × s · Ŵ*, is the same on every image, a preference "
            "for some classes rather than anything seen in this one."
        )
    return fig(f"fused = ρ · [CLS] logit + (1 − ρ) · [FG] logit, with ρ = {rho:.2f}", table(header, rows), note) + kv(
        [
            ("cos([FG], [CLS])", f"{s.cos_fg_cls:+.3f}"),
            ("‖ρ g + (1 − ρ) f‖", f"{s.fused_feature_norm:.3f} (not renormalised, as the reference)"),
        ]
    )


def _head_card(row) -> str:
    facts = [
        ("W* logit (scores the image)", f"{row.w_star_logit:.3f}"),
        ("W_LLM logit (pseudo-labels only)", f"{row.w_llm_logit:.3f}"),
        ("cos(Ŵ*, W_LLM)", f"{row.cos_w_star_w_llm:+.3f}"),
    ]
    if row.w_star_vs_initial_cos is not None:
        # four places and an angle: adaptation moves W* a few degrees, which "+1.000" hid
        cos = row.w_star_vs_initial_cos
        turned = math.degrees(math.acos(min(1.0, max(-1.0, cos))))
        facts.append(("cos(W*, its start: mean of descriptions)", f"{cos:+.4f} ({turned:.1f}° from its start)"))
    if row.weight_sum is not None:
        facts.append(("Σ_j w_j over its descriptions", f"{row.weight_sum:+.3f}"))
    body = kv(facts)
    described = row.descriptions
    if described and described[0].weight is not None:
        scale = max(abs(d.weight) for d in described)
        body += table(
            ["description", "weight w_j in W_LLM", "", "cos to [FG]", "cos to [CLS]"],
            [
                (
                    d.text,
                    f"{d.weight:+.3f}",
                    Markup(signed_bar(d.weight, scale, width=80)),
                    f"{d.cos_fg:+.3f}",
                    f"{d.cos_cls:+.3f}",
                )
                for d in described
            ],
            "wt-text",
        )
        if row.n_descriptions > len(described):
            body += f'<div class="wt-note">… and {row.n_descriptions - len(described)} more.</div>'
    elif described:
        body += table(["description"], [(d.text,) for d in described], "wt-text")
    else:
        body += '<div class="wt-note">No descriptions: both vectors come from the class-name templates.</div>'
    return fig(row.class_name, body, extra_class="wt-card")


def _start_card(walk: Walkthrough) -> str:
    """The fused answer with W* at its start beside the answer now, when adaptation moved W*."""
    start = walk.heads.start
    if start is None:
        described = any(d.weight is not None for row in walk.heads.classes for d in row.descriptions)
        if not described:
            return ""
        return (
            f'<div class="wt-note">W* at its start is not rebuilt here for more than {MAX_START_SENTENCES:,} '
            "sentences (every class's would be encoded for each picture); Explore's what-if shows it.</div>"
        )
    if not start.adapted:
        return ""
    return fig("Fused, W* at its start (before adaptation moved it)", _topk_table(start.top)) + fig(
        "Fused, W* now", _topk_table(walk.prediction.top["fused"])
    )


def _heads(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.heads
    return (
        _start_card(walk)
        + "".join(_head_card(row) for row in s.classes)
        + (
            f'<div class="wt-note">Shown: the top {len(s.classes)} of {s.n_classes} classes. W_LLM = normalize(Σ_j w_j '
            "e_j) over the class's description embeddings e_j, each weighted by w_j = cos(e_j, t_c), its cosine to the "
            "class name's template embedding t_c: a signed weight, not a share (a negative w_j pushes W_LLM away from "
            "that sentence; bars right of the line are positive, left negative). W* started as the plain mean of the "
            "e_j and moved during adaptation.</div>"
        )
    )


def _prediction(walk: Walkthrough, picture: np.ndarray) -> str:
    s = walk.prediction
    titles = {"fused": "Fused (the prediction)", "cls": "[CLS] only", "fg": "[FG] only"}
    tables = "".join(fig(titles[b], _topk_table(s.top[b])) for b in BRANCHES)
    agree = len(set(s.branch_predictions.values())) == 1
    stable = s.stable_ratio
    facts = [
        ("prediction", Markup(f"<b>{escape(s.prediction)}</b>")),
        ("runner-up", s.runner_up or "–"),
        ("margin (fused logits)", num(s.margin, 3)),
        (
            "branches agree",
            "yes" if agree else "no: " + ", ".join(f"{k} → {v}" for k, v in s.branch_predictions.items()),
        ),
        ("holds for ρ in", f"[{stable[0]:.2f}, {stable[1]:.2f}]" if stable else "–"),
    ]
    return kv(facts) + tables


RENDERERS = {
    "patches": _patches,
    "tokens": _tokens,
    "graph": _graph,
    "query": _query,
    "soap": _soap,
    "fg": _fg,
    "fusion": _fusion,
    "heads": _heads,
    "prediction": _prediction,
}


def key_number(step_id: str, walk: Walkthrough) -> str:
    """The one number under each step's name in the overview strip."""
    numbers = {
        "patches": lambda: f"{walk.grid[0]}×{walk.grid[1]} = {walk.patches.n_patches}",
        "tokens": lambda: f"{walk.patches.n_patches} × {walk.tokens.width}-d",
        "graph": lambda: f"{walk.graph.n_foreground} foreground",
        "query": lambda: f"‖q‖ = {walk.query.norm:.2f}",
        "soap": lambda: f"null {num(walk.soap.null_weight, scientific=True)}",
        "fg": lambda: f"cos to [CLS] {walk.fg.cos_fg_cls:+.2f}",
        "fusion": lambda: f"ρ = {walk.ratio:.2f}",
        "heads": lambda: f"{walk.heads.n_classes} classes",
        "prediction": lambda: (
            f"{walk.prediction.top['fused'][0].class_name} {walk.prediction.top['fused'][0].probability:.0%}"
        ),
    }
    return numbers[step_id]()


# ------------------------------------------------------------------ the page


def _section(index: int, step_id: str, walk: Walkthrough, picture: np.ndarray, banner: str) -> str:
    last = len(STEP_IDS) - 1
    pager = (
        '<div class="wt-pager">'
        + ('<button type="button" data-goto="prev">← Back</button>' if index else "<span></span>")
        + ('<button type="button" data-goto="next">Next →</button>' if index < last else "<span></span>")
        + "</div>"
    )
    flag = banner if step_id == "prediction" else ""
    title, why = step_words(step_id, walk)
    return (
        f'<section class="wt-step" data-step="{step_id}"{" hidden" if index else ""}>'
        f'<h3>{index + 1} · {escape(title)}</h3><p class="wt-why">Why: {escape(why)}</p>'
        f'{flag}<p class="wt-here">On this image: {escape(here(step_id, walk))}</p>'
        f'<div class="wt-body">{RENDERERS[step_id](walk, picture)}</div>{pager}</section>'
    )


def render_walkthrough(walk: Walkthrough, picture: np.ndarray, flag: str = "") -> str:
    """The whole walkthrough as one HTML page: the strip, then every step (only the first visible).

    ``flag`` (Markdown, ``**bold**`` only): the warnings (``microclip.world_check.page_flags``), shown at the top
    and on the prediction step."""
    final = walk.prediction
    top = final.top["fused"][0]
    banner = "".join(f'<div class="wt-banner">{markdown_line(line)}</div>' for line in flag.split("\n\n") if line)
    head = (
        f'<div class="wt-head">Prediction: <b>{escape(final.prediction)}</b> ({top.probability:.1%})'
        + (f" · runner-up {escape(final.runner_up)}, margin {num(final.margin, 3)}" if final.runner_up else "")
        + "</div>"
    )
    nav = ['<div class="wt-nav">']
    for index, step_id in enumerate(STEP_IDS):
        active = ' class="wt-active" aria-current="step"' if index == 0 else ""  # walkthrough.js moves both
        nav.append(
            f'<button type="button" data-goto="{index}"{active}><span>{index + 1} · '
            f"{escape(SHORT_NAMES[step_id])}</span><small>{escape(key_number(step_id, walk))}</small></button>"
        )
    nav.append('<button type="button" data-goto="all"><span>All steps</span><small>one long page</small></button>')
    nav.append("</div>")
    sections = "".join(_section(i, step_id, walk, picture, banner) for i, step_id in enumerate(STEP_IDS))
    return f'<div class="wt">{banner}{head}{"".join(nav)}{sections}</div>'


def link_line(query: str) -> str:
    """A link to this walkthrough at the step shown, for a slide or a message: ``query`` names the picture and the
    model (``studio.links.link_query``), walkthrough.js adds the step and keeps it current as the student steps."""
    return (
        f'<div class="wt-linkline"><a class="wt-link" href="{escape(query)}&amp;step=1" data-link="{escape(query)}" '
        'target="_blank" rel="noopener">Link to this step</a> <button type="button" class="wt-copy">Copy</button> '
        "<small>opens this picture at this step, for a slide or a message</small></div>"
    )


def handout_name(image: str) -> str:
    """The file name of a picture's walkthrough page (the tab's download and the command's): its stem kept."""
    return f"microclip-walkthrough-{slug(Path(image).stem, 'image')}.html"


def erase_appendix(views: Sequence[Erased], classes: Sequence[str]) -> str:
    """Step 9's question answered for each part the bird shows, erased one at a time, then all together
    (``erase_each_part``): the handout's last section, since a file cannot ask a server to draw the bird again. ""
    when there is none."""
    if not views:
        return ""
    blocks = "".join(
        erase_html(v.parts, v.original, v.erased, v.changes, v.species if v.species in classes else None) for v in views
    )
    return (
        '<div class="wt wt-appendix"><h3>Step 9, one more question: each part erased in turn</h3>'
        '<p class="wt-why">What does each branch predict if the bird had no beak (or crest, ...)? The toy world drew '
        "the same bird again without each of its parts, one at a time, and then without all of them.</p>"
        f"{blocks}</div>"
    )


def standalone_page(page: str, title: str, appendix: str = "") -> str:
    """A walkthrough page (:func:`render_walkthrough`) as a file that opens in any browser, offline: its styles and
    its step navigation inlined, every picture already a data URI, nothing fetched. A handout that steps through
    exactly as the app does; ``appendix`` (:func:`erase_appendix`) follows the steps."""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        "<style>body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 24px auto; padding: 0 16px; }"
        ".wt-source { font-size: 12px; opacity: .7; margin-bottom: 12px; }</style>\n"
        f"<style>\n{STUDIO_CSS}</style>\n</head>\n<body>\n"  # the app's stylesheet: its theme variables fall back
        f'<div class="wt-source">{escape(title)} · written by microCLIP Studio</div>\n'
        f'<div id="walkthrough">{page}</div>\n'
        f"{appendix}\n"
        # the app runs walkthrough.js with `element` bound to the component; here, to the page's container
        f"<script>\n(function (element) {{\n{WALKTHROUGH_JS}\n}})(document.getElementById('walkthrough'));\n"
        "</script>\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------ erase a part (toy images)


# The branches of a before/after table (microclip.walkthrough.BranchChange), in words.
CHANGE_TITLES = {
    "fused": "fused",
    "cls": "[CLS] only",
    "fg": "[FG] only",
    "fg_unshifted": "[FG] without its shared shift",
}


def erase_html(parts: Sequence[str], original: np.ndarray, erased: np.ndarray, changes, true_class: str | None) -> str:
    """The same bird with and without ``parts`` (erased together), and each branch's prediction on both."""
    name = word_list([p.replace("_", " ") for p in parts])
    rows = []
    for c in changes:
        moved = "same" if c.before == c.after else "changed"
        drop = (
            f"{c.true_before:.1%} → {c.true_after:.1%} ({100 * (c.true_after - c.true_before):+.1f} points)"
            if c.true_before is not None
            else "–"
        )
        rows.append(
            (
                CHANGE_TITLES[c.branch],
                f"{c.before} ({c.before_probability:.1%})",
                f"{c.after} ({c.after_probability:.1%})",
                moved,
                drop,
            )
        )
    header = ["branch", "original", f"without the {name}", "prediction", f"p({true_class or 'true class'})"]
    pictures = fig("Original", img(original, 160, "original", "PNG")) + fig(
        f"Without the {name}", img(erased, 160, f"without the {name}", "PNG")
    )
    return (
        f'<div class="wt"><div class="wt-body">{pictures}'
        f"{fig('Each branch, before and after', table(header, rows, 'wt-names'))}</div>"
        '<div class="wt-note">The toy world drew the same bird again (same seed, pose, colours and background) '
        f"with its {escape(name)} left unpainted.</div></div>"
    )
