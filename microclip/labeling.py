"""Dynamic Knowledge Aggregation: the multi-crop composite and the pseudo-labels (docs/method.md §1.2, §5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
