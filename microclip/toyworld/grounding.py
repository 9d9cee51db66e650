"""Phrase grounding: the dense caption objective that makes the toy CLIP's patch tokens mean parts.

Real CLIP's value-path patch tokens, projected into the joint space, sit near the text of what they
show (MaskCLIP's zero-shot segmentation rests on it); a tiny CLIP trained only on ``[CLS]`` has no
such property. Modern CLIPs train it directly with a local objective; this one follows SPARC
(Bica et al., 2024) and uses nothing but what a caption-image pair offers:

* the phrases of the caption that name a visible part ("a red beak"), found by the caption's own
  grammar (no masks, no labels);
* for each such phrase p of image i, a *language-grouped* patch embedding
  ``c_ip = normalize(Σ_j softmax_j(⟨z_ij, u_p⟩ / τ_pool) z_ij)`` over the image's projected
  value-path patch tokens z_ij (the tokens SOAP pools);
* a contrast of c_ip against every phrase of the batch: ``CE(⟨c_ip, u_q⟩ / τ, q = p)``.

The other phrases of the *same* caption are among the negatives, so patches that carry every part
at once cannot win: c_ip must come from patches that show p and not the image's other parts, which
is what makes the tokens local. The softmax pooling lets the loss find those patches itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PHRASE_FORMS: tuple[str, ...] = ("{}", "a bird with {}.", "a photo of a bird with {}.")
"""How a grounded phrase is worded when embedded (drawn per step), so no single wording is learned."""


def grouped_patch_embeddings(
    patch_embeds: torch.Tensor, phrase_embeds: torch.Tensor, pool_temperature: float
) -> torch.Tensor:
    """Language-grouped patch embeddings of every image for every phrase.

    Args:
        patch_embeds: (B, N, E) unit-norm projected patch tokens.
        phrase_embeds: (Q, E) unit-norm phrase embeddings.
    Returns: (B, Q, E) unit-norm softmax-weighted averages of each image's patches, weighted by their
        similarity to each phrase.
    """
    similarity = patch_embeds @ phrase_embeds.T  # (B, N, Q)
    weights = (similarity / pool_temperature).softmax(dim=1)
    return F.normalize(torch.einsum("bnq,bne->bqe", weights, patch_embeds), dim=-1)


def phrase_grounding_loss(
    patch_embeds: torch.Tensor,
    image_index: torch.Tensor,
    phrase_index: torch.Tensor,
    phrase_embeds: torch.Tensor,
    pool_temperature: float = 0.1,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Which phrase (within the image) and which image (within the batch), for every named phrase.

    Args:
        patch_embeds: (B, N, E) unit-norm projected patch tokens of the batch's images.
        image_index, phrase_index: (P,) the (image, phrase) pairs: phrase ``phrase_index[k]`` is named by
            the caption of image ``image_index[k]``.
        phrase_embeds: (Q, E) unit-norm embeddings of the batch's distinct phrases.

    Returns the mean of two cross-entropies over the pairs: the grouped embedding c_ip against all
    phrases (target p; the image's other parts are negatives, which forces locality), and the score
    ⟨c_kp, u_p⟩ of every image k whose caption does not name p against that of i (target i; without
    it, patches that say "red beak" in every image, whatever it shows, would do).
    """
    if image_index.numel() == 0:
        return patch_embeds.sum() * 0.0
    grouped = grouped_patch_embeddings(patch_embeds, phrase_embeds, pool_temperature)  # (B, Q, E)
    own = grouped[image_index, phrase_index]  # (P, E)
    which_phrase = F.cross_entropy(own @ phrase_embeds.T / temperature, phrase_index)

    scores = torch.einsum("bqe,qe->qb", grouped, phrase_embeds) / temperature  # (Q, B)
    named = torch.zeros_like(scores, dtype=torch.bool)
    named[phrase_index, image_index] = True
    candidates = scores[phrase_index].masked_fill(named[phrase_index], float("-inf"))  # (P, B)
    candidates[torch.arange(len(image_index)), image_index] = scores[phrase_index, image_index]
    which_image = F.cross_entropy(candidates, image_index)
    return 0.5 * (which_phrase + which_image)


