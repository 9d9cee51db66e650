"""SOAP: Saliency-Oriented Attention Pooling (docs/method.md §2).

``foreground_mask`` is the normalised-cut bipartition of the patch tokens; ``soap_query`` builds
the single query from it; ``SOAP`` cross-attends that query over the patches plus a null token.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from microclip.constants import NCUT_DEGENERACY_TOL, NCUT_EPS, NCUT_TAU

NcutThreshold = Literal["std", "mean"]
NcutSign = Literal["canonical", "solver"]
QueryMode = Literal["ncut", "global", "token_avg", "random"]
PoolMode = Literal["attention", "ncut_avg", "naive_avg"]
# The reference's switches for its SOAP ablations (train.py / evaluate.py take them as they are).
QUERY_FLAGS = {
    "global": "--use_global_feature_for_query",
    "token_avg": "--use_token_avg_for_query",
    "random": "--use_random_selection_for_query",
}
POOL_FLAGS = {"ncut_avg": "--use_ncut_token_avg", "naive_avg": "--use_naive_token_avg"}
# The queries that give one map an image: the method's and the [CLS] / every-token ablations (a random token's query
# changes from call to call).
DETERMINISTIC_QUERIES: tuple[str, ...] = ("ncut", "global", "token_avg")
POOLS: tuple[str, ...] = ("attention", "ncut_avg", "naive_avg")  # the method's first

NCUT_FEATURES: tuple[str, ...] = ("values", "keys")  # what the cut reads: the reference's default first
NCUT_SIGNS: tuple[str, ...] = ("canonical", "solver")
DEPRECATED_NCUT_SIGNS = {"symmetric": "canonical", "faithful": "solver"}  # the first build's names


def resolve_ncut_sign(sign: str) -> NcutSign:
    """Accept the first build's spellings with a deprecation warning; reject anything else."""
    if sign in DEPRECATED_NCUT_SIGNS:
        new = DEPRECATED_NCUT_SIGNS[sign]
        warnings.warn(f"ncut_sign {sign!r} is deprecated; it is now called {new!r}", FutureWarning, stacklevel=3)
        return new  # type: ignore[return-value]
    if sign not in NCUT_SIGNS:
        raise ValueError(f"unknown ncut_sign {sign!r}; choose from {', '.join(NCUT_SIGNS)}")
    return sign  # type: ignore[return-value]


