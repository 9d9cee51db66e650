"""Explore's answers without Gradio: the per-session state, the display settings, and the texts
(summary, one patch, the descriptions) written from an explanation.

The tab (``ui/explore.py``) keeps an ``ExploreSession`` in a ``gr.State``; display controls, the fusion
slider and patch clicks re-render from it (``views``) without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

from microclip.describe import article_for
from microclip.explain import Explanation
from microclip.heads import BRANCHES
from microclip.toyworld.text import description_ties, tie_sentence
from microclip.walkthrough import MaskFacts, PatchTruth, mask_facts, uniform_weight
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.explore import maps_html, raw_html
from viz.html import num
from viz.panels import RAW_MAPS, RenderSettings
from viz.steps import foreground_fact, query_sentence, region_phrase

PHOTO_SIZE = 320  # pixels of the JPEG crop under the maps; the browser scales it (the toy model sees 64)
BRANCH_TITLES = {"fused": "TokenFusion (fused)", "cls": "[CLS] only", "fg": "[FG] only"}
CLICK_A_PATCH = "Click a patch on any map to read its numbers."

NOTES = {
    "soap": "**SOAP attention.** The weight each patch gets when SOAP pools the fine-grained `[FG]` token. "
    "These *are* the pooling weights, so the map is the mechanism, not a post-hoc estimate. "
    "Weight not shown here went to the null token (below).",
    "ncut": "**NCut foreground.** The patches a normalised cut of the patch-token affinity graph put in the "
    "foreground. The method's SOAP query is their mean (the summary says when a model takes another); it is a "
    "mask (on or off), not a score.",
    "cls": "**Similarity to `[CLS]`.** Cosine between each patch token and the global `[CLS]` token: what the "
    "global branch already summarises. Compare with SOAP to see what `[FG]` adds.",
    "raw": "**Raw patch grid.** The chosen map with one flat block per patch: exactly the numbers the model "
    "computed, before any upsampling. Click any map to read one patch.",
}


@dataclass(frozen=True)
class ExploreSession:
    """What the last forward pass produced, kept per browser session."""

    explanation: Explanation
    photo: str  # data URI of the model's centre crop (JPEG), encoded once and shared by every map view
    model_name: str
    descriptions: dict[str, list[str]]  # behind the classes used (may be empty)
    flag: str = ""  # the world note for this image (one-class label set, out-of-world signals)
    selected: tuple[int, int] | None = None  # last clicked patch (row, col)
    truth: PatchTruth | None = None  # where the bird and its parts are, on a known toy image
    link: str | None = None  # the query of a link to this view, ρ aside (a bundled example, no descriptions file)

    @property
    def facts(self) -> MaskFacts | None:
        """What is true of this image, from its masks (None when they are not known)."""
        e = self.explanation
        return mask_facts(self.truth, e.ncut_mask, e.soap_weights, e.cls_similarity) if self.truth else None


def settings_from(
    opacity: float, cmap: str, clip_lo: float, clip_hi: float, threshold: float, raw_map: str, numbers: bool
) -> RenderSettings:
    """The display controls as a ``RenderSettings`` (percentiles kept in order)."""
    lo, hi = sorted((float(clip_lo), float(clip_hi)))
    if hi - lo < 1.0:
        hi = min(100.0, lo + 1.0)
        lo = hi - 1.0
    return RenderSettings(
        float(opacity),
        cmap if cmap in COLORMAPS else DEFAULT_COLORMAP,
        lo,
        hi,
        float(threshold),
        RAW_MAPS.get(raw_map, raw_map),
        bool(numbers),
    )


def views(session: ExploreSession, display: tuple) -> list[str]:
    """The maps over the photo and the raw grid, for the display controls' values (``settings_from``'s order)."""
    settings = settings_from(*display)
    return [
        maps_html(session.explanation, session.photo, settings, session.selected, session.facts),
        raw_html(session.explanation, settings, session.selected),
    ]


def checked_patch(session: ExploreSession, row: float, col: float) -> tuple[int, int]:
    """A patch's (row, col) as integers, or a ValueError that says the grid's size."""
    h, w = session.explanation.grid
    row, col = int(row), int(col)
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"Patch ({row}, {col}) is outside the {h}×{w} patch grid.")
    return row, col


def classes_placeholder(classes: list[str]) -> str:
    """The class-name box's placeholder: what a blank box means for this model."""
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    return (
        f"Blank: the model's own {len(classes)} classes ({shown}). Or type your own, one per line or comma-separated."
    )


# ------------------------------------------------------------------ text built from an explanation


def shift_sentence(explanation: Explanation) -> str:
    """`[FG]` alone with and without the shift its run gave every image's `[FG]` (needs ``logits_fg_unshifted``)."""
    fg, alone = explanation.prediction("fg"), explanation.prediction("fg_unshifted")
    part = explanation.fg_shift_logits
    low, high = int(part.argmin()), int(part.argmax())
    p_alone, p_fg = explanation.probabilities("fg_unshifted")[alone], explanation.probabilities("fg")[fg]
    if alone == fg:
        verdict = f"{explanation.classes[alone]} ({p_alone:.1%}; with it {p_fg:.1%})"
    else:
        verdict = f"**{explanation.classes[alone]}** ({p_alone:.1%}) instead of {explanation.classes[fg]}"
    return (
        f"**`[FG]` without its shared shift:** {verdict}. Self-training moved every image's `[FG]` by "
        f"one shared vector (measured on its training images, no labels); alone it adds {part[high]:+.1f} to "
        f"{explanation.classes[high]}'s `[FG]` logit and {part[low]:+.1f} to {explanation.classes[low]}'s, on "
        "every image alike."
    )


