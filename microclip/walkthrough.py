"""One image through microCLIP, step by step: every intermediate of one forward pass, as plain numbers.

``walkthrough`` runs the same sequence of library calls as ``MicroCLIP.forward`` (backbone →
``foreground_mask`` → ``soap_query`` → ``SOAP`` → projection → ``Heads.branch_logits``) and keeps
what each step produced, so a student can follow the image from pixels to the prediction:

    patches → value-path tokens → affinity graph and its NCut split → the query → SOAP's weights
    (and the null token) → [FG] → fusion with [CLS] → the two heads → the prediction

The result is a JSON-ready ``dict`` (lists, floats, ints, strings, bools). Each step carries an
``id``, a ``title``, ``why`` (one sentence on why the method does it) and its numbers. Nothing is
estimated: the numbers compose back to the model's own logits (``tests/test_walkthrough.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from microclip.constants import NCUT_EPS, NCUT_TAU
from microclip.heads import TextEncoder, description_weighted, template_embeddings
from microclip.model import MicroCLIP
from microclip.soap import ncut_split, soap_query

STEP_IDS = ("patches", "tokens", "graph", "query", "soap", "fg", "fusion", "heads", "prediction")
TOP_K = 5
DIMS_SHOWN = 8  # leading dimensions of a token printed as a sample
HEAD_CLASSES = 3  # classes whose head vectors (and descriptions) are taken apart
MAX_DESCRIPTIONS = 8  # sentences listed per class


def _floats(tensor: torch.Tensor) -> Any:
    """A tensor as (nested) Python floats, in float64 so nothing is rounded on the way to JSON."""
    return tensor.detach().to("cpu", torch.float64).numpy().tolist()


def _grid(tensor: torch.Tensor, grid: tuple[int, int]) -> list[list[float]]:
    return _floats(tensor.reshape(grid))


def _top(logits: torch.Tensor, classes: Sequence[str], k: int) -> list[dict]:
    probabilities = logits.double().softmax(-1)
    order = torch.argsort(logits, descending=True)[:k]
    return [{"class": classes[i], "index": int(i), "logit": float(logits[i]), "probability": float(probabilities[i])}
            for i in order.tolist()]


def stable_ratio_range(cls_logits: torch.Tensor, fg_logits: torch.Tensor, winner: int) -> tuple[float, float] | None:
    """The interval of ρ in [0, 1] over which ``winner`` keeps the top fused logit (None if nowhere).

    The fused logit of every class is linear in ρ, so "winner beats class c" holds on a half-line
    of ρ; the intersection over all classes is one interval.
    """
    lo, hi = 0.0, 1.0
    for other in range(cls_logits.shape[0]):
        if other == winner:
            continue
        d_fg = float(fg_logits[winner] - fg_logits[other])  # the margin at ρ = 0
        d_cls = float(cls_logits[winner] - cls_logits[other])  # the margin at ρ = 1
        slope = d_cls - d_fg  # margin(ρ) = d_fg + ρ · slope
        if abs(slope) < 1e-12:
            if d_fg < 0:
                return None
            continue
        root = -d_fg / slope
        if slope > 0:
            lo = max(lo, root)
        else:
            hi = min(hi, root)
        if lo > hi:
            return None
    return lo, hi


def _ncut_value(affinity: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Shi-Malik NCut(A, B) = cut/assoc(A) + cut/assoc(B) of the split, on the ε-weighted graph, and the
    number of affinity edges (above τ) the split cuts."""
    weights = torch.where(affinity, 1.0, NCUT_EPS).double()
    inside, outside = mask, ~mask
    cut = float(weights[inside][:, outside].sum())
    assoc_a = float(weights[inside].sum())
    assoc_b = float(weights[outside].sum())
    value = (cut / assoc_a if assoc_a else math.inf) + (cut / assoc_b if assoc_b else math.inf)
    edges = int(affinity[inside][:, outside].sum())
    return value, edges