def grounding_overlap_loss(
    patch_embeds: torch.Tensor,
    image_index: torch.Tensor,
    phrase_index: torch.Tensor,
    phrase_embeds: torch.Tensor,
    pool_temperature: float = 0.1,
) -> torch.Tensor:
    """How much two parts one caption names are found in the same patches: for every pair of distinct phrases
    (p, q) named by one image's caption, the overlap ``Σ_j w_jp · w_jq`` of the grounding's softmax pools over that
    image's patches, averaged over the pairs (0 when no caption names two parts).

    The grounding loss is met when one patch that carries the whole species answers every part phrase of it;
    this asks the parts a caption names to be found in different patches. Captions only: which parts are named
    together is all it reads.

    Args: as ``phrase_grounding_loss``.
    """
    weights = ((patch_embeds @ phrase_embeds.T) / pool_temperature).softmax(dim=1)  # (B, N, Q)
    pools = weights[image_index, :, phrase_index]  # (P, N): each named pair's pool over its image's patches
    pairs = (image_index[:, None] == image_index[None, :]) & (phrase_index[:, None] != phrase_index[None, :])
    if not pairs.any():
        return patch_embeds.sum() * 0.0
    return (pools @ pools.T)[pairs].mean()


def region_grounding_loss(
    patch_embeds: torch.Tensor,
    image_index: torch.Tensor,
    phrase_index: torch.Tensor,
    phrase_kind: torch.Tensor,
    phrase_embeds: torch.Tensor,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Whole-region phrases ("a teal bird", "city buildings") read from the *mean* patch similarity.

    A multiple-instance objective: an image's score for a region phrase is the mean over all its patches,
    so every patch that shows the region is pulled to the phrase (a softmax pool needs only one), and a
    patch that shows something found in every image (the bird, for a scene) gets no consistent pull.
    Contrasts, over the (image, phrase) pairs a caption names: its image against the images whose
    captions name another phrase of the same kind (known to differ), and its phrase against the other
    phrases of that kind.

    Args:
        patch_embeds: (B, N, E) unit-norm projected patch tokens.
        image_index, phrase_index: (R,) the named (image, region phrase) pairs.
        phrase_kind: (Q,) an integer kind per distinct phrase (e.g. 0 colour, 1 scene).
        phrase_embeds: (Q, E) unit-norm phrase embeddings.
    """
    if image_index.numel() == 0:
        return patch_embeds.sum() * 0.0
    scores = torch.einsum("bne,qe->bq", patch_embeds, phrase_embeds) / patch_embeds.shape[1] / temperature
    named = torch.zeros_like(scores, dtype=torch.bool)
    named[image_index, phrase_index] = True
    kind_of_pair = phrase_kind[phrase_index]  # (R,)
    # Images naming another phrase of the same kind: (R, B)
    other_same_kind = (
        (
            named[:, None, :]
            & (phrase_kind[None, None, :] == kind_of_pair[None, :, None])
            & (torch.arange(len(phrase_kind))[None, None, :] != phrase_index[None, :, None])
        )
        .any(-1)
        .T
    )
    image_logits = scores[:, phrase_index].T.masked_fill(~other_same_kind, float("-inf"))  # (R, B)
    image_logits[torch.arange(len(image_index)), image_index] = scores[image_index, phrase_index]
    same_kind = phrase_kind[None, :] == kind_of_pair[:, None]  # (R, Q)
    phrase_logits = scores[image_index].masked_fill(~same_kind, float("-inf"))
    return 0.5 * (F.cross_entropy(image_logits, image_index) + F.cross_entropy(phrase_logits, phrase_index))