def summary_markdown(explanation: Explanation, note: str = "", flag: str = "", facts: MaskFacts | None = None) -> str:
    """The world flag, each branch's prediction (disagreements marked), NCut's patch count and the null weight;
    on a toy image, the true species and where the foreground and SOAP's top patch fell."""
    fused = explanation.prediction("fused")
    mask = explanation.ncut_mask
    lines = [flag, ""] if flag else []
    lines += [
        f"**Prediction: {explanation.classes[fused]}** (fused at ρ = {explanation.ratio:.2f})",
        "",
        "| branch | predicts | probability |",
        "|---|---|---|",
    ]
    for branch in BRANCHES:
        index = explanation.prediction(branch)
        flag_text = " ⚠ disagrees" if index != fused else ""
        lines.append(
            f"| {BRANCH_TITLES[branch]} | {explanation.classes[index]}{flag_text} | "
            f"{explanation.probabilities(branch)[index]:.1%} |"
        )
    if explanation.logits_fg_unshifted is not None:
        lines += ["", shift_sentence(explanation)]
    if facts is not None and facts.true_class is not None:
        truth = facts.true_class
        right = truth == explanation.classes[fused]
        lines += [
            "",
            f"**This bird is {article_for(truth)} {truth}** (the toy world drew it): the fused prediction is "
            f"{'right' if right else 'wrong'}.",
        ]
    cut = f"**NCut:** {foreground_fact(int(mask.sum()), mask.size, facts)}"
    cut += f" {query_sentence(explanation.query, explanation.pool)}"
    if explanation.pool == "attention":
        cut += (
            f" **Null token:** {num(explanation.null_weight, scientific=True)} of SOAP's attention; "
            "the patches share the rest."
        )
    lines += ["", cut]
    if note:
        lines += ["", f"_{note}_"]
    return "\n".join(lines)


def _weight_scale(explanation: Explanation, n: int) -> str:
    """What a patch's weight is measured against: attention's uniform share, or the plain mean's own share."""
    if explanation.pool == "attention":
        return f"uniform weight 1/(N+1) = 1/{n + 1} = {num(uniform_weight(n))}, N patches and the null token"
    pooled = int(explanation.ncut_mask.sum()) if explanation.pool == "ncut_avg" else n
    where = "the cut's foreground patch" if explanation.pool == "ncut_avg" else "patch"
    return f"a plain mean (an ablation): 1/{pooled} for every {where}, 0 for the rest"


def patch_markdown(explanation: Explanation, row: int, col: int, truth: PatchTruth | None = None) -> str:
    """One patch's SOAP weight, NCut membership and cosines (and, on a toy image, what it shows)."""
    fused = explanation.prediction("fused")
    order = [explanation.classes.index(name) for name, _ in explanation.top_k("fused", 2)]
    n = explanation.soap_weights.size
    lines = [
        f"**Patch (row {row}, col {col})** of the {explanation.grid[0]}×{explanation.grid[1]} grid",
        "",
        f"- SOAP weight: **{num(float(explanation.soap_weights[row, col]))}** ({_weight_scale(explanation, n)})",
        f"- NCut foreground: **{'yes' if explanation.ncut_mask[row, col] else 'no'}**",
        f"- cosine to `[CLS]`: **{explanation.cls_similarity[row, col]:+.3f}**",
        f"- cosine to predicted class *{explanation.classes[fused]}*: "
        f"**{explanation.patch_class_cosine[row, col, fused]:+.3f}**",
    ]
    if len(order) > 1:
        runner = order[1]
        lines.append(
            f"- cosine to runner-up *{explanation.classes[runner]}*: "
            f"**{explanation.patch_class_cosine[row, col, runner]:+.3f}**"
        )
    if explanation.soap_fg_terms is not None:
        lines.append(
            f"- its term in *{explanation.classes[fused]}*'s `[FG]` logit: "
            f"**{explanation.soap_fg_terms[row, col, fused]:+.3f}** of {explanation.logits_fg[fused]:.3f} (SOAP's "
            "weight times the patch's value, along the class; every patch's term and the null token's add up to it)"
        )
    if truth is not None:
        lines.append(
            f"- shows: **{region_phrase(truth.region((row, col)))}** ({truth.object_share[row, col]:.0%} "
            "of its pixels on the bird, from the toy world's masks)"
        )
    return "\n".join(lines)


def descriptions_markdown(
    explanation: Explanation, descriptions: dict[str, list[str]], limit: int = 6, true_class: str | None = None
) -> str:
    """The sentences behind the predicted class and the runner-up (W_LLM and W* were built from them). On a toy
    bird (``true_class``, from the world's truth), which other classes' lines are all true of its species too: the
    classes no reader of these lines alone could tell it from (``toyworld.text.description_ties``)."""
    order = [name for name, _ in explanation.top_k("fused", 2)]
    parts = []
    for tag, name in zip(("Predicted", "Runner-up"), order):
        sentences = descriptions.get(name) or []
        parts.append(f"**{tag}: {name}**")
        if sentences:
            parts += [f"- {s}" for s in sentences[:limit]]
            if len(sentences) > limit:
                parts.append(f"- _... {len(sentences) - limit} more_")
        else:
            parts.append("- _no descriptions: this class's head was built from templates only_")
        parts.append("")
    ties = description_ties(descriptions) if true_class is not None else None
    if ties is not None and true_class in ties:
        truth = f"**This bird is {article_for(true_class)} {true_class}** (the toy world's truth)"
        parts.append(f"{truth}: {tie_sentence(true_class, ties)}")
    return "\n".join(parts)
