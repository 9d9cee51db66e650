"""A picture's DKA label (``studio.dka``) as one HTML card: the crops on the picture, what each says, the two halves
and the label, with the sentences made from this picture's numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import TABLEAU_COLORS
from PIL import Image

from microclip.describe import article_for
from microclip.recipe import MODE_FLAGS
from viz.steps import Markup, escape, fig, img, table

if TYPE_CHECKING:
    from studio.dka import LabelStory

PICTURE_PX = 256  # CSS pixels of the picture the crop boxes are drawn on
THUMB_PX = 56  # CSS pixels of each crop's thumbnail
# one colour a crop (matplotlib's tab10), its box and its row's number alike: the boxes' corners crowd on a small bird
BOX_COLOURS = tuple(TABLEAU_COLORS.values())


def box_colour(number: int) -> str:
    """Crop ``number``'s colour (1-based; the ten repeat)."""
    return BOX_COLOURS[(number - 1) % len(BOX_COLOURS)]


HALF_TITLES = {
    "static": "static: crops · W_LLM",
    "dynamic": "dynamic: picture · Ŵ*",
    "combined": "label: γ·static + (1 − γ)·dynamic",
    "cls": "[CLS] · Ŵ* (CLS-only baseline)",
}
HALVES_CAPTION = (
    "static: the crops' blend z against the frozen W_LLM; dynamic: the picture's normalize(g + f) against the "
    "learnable Ŵ*; the last row is the picture's [CLS] alone against Ŵ*, the label a CLS-only self-training trains "
    "on. Plain cosines, as DKA's are (no ×100)."
)


LABEL_HEIGHT, LABEL_WIDTH = 5.0, 3.6  # a box number's extent, in units of a 64-px toy bird (one digit; two are wider)


def label_spots(boxes: list[tuple[float, float, float, float]], unit: float) -> list[tuple[float, float]]:
    """Where each box's number goes: inside one of its four corners, the first (top-left, top-right, bottom-left,
    bottom-right) whose label clears every label placed before it, else the corner that overlaps them least. Random
    crops of one bird share corners often, and numbers all at the top-left sit on each other. Returns each label's
    top-left point."""
    placed: list[tuple[float, float, float, float]] = []
    spots = []
    for number, (left, top, right, bottom) in enumerate(boxes, 1):
        w, h = LABEL_WIDTH * unit * len(str(number)), LABEL_HEIGHT * unit
        pad = 1.2 * unit
        corners = [
            (left + pad, top + pad),
            (right - pad - w, top + pad),
            (left + pad, bottom - pad - h),
            (right - pad - w, bottom - pad - h),
        ]

        def overlap(corner: tuple[float, float], w: float = w, h: float = h) -> float:
            x, y = corner
            return sum(
                max(0.0, min(x + w, r) - max(x, lx)) * max(0.0, min(y + h, b) - max(y, ty)) for lx, ty, r, b in placed
            )

        x, y = min(corners, key=overlap)  # min keeps the first of equals: the top-left when it is free
        placed.append((x, y, x + w, y + h))
        spots.append((x, y))
    return spots


def _boxes_svg(story: LabelStory) -> str:
    """The picture with each crop's box in its own colour, numbered, its line as thick as its share of z."""
    label = story.label
    height, width = label.picture.shape[:2]
    heaviest = max(c.weight for c in label.crops)
    unit = max(height, width) / 64  # the drawing's sizes are a 64-px toy bird's, scaled to this picture
    spots = label_spots([c.box for c in label.crops], unit)
    shapes = []
    for number, crop in enumerate(label.crops, 1):
        left, top, right, bottom = crop.box
        stroke = unit * (0.3 + 1.2 * crop.weight / heaviest)
        colour = box_colour(number)
        shapes.append(
            f'<rect x="{left + stroke / 2:.2f}" y="{top + stroke / 2:.2f}" width="{right - left - stroke:.2f}" '
            f'height="{bottom - top - stroke:.2f}" fill="none" stroke="{colour}" stroke-width="{stroke:.2f}"/>'
        )
    for number, (x, y) in enumerate(spots, 1):  # numbers over every box's lines, each with a white halo
        shapes.append(
            f'<text x="{x:.2f}" y="{y + LABEL_HEIGHT * unit * 0.85:.2f}" font-size="{LABEL_HEIGHT * unit:.2f}" '
            f'fill="{box_colour(number)}" stroke="white" stroke-width="{0.8 * unit:.2f}" paint-order="stroke" '
            f'font-weight="bold">{number}</text>'
        )
    svg = (
        f'<svg viewBox="0 0 {width} {height}" style="position:absolute;left:0;top:0;width:100%;height:100%" '
        f'aria-hidden="true">{"".join(shapes)}</svg>'
    )
    picture = img(_shrunk(label.picture, PICTURE_PX), PICTURE_PX, "the picture with its crops")
    return f'<div style="position:relative;width:{PICTURE_PX}px;line-height:0">{picture}{svg}</div>'


