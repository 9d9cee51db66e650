"""The Walkthrough tab: one image through microCLIP, one step at a time, with this image's real numbers.

In the spirit of CNN Explainer and Transformer Explainer: an overview strip of the nine steps
(patches → tokens → graph and NCut → query → SOAP → [FG] → fusion → heads → prediction), each
with its key number, and below it the selected step's figures, tables and one sentence of why.
All of it comes from ``microclip.walkthrough`` (one forward pass). The page is rendered once per
image as HTML; moving between steps happens in the browser, without a request.

Named API endpoint: ``walkthrough`` (image, model, class names → the HTML and the JSON numbers).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
import numpy as np
import torch

from microclip.walkthrough import STEP_IDS, walkthrough
from ui.cache import cached, file_digest, model_identity
from ui.common import (
    INFERENCE_CONCURRENCY,
    INFERENCE_ID,
    example_images,
    example_label,
    example_order,
    gpu,
    image_input,
    model_dropdown_update,
    open_image,
    parse_class_names,
    user_errors,
)
from ui.registry import ModelRegistry
from viz.overlay import display_crop
from viz.steps import Markup, colours, escape, hbar, heat_grid, img, table

log = logging.getLogger(__name__)

PICTURE_SIZE = 256  # CSS pixels of the crop and of every patch map
SHORT_NAMES = {"patches": "Patches", "tokens": "Tokens", "graph": "Graph + NCut", "query": "Query", "soap": "SOAP",
               "fg": "[FG]", "fusion": "Fusion", "heads": "Two heads", "prediction": "Prediction"}
INTRO = ("**Walkthrough**: follow one image through microCLIP, step by step. Pick an example (the toy birds are "
         "the bundled model's own world) or upload a picture; every number below is this image's, from one "
         "forward pass. Click a step, or use *Next*.")

run_walkthrough = gpu(walkthrough)  # on ZeroGPU Spaces the forward pass gets a GPU; elsewhere a no-op

NAV_JS = """
element.addEventListener('click', (event) => {
  const target = event.target.closest('[data-goto]');
  if (!target || !element.contains(target)) return;
  const steps = [...element.querySelectorAll('.wt-step')];
  const buttons = [...element.querySelectorAll('.wt-nav [data-goto]')];
  const current = steps.findIndex((s) => !s.hidden);
  const goto = target.dataset.goto;
  let show;
  if (goto === 'all') { show = -1; }
  else if (goto === 'next') { show = Math.min(Math.max(current, 0) + 1, steps.length - 1); }
  else if (goto === 'prev') { show = Math.max(Math.max(current, 0) - 1, 0); }
  else { show = parseInt(goto, 10); }
  steps.forEach((s, i) => { s.hidden = show >= 0 && i !== show; });
  buttons.forEach((b) => b.classList.toggle('wt-active', b.dataset.goto === (show >= 0 ? String(show) : 'all')));
  if (goto === 'next' || goto === 'prev') { element.querySelector('.wt-nav').scrollIntoView({block: 'nearest'}); }
});
"""

CSS = """
<style>
.wt { font-size: 14px; line-height: 1.45; }
.wt h3 { margin: 4px 0 6px; font-size: 18px; }
.wt-head { font-size: 15px; margin-bottom: 8px; }
.wt-nav { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 10px; }
.wt-nav button { border: 1px solid var(--border-color-primary, #ccc); border-radius: 8px; padding: 4px 9px;
  background: var(--background-fill-secondary, #f6f6f6); color: var(--body-text-color, #222); cursor: pointer;
  text-align: left; min-width: 92px; font-size: 13px; }
.wt-nav button small { display: block; opacity: .75; font-size: 11px; white-space: nowrap; }
.wt .wt-nav button { transition: none !important; }
.wt .wt-nav button.wt-active { border-color: var(--color-accent, #f97316) !important;
  box-shadow: 0 0 0 2px var(--color-accent, #f97316) inset !important; }
.wt-step { border: 1px solid var(--border-color-primary, #ddd); border-radius: 10px; padding: 10px 14px;
  margin-bottom: 10px; }
.wt-why { margin: 0 0 10px; font-style: italic; }
.wt-body { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.wt-fig { display: flex; flex-direction: column; gap: 4px; max-width: 520px; }
.wt-fig > b { font-size: 13px; }
.wt-caption { font-size: 12px; opacity: .8; max-width: 300px; }
.wt-grid { border-collapse: collapse; }
.wt-grid td.wt-cell { text-align: center; padding: 0; border: 1px solid rgba(0,0,0,.08);
  font-variant-numeric: tabular-nums; }
.wt-grid td.wt-on { outline: 2px solid #e4572e; outline-offset: -2px; }
.wt-colorbar { display: flex; align-items: center; gap: 6px; font-size: 11px; margin-top: 3px; }
.wt-gradient { display: inline-block; width: 140px; height: 10px; border-radius: 2px; }
.wt-bar-label { opacity: .8; }
.wt .wt-table { border-collapse: collapse; font-size: 13px; margin: 0; width: auto; border: none !important; }
.wt .wt-table th, .wt .wt-table td { border: none !important;
  border-bottom: 1px solid var(--border-color-primary, #ddd) !important; padding: 2px 8px !important;
  text-align: left; font-variant-numeric: tabular-nums; line-height: 1.3; }
.wt .wt-table tr, .wt .wt-table thead, .wt .wt-table tbody { border: none !important; }
.wt .wt-table th { font-size: 12px; }
.wt .wt-table td:not(:first-child) { text-align: right; white-space: nowrap; }
.wt .wt-table.wt-text td:first-child { min-width: 240px; max-width: 380px; }
.wt .wt-card { flex: 1 1 420px; max-width: 640px; }
.wt-hbar { display: inline-block; height: 9px; background: rgba(127,127,127,.18); vertical-align: middle; }
.wt-hbar > span { display: block; height: 100%; }
.wt-stack { position: relative; display: inline-block; line-height: 0; }
.wt-stack img + img { position: absolute; left: 0; top: 0; opacity: .55; }
.wt-pager { display: flex; justify-content: space-between; margin-top: 10px; }
.wt-pager button { border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px; padding: 3px 12px;
  background: var(--background-fill-secondary, #f6f6f6); color: var(--body-text-color, #222); cursor: pointer; }
.wt-kv td:first-child { opacity: .85; }
.wt-note { font-size: 12px; opacity: .85; margin-top: 6px; max-width: 560px; }
</style>
"""


# ------------------------------------------------------------------ numbers → text

def num(value: float | None, digits: int = 4) -> str:
    """A number for a student: fixed-point, or scientific when it is small (a null weight of 3.6e-04
    must not read as 0.0000)."""
    if value is None:
        return "–"
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def kv(rows: Sequence[tuple[str, object]]) -> str:
    """A two-column table of named values (no header)."""
    body = "".join(f"<tr><td>{escape(k)}</td><td>{v if isinstance(v, Markup) else escape(v)}</td></tr>"
                   for k, v in rows)
    return f'<table class="wt-table wt-kv"><tbody>{body}</tbody></table>'


def fig(title: str, body: str, caption: str = "", extra_class: str = "") -> str:
    cap = f'<div class="wt-caption">{escape(caption)}</div>' if caption else ""
    return f'<div class="wt-fig {extra_class}"><b>{escape(title)}</b>{body}{cap}</div>'


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
        picture[max(at - 1, 0):at + 1, :] = (228, 87, 46)
        picture[:, max(at - 1, 0):at + 1] = (228, 87, 46)
    return picture


def _topk_table(rows: list[dict]) -> str:
    scale = max((r["probability"] for r in rows), default=1.0)
    return table(["class", "logit", "probability", ""],
                 [(r["class"], f"{r['logit']:.3f}", f"{r['probability']:.1%}", Markup(hbar(r["probability"], scale)))
                  for r in rows])


# ------------------------------------------------------------------ one renderer per step

def _patches(s: dict, picture: np.ndarray, result: dict) -> str:
    mosaic = np.round(np.asarray(s["patch_mean_rgb"]) * 255).astype(np.uint8)
    h, w = s["grid"]
    return (fig(f"The model's {s['image_size']}×{s['image_size']} crop, cut into {h}×{w} patches",
                img(_grid_picture(picture, s["grid"]), PICTURE_SIZE, "crop with patch grid", "JPEG", False))
            + fig("Mean colour of each patch", img(mosaic, PICTURE_SIZE, "patch mosaic"),
                  "What one token starts from: the pixels of its own patch (shown here as their average).")
            + kv([("input size", f"{s['image_size']} px (centre crop)"), ("patch size", f"{s['patch_pixels']} px"),
                  ("patch grid", f"{h} × {w}"), ("patch tokens", s["n_patches"]),
                  ("plus", "one [CLS] token for the whole image")]))


def _tokens(s: dict, picture: np.ndarray, result: dict) -> str:
    lo, hi = s["norm_range"]
    samples = table(["patch", "‖t‖", *[f"d{i}" for i in range(s["dims_shown"])]],
                    [(f"({p['patch'][0]}, {p['patch'][1]})", f"{p['norm']:.2f}", *[f"{v:+.2f}" for v in p["values"]])
                     for p in s["sample"]])
    return (fig("Length ‖t‖ of each value-path token", heat_grid(s["norms"], "{:.2f}", label="‖t‖", bar_fmt="{:.2f}"),
                f"From {lo:.2f} to {hi:.2f}; after the final LayerNorm the lengths are similar, the directions differ.")
            + fig("Cosine of each token to [CLS]", heat_grid(s["cos_to_cls"], "{:+.2f}", diverging=True, label="cos"),
                  "How much of each patch the global token already summarises.")
            + fig(f"A few tokens: the first {s['dims_shown']} of {s['width']} dimensions", samples,
                  f"Each patch is a {s['width']}-d vector; [CLS] has length {s['cls_norm']:.2f}."))


def _graph(s: dict, picture: np.ndarray, result: dict) -> str:
    affinity = np.asarray(s["affinity"])
    mask = np.asarray(s["mask"], dtype=bool)
    fiedler = np.asarray(s["fiedler"])
    flat_mask, flat_fiedler = mask.ravel(), fiedler.ravel()
    order = sorted(range(len(flat_fiedler)), key=lambda i: (not flat_mask[i], -flat_fiedler[i]))
    n = affinity.shape[0]
    eig = ", ".join(num(v, 4) for v in s["eigenvalues"])
    rule = ("e > std(e)" if s["threshold_rule"] == "std" else "e > mean(e)") + (
        " — then flipped, as the reference's solver rule does" if s["flipped"] else "")
    what = "value-path tokens" if s["features"] == "values" else "normalised key features"
    return (fig(f"Affinity A ({n}×{n}), foreground first",
                img(_affinity_picture(affinity, order, s["n_foreground"]), PICTURE_SIZE, "affinity matrix"),
                f"Dark: ⟨t_i, t_j⟩ > τ = {s['tau']} (a link). The red lines split the {s['n_foreground']} foreground "
                f"patches from the other {n - s['n_foreground']}; few dark cells cross them.")
            + fig("Fiedler vector e (second eigenvector of L)",
                  heat_grid(fiedler, "{:+.2f}", diverging=True, outline=mask, label="e"),
                  f"Framed: the foreground, {rule} with threshold {s['threshold']:.3f}.")
            + kv([("graph built on", what), ("dot products", f"{s['dot_range'][0]:.1f} … {s['dot_range'][1]:.1f}"),
                  ("links (A = 1)", f"{s['n_edges']} of {n * n}"), ("smallest eigenvalues of L", eig),
                  ("foreground patches", f"{s['n_foreground']} of {n}"), ("links the split cuts", s["cut_edges"]),
                  ("NCut value", num(s["ncut_value"], 4))]))


def _query(s: dict, picture: np.ndarray, result: dict) -> str:
    mask = np.asarray(result["steps"][STEP_IDS.index("graph")]["mask"], dtype=bool)
    how = {"ncut": f"mean of the {s['n_used']} foreground tokens", "global": "the [CLS] token (ablation)",
           "token_avg": "mean of all tokens (ablation)", "random": "one random token (ablation)"}[s["mode"]]
    return (fig("Cosine of the query q to each patch token",
                heat_grid(s["cos_to_patches"], "{:+.2f}", diverging=True, outline=mask, label="cos(q, t)"),
                "Framed: the foreground patches averaged into q. Patches like them score high.")
            + kv([("q is", how), ("‖q‖", f"{s['norm']:.3f}"), ("cos(q, [CLS])", f"{s['cos_to_cls']:+.3f}")]))


def _soap(s: dict, picture: np.ndarray, result: dict) -> str:
    weights = np.asarray(s["weights"])
    h, w = weights.shape
    rgb, _, _ = colours(weights)
    overlay = (f'<span class="wt-stack">{img(picture, PICTURE_SIZE, "crop", "JPEG", False)}'
               f'{img(rgb, PICTURE_SIZE, "SOAP weights")}</span>')
    top = ", ".join(f"({p['patch'][0]}, {p['patch'][1]}) {p['weight']:.3f}" for p in s["top_patches"])
    rows = [("scale 1/√D", f"{s['scale']:.4f}"), ("null token's logit", num(s["null_logit"], 3)),
            ("null weight α_null", num(s["null_weight"], 4)),
            ("Σ patch weights + α_null", f"{np.sum(weights):.6f} + {num(s['null_weight'], 4)} = {s['weight_sum']:.6f}"),
            ("uniform weight 1/(N+1)", f"{s['uniform']:.4f}"),
            ("effective patches e^H", f"{s['effective_patches']:.1f} of {h * w}"), ("top patches", top)]
    figures = fig("SOAP weight α of each patch", heat_grid(weights, "{:.3f}", label="α", bar_fmt="{:.3g}"),
                  "These weights are the pooling itself: [FG] is built from exactly these shares.")
    if s["logits"] is not None:
        figures += fig("Attention logit (W_q q)·(W_k t)/√D", heat_grid(s["logits"], "{:.1f}", label="logit"),
                       "The null token's key is zero, so its logit is always 0: a patch needs a logit above 0 to "
                       "beat it.")
    else:
        figures += fig("No attention", f"<div>pooling: {escape(s['pool'])} (ablation) — the weights are fixed "
                                       "shares, the null token takes none</div>")
    note = ("A zero null token adds nothing to the pooled vector and only shrinks it, so after normalisation "
            "[FG] is the same as a softmax over the patches alone; it tells you how little any patch matched."
            if not s["learnable_null"] else "This model learned its null token, so it also shifts [FG].")
    return (figures + fig("Weights over the picture", overlay, "Brighter: more weight.")
            + kv(rows) + f'<div class="wt-note">{escape(note)}</div>')


def _fg(s: dict, picture: np.ndarray, result: dict) -> str:
    dims = table(["dimension", "[FG] f", "[CLS] g"],
                 [(f"d{i}", f"{a:+.3f}", f"{b:+.3f}") for i, (a, b) in enumerate(zip(s["fg_sample"], s["cls_sample"]))])
    return (kv([("h = Σ α_j W_v s_j", f"‖h‖ = {s['pooled_norm']:.3f} ({s['width']}-d)"),
                ("f = normalize(h · P)", f"{s['embed_dim']}-d, length 1 (P: CLIP's own projection)"),
                ("cos(f, g)", f"{s['cos_fg_cls']:+.3f}")])
            + fig("First dimensions of the two tokens", dims,
                  "[CLS] and [FG] go through the same frozen projection P, so they live in the same space.")
            + fig("What [FG] alone would predict", _topk_table(s["top"])))


def _fusion(s: dict, picture: np.ndarray, result: dict) -> str:
    rho = s["ratio"]
    best = max(r["fused"] for r in s["rows"])
    rows = [(r["class"], f"{r['cls_logit']:.3f}", f"{r['fg_logit']:.3f}", f"{r['cls_part']:.3f}",
             f"{r['fg_part']:.3f}", Markup(f"<b>{r['fused']:.3f}</b>"),
             "winner" if r["fused"] == best else f"{r['fused'] - best:+.3f}") for r in s["rows"]]
    return (fig(f"fused = ρ · [CLS] logit + (1 − ρ) · [FG] logit, with ρ = {rho:.2f}",
                table(["class", "[CLS] logit", "[FG] logit", f"{rho:.2f} × [CLS]", f"{1 - rho:.2f} × [FG]", "fused",
                       "vs winner"], rows),
                "Logits are 100 × cosine to the class vector Ŵ*. Each row adds up exactly.")
            + kv([("cos([FG], [CLS])", f"{s['cos_fg_cls']:+.3f}"),
                  ("‖ρ g + (1 − ρ) f‖", f"{s['fused_feature_norm']:.3f} (not renormalised, as the reference)")]))


def _heads(s: dict, picture: np.ndarray, result: dict) -> str:
    cards = []
    for row in s["classes"]:
        facts = [("W* logit (scores the image)", f"{row['w_star_logit']:.3f}"),
                 ("W_LLM logit (pseudo-labels only)", f"{row['w_llm_logit']:.3f}"),
                 ("cos(Ŵ*, W_LLM)", f"{row['cos_w_star_w_llm']:+.3f}")]
        if "w_star_vs_initial_cos" in row:
            facts.append(("cos(W*, its start: mean of descriptions)", f"{row['w_star_vs_initial_cos']:+.3f}"))
        body = kv(facts)
        described = row.get("descriptions") or []
        if described and "share_in_w_llm" in described[0]:
            scale = max(d["share_in_w_llm"] for d in described)
            body += table(["description", "share in W_LLM", "", "cos to [FG]", "cos to [CLS]"],
                          [(d["text"], f"{d['share_in_w_llm']:.1%}", Markup(hbar(d["share_in_w_llm"], scale, width=70)),
                            f"{d['cos_fg']:+.3f}", f"{d['cos_cls']:+.3f}") for d in described], "wt-text")
            if row["n_descriptions"] > len(described):
                body += f'<div class="wt-note">… and {row["n_descriptions"] - len(described)} more.</div>'
        elif described:
            body += table(["description"], [(d["text"],) for d in described], "wt-text")
        else:
            body += '<div class="wt-note">No descriptions: both vectors come from the class-name templates.</div>'
        cards.append(fig(f"{row['class']}", body, extra_class="wt-card"))
    return "".join(cards) + (f'<div class="wt-note">Shown: the top {len(s["classes"])} of {s["n_classes"]} classes. '
                             "W_LLM weighs each description by how well it matches the class name's template "
                             "embedding; W* started as their plain mean and moved during adaptation.</div>")


def _prediction(s: dict, picture: np.ndarray, result: dict) -> str:
    titles = {"fused": "Fused (the prediction)", "cls": "[CLS] only", "fg": "[FG] only"}
    tables = "".join(fig(titles[b], _topk_table(s["top"][b])) for b in ("fused", "cls", "fg"))
    agree = len(set(s["branch_predictions"].values())) == 1
    stable = s["stable_ratio"]
    facts = [("prediction", Markup(f"<b>{escape(s['prediction'])}</b>")),
             ("runner-up", s["runner_up"] or "–"),
             ("margin (fused logits)", num(s["margin"], 3)),
             ("branches agree", "yes" if agree else "no: " + ", ".join(f"{k} → {v}"
                                                                       for k, v in s["branch_predictions"].items())),
             ("holds for ρ in", f"[{stable[0]:.2f}, {stable[1]:.2f}]" if stable else "–")]
    return kv(facts) + tables


RENDERERS = {"patches": _patches, "tokens": _tokens, "graph": _graph, "query": _query, "soap": _soap, "fg": _fg,
             "fusion": _fusion, "heads": _heads, "prediction": _prediction}


def key_number(s: dict, result: dict) -> str:
    """The one number under each step's name in the overview strip."""
    step_id = s["id"]
    if step_id == "patches":
        return f"{s['grid'][0]}×{s['grid'][1]} = {s['n_patches']}"
    if step_id == "tokens":
        return f"{len(s['norms']) * len(s['norms'][0])} × {s['width']}-d"
    if step_id == "graph":
        return f"{s['n_foreground']} foreground"
    if step_id == "query":
        return f"‖q‖ = {s['norm']:.2f}"
    if step_id == "soap":
        return f"null {num(s['null_weight'], 3)}"
    if step_id == "fg":
        return f"cos to [CLS] {s['cos_fg_cls']:+.2f}"
    if step_id == "fusion":
        return f"ρ = {s['ratio']:.2f}"
    if step_id == "heads":
        return f"{s['n_classes']} classes"
    top = s["top"]["fused"][0]
    return f"{top['class']} {top['probability']:.0%}"


def render_walkthrough(result: dict, picture: np.ndarray, note: str = "") -> str:
    """The whole walkthrough as one HTML page: the strip, then every step (only the first visible)."""
    final = result["steps"][-1]
    top = final["top"]["fused"][0]
    head = (f'<div class="wt-head">Prediction: <b>{escape(final["prediction"])}</b> ({top["probability"]:.1%})'
            + (f" · runner-up {escape(final['runner_up'])}, margin {num(final['margin'], 3)}"
               if final["runner_up"] else "") + "</div>")
    if note:
        head += f'<div class="wt-note">{escape(note)}</div>'
    nav = ['<div class="wt-nav">']
    sections = []
    for index, s in enumerate(result["steps"]):
        active = " wt-active" if index == 0 else ""
        nav.append(f'<button type="button" data-goto="{index}" class="{active.strip()}"><span>{index + 1} · '
                   f'{escape(SHORT_NAMES[s["id"]])}</span><small>{escape(key_number(s, result))}</small></button>')
        pager = ('<div class="wt-pager">'
                 + ('<button type="button" data-goto="prev">← Back</button>' if index else "<span></span>")
                 + ('<button type="button" data-goto="next">Next →</button>'
                    if index < len(result["steps"]) - 1 else "<span></span>") + "</div>")
        body = RENDERERS[s["id"]](s, picture, result)
        sections.append(f'<section class="wt-step" data-step="{escape(s["id"])}"{" hidden" if index else ""}>'
                        f'<h3>{index + 1} · {escape(s["title"])}</h3><p class="wt-why">Why: {escape(s["why"])}</p>'
                        f'<div class="wt-body">{body}</div>{pager}</section>')
    nav.append('<button type="button" data-goto="all"><span>All steps</span><small>one long page</small></button>')
    nav.append("</div>")
    return f'{CSS}<div class="wt">{head}{"".join(nav)}{"".join(sections)}</div>'


# ------------------------------------------------------------------ the text tower, cached per sentence

class CachedText:
    """A text encoder that remembers each sentence's embedding (descriptions repeat from image to image)."""

    def __init__(self, encoder: Any, capacity: int = 4096) -> None:
        self.encoder = encoder
        self.capacity = capacity
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            fresh = self.encoder(missing)
            with self._lock:
                for text, row in zip(missing, fresh):
                    self._cache[text] = row
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        with self._lock:
            rows = [self._cache.get(t) for t in texts]
        if any(row is None for row in rows):  # evicted meanwhile by another request: encode directly
            return self.encoder(list(texts))
        return torch.stack(rows) if rows else self.encoder([])


_TEXT: dict[Any, CachedText] = {}  # the registry's text encoder (one per base model) → its sentence cache
_TEXT_LOCK = threading.Lock()


def text_encoder_for(registry: ModelRegistry, model) -> CachedText | None:
    """The base model's text tower (the registry keeps one per base) with a sentence cache, or None when it
    cannot be loaded (the heads step then lists the descriptions without their weights)."""
    base = model.base
    if base is None:
        return None
    try:
        encoder = registry.text_encoder(base)
    except Exception as error:  # noqa: BLE001 - the walkthrough still works without the description weights
        log.warning("walkthrough: no text tower for %s (%s); description weights are not shown", base.describe(),
                    error)
        return None
    with _TEXT_LOCK:
        if encoder not in _TEXT:
            _TEXT[encoder] = CachedText(encoder)
        return _TEXT[encoder]


# ------------------------------------------------------------------ the endpoint

@user_errors
def walk(registry: ModelRegistry, image: str | None, model_name: str | None, class_names: str | None) -> tuple:
    """One image through the model, step by step (the ``walkthrough`` endpoint): the HTML page and the numbers."""
    if image and os.path.isfile(image):  # cache (ui.cache): a class asking about one picture is served once
        loaded = registry.get(model_name or None)
        key = ("walkthrough", loaded.name, model_identity(loaded.model), file_digest(image), class_names or "")
        return cached(key, lambda: _walk(registry, image, model_name, class_names))
    return _walk(registry, image, model_name, class_names)


def _walk(registry: ModelRegistry, image: str | None, model_name: str | None, class_names: str | None) -> tuple:
    picture = open_image(image)
    loaded = registry.get(model_name or None)
    typed = parse_class_names(class_names)
    model = registry.with_classes(model_name or None, typed) if typed else loaded.model
    descriptions = {} if typed else loaded.descriptions
    templates = loaded.templates
    encoder = text_encoder_for(registry, model) if descriptions else None
    result = run_walkthrough(model, picture, descriptions=descriptions, text_encoder=encoder, templates=templates)
    note = ""
    if len(model.classes) == 1:
        note = ("Only one class: its probability is 100% whatever the image shows; add other classes for the "
                "probabilities to mean anything.")
    html_page = render_walkthrough(result, display_crop(picture, PICTURE_SIZE), note)
    return html_page, result


# ------------------------------------------------------------------ the tab

def ordered_examples(paths: list[str]) -> tuple[list[str], list[str]]:
    """Toy birds first (the bundled model's world), other pictures after; each with its label."""
    ordered = sorted(paths, key=example_order)
    return ordered, [example_label(path) for path in ordered]


@dataclass
class WalkthroughHandles:
    model: gr.Dropdown
    image: gr.Image


def build_walkthrough_tab(registry: ModelRegistry) -> WalkthroughHandles:
    """Build the Walkthrough tab inside the current ``gr.Tab`` and wire the ``walkthrough`` endpoint."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=330):
            image = image_input(label="Image", sources=["upload", "webcam", "clipboard"], height=240,
                                elem_id="walkthrough-image")
            paths, labels = ordered_examples(example_images())
            gallery = None
            if paths:  # thumbnails with their captions; a click loads the picture and walks it through
                gallery = gr.Gallery(list(zip(paths, labels)), label="Examples: toy birds (the bundled model's "
                                     "world) first; ⚠ = outside that world", columns=3, height=360, allow_preview=False,
                                     object_fit="contain", elem_id="walkthrough-examples")
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model",
                                elem_id="walkthrough-model")
            classes = gr.Textbox(label="Class names (optional)", lines=2,
                                 placeholder="Blank: the model's own classes (with their descriptions).")
            run = gr.Button("Walk through", variant="primary", elem_id="walkthrough-button")
        with gr.Column(scale=3):
            page = gr.HTML("<div class='wt'>Pick an example or upload an image: the walkthrough starts at once.</div>",
                           js_on_load=NAV_JS, elem_id="walkthrough-steps")
            with gr.Accordion("All the numbers (JSON)", open=False):
                numbers = gr.JSON(label="walkthrough", elem_id="walkthrough-json")

    model.focus(lambda value: model_dropdown_update(registry.names(), value), model, model,
                api_visibility="private", queue=False)
    compute = partial(walk, registry)
    inputs, outputs = [image, model, classes], [page, numbers]
    gr.on([run.click, image.upload], compute, inputs, outputs, api_name="walkthrough",
          concurrency_limit=INFERENCE_CONCURRENCY, concurrency_id=INFERENCE_ID)
    if gallery is not None:
        def pick(model_name: str | None, class_names: str | None, evt: gr.SelectData) -> tuple:
            path = paths[evt.index]
            return (path, *compute(path, model_name, class_names))

        gallery.select(pick, [model, classes], [image, *outputs], api_visibility="private",
                       concurrency_limit=INFERENCE_CONCURRENCY, concurrency_id=INFERENCE_ID)
    return WalkthroughHandles(model=model, image=image)
