"""Explore's "what if SOAP asked another question, or pooled another way?": one trained model with SOAP's query
built each way the reference builds it (the cut's foreground, `[CLS]`, every patch token), or `[FG]` pooled each way
(SOAP's attention, the plain mean of the cut's foreground, of every patch token), on one picture, nothing
retrained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from PIL import Image

from microclip.explain import Explanation, explain_sharing_the_tower
from microclip.model import MicroCLIP
from microclip.soap import DETERMINISTIC_QUERIES, POOLS
from microclip.walkthrough import MaskFacts, PatchTruth, effective_count, mask_facts
from viz.overlay import overlay_unit
from viz.steps import POOL_PHRASES, QUERY_PHRASES, fig, img, kv, region_phrase


@dataclass(frozen=True)
class SoapView:
    explanation: Explanation  # carries the query and pooling it was asked with
    trained: bool  # the query and pooling the model was trained with
    facts: MaskFacts | None  # on a known toy image: where SOAP's weight fell

    @property
    def query(self) -> str:  # "ncut", "global" or "token_avg"
        return self.explanation.query

    @property
    def pool(self) -> str:  # "attention", "ncut_avg" or "naive_avg"
        return self.explanation.pool

    @property
    def effective_patches(self) -> float:
        """e^H of SOAP's weights over the patches and the null token."""
        return effective_patches(self.explanation)

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
) -> list[SoapView]:
    """The picture explained by ``model`` with each deterministic query, the model's own first."""
    queries = sorted(DETERMINISTIC_QUERIES, key=lambda query: query != model.config.query)
    return _views(model, [model.asking(query=query) for query in queries], picture, ratio, truth)


def pool_views(
    model: MicroCLIP, picture: Image.Image, ratio: float | None = None, truth: PatchTruth | None = None
) -> list[SoapView]:
    """The picture explained by ``model`` with `[FG]` pooled each way, the model's own first."""
    pools = sorted(POOLS, key=lambda pool: pool != model.config.pool)
    return _views(model, [model.asking(pool=pool) for pool in pools], picture, ratio, truth)


def _views(
    model: MicroCLIP, asked: Sequence[MicroCLIP], picture: Image.Image, ratio: float | None, truth: PatchTruth | None
) -> list[SoapView]:
    views = []
    # the views differ only after the backbone: one pass serves them all
    for view, explanation in zip(asked, explain_sharing_the_tower(asked, picture, ratio), strict=True):
        facts = None
        if truth is not None:
            facts = mask_facts(truth, explanation.ncut_mask, explanation.soap_weights, explanation.cls_similarity)
        trained = (view.config.query, view.config.pool) == (model.config.query, model.config.pool)
        views.append(SoapView(explanation, trained, facts))
    return views


# ------------------------------------------------------------------ the panels

PANEL_SIZE = 160  # CSS pixels of each map


def _answer(view: SoapView, branch: str, true_class: str | None) -> str:
    e = view.explanation
    index = e.prediction(branch)
    verdict = "" if true_class is None else (" · right" if e.classes[index] == true_class else " · wrong")
    return f"{e.classes[index]} ({e.probabilities(branch)[index]:.1%}){verdict}"


def _which(view: SoapView, method: bool) -> str:
    return "as trained" if view.trained else "the method's" if method else "an ablation"


NOTES = {
    "query": "One trained model, SOAP's query built three ways on this picture; nothing is retrained, so the weights "
    "SOAP learned with its own query answer the others. A query that is nearly the same for every image (the mean "
    "of every patch token) gives nearly the same [FG] for every image.",
    "pool": "One trained model, [FG] pooled three ways on this picture; nothing is retrained. The plain means give "
    "each pooled token the same weight and use none of SOAP's learned projections (the query, key and value maps), "
    "so the first two panels differ by exactly what SOAP's attention adds over the cut alone.",
}


def queries_html(
    crop: np.ndarray, views: Sequence[SoapView], true_class: str | None = None, vary: str = "query"
) -> str:
    """One panel a query (``vary="query"``) or a pooling (``"pool"``): SOAP's weights over the picture the model
    sees (``crop``), `[FG]`'s and the fused answer, how many patches SOAP's weight is spread over and, on a toy bird,
    where its top patch is."""
    # one colour scale for all: full colour at the largest weight any view gives a patch, so a spread-out map looks
    # spread out instead of being stretched to its own range
    top = max(float(view.explanation.soap_weights.max()) for view in views) or 1.0
    panels = []
    for view in views:
        e = view.explanation
        if vary == "query":
            which = _which(view, view.query == "ncut")
            title, label = f"Query: {QUERY_PHRASES[view.query]} ({which})", f"SOAP's weights, {which}"
        else:
            which = _which(view, view.pool == "attention")
            title, label = f"Pooling: {POOL_PHRASES[view.pool]} ({which})", f"[FG]'s pooling weights, {which}"
        rows = [
            ("[FG] alone", _answer(view, "fg", true_class)),
            ("fused", _answer(view, "fused", true_class)),
            ("weight spread over (e^H)", f"{view.spread} patches and null"),
        ]
        if view.facts is not None and view.pool == "attention":
            rows.append(("top patch", f"{view.facts.soap_top} on {region_phrase(view.facts.soap_top_region)}"))
        elif view.facts is not None:  # a plain mean has no top patch: every pooled patch weighs the same
            pooled = view.facts.n_foreground if view.pool == "ncut_avg" else view.facts.n_patches
            on_bird = view.facts.n_foreground_on_object if view.pool == "ncut_avg" else view.facts.n_object
            rows.append(("patches pooled, alike", f"{pooled}, {on_bird} of them on the bird"))
        if view.facts is not None:
            rows.append(("weight on the parts", f"{view.facts.soap_on_parts:.1%}"))
        picture = img(overlay_unit(crop, e.soap_weights / top, opacity=0.6), PANEL_SIZE, label)
        pair = f'<div class="wt-pair">{picture}{kv(rows)}</div>'
        panels.append(fig(title, pair, extra_class="wt-side"))
    note = ""
    if vary == "query" and views[0].pool != "attention":  # a plain mean never reads the query: one answer thrice
        note = f"This model pools [FG] as {POOL_PHRASES[views[0].pool]}, which never reads SOAP's query. "
    note += (
        f"{NOTES[vary]} The three maps share one colour scale (full colour at {top:.3f}, the largest weight any of "
        "them gives a patch)."
    )
    body = f'<div class="wt-body">{"".join(panels)}</div>'
    return f'<div class="wt">{body}<div class="wt-note">{escape(note)}</div></div>'
