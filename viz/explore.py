"""The map views of Explore and Compare as HTML: one explanation (or two) and the display settings in, strings out.

Composed from the kit in ``viz.html``; the captions say what is true of this image (``viz.steps``' facts).
No Gradio here: the tabs call these and hand the strings to ``gr.HTML``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from viz import html as kit
from viz.colormaps import DEFAULT_COLORMAP, DIVERGING_COLORMAP
from viz.overlay import difference_map
from viz.panels import RAW_MAPS, RenderSettings, raw_values
from viz.steps import cls_fact, foreground_fact, soap_fact

if TYPE_CHECKING:
    from microclip.explain import Explanation
    from microclip.walkthrough import MaskFacts

TOP_K = 5  # classes in each top-k list and, at least, in the contribution chart
FULL_RANGE = (0.0, 100.0)  # percentiles: a map's own min–max


def maps_html(
    explanation: Explanation,
    photo: str,
    settings: RenderSettings,
    selected: tuple[int, int] | None = None,
    facts: MaskFacts | None = None,
) -> str:
    """The SOAP, NCut and [CLS]-similarity maps over the photo, each with its colour bar or legend."""
    e, s = explanation, settings
    scale = kit.ColourScale(s.cmap, s.clip)

    def values(title: str, grid: np.ndarray, note: str) -> str:
        return kit.value_figure(title, grid, scale, s.opacity, s.threshold, selected, note=note)

    return kit.maps_block(
        photo,
        [
            values(
                "SOAP attention", e.soap_weights, f"weight per patch. {soap_fact(e.soap_weights, e.null_weight, facts)}"
            ),
            kit.mask_figure(
                "NCut foreground",
                e.ncut_mask,
                s.opacity,
                selected,
                note=foreground_fact(int(e.ncut_mask.sum()), e.ncut_mask.size, facts),
            ),
            values("Similarity to [CLS]", e.cls_similarity, f"cosine per patch. {cls_fact(e.cls_similarity, facts)}"),
        ],
    )


def raw_html(explanation: Explanation, settings: RenderSettings, selected: tuple[int, int] | None = None) -> str:
    """The chosen map on the bare patch grid, one block per patch, optionally with its numbers."""
    label = next((name for name, key in RAW_MAPS.items() if key == settings.raw_map), settings.raw_map)
    figure = kit.raw_figure(
        f"Raw patch grid: {label}",
        raw_values(explanation, settings.raw_map),
        kit.ColourScale(settings.cmap, settings.clip),
        settings.numbers,
        ".3f" if settings.raw_map == "soap" else ".2f",
        selected,
    )
    return kit.maps_block(None, [figure])  # blocks only: no photo to send again


def classes_to_show(explanation: Explanation) -> tuple[list[int], dict[int, str]]:
    """Classes for the contribution bars: the prediction, the runner-up, each branch's own pick, top 5."""
    fused_order = [explanation.classes.index(name) for name, _ in explanation.top_k("fused", len(explanation.classes))]
    marks = {fused_order[0]: "predicted"}
    if len(fused_order) > 1:
        marks[fused_order[1]] = "runner-up"
    for branch, tag in (("cls", "[CLS] pick"), ("fg", "[FG] pick")):
        marks.setdefault(explanation.prediction(branch), tag)
    shown = list(dict.fromkeys([*marks, *fused_order]))[: max(TOP_K, len(marks))]
    shown.sort(key=lambda c: -explanation.logits_fused[c])  # by fused logit, so the gaps grow downwards
    return shown, marks


def contributions_html(explanation: Explanation) -> str:
    """The [CLS] / [FG] split of the shown classes' fused logits, as an HTML chart the browser draws."""
    shown, marks = classes_to_show(explanation)
    rows = [kit.ContributionRow(explanation.classes[c], marks.get(c, ""), *explanation.contributions(c)) for c in shown]
    return kit.contribution_html(rows, explanation.ratio)


# ------------------------------------------------------------------ Compare: two models on one image


def model_maps_html(explanation: Explanation, photo: str, tag: str, cmap: str, opacity: float) -> str:
    """One model's SOAP map and NCut mask over the photo, titled with its tag (A or B)."""
    return kit.maps_block(
        photo,
        [
            kit.value_figure(
                f"{tag}: SOAP attention",
                explanation.soap_weights,
                kit.ColourScale(cmap, FULL_RANGE),
                opacity,
                0.0,
                None,
                note=f"null token: {explanation.null_weight:.2e}",
            ),
            kit.mask_figure(f"{tag}: NCut foreground", explanation.ncut_mask, opacity, None),
        ],
    )


def difference_limit(difference: np.ndarray, fixed: float | None) -> tuple[float, str]:
    """The half-range of the difference map's colour scale and a line saying what it is.

    Auto-scaling to the largest |Δ| makes a change of 0.0003 look as loud as one of 0.03; a fixed
    scale (in SOAP-weight units) keeps small changes pale. The largest |Δ| is always printed."""
    largest = float(np.max(np.abs(difference))) if difference.size else 0.0
    if fixed is not None and fixed > 0:
        return float(fixed), f"largest |Δ| = {largest:.2e}; fixed scale ±{float(fixed):.2e}"
    return max(largest, 1e-12), f"largest |Δ| = {largest:.2e}; scale ±{largest:.2e} (auto: the largest |Δ|)"


def difference_html(a: Explanation, b: Explanation, photo: str, opacity: float, fixed: float | None) -> str:
    """A − B over the photo and on the bare grid, both on one diverging scale with its colour bar."""
    difference = difference_map(a.soap_weights, b.soap_weights)
    limit, line = difference_limit(difference, fixed)
    ticks = (kit.fmt_value(-limit), "0", kit.fmt_value(limit))
    overlay = kit.figure(
        "SOAP weight A − B",
        kit.stage(kit.png_uri(kit.diverging_layer(difference, limit, opacity)), difference.shape, True, None),
        kit.colorbar(DIVERGING_COLORMAP, ticks, line),
    )
    raw = kit.raw_figure(
        "A − B on the patch grid",
        difference,
        kit.ColourScale(DEFAULT_COLORMAP, FULL_RANGE),
        False,
        "+.4f",
        None,
        diverging_limit=limit,
    )
    return kit.maps_block(photo, [overlay, raw])
