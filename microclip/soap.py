"""SOAP: Saliency-Oriented Attention Pooling (method.md §2).

``foreground_mask`` is the normalised-cut bipartition of the patch tokens; ``soap_query`` builds
the single query from it; ``SOAP`` cross-attends that query over the patches plus a null token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from microclip.constants import NCUT_EPS, NCUT_TAU

NcutThreshold = Literal["std", "mean"]
NcutSign = Literal["faithful", "symmetric"]
QueryMode = Literal["ncut", "global", "token_avg", "random"]
PoolMode = Literal["attention", "ncut_avg", "naive_avg"]


def foreground_mask(
    features: torch.Tensor,
    tau: float = NCUT_TAU,
    eps: float = NCUT_EPS,
    threshold: NcutThreshold = "std",
    sign: NcutSign = "faithful",
) -> torch.Tensor:
    """Normalised-cut foreground mask over patch tokens, as the reference computes it.

    Args:
        features: (B, N, D) patch features. The reference passes raw (un-normalised) value-path
            tokens, so ``tau`` acts almost like a sign test on their dot products.
        threshold: ``"std"`` (faithful: the code thresholds at std(e) although its comment says
            mean) or ``"mean"``.
        sign: ``"faithful"`` flips the *mask* (not the vector) when the largest-|e| patch is
            background, so after a flip the foreground is {e <= thr}; ``"symmetric"`` flips the
            eigenvector instead and keeps {e > thr}.

    Returns: (B, N) boolean mask. No gradient flows through it.
    """
    with torch.no_grad():
        feats = features.detach().float()
        similarity = feats @ feats.transpose(1, 2)  # (B, N, N)
        affinity = torch.where(similarity > tau, 1.0, eps)
        degree = affinity.sum(-1)  # (B, N)
        inv_sqrt = 1.0 / (degree.sqrt() + eps)
        laplacian = torch.diag_embed(degree) - affinity
        laplacian = inv_sqrt[:, :, None] * laplacian * inv_sqrt[:, None, :]
        # CUDA's batched eigh loops one matrix at a time above 32x32; small CPU solves are faster.
        _, vectors = torch.linalg.eigh(laplacian.cpu())
        fiedler = vectors[..., 1].to(feats.device)  # (B, N): second-smallest eigenvalue of L_sym
        seed = fiedler.abs().argmax(dim=1, keepdim=True)  # (B, 1)
        if sign == "symmetric":
            fiedler = fiedler * torch.sign(fiedler.gather(1, seed))
        cut = fiedler.std(dim=1, keepdim=True) if threshold == "std" else fiedler.mean(dim=1, keepdim=True)
        mask = fiedler > cut
        if sign == "faithful":
            seed_is_background = ~mask.gather(1, seed)  # (B, 1)
            mask = torch.where(seed_is_background, ~mask, mask)
    return mask


def soap_query(
    patches: torch.Tensor,
    mask: torch.Tensor,
    cls_token: torch.Tensor,
    mode: QueryMode = "ncut",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The one SOAP query (B, D): the mean foreground token (zero if the mask is empty) by default.

    The other modes are the reference's query ablations.
    """
    if mode == "ncut":
        weights = mask.to(patches.dtype)  # (B, N)
        count = weights.sum(1, keepdim=True).clamp_min(1.0)
        return (weights.unsqueeze(-1) * patches).sum(1) / count
    if mode == "global":
        return cls_token
    if mode == "token_avg":
        return patches.mean(1)
    if mode == "random":
        index = torch.randint(patches.shape[1], (patches.shape[0],), generator=generator,
                              device=generator.device if generator is not None else "cpu")
        return patches[torch.arange(patches.shape[0]), index.to(patches.device)]
    raise ValueError(f"unknown SOAP query mode {mode!r}; choose from ncut, global, token_avg, random")


@dataclass(frozen=True)
class SoapOutput:
    pooled: torch.Tensor  # (B, D) h, before the visual projection
    weights: torch.Tensor  # (B, N + 1) pooling weights over the patches and, last, the null token
    query: torch.Tensor  # (B, D)


class SOAP(nn.Module):
    """Single-head cross-attention of one query over the patches plus a null token.

    Q/K/V are ``width x width`` linear maps without bias, initialised to the identity; the
    null token is zero (an attention sink whose key always gives logit 0), or learnable.
    """

    def __init__(self, width: int, learnable_null: bool = False) -> None:
        super().__init__()
        self.width = width
        self.query_proj = nn.Linear(width, width, bias=False)
        self.key_proj = nn.Linear(width, width, bias=False)
        self.value_proj = nn.Linear(width, width, bias=False)
        for proj in (self.query_proj, self.key_proj, self.value_proj):
            nn.init.eye_(proj.weight)
        if learnable_null:
            self.null_token = nn.Parameter(torch.zeros(1, width))
        else:
            self.register_buffer("null_token", torch.zeros(1, width))

    def forward(self, patches: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None,
                pool: PoolMode = "attention") -> SoapOutput:
        batch, n_patches, _ = patches.shape
        if pool == "attention":
            null = self.null_token.to(patches.dtype).expand(batch, 1, self.width)
            sources = torch.cat([patches, null], dim=1)  # (B, N + 1, D)
            q = self.query_proj(query).unsqueeze(1)  # (B, 1, D)
            k = self.key_proj(sources)
            v = self.value_proj(sources)
            logits = (q @ k.transpose(1, 2)).squeeze(1) / math.sqrt(self.width)  # (B, N + 1)
            weights = logits.softmax(dim=-1)
            pooled = (weights.unsqueeze(1) @ v).squeeze(1)
            return SoapOutput(pooled=pooled, weights=weights, query=query)
        if pool == "ncut_avg":
            if mask is None:
                raise ValueError("ncut_avg pooling needs the foreground mask")
            weights = mask.to(patches.dtype)
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        elif pool == "naive_avg":
            weights = torch.full((batch, n_patches), 1.0 / n_patches, dtype=patches.dtype, device=patches.device)
        else:
            raise ValueError(f"unknown pooling {pool!r}; choose from attention, ncut_avg, naive_avg")
        pooled = (weights.unsqueeze(-1) * patches).sum(1)
        weights = F.pad(weights, (0, 1))  # the null token takes no weight without attention
        return SoapOutput(pooled=pooled, weights=weights, query=query)
