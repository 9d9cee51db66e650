"""The two text-derived heads (docs/method.md §4) and the fused / per-branch logits (§3).

``build_head_weights`` uses the text tower once; afterwards only the (C, E) matrices are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from microclip.constants import DEFAULT_FUSION_RATIO, LOGIT_SCALE

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class HeadWeights:
    """Everything the text tower contributes, as plain tensors."""

    classes: tuple[str, ...]
    template_embeds: torch.Tensor  # (C, E) t_c, normalised
    w_llm: torch.Tensor  # (C, E) frozen head, normalised
    w_star_init: torch.Tensor  # (C, E) initial learnable head, normalised
    n_truncated: int  # description sentences cut to the context length


class TextEncoder:
    """Wraps an open_clip model's text tower and tokenizer; counts truncated texts."""

    def __init__(
        self, clip_model: nn.Module, tokenizer: Callable, device: torch.device | str = "cpu", batch_size: int = 256
    ) -> None:
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.context_length = getattr(tokenizer, "context_length", 77)

    def count_truncated(self, texts: Sequence[str]) -> int:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            return 0
        # SimpleTokenizer adds start and end tokens around the BPE ids.
        return sum(len(encode(text)) + 2 > self.context_length for text in texts)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Un-normalised text embeddings (n, E), as ``encode_text`` returns them."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            chunks.append(self.clip_model.encode_text(tokens).float())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim, device=self.device)

    @property
    def embed_dim(self) -> int:
        return self.clip_model.visual.proj.shape[1]


def template_embeddings(
    encode: Callable[[Sequence[str]], torch.Tensor], classes: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """t_c = normalize(Σ_τ f_text(τ(c))): the reference sums *un-normalised* template embeddings.

    (It divides the (T, E) matrix by its Frobenius norm and averages; after the final
    normalisation that equals the plain sum. Standard CLIP ensembling normalises each row first.)
    """
    rows = []
    for name in classes:
        prompts = [template.format(name.replace("_", " ")) for template in templates]
        rows.append(encode(prompts).sum(0))
    return F.normalize(torch.stack(rows), dim=-1)


def description_weighted(embeds: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """W_LLM row: normalize(Σ_j w_j e_j / Σ_j w_j) with w_j = e_j · t_c (no softmax, scale 1)."""
    weights = embeds @ anchor  # (n,)
    return F.normalize((weights[:, None] * embeds).sum(0) / weights.sum(), dim=-1)


def build_head_weights(
    encode: TextEncoder,
    classes: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    descriptions: dict[str, list[str]] | None = None,
    use_handcrafted: bool = False,
    warn_truncated: bool = True,
) -> HeadWeights:
    """Build t_c, W_LLM and the W* initialisation (docs/method.md §4.2–4.5).

    A class with no descriptions (``descriptions`` is None, or its list is empty) uses t_c for
    both heads, which makes a description-free model a plain template zero-shot classifier.
    Sentences cut to the context length are counted in ``n_truncated`` and, with ``warn_truncated``, logged.
    """
    template_embeds = template_embeddings(encode, classes, templates)
    w_llm = template_embeds.clone()
    w_star = template_embeds.clone()
    n_truncated = 0
    for index, name in enumerate(classes):
        sentences = (descriptions or {}).get(name) or []
        if not sentences:
            continue
        n_truncated += encode.count_truncated(sentences)
        embeds = F.normalize(encode(sentences), dim=-1)  # (n_c, E)
        w_llm[index] = description_weighted(embeds, template_embeds[index])
        if not use_handcrafted:
            w_star[index] = F.normalize(embeds.mean(0), dim=-1)
    if n_truncated and warn_truncated:
        log.warning(
            "%d description sentences are longer than the %d-token context and were truncated",
            n_truncated,
            encode.context_length,
        )
    return HeadWeights(tuple(classes), template_embeds, w_llm, w_star, n_truncated)


BRANCHES: tuple[str, ...] = ("fused", "cls", "fg")
"""The three branches of every prediction, in the order the app and the files list them."""


@dataclass(frozen=True)
class BranchLogits:
    """Per-branch logits at scale 100 and the fusion ratio that combines them.

    The fused logits are linear in the two features, so the split into a [CLS] part and a
    [FG] part is exact: ``fused = cls_part + fg_part``.
    """

    cls: torch.Tensor  # (B, C) 100 · g · Ŵ*ᵀ
    fg: torch.Tensor  # (B, C) 100 · f · Ŵ*ᵀ
    ratio: float

    @property
    def cls_part(self) -> torch.Tensor:
        return self.ratio * self.cls

    @property
    def fg_part(self) -> torch.Tensor:
        return (1.0 - self.ratio) * self.fg

    @property
    def fused(self) -> torch.Tensor:
        return self.cls_part + self.fg_part

    def with_ratio(self, ratio: float) -> BranchLogits:
        """Re-fuse without a new forward pass (the app's fusion slider)."""
        return BranchLogits(self.cls, self.fg, ratio)


class Heads(nn.Module):
    """The frozen W_LLM (a buffer) and the learnable W* (a parameter, stored un-normalised)."""

    def __init__(self, classes: Sequence[str], w_llm: torch.Tensor, w_star: torch.Tensor) -> None:
        super().__init__()
        if w_llm.shape != w_star.shape or w_llm.shape[0] != len(classes):
            raise ValueError(
                f"head shapes {tuple(w_llm.shape)} / {tuple(w_star.shape)} do not fit {len(classes)} classes"
            )
        self.classes = tuple(classes)
        self.w_star = nn.Parameter(w_star.clone().float())
        self.register_buffer("w_llm", w_llm.clone().float())

    @classmethod
    def from_weights(cls, weights: HeadWeights) -> Heads:
        return cls(weights.classes, weights.w_llm, weights.w_star_init)

    def w_star_hat(self) -> torch.Tensor:
        return F.normalize(self.w_star, dim=-1)

    def branch_logits(
        self, cls_embed: torch.Tensor, fg_embed: torch.Tensor, ratio: float = DEFAULT_FUSION_RATIO
    ) -> BranchLogits:
        w_hat = self.w_star_hat().to(cls_embed.dtype)
        return BranchLogits(cls=LOGIT_SCALE * cls_embed @ w_hat.T, fg=LOGIT_SCALE * fg_embed @ w_hat.T, ratio=ratio)