def _description_rows(encoder: TextEncoder, name: str, sentences: list[str], templates: Sequence[str],
                      fg_embed: torch.Tensor, cls_embed: torch.Tensor, w_llm_row: torch.Tensor,
                      w_star_row: torch.Tensor) -> dict:
    """How one class's descriptions build its two head vectors, and how each matches this image."""
    anchor = template_embeddings(encoder, [name], templates)[0].to(fg_embed.device)
    embeds = F.normalize(encoder(sentences[:256]), dim=-1).to(fg_embed.device)  # (n, E)
    raw = embeds @ anchor  # w_j = e_j · t_c (docs/method.md §4.3)
    share = raw / raw.sum()
    rebuilt = description_weighted(embeds, anchor)
    initial = F.normalize(embeds.mean(0), dim=-1)  # W*'s starting point (§4.4)
    order = torch.argsort(share, descending=True).tolist()[:MAX_DESCRIPTIONS]
    return {
        "n_descriptions": len(sentences),
        "descriptions": [{"text": sentences[j], "share_in_w_llm": float(share[j]),
                          "cos_fg": float(embeds[j] @ fg_embed), "cos_cls": float(embeds[j] @ cls_embed)}
                         for j in order],
        "w_llm_rebuilt_cos": float(rebuilt @ w_llm_row),  # 1.0 when the stored head is these descriptions'
        "w_star_vs_initial_cos": float(F.normalize(w_star_row, dim=-1) @ initial),
    }


