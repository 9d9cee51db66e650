"""The object stage: make the cut SOAP starts from find the bird, and the tokens it pools know the species.

After stage 2 the toy CLIP's value-path patch tokens are local and its part phrases are grounded, yet
SOAP's ``[FG]`` is a poor species classifier (37% at the start of adaptation, `[CLS]` 74%): the cut keeps
7 of the bird's 17 patches, and a single bird patch names the species 26% of the time. Pooling the
tokens of the *whole* bird would do far better (59% with the bird's true patches as the query), so the
limit is the cut's graph and what each foreground token carries, not the pooling.

Three losses, each on the cut the model itself makes of an image (``soap.foreground_mask`` on the raw
tokens, detached: no masks, no labels), fix that from captions and images alone:

* **object tokens**: every foreground token, on its own, must pick its image's caption from the batch's
  (open_clip's image-to-text cross-entropy, per token). A pooled loss is satisfied by one patch that
  knows everything, which collapsed the cut (docs/toyworld.md, ``--fg_pool_weight``); a per-token one
  asks every patch of the object to know what the caption says about it.
* **background**: the mean background token must *not* pick a caption (its distribution over the
  batch's captions is pulled to uniform): captions never speak of the background, so a token there
  has no business predicting them, and species information cannot leak into it.
* **cut contrast**: in the graph the cut reads (cosines of the raw tokens), tokens across the cut
  are pushed below ``-margin`` and tokens on the same side above ``margin``. This is the cut's own
  criterion, sharpened: with a binary graph whose links cross the object's edge 76% of the time, the
  Fiedler vector picks a fragment of the bird; with the two sides unlinked it takes the whole side.

The first two decide *which* side is the object (the one that carries the caption); the third makes
the graph say so. TokenCut (Wang et al. 2022) finds objects with a normalised cut on self-supervised
features; this is the caption-supervised counterpart, bootstrapped from the model's own cut.

Two more, off by default, ask where SOAP looks (docs/toyworld.md, round 12; neither shipped): a CLIP loss
on the ``[FG]`` SOAP computes at identity, and a pull of SOAP's map at identity toward the model's own
last-block ``[CLS]`` attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from microclip.soap import SOAP, SoapOutput, soap_query


def object_token_loss(
    patch_embeds: torch.Tensor, foreground: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """Mean over the batch's foreground tokens of CE(scale · ⟨z_ij, text_k⟩ over k, target i).

    Args:
        patch_embeds: (B, N, E) unit-norm projected patch tokens.
        foreground: (B, N) bool, the cut's foreground of each image.
        text: (B, E) unit-norm caption embeddings, row i the caption of image i.
        scale: CLIP's logit scale (exp of the learned temperature).
    """
    batch, n_patches, _ = patch_embeds.shape
    logits = scale * torch.einsum("bne,ke->bnk", patch_embeds, text)  # (B, N, B)
    targets = torch.arange(batch, device=patch_embeds.device).repeat_interleave(n_patches)
    ce = F.cross_entropy(logits.reshape(-1, batch), targets, reduction="none").view(batch, n_patches)
    weights = foreground.to(ce.dtype)
    return (ce * weights).sum() / weights.sum().clamp_min(1.0)


def background_loss(
    patch_embeds: torch.Tensor,
    foreground: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor | float,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(uniform ‖ softmax_k(scale · ⟨b_i, text_k⟩)), b_i the normalised mean background token; batch mean.

    Zero when the background says nothing about which caption is whose. Patches in ``ignore`` (B, N) are
    left out of the background (:func:`boundary_band`).
    """
    background = ~foreground if ignore is None else ~foreground & ~ignore
    pooled = F.normalize(soap_query(patch_embeds, background, patch_embeds[:, 0]), dim=-1)  # mean background token
    log_p = (scale * pooled @ text.T).log_softmax(dim=-1)  # (B, B)
    return -log_p.mean(dim=-1).mean() - math.log(text.shape[0])


def cut_contrast_loss(
    patches: torch.Tensor,
    foreground: torch.Tensor,
    margin: float,
    ignore: torch.Tensor | None = None,
    ignore_weight: float = 0.0,
) -> torch.Tensor:
    """Hinge on the cosines of the raw tokens: across the cut below -margin, within a side above margin.

    Args:
        patches: (B, N, D) raw value-path tokens (what the cut reads).
        foreground: (B, N) bool, the cut's foreground.
        ignore: (B, N) bool, patches whose pairs are left out altogether (:func:`boundary_band`); None = none.
        ignore_weight: the weight the pairs of ``ignore``'s patches keep instead (0 = left out, 1 = as any other):
            a soft band, between a cut that grows into the band and one that shrinks from it.
    Returns the mean hinge over the across pairs plus the mean hinge over the within pairs (each side's
    pairs with itself, self-pairs included).
    """
    unit = F.normalize(patches, dim=-1)
    cosine = unit @ unit.transpose(1, 2)  # (B, N, N)
    fg = foreground.to(patches.dtype)
    across = fg.unsqueeze(2) * (1 - fg).unsqueeze(1)
    across = across + across.transpose(1, 2)
    within = 1 - across
    if ignore is not None:
        kept = 1 - (1 - ignore_weight) * ignore.to(patches.dtype)
        pair_kept = kept.unsqueeze(2) * kept.unsqueeze(1)
        across, within = across * pair_kept, within * pair_kept
    return (F.relu(cosine + margin) * across).sum() / across.sum().clamp_min(1.0) + (
        F.relu(margin - cosine) * within
    ).sum() / within.sum().clamp_min(1.0)


