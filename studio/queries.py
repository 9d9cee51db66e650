"""Explore's "what if SOAP asked another question?": one trained model with SOAP's query built each way the reference
builds it (the cut's foreground, `[CLS]`, every patch token), on one picture, nothing retrained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from PIL import Image

from microclip.explain import Explanation, explain_image
from microclip.model import MicroCLIP
from microclip.soap import DETERMINISTIC_QUERIES
from microclip.walkthrough import MaskFacts, PatchTruth, effective_count, mask_facts
from viz.overlay import overlay_unit
from viz.steps import QUERY_PHRASES, fig, img, kv, region_phrase


@dataclass(frozen=True)
class QueryView:
    query: str  # "ncut", "global" or "token_avg"
    trained: bool  # the query the model was trained with
    explanation: Explanation
    facts: MaskFacts | None  # on a known toy image: where SOAP's weight fell
    effective_patches: float  # e^H of SOAP's weights over the patches and the null token

    @property
    def spread(self) -> str:
        n = self.explanation.soap_weights.size + 1
        return f"{self.effective_patches:.1f} of {n}"


def effective_patches(explanation: Explanation) -> float:
    """e to the entropy of SOAP's weights over the patches and the null token: 1 when one patch takes everything,
    N + 1 when all share alike."""
    return effective_count(np.append(explanation.soap_weights.ravel(), explanation.null_weight))


def query_views(
    model: MicroCLIP, picture: Image.Image, ratio: float | None = None, truth: PatchTruth | None = None
) -> list[QueryView]:
    """The picture explained by ``model`` with each deterministic query, the model's own first."""
    queries = sorted(DETERMINISTIC_QUERIES, key=lambda query: query != model.config.query)
    views = []
    for query in queries:
        explanation = explain_image(model.asking(query), picture, ratio)
        facts = None
        if truth is not None:
            facts = mask_facts(truth, explanation.ncut_mask, explanation.soap_weights, explanation.cls_similarity)
        views.append(QueryView(query, query == model.config.query, explanation, facts, effective_patches(explanation)))
    return views


# ------------------------------------------------------------------ the panels

PANEL_SIZE = 160  # CSS pixels of each map


def _answer(view: QueryView, branch: str, true_class: str | None) -> str:
    e = view.explanation
    index = e.prediction(branch)
    verdict = "" if true_class is None else (" · right" if e.classes[index] == true_class else " · wrong")
    return f"{e.classes[index]} ({e.probabilities(branch)[index]:.1%}){verdict}"


def queries_html(crop: np.ndarray, views: Sequence[QueryView], true_class: str | None = None) -> str:
    """One panel a query: SOAP's weights over the picture the model sees (``crop``), `[FG]`'s and the fused answer,
    how many patches SOAP's weight is spread over and, on a toy bird, where its top patch is."""
    # one colour scale for all: full colour at the largest weight any query gives a patch, so a spread-out map looks
    # spread out instead of being stretched to its own range
    top = max(float(view.explanation.soap_weights.max()) for view in views) or 1.0
    panels = []
    for view in views:
        e = view.explanation
        which = "as trained" if view.trained else "the method's" if view.query == "ncut" else "an ablation"
        rows = [
            ("[FG] alone", _answer(view, "fg", true_class)),
            ("fused", _answer(view, "fused", true_class)),
            ("weight spread over (e^H)", f"{view.spread} patches and null"),
        ]
        if view.facts is not None:
            rows.append(("top patch", f"{view.facts.soap_top} on {region_phrase(view.facts.soap_top_region)}"))
            rows.append(("weight on the parts", f"{view.facts.soap_on_parts:.1%}"))
        picture = img(overlay_unit(crop, e.soap_weights / top, opacity=0.6), PANEL_SIZE, f"SOAP's weights, {which}")
        pair = f'<div class="wt-pair">{picture}{kv(rows)}</div>'
        panels.append(fig(f"Query: {QUERY_PHRASES[view.query]} ({which})", pair, extra_class="wt-side"))
    note = (
        "One trained model, SOAP's query built three ways on this picture; nothing is retrained, so the weights SOAP "
        "learned with its own query answer the others. The three maps share one colour scale (full colour at "
        f"{top:.3f}, the largest weight any of them gives a patch). A query that is nearly the same for every image "
        "(the mean of every patch token) gives nearly the same [FG] for every image."
    )
    body = f'<div class="wt-body">{"".join(panels)}</div>'
    return f'<div class="wt">{body}<div class="wt-note">{escape(note)}</div></div>'
