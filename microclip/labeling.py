"""Dynamic Knowledge Aggregation: the multi-crop composite and the pseudo-labels (docs/method.md §1.2, §5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from microclip.constants import LOGIT_SCALE
from microclip.losses import global_mean


def crop_composite(crop_embeds: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """z = normalize(Σ_k softmax_k(c_k · g) c_k), softmax at temperature 1 (WCA-style).

    crop_embeds: (B, K, E) normalised crop [CLS] embeddings; anchor: (B, E) the weak view's g.
    """
    relevance = torch.einsum("bke,be->bk", crop_embeds, anchor)
    weights = relevance.softmax(dim=1)
    return F.normalize((weights.unsqueeze(-1) * crop_embeds).sum(1), dim=-1)


def fuse_for_labels(cls_embed: torch.Tensor, fg_embed: torch.Tensor) -> torch.Tensor:
    """u = normalize(½g + ½f): pseudo-labelling re-normalises and ignores --fusion_ratio (reference)."""
    return F.normalize(0.5 * cls_embed + 0.5 * fg_embed, dim=-1)


@dataclass(frozen=True)
class PseudoLabels:
    labels: torch.Tensor  # (B,) argmax of the combined scores
    confidence: torch.Tensor  # (B,) max combined cosine score (logged, never thresholded)
    scores: torch.Tensor  # (B, C) γ·s + (1−γ)·d
    static_labels: torch.Tensor  # (B,) argmax of s alone (crops · W_LLM)
    dynamic_labels: torch.Tensor  # (B,) argmax of d alone (fused weak · Ŵ*)


def aggregate(
    composite: torch.Tensor, fused_weak: torch.Tensor, w_llm: torch.Tensor, w_star_hat: torch.Tensor, gamma: float
) -> PseudoLabels:
    """ℓ = γ·⟨z, W_LLM⟩ + (1−γ)·⟨u, Ŵ*⟩: plain cosines, no ×100; hard labels, no threshold."""
    static = composite @ w_llm.T.to(composite.dtype)  # (B, C)
    dynamic = fused_weak @ w_star_hat.T.to(fused_weak.dtype)  # (B, C)
    scores = gamma * static + (1.0 - gamma) * dynamic
    confidence, labels = scores.max(dim=1)
    return PseudoLabels(
        labels=labels,
        confidence=confidence,
        scores=scores,
        static_labels=static.argmax(1),
        dynamic_labels=dynamic.argmax(1),
    )


class LabelPrior:
    """A running mean of the labels' class probabilities, to take out of the labels' scores (not the reference's).

    Self-training's labels can leave a class out for good: a class no label names never gets a gradient toward it
    (docs/toyworld.md, round 45). Logit adjustment by the labels' own running marginal (DebiasPL, Wang et al. 2022)
    lowers the classes the labels name too often and raises those they name too rarely: the label is
    argmax_c(100·ℓ_c − strength·log p̄_c), where p̄ ← m·p̄ + (1−m)·mean_batch softmax(100·ℓ) is updated with the
    batch's own scores before they are adjusted (the first batch: its own marginal). Run state: it is saved with
    the run and a resumed run reads it back.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        self.momentum = momentum
        self.mean: torch.Tensor | None = None  # (C,)

    def debiased(self, scores: torch.Tensor, strength: float) -> torch.Tensor:
        """(B, C) ``scores`` (cosines, as DKA's) minus ``strength``·log p̄ / 100, p̄ first updated with them."""
        batch = global_mean((LOGIT_SCALE * scores.float()).softmax(dim=1)).detach()
        self.mean = batch if self.mean is None else self.momentum * self.mean + (1.0 - self.momentum) * batch
        floor = torch.finfo(self.mean.dtype).tiny  # a class whose probability underflowed to 0 is not raised to +inf
        return scores - (strength / LOGIT_SCALE) * self.mean.clamp_min(floor).log().to(scores.dtype)
