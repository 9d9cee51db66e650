"""Dynamic Knowledge Aggregation: the multi-crop composite and the pseudo-labels (docs/method.md §1.2, §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from microclip.constants import LOGIT_SCALE
from microclip.losses import global_mean


def crop_weights(crop_embeds: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """(B, K) softmax_k(c_k · g), temperature 1: each crop's share of the composite (WCA-style relevance).

    crop_embeds: (B, K, E) normalised crop [CLS] embeddings; anchor: (B, E) the weak view's g.
    """
    return torch.einsum("bke,be->bk", crop_embeds, anchor).softmax(dim=1)


def crop_composite(crop_embeds: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """z = normalize(Σ_k softmax_k(c_k · g) c_k) (``crop_weights``); shapes as there."""
    return weighted_composite(crop_embeds, crop_weights(crop_embeds, anchor))


def weighted_composite(crop_embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, E) normalize(Σ_k w_k c_k): the composite z of crops already weighed (``crop_weights``)."""
    return F.normalize((weights.unsqueeze(-1) * crop_embeds).sum(1), dim=-1)


def fuse_for_labels(cls_embed: torch.Tensor, fg_embed: torch.Tensor) -> torch.Tensor:
    """u = normalize(½g + ½f): pseudo-labelling re-normalises and ignores --fusion_ratio (reference)."""
    return F.normalize(0.5 * cls_embed + 0.5 * fg_embed, dim=-1)


@dataclass(frozen=True)
class PseudoLabels:
    labels: torch.Tensor  # (B,) argmax of the combined scores
    confidence: torch.Tensor  # (B,) max combined cosine score (logged, never thresholded)
    scores: torch.Tensor  # (B, C) γ·s + (1−γ)·d
    static: torch.Tensor  # (B, C) s = ⟨z, W_LLM⟩
    dynamic: torch.Tensor  # (B, C) d = ⟨u, Ŵ*⟩

    @property
    def static_labels(self) -> torch.Tensor:
        """(B,) argmax of s alone (crops · W_LLM)."""
        return self.static.argmax(1)

    @property
    def dynamic_labels(self) -> torch.Tensor:
        """(B,) argmax of d alone (fused weak · Ŵ*)."""
        return self.dynamic.argmax(1)


def aggregate(
    composite: torch.Tensor, fused_weak: torch.Tensor, w_llm: torch.Tensor, w_star_hat: torch.Tensor, gamma: float
) -> PseudoLabels:
    """ℓ = γ·⟨z, W_LLM⟩ + (1−γ)·⟨u, Ŵ*⟩: plain cosines, no ×100; hard labels, no threshold."""
    static = composite @ w_llm.T.to(composite.dtype)  # (B, C)
    dynamic = fused_weak @ w_star_hat.T.to(fused_weak.dtype)  # (B, C)
    scores = gamma * static + (1.0 - gamma) * dynamic
    confidence, labels = scores.max(dim=1)
    return PseudoLabels(labels=labels, confidence=confidence, scores=scores, static=static, dynamic=dynamic)


@dataclass(frozen=True)
class DkaPass:
    """One DKA labelling of a batch, with what it was made of (for the app's view of a picture's label)."""

    output: Any  # the model's ModelOutput on the weak view
    crop_embeds: torch.Tensor  # (B, K, E) the crops' normalised [CLS] embeddings
    crop_weights: torch.Tensor  # (B, K) each crop's share of the composite z
    composite: torch.Tensor  # (B, E) z
    labels: PseudoLabels  # with the static and dynamic halves' scores


def encode_crops(model: Any, crops: torch.Tensor) -> torch.Tensor:
    """(B, K, 3, S, S) crops → (B, K, E) normalised [CLS] embeddings, in float32."""
    batch, n_crops = crops.shape[:2]
    return model.encode_cls(crops.flatten(0, 1)).view(batch, n_crops, -1).float()


@torch.no_grad()
def dka_pass(model: Any, weak: torch.Tensor, crops: torch.Tensor, gamma: float) -> DkaPass:
    """microCLIP's pseudo-labels of a batch: the weak views (B, 3, S, S) and their crops (B, K, 3, S, S), as
    self-training computes them (``engine.pseudo_label`` calls this; the app shows one picture's)."""
    crop_embeds = encode_crops(model, crops)
    out = model(weak)
    cls_embed = out.tokens.cls_embed.float()
    weights = crop_weights(crop_embeds, cls_embed)
    composite = weighted_composite(crop_embeds, weights)
    fused = fuse_for_labels(cls_embed, out.fg_embed.float())
    labels = aggregate(composite, fused, model.heads.w_llm, model.heads.w_star_hat(), gamma)
    return DkaPass(output=out, crop_embeds=crop_embeds, crop_weights=weights, composite=composite, labels=labels)