@torch.no_grad()
def walkthrough_tensor(model: MicroCLIP, image: torch.Tensor, ratio: float | None = None,
                       descriptions: dict[str, list[str]] | None = None, text_encoder: TextEncoder | None = None,
                       templates: Sequence[str] = (), top_k: int = TOP_K) -> dict:
    """Every step of one forward pass for ``image`` (3, S, S) or (1, 3, S, S) in [0, 1] at the model's size.

    ``descriptions`` and ``text_encoder`` (with the ``templates`` the heads were built with) are
    optional: with them the heads step shows how each description weighs in each class vector.
    """
    model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    images = (image if image.dim() == 4 else image[None]).to(device)
    if images.shape[0] != 1:
        raise ValueError(f"the walkthrough follows one image, got a batch of {images.shape[0]}")
    ratio = cfg.fusion_ratio if ratio is None else float(ratio)
    backbone, classes = model.backbone, list(model.classes)
    size = int(images.shape[-1])
    h, w = backbone.grid
    n, width = h * w, backbone.width

    # 1-2. Patches and value-path tokens: the backbone's one pass.
    tokens = backbone(images)
    patches = tokens.patches  # (1, N, D)
    patch_px = size // w
    cropped = images[0, :, :h * patch_px, :w * patch_px]
    mosaic = cropped.reshape(3, h, patch_px, w, patch_px).mean(dim=(2, 4)).permute(1, 2, 0)  # (h, w, 3)
    norms = patches[0].norm(dim=-1)
    cls_cos = F.cosine_similarity(patches[0], tokens.cls_token, dim=-1)
    sample = sorted({0, int(norms.argmax()), int(norms.argmin())})

    # 3. The affinity graph and its normalised cut: the model's own split, and the graph it was cut from.
    ncut_input = patches if cfg.ncut_features == "values" else F.normalize(tokens.patch_keys, dim=-1)
    split = ncut_split(ncut_input, threshold=cfg.ncut_threshold, sign=cfg.ncut_sign)
    mask = split.mask.to(device)  # (1, N), as foreground_mask gives it
    fiedler = split.fiedler[0]
    feats = ncut_input.detach().to("cpu", fiedler.dtype)[0]
    dots = feats @ feats.T
    affinity = dots > NCUT_TAU
    ncut_value, cut_edges = _ncut_value(affinity, split.mask[0])
    order = torch.argsort(fiedler, descending=True)
    recut = (fiedler > split.threshold[0]) ^ split.flipped[0]  # the mask read back from the Fiedler vector

    # 4. The query.
    query = soap_query(patches, mask, tokens.cls_token, cfg.query)  # (1, D)
    q_cos = F.cosine_similarity(patches[0], query, dim=-1)

    # 5. SOAP: one query over the patches and the null token.
    soap = model.soap(patches, query, mask, pool=cfg.pool)
    weights = soap.weights[0]  # (N + 1,)
    attn_logits = soap.logits[0] if soap.logits is not None else None  # (N + 1,), attention pooling only
    entropy = -(weights.double() * weights.double().clamp_min(1e-300).log()).sum()

    # 6. [FG]: the pooled vector, projected and normalised.
    fg_embed = backbone.project(soap.pooled)  # (1, E)
    cls_embed = tokens.cls_embed

    # 7-9. Fusion, the two heads, the prediction.
    logits = model.heads.branch_logits(cls_embed, fg_embed, ratio)
    cls_logits, fg_logits, fused = logits.cls[0], logits.fg[0], logits.fused[0]
    winner = int(fused.argmax())
    ranked = torch.argsort(fused, descending=True).tolist()
    runner_up = ranked[1] if len(ranked) > 1 else None
    w_hat = model.heads.w_star_hat()
    w_llm = model.heads.w_llm.to(w_hat.dtype)
    fused_feature = ratio * cls_embed[0] + (1.0 - ratio) * fg_embed[0]  # un-renormalised, as the logits use it
    llm_logits = 100.0 * fused_feature @ w_llm.T
    shown = list(dict.fromkeys([*ranked[:top_k], int(cls_logits.argmax()), int(fg_logits.argmax())]))
    head_classes = ranked[:HEAD_CLASSES]

    heads = []
    for index in head_classes:
        name = classes[index]
        row: dict[str, Any] = {
            "class": name, "index": index,
            "w_star_logit": float(100.0 * fused_feature @ w_hat[index]),
            "w_llm_logit": float(llm_logits[index]),
            "cos_w_star_w_llm": float(w_hat[index] @ w_llm[index]),
            "source": "descriptions" if (descriptions or {}).get(name) else "templates",
        }
        sentences = (descriptions or {}).get(name) or []
        if sentences and text_encoder is not None and templates:
            row |= _description_rows(text_encoder, name, list(sentences), templates, fg_embed[0], cls_embed[0],
                                     w_llm[index], model.heads.w_star[index])
        elif sentences:
            row |= {"n_descriptions": len(sentences),
                    "descriptions": [{"text": s} for s in sentences[:MAX_DESCRIPTIONS]]}
        heads.append(row)

    stable = stable_ratio_range(cls_logits, fg_logits, winner)
    steps = [
        {"id": "patches", "title": "Cut the image into patches",
         "why": "A ViT reads an image as a sequence of square patches, one token each, so every later map has "
                "exactly one value per patch.",
         "image_size": size, "patch_pixels": patch_px, "grid": [h, w], "n_patches": n,
         "patch_mean_rgb": _floats(mosaic)},
        {"id": "tokens", "title": "Value-path patch tokens",
         "why": "microCLIP reads the last block with its attention replaced by the identity, so each token "
                "describes its own patch instead of a mix of the whole image.",
         "width": width, "norms": _grid(norms, (h, w)), "norm_range": [float(norms.min()), float(norms.max())],
         "cls_norm": float(tokens.cls_token[0].norm()), "cos_to_cls": _grid(cls_cos, (h, w)),
         "sample": [{"patch": list(divmod(i, w)), "values": _floats(patches[0, i, :DIMS_SHOWN]),
                     "norm": float(norms[i])} for i in sample],
         "dims_shown": min(DIMS_SHOWN, width)},
        {"id": "graph", "title": "Affinity graph and its normalised cut",
         "why": "Patches whose tokens agree are linked; the normalised cut splits the graph where the fewest links "
                "cross, which separates the object from its background without any label.",
         "features": cfg.ncut_features, "tau": NCUT_TAU, "threshold_rule": cfg.ncut_threshold, "sign": cfg.ncut_sign,
         "dot_range": [float(dots.min()), float(dots.max())],
         "affinity": affinity.to(torch.int8).tolist(), "n_edges": int(affinity.sum()),
         "degree": _grid(split.degree[0], (h, w)), "eigenvalues": _floats(split.eigenvalues[0, :4]),
         "fiedler": _grid(fiedler, (h, w)), "threshold": float(split.threshold[0]),
         "flipped": bool(split.flipped[0]), "order": order.tolist(),
         "mask": mask[0].reshape(h, w).cpu().tolist(), "n_foreground": int(mask.sum()),
         "ncut_value": ncut_value, "cut_edges": cut_edges,
         "fiedler_reproduces_mask": bool(torch.equal(recut, split.mask[0]))},
        {"id": "query", "title": "The query: the mean foreground token",
         "why": "Averaging the foreground tokens gives one vector that says what the object looks like, and SOAP "
                "asks every patch how well it matches it.",
         "mode": cfg.query, "n_used": int(mask.sum()) if cfg.query == "ncut" else n,
         "norm": float(query[0].norm()), "cos_to_patches": _grid(q_cos, (h, w)),
         "cos_to_cls": float(F.cosine_similarity(query, tokens.cls_token, dim=-1)[0])},
        {"id": "soap", "title": "SOAP's attention weights and the null token",
         "why": "One softmax over the patches plus a zero null token decides how much each patch contributes; the "
                "null token soaks up weight when no patch matches the query.",
         "pool": cfg.pool, "scale": 1.0 / math.sqrt(model.soap.width),
         "logits": _grid(attn_logits[:n], (h, w)) if attn_logits is not None else None,
         "null_logit": float(attn_logits[n]) if attn_logits is not None else None,
         "weights": _grid(weights[:n], (h, w)), "null_weight": float(weights[n]),
         "weight_sum": float(weights.double().sum()), "uniform": 1.0 / (n + 1),
         "effective_patches": float(entropy.exp()),
         "top_patches": [{"patch": list(divmod(i, w)), "weight": float(weights[i])}
                         for i in torch.argsort(weights[:n], descending=True)[:top_k].tolist()],
         "learnable_null": bool(cfg.learnable_null)},
        {"id": "fg", "title": "[FG]: the pooled token, projected",
         "why": "The weighted sum of the patches' values, through CLIP's own projection and normalised, is the "
                "fine-grained token: it sees only where SOAP looked.",
         "pooled_norm": float(soap.pooled[0].norm()), "width": width, "embed_dim": backbone.embed_dim,
         "fg_sample": _floats(fg_embed[0, :DIMS_SHOWN]), "cls_sample": _floats(cls_embed[0, :DIMS_SHOWN]),
         "cos_fg_cls": float(fg_embed[0] @ cls_embed[0]), "top": _top(fg_logits, classes, top_k)},
        {"id": "fusion", "title": "Fusion with [CLS]",
         "why": "The global [CLS] token and the fine [FG] token vote together: each class's fused logit is exactly "
                "ρ × its [CLS] logit plus (1 − ρ) × its [FG] logit.",
         "ratio": ratio, "cos_fg_cls": float(fg_embed[0] @ cls_embed[0]),
         "fused_feature_norm": float(fused_feature.norm()),
         "rows": [{"class": classes[i], "index": i, "cls_logit": float(cls_logits[i]), "fg_logit": float(fg_logits[i]),
                   "cls_part": float(logits.cls_part[0, i]), "fg_part": float(logits.fg_part[0, i]),
                   "fused": float(fused[i])} for i in shown]},
        {"id": "heads", "title": "The two heads: which descriptions build which class vector",
         "why": "Each class is a text vector: W_LLM (frozen, descriptions weighted by how well they match the class "
                "name) makes pseudo-labels while adapting, and W* (learned, started as the plain mean of the same "
                "descriptions) scores the image.",
         "n_classes": len(classes), "classes": heads},
        {"id": "prediction", "title": "The prediction",
         "why": "The class with the largest fused logit wins; its margin over the runner-up, and the range of ρ over "
                "which it stays ahead, say how firm the decision is.",
         "prediction": classes[winner], "index": winner,
         "runner_up": classes[runner_up] if runner_up is not None else None,
         "margin": float(fused[winner] - fused[runner_up]) if runner_up is not None else None,
         "branch_predictions": {"fused": classes[winner], "cls": classes[int(cls_logits.argmax())],
                                "fg": classes[int(fg_logits.argmax())]},
         "top": {"fused": _top(fused, classes, top_k), "cls": _top(cls_logits, classes, top_k),
                 "fg": _top(fg_logits, classes, top_k)},
         "stable_ratio": list(stable) if stable is not None else None,
         "logits": {"cls": _floats(cls_logits), "fg": _floats(fg_logits), "fused": _floats(fused)}},
    ]
    assert tuple(step["id"] for step in steps) == STEP_IDS
    return {"classes": classes, "image_size": size, "grid": [h, w], "ratio": ratio, "method": cfg.to_dict(),
            "steps": steps}


def walkthrough(model: MicroCLIP, image, ratio: float | None = None, **kwargs: Any) -> dict:
    """A PIL image (any size or mode) → its walkthrough, with the centre-crop test transform (as Explore)."""
    from microclip.data.images import to_rgb
    from microclip.data.transforms import test_transform

    tensor = test_transform(model.backbone.image_size, crop="center")(to_rgb(image))
    return walkthrough_tensor(model, tensor, ratio, **kwargs)


def step(result: dict, step_id: str) -> dict:
    """One step of a walkthrough by its id."""
    for item in result["steps"]:
        if item["id"] == step_id:
            return item
    raise KeyError(f"no step {step_id!r}; steps are {', '.join(STEP_IDS)}")