def boundary_band(foreground: torch.Tensor, grid: tuple[int, int], radius: int) -> torch.Tensor:
    """(B, N) bool: the background patches within ``radius`` patches (8-neighbourhood steps) of the foreground.

    The cut misses part of the object more often than it takes in far background, and a missed object patch
    lies next to the found ones (an object is one piece). The background and cut-contrast terms would teach
    such a patch to look like background, which keeps the next cut as small as this one; leaving the band
    around the foreground out of them lets it join. A spatial prior only: no masks, no labels.
    """
    if radius <= 0:
        return torch.zeros_like(foreground)
    h, w = grid
    fg = foreground.reshape(-1, 1, h, w).to(torch.float32)
    grown = F.max_pool2d(fg, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return grown.reshape(foreground.shape).bool() & ~foreground


def soap_pool_loss(
    patches: torch.Tensor,
    foreground: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor | float,
    project: Callable[[torch.Tensor], torch.Tensor],
    clip_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | float], torch.Tensor],
) -> torch.Tensor:
    """open_clip's CLIP loss on the ``[FG]`` SOAP computes at the start of adaptation (identity Q/K/V).

    The query is the mean foreground token of the cut (detached mask, as ``foreground``), the pool an
    attention over the raw tokens and SOAP's null token; the gradient reaches the tokens through both the
    pooled values and the attention weights, so the loss can be met by making the tokens SOAP attends to
    the ones that tell the captions apart, where the per-token loss asks every foreground token to.

    Args:
        patches: (B, N, D) raw value-path tokens.
        foreground: (B, N) bool, the cut's foreground.
        text: (B, E) unit-norm caption embeddings.
        project: the visual projection (D -> E).
        clip_loss: open_clip's ``ClipLoss`` (symmetric InfoNCE).
    """
    pooled = F.normalize(project(_soap_at_identity(patches, foreground).pooled), dim=-1)
    return clip_loss(pooled, text, scale)


def pool_centring_loss(patches: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """The share of the energy of SOAP's pooled input that every image shares: ‖mean_b p_b‖² / mean_b ‖p_b‖².

    p_b = Σ_j α_j z_j is what SOAP's value map is applied to as adaptation starts (identity Q/K, the cut's mean
    token as the query, the zero null token). When the images' p_b share one large component m, any change of
    the value map W_v adds ΔW_v·m to every image's ``[FG]`` alike: a learnt bias, the drift that pulls ``[FG]``
    off the classes in self-training (docs/toyworld.md, round 23). A base whose pooled inputs share little has
    no such route, under the reference's own SOAP.

    Args:
        patches: (B, N, D) raw value-path tokens.
        foreground: (B, N) bool, the cut's foreground.
    """
    return shared_share(_soap_at_identity(patches, foreground).pooled)


def shared_share(vectors: torch.Tensor) -> torch.Tensor:
    """‖mean_b v_b‖² / mean_b ‖v_b‖² of (B, D) vectors: 0 when they share no mean, 1 when all are equal."""
    return vectors.mean(dim=0).pow(2).sum() / vectors.pow(2).sum(-1).mean().clamp_min(1e-6)


def soap_attention_loss(
    patches: torch.Tensor, foreground: torch.Tensor, teacher: torch.Tensor, radial: bool = False
) -> torch.Tensor:
    """KL(teacher ‖ SOAP's attention over the patches at identity Q/K), batch mean.

    SOAP's map at the start of adaptation is softmax_j(⟨q, z_j⟩ / √D) over the raw tokens z_j and the null
    token, q the cut's mean foreground token; here it is renormalised over the patches alone. The teacher
    is another of the model's own maps (detached), e.g. its last block's ``[CLS]`` attention: where the
    token that learned the captions looks, the pooled ``[FG]`` should look too.

    Args:
        patches: (B, N, D) raw value-path tokens.
        foreground: (B, N) bool, the cut's foreground.
        teacher: (B, N) a distribution over the patches (rows sum to 1).
        radial: pass the gradient only along each token (``radial_only``): SOAP's logits are dot products and
            feel a token's length, the cut's graph is cosines and does not, so the pull may change which
            token SOAP favours without asking the graph to change (round 12: the full pull broke the cut).
    """
    if radial:
        patches = radial_only(patches)
    logits = _soap_at_identity(patches, foreground).logits[:, :-1]  # the patches' logits, the null's left out
    return F.kl_div(logits.log_softmax(dim=-1), teacher.detach(), reduction="batchmean")


def radial_only(tokens: torch.Tensor) -> torch.Tensor:
    """The same tokens, with the gradient through them restricted to each token's own direction.

    ``|z| · (z / |z|)`` with the direction detached: the forward value is unchanged, and a loss on the result
    can only ask for longer or shorter tokens.
    """
    return tokens.norm(dim=-1, keepdim=True) * F.normalize(tokens, dim=-1).detach()


def _soap_at_identity(patches: torch.Tensor, foreground: torch.Tensor) -> SoapOutput:
    """SOAP as adaptation starts: identity Q/K/V and zero null token, the cut's mean token as the query."""
    soap = SOAP(patches.shape[-1]).to(device=patches.device, dtype=patches.dtype).requires_grad_(False)
    return soap(patches, soap_query(patches, foreground, patches[:, 0]))