PRIOR_SOURCES = ("scores", "labels")  # what a label prior is a running mean of; the first, DebiasPL's, by default
PRIOR_MOMENTUM = 0.9  # round 45's


class LabelPrior:
    """A running class marginal of the labels, to take out of the labels' scores (not the reference's).

    Self-training's labels can leave a class out for good: a class no label names never gets a gradient toward it
    (docs/toyworld.md, round 45). Logit adjustment by a running marginal (DebiasPL, Wang et al. 2022) lowers the
    classes the labels name too often and raises those they name too rarely: the label is
    argmax_c(100·ℓ_c − strength·log p̄_c). ``source`` says what p̄ is a running mean of (momentum ``momentum``):

    - ``"scores"`` (DebiasPL's): softmax(100·ℓ) of each batch's scores before they are adjusted, p̄ updated with the
      batch's own scores first (the first batch: its own marginal);
    - ``"labels"``: the share of each class among the adjusted labels themselves (one-hot), p̄ updated after the
      batch is labelled (started from the first batch's soft marginal), so a class is lowered again as the labels
      name it. The scores' softmax does not see the labels, so its lift of a starved class does not fall as they
      name it: on the toy world it names that class's own images and many others' too, where the labels' shares
      settle with a few labels, nearly all right, and its own images still named another (round 47).

    Run state: p̄ is saved with the run and a resumed run reads it back.
    """

    def __init__(self, momentum: float = PRIOR_MOMENTUM, source: str = PRIOR_SOURCES[0]) -> None:
        if source not in PRIOR_SOURCES:
            raise ValueError(f"a label prior's source is one of {PRIOR_SOURCES}, not {source!r}")
        self.momentum = momentum
        self.source = source
        self.mean: torch.Tensor | None = None  # (C,)

    def _update(self, batch: torch.Tensor) -> None:
        self.mean = batch if self.mean is None else self.momentum * self.mean + (1.0 - self.momentum) * batch

    def debiased(self, scores: torch.Tensor, strength: float) -> torch.Tensor:
        """(B, C) ``scores`` (cosines, as DKA's) minus ``strength``·log p̄ / 100; with ``source="scores"`` p̄ is first
        updated with them (with ``"labels"``, :meth:`label` updates it after the argmax)."""
        if self.source == "scores" or self.mean is None:
            self._update(global_mean((LOGIT_SCALE * scores.float()).softmax(dim=1)).detach())
        floor = torch.finfo(self.mean.dtype).tiny  # a class whose probability underflowed to 0 is not raised to +inf
        return scores - (strength / LOGIT_SCALE) * self.mean.clamp_min(floor).log().to(scores.dtype)

    def label(self, scores: torch.Tensor, strength: float) -> torch.Tensor:
        """(B,) the argmax of :meth:`debiased` ``scores``; with ``source="labels"`` p̄ then takes in their shares."""
        labels = self.debiased(scores, strength).argmax(1)
        if self.source == "labels":
            counts = F.one_hot(labels, scores.shape[1]).float()
            self._update(global_mean(counts).to(self.mean.dtype))
        return labels


@dataclass(frozen=True)
class Debiasing:
    """How a run's labels had a running class marginal taken out of them (``Recipe.label_debias``,
    ``label_debias_source``, ``label_debias_momentum``; not the reference's). Strength 0: the plain argmax."""

    strength: float = 0.0
    source: str = PRIOR_SOURCES[0]
    momentum: float = PRIOR_MOMENTUM

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Debiasing:
        """From a run's recipe as a dict (a checkpoint's ``training["config"]``); a key a recipe saved before it
        existed takes its default."""
        plain = cls()
        return cls(
            strength=float(config.get("label_debias") or 0.0),
            source=str(config.get("label_debias_source") or plain.source),
            momentum=float(config.get("label_debias_momentum", plain.momentum)),
        )

    @property
    def flags(self) -> str:
        """The ``train.py`` flags that debias labels so ("" for the plain argmax); defaults left out."""
        if not self.strength:
            return ""
        plain, said = Debiasing(), [f"--label_debias {self.strength:g}"]
        if self.source != plain.source:
            said.append(f"--label_debias_source {self.source}")
        if self.momentum != plain.momentum:
            said.append(f"--label_debias_momentum {self.momentum:g}")
        return " ".join(said)

    def prior(self) -> LabelPrior:
        """A fresh running marginal for a run debiased so."""
        return LabelPrior(self.momentum, self.source)