def _shrunk(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` no larger than ``size`` a side (a photo's crops would otherwise go into the page at full size); a
    small toy picture is left as it is, to be drawn pixelated."""
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    picture.thumbnail((size, size), Image.BILINEAR)  # never enlarges
    return np.asarray(picture)


def _crop_rows(story: LabelStory) -> list[list[object]]:
    label = story.label
    rows = []
    for number, crop in enumerate(label.crops, 1):
        left, top, right, bottom = crop.box
        pixels = _shrunk(label.picture[top:bottom, left:right], 2 * THUMB_PX)
        thumb = Markup(img(pixels, THUMB_PX, f"crop {number}").replace("<img ", '<img class="wt-thumb" ', 1))
        swatch = Markup(f'<b style="color:{box_colour(number)}">■ {number}</b>')
        row: list[object] = [swatch, thumb, f"{crop.weight:.1%}"]
        if story.crops is not None:
            truth = story.crops[number - 1]
            row.append(f"{truth.bird:.0%}; {_parts(truth.parts)}")
        row.append(f"{label.classes[crop.top_class]} ({crop.top_score:.3f})")
        rows.append(row)
    return rows


def _place(scores: np.ndarray, index: int) -> int:
    return int(np.argsort(np.argsort(-scores, kind="stable"), kind="stable")[index]) + 1


def _halves_rows(story: LabelStory) -> list[list[object]]:
    label = story.label
    truth = label.classes.index(story.true_class) if story.true_class is not None else None
    rows = []
    for half, title in HALF_TITLES.items():
        top = label.top(half, 3)
        row: list[object] = [title, *(f"{name} ({score:.3f})" for name, score in top)]
        if truth is not None:
            scores = label.scores(half)
            row.append(f"{_place(scores, truth)} ({scores[truth]:.3f})")
        rows.append(row)
    return rows


def decision_sentence(story: LabelStory) -> str:
    """Which half decided the label, from the two halves' scores of this picture."""
    label = story.label
    chosen, static, dynamic = label.label, label.winner("static"), label.winner("dynamic")
    name = label.classes
    g = label.gamma
    if static == dynamic:
        return f"Both halves put {name[chosen]} first, so the blend does too."
    static_lead = g * float(label.static[static] - label.static[dynamic])
    dynamic_lead = (1.0 - g) * float(label.dynamic[dynamic] - label.dynamic[static])
    halves = f"The static half puts {name[static]} first, the dynamic half {name[dynamic]}."
    if chosen == static:
        why = (
            f"With γ = {g:g}, the static half's lead ({g:g} × {label.static[static] - label.static[dynamic]:.3f} = "
            f"{static_lead:.3f}) outweighs the dynamic half's ({1 - g:g} × "
            f"{label.dynamic[dynamic] - label.dynamic[static]:.3f} = {dynamic_lead:.3f}): the label is {name[static]}."
        )
    elif chosen == dynamic:
        why = (
            f"With γ = {g:g}, the dynamic half's lead ({dynamic_lead:.3f}) outweighs the static half's "
            f"({static_lead:.3f}): the label is {name[dynamic]}."
        )
    else:
        why = f"Neither wins the blend: {name[chosen]}, ranked high by both, does."
    return f"{halves} {why}"


def crops_sentence(story: LabelStory) -> str:
    """The crop that weighs most, and (on a toy bird) how many crops hold no part whole."""
    label = story.label
    heaviest = int(np.argmax([c.weight for c in label.crops]))
    share, even = label.crops[heaviest].weight, 1 / len(label.crops)
    text = f"Crop {heaviest + 1} weighs most in z ({share:.1%}; an even share would be {even:.1%})"
    if story.crops is not None:
        truth = story.crops[heaviest]
        empty = sum(not t.parts for t in story.crops)
        text += f": it holds {truth.bird:.0%} of the bird and {_parts(truth.parts)}. " + (
            "Every crop holds a part whole"
            if empty == 0
            else f"{empty} of {len(story.crops)} crops {'holds' if empty == 1 else 'hold'} no part whole"
        )
    return text + "."


def _parts(parts: tuple[str, ...]) -> str:
    """ "the beak, the wing bands", or "no part whole"."""
    return ", ".join("the " + part.replace("_", " ") for part in parts) if parts else "no part whole"


def draws_sentence(story: LabelStory) -> str:
    """How the label moves over the crops' draws ("" with one draw): each class it names, most often first."""
    if len(story.draws) < 2:
        return ""
    label = story.label
    names, counts = np.unique(story.draws, return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))
    named = ", ".join(f"{label.classes[names[i]]} {_times(int(counts[i]))}" for i in order)
    last = label.seed + len(story.draws) - 1
    text = f"Over {len(story.draws)} draws of the crops (seeds {label.seed}–{last}) the label is {named}"
    if story.true_class is not None:
        right = sum(label.classes[d] == story.true_class for d in story.draws)
        text += f": right in {right} of {len(story.draws)}"
    return text + "."


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def label_html(story: LabelStory) -> str:
    """The card: the verdict, the picture with its crops, the crops' table, the halves' table and a note."""
    label = story.label
    name = label.classes[label.label]
    verdict = f"DKA labels this picture <b>{escape(name)}</b>"
    if story.true_class is not None:
        verdict += (
            ": right." if story.right else f": wrong, it is {article_for(story.true_class)} {escape(story.true_class)}."
        )
    else:
        verdict += "."
    cls_name = label.classes[label.winner("cls")]
    baseline = f"[CLS] alone against Ŵ*, as the CLS-only baseline labels, says {cls_name}" + (
        " too." if cls_name == name else "."
    )
    said = (decision_sentence(story), crops_sentence(story), baseline, draws_sentence(story))
    sentences = " ".join(escape(s) for s in said if s)
    head = f'<div class="wt-here">{verdict} {sentences}</div>'
    crop_header = ["crop", "", "share of z", *(["holds (bird; parts)"] if story.crops is not None else [])]
    crops = table([*crop_header, "alone against W_LLM"], _crop_rows(story), "wt-names")
    truth_header = [f"{story.true_class}: place (score)"] if story.true_class is not None else []
    halves = table(["", "first", "second", "third", *truth_header], _halves_rows(story), "wt-names wt-halves")
    body = (
        fig("The crops", _boxes_svg(story))
        + fig("What each crop says", crops)
        + fig("The two halves and the label", halves, HALVES_CAPTION, extra_class="wt-wide")
    )
    note = (
        f"Settings: {story.recipe}: γ = {label.gamma:g}, {len(label.crops)} crops of side {label.alpha:g}–"
        f"{label.beta:g} of the short side, drawn from seed {label.seed}; a training run draws new crops for every "
        "picture in every epoch. Self-training trains the strong view on this label; W_LLM makes labels only."
    )
    if story.redescribed:
        note += (
            f" With your descriptions of {', '.join(story.redescribed)} (typed in the what-if above): W_LLM and Ŵ* "
            "are built from them and the others' own, as an adaptation from this model with them starts."
        )
    if story.mode != "microclip":
        note += (
            f" This model's own run did not label with DKA (train.py {MODE_FLAGS.get(story.mode, story.mode)}); the "
            "card shows how microCLIP's self-training would label the picture with its weights."
        )
    if story.debiased:
        note += (
            " This model's run also took its labels' running class marginal out of their scores (not the "
            "reference's), which one picture cannot show."
        )
    return f'<div class="wt">{head}<div class="wt-body">{body}</div><div class="wt-note">{escape(note)}</div></div>'