def ncut_laplacian(
    features: torch.Tensor, tau: float = NCUT_TAU, eps: float = NCUT_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's binary affinity graph and its symmetric normalised Laplacian, in ``features``' dtype.

    Returns ``(laplacian (B, N, N), degree (B, N))``. A_ij = 1 if <f_i, f_j> > tau else eps (self-loops
    included); L = S (D - A) S with S = diag(1 / (sqrt(d) + eps)), exactly as the reference scales it.
    """
    similarity = features @ features.transpose(1, 2)  # (B, N, N)
    return _normalised_laplacian(torch.where(similarity > tau, 1.0, eps).to(features.dtype), eps)


def _normalised_laplacian(affinity: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    degree = affinity.sum(-1)  # (B, N)
    inv_sqrt = 1.0 / (degree.sqrt() + eps)
    laplacian = torch.diag_embed(degree) - affinity
    return inv_sqrt[:, :, None] * laplacian * inv_sqrt[:, None, :], degree


def canonical_fiedler(
    values: torch.Tensor,
    vectors: torch.Tensor,
    degree: torch.Tensor,
    eps: float = NCUT_EPS,
    tol: float = NCUT_DEGENERACY_TOL,
) -> torch.Tensor:
    """One Fiedler vector per graph that does not depend on the basis the eigensolver returned.

    Args:
        values, vectors: ``torch.linalg.eigh`` of the Laplacians, (B, N) ascending and (B, N, N).
        degree: (B, N) the graphs' degrees (they give the trivial eigenvector exactly).
    Returns: (B, N) unit vectors.

    The second-smallest eigenvalue's eigenspace is taken whole: every eigenvector whose eigenvalue is
    within ``tol`` of it (binary affinities make exact multiplicities common, and a solver returns
    any basis of such a space), without the trivial eigenvector ∝ sqrt(d) + eps of eigenvalue 0. Its
    orthogonal projector P does not depend on the basis. Of all unit vectors in the space, the one
    with the largest single entry is P[:, i] / sqrt(P_ii) for i = argmax_i P_ii (the lowest index
    among ties within ``tol``), and that entry is its largest in magnitude. For a simple eigenvalue
    this is the solver's vector turned so that its largest-|e| entry is positive: the orientation
    rule of docs/method.md §10.2, which this generalises to degenerate spaces.
    """
    lambda2 = values[:, 1:2]
    in_space = (values <= lambda2 + tol).to(vectors.dtype)  # (B, N): eigenvalues 0 .. λ2 + tol
    projector = (vectors * in_space[:, None, :]) @ vectors.transpose(1, 2)  # (B, N, N)
    trivial = torch.nn.functional.normalize(degree.sqrt() + eps, dim=1)  # (B, N), eigenvalue 0
    projector = projector - trivial[:, :, None] * trivial[:, None, :]
    diagonal = torch.diagonal(projector, dim1=1, dim2=2)  # (B, N)
    near_max = diagonal >= diagonal.max(dim=1, keepdim=True).values - tol
    index = near_max.to(torch.int8).argmax(dim=1)  # the first True: the lowest index among ties
    column = projector.gather(2, index[:, None, None].expand(-1, projector.shape[1], 1))[..., 0]  # (B, N)
    return column / diagonal.gather(1, index[:, None]).clamp_min(1e-30).sqrt()


@dataclass(frozen=True)
class NcutSplit:
    """The normalised cut behind a foreground mask, as computed (on the eigh device and dtype)."""

    degree: torch.Tensor  # (B, N) degrees of the binary affinity graph
    eigenvalues: torch.Tensor  # (B, N) of the normalised Laplacian, ascending
    fiedler: torch.Tensor  # (B, N) the Fiedler vector the mask is cut from
    threshold: torch.Tensor  # (B,) the cut value: std(e) or mean(e)
    flipped: torch.Tensor  # (B,) bool: the "solver" rule turned the mask over (never for "canonical")
    mask: torch.Tensor  # (B, N) bool foreground
    similarity: torch.Tensor  # (B, N, N) <f_i, f_j>, the dot products the graph thresholds
    linked: torch.Tensor  # (B, N, N) bool: A_ij = 1 (<f_i, f_j> > tau); eps elsewhere


def ncut_split(
    features: torch.Tensor,
    tau: float = NCUT_TAU,
    eps: float = NCUT_EPS,
    threshold: NcutThreshold = "std",
    sign: NcutSign = "canonical",
    eigh_dtype: torch.dtype | None = None,
    eigh_device: str | torch.device = "cpu",
) -> NcutSplit:
    """The normalised-cut bipartition of patch tokens and what it was cut from (docs/method.md §2, steps 1-6).

    Args:
        features: (B, N, D) patch features. The reference passes raw (un-normalised) value-path
            tokens, so ``tau`` acts almost like a sign test on their dot products.
        threshold: ``"std"`` (faithful: the code thresholds at std(e) although its comment says
            mean) or ``"mean"``.
        sign: ``"canonical"`` (default) keeps {e > thr} for the basis-independent Fiedler vector of
            :func:`canonical_fiedler`, so the mask is the same on every machine. ``"solver"`` is the
            reference's literal rule: take the eigenvector as the solver returns it and, when its
            largest-|e| entry falls below the threshold, flip the *mask* (giving {e <= thr}, a much
            larger set). Which of the two sets it returns depends on the solver's arbitrary sign, so
            it differs between CPUs and CUDA.
        eigh_dtype, eigh_device: where the graph is built and ``eigh`` runs. By default on the CPU, in
            float64 for "canonical" (the mask then depends on the features alone) and in float32 for
            "solver" (as the reference).

    Every tensor is on ``eigh_device``; no gradient flows through any of them.
    """
    sign = resolve_ncut_sign(sign)
    if eigh_dtype is None:
        eigh_dtype = torch.float32 if sign == "solver" else torch.float64
    with torch.no_grad():
        # On the CPU by default: CUDA's batched eigh loops one matrix at a time above 32x32.
        feats = features.detach().to(device=eigh_device, dtype=eigh_dtype)
        similarity = feats @ feats.transpose(1, 2)  # (B, N, N), built once: the walkthrough shows it
        linked = similarity > tau
        laplacian, degree = _normalised_laplacian(torch.where(linked, 1.0, eps).to(feats.dtype), eps)
        values, vectors = torch.linalg.eigh(laplacian)
        if sign == "solver":
            fiedler = vectors[..., 1]  # (B, N) as the solver returns it
        else:
            fiedler = canonical_fiedler(values, vectors, degree, eps)
        cut = fiedler.std(dim=1, keepdim=True) if threshold == "std" else fiedler.mean(dim=1, keepdim=True)
        mask = fiedler > cut
        flipped = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
        if sign == "solver":
            seed = fiedler.abs().argmax(dim=1, keepdim=True)  # (B, 1)
            flipped = ~mask.gather(1, seed)[:, 0]
            mask = torch.where(flipped[:, None], ~mask, mask)
    return NcutSplit(
        degree=degree,
        eigenvalues=values,
        fiedler=fiedler,
        threshold=cut[:, 0],
        flipped=flipped,
        mask=mask,
        similarity=similarity,
        linked=linked,
    )


def foreground_mask(features: torch.Tensor, **options: Any) -> torch.Tensor:
    """Normalised-cut foreground mask over patch tokens: (B, N) bool on ``features``' device.

    The mask of :func:`ncut_split`, which takes the same keyword ``options`` (tau, eps, threshold, sign,
    eigh_dtype, eigh_device) and documents them; no gradient flows through it.
    """
    return ncut_split(features, **options).mask.to(features.device)


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
        index = torch.randint(
            patches.shape[1],
            (patches.shape[0],),
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        )
        return patches[torch.arange(patches.shape[0]), index.to(patches.device)]
    raise ValueError(f"unknown SOAP query mode {mode!r}; choose from ncut, global, token_avg, random")


@dataclass(frozen=True)
class SoapOutput:
    pooled: torch.Tensor  # (B, D) h, before the visual projection
    weights: torch.Tensor  # (B, N + 1) pooling weights over the patches and, last, the null token
    query: torch.Tensor  # (B, D)
    logits: torch.Tensor | None = None  # (B, N + 1) the attention logits behind ``weights`` (attention pool only)
    values: torch.Tensor | None = None  # (B, N + 1, D) what was pooled: pooled = weights @ values


class SOAP(nn.Module):
    """Single-head cross-attention of one query over the patches plus a null token.

    Q/K/V are ``width x width`` linear maps without bias, initialised to the identity; the
    null token is zero (an attention sink whose key always gives logit 0), or learnable.

    With ``centre_values`` (not the reference's) the value map acts on each patch token's difference from a fixed
    centre c, W_v(t − c) + c: the same values at the identity, but W_v's change no longer meets the component every
    image's tokens share, through which it otherwise adds one vector to every image's pooled token (a bias the
    reference's bias-free map learns anyway; docs/toyworld.md, round 23). c is set once, before training
    (:func:`set_value_centre`), and saved with the model.
    """

    def __init__(self, width: int, learnable_null: bool = False, centre_values: bool = False) -> None:
        super().__init__()
        self.width = width
        self.centre_values = centre_values
        if centre_values:
            self.register_buffer("value_centre", torch.zeros(width))
        self.query_proj = nn.Linear(width, width, bias=False)
        self.key_proj = nn.Linear(width, width, bias=False)
        self.value_proj = nn.Linear(width, width, bias=False)
        for proj in (self.query_proj, self.key_proj, self.value_proj):
            nn.init.eye_(proj.weight)
        if learnable_null:
            self.null_token = nn.Parameter(torch.zeros(1, width))
        else:
            self.register_buffer("null_token", torch.zeros(1, width))

    def forward(
        self, patches: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None, pool: PoolMode = "attention"
    ) -> SoapOutput:
        batch, n_patches, _ = patches.shape
        if pool == "attention":
            null = self.null_token.to(patches.dtype).expand(batch, 1, self.width)
            sources = torch.cat([patches, null], dim=1)  # (B, N + 1, D)
            q = self.query_proj(query).unsqueeze(1)  # (B, 1, D)
            k = self.key_proj(sources)
            if self.centre_values:
                centre = self.value_centre.to(patches.dtype)
                v = torch.cat([self.value_proj(patches - centre) + centre, self.value_proj(null)], dim=1)
            else:
                v = self.value_proj(sources)
            logits = (q @ k.transpose(1, 2)).squeeze(1) / math.sqrt(self.width)  # (B, N + 1)
            weights = logits.softmax(dim=-1)
            pooled = (weights.unsqueeze(1) @ v).squeeze(1)
            return SoapOutput(pooled=pooled, weights=weights, query=query, logits=logits, values=v)
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
        # the averages pool the tokens themselves, and the null token's zero takes no weight
        return SoapOutput(pooled=pooled, weights=weights, query=query, values=F.pad(patches, (0, 0, 0, 1)))
