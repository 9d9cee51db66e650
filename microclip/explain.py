"""One image (or a batch) → ``Explanation``: everything the model did, as plain, JSON-ready numbers.

SOAP's weights are the pooling weights of ``[FG]``, so the saliency shown is the mechanism itself,
from the same single forward pass that makes the prediction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from microclip.backbone import VisualTokens
from microclip.constants import LOGIT_SCALE
from microclip.drift import shift_logits
from microclip.heads import BRANCHES
from microclip.model import MicroCLIP
from microclip.modes import eval_mode
from microclip.soap import SoapOutput


@dataclass(frozen=True)
class Explanation:
    classes: list[str]
    ratio: float  # ρ, weight of [CLS] in the fused logits
    logits_cls: np.ndarray  # (C,) 100 · g · Ŵ*
    logits_fg: np.ndarray  # (C,) 100 · f · Ŵ*
    soap_weights: np.ndarray  # (h, w) SOAP pooling weight of each patch
    null_weight: float  # the weight the null token absorbed
    ncut_mask: np.ndarray  # (h, w) bool, the NCut foreground behind the SOAP query
    cls_similarity: np.ndarray  # (h, w) cosine(value-path patch token, pre-projection [CLS])
    patch_class_cosine: np.ndarray  # (h, w, C) cosine(projected patch token, Ŵ*_c)
    grid: tuple[int, int]
    image_size: int
    # The shift s every image's [FG] took on in self-training (microclip.drift.ShiftProbe); both None when the model's
    # run did not measure it. (C,) 100 · s · Ŵ*: its exact part of logits_fg, the same for every image; and (C,)
    # 100 · normalize(f − s) · Ŵ*: [FG] alone with the shift taken away (docs/toyworld.md, round 20).
    fg_shift_logits: np.ndarray | None = None
    logits_fg_unshifted: np.ndarray | None = None
    # (h, w, C) each patch's exact term in each class's [FG] logit (SOAP's weight times its value, along Ŵ*_c) and
    # (C,) the null token's; together they add up to logits_fg (:func:`soap_fg_parts`). None in older saved ones.
    soap_fg_terms: np.ndarray | None = None
    null_fg_terms: np.ndarray | None = None
    # How the model built SOAP's query and pooled [FG] (its method config's; the reference's ablations change
    # what the cut and SOAP's weights mean, and the app says so). Saved ones from before are the method's.
    query: str = "ncut"
    pool: str = "attention"

    # -------------------------------------------------------------- derived views

    @property
    def logits_fused(self) -> np.ndarray:
        return self.ratio * self.logits_cls + (1.0 - self.ratio) * self.logits_fg

    def probabilities(self, branch: str = "fused") -> np.ndarray:
        logits = self._branch_logits(branch)
        shifted = np.exp(logits - logits.max())
        return shifted / shifted.sum()

    def top_k(self, branch: str = "fused", k: int = 5) -> list[tuple[str, float]]:
        probs = self.probabilities(branch)
        order = np.argsort(-probs)[:k]
        return [(self.classes[i], float(probs[i])) for i in order]

    def prediction(self, branch: str = "fused") -> int:
        return int(np.argmax(self._branch_logits(branch)))

    def _branch_logits(self, branch: str) -> np.ndarray:
        """A branch's logits; "fg_unshifted" is `[FG]` with the shared shift taken away (a KeyError when unknown)."""
        if branch == "fg_unshifted":
            if self.logits_fg_unshifted is None:
                raise KeyError("fg_unshifted: this model's run did not measure [FG]'s shared shift")
            return self.logits_fg_unshifted
        return {"fused": self.logits_fused, "cls": self.logits_cls, "fg": self.logits_fg}[branch]

    def shift_part(self, class_index: int) -> float | None:
        """The shared shift's exact part of one class's fused logit: (1 − ρ) · 100 · s · Ŵ*_c (None when unknown)."""
        if self.fg_shift_logits is None:
            return None
        return float((1.0 - self.ratio) * self.fg_shift_logits[class_index])

    def contributions(self, class_index: int) -> tuple[float, float]:
        """The exact ([CLS] part, [FG] part) of the fused logit of one class."""
        return (
            float(self.ratio * self.logits_cls[class_index]),
            float((1.0 - self.ratio) * self.logits_fg[class_index]),
        )

    def with_ratio(self, ratio: float) -> Explanation:
        """Re-fuse at another ρ; no forward pass needed because the logits are linear in ρ."""
        return Explanation(**{**self.__dict__, "ratio": float(ratio)})

    def patch_weights_without_null(self) -> np.ndarray:
        """SOAP weights renormalised over the patches only (the reference's visualisation)."""
        total = self.soap_weights.sum()
        return self.soap_weights / total if total > 0 else self.soap_weights

    # -------------------------------------------------------------- serialisation

    def to_dict(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, np.ndarray):
                data[key] = value.tolist()
        data["logits_fused"] = self.logits_fused.tolist()
        data["prediction"] = {b: self.classes[self.prediction(b)] for b in BRANCHES}
        return data

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> Explanation:
        arrays = {
            "logits_cls",
            "logits_fg",
            "soap_weights",
            "ncut_mask",
            "cls_similarity",
            "patch_class_cosine",
            "soap_fg_terms",
            "null_fg_terms",
        }
        kwargs = {
            k: np.asarray(v) if k in arrays and v is not None else v
            for k, v in data.items()
            if k in cls.__dataclass_fields__
        }
        kwargs["ncut_mask"] = kwargs["ncut_mask"].astype(bool)
        kwargs["grid"] = tuple(kwargs["grid"])
        return cls(**kwargs)


def soap_fg_parts(model: MicroCLIP, soap: SoapOutput) -> torch.Tensor:
    """(B, N + 1, E): each patch token's exact share of LOGIT_SCALE·f in a forward pass, the null token's last, from
    SOAP's output in it (the weights and the very values it pooled).

    ``[FG]`` is f = normalize(P·h) with h = Σ_j α_j v_j, so the shares LOGIT_SCALE·α_j·(P·v_j) / ‖P·h‖ add up to
    LOGIT_SCALE·f, and read along ŵ*_c they are the terms of the ``[FG]`` logit of class c.
    """
    proj = model.backbone.visual.proj.to(soap.pooled.dtype)
    values = soap.values @ proj  # (B, N + 1, E)
    length = (soap.pooled @ proj).norm(dim=-1).clamp_min(1e-12)  # F.normalize's own floor
    return LOGIT_SCALE * soap.weights[..., None] * values / length[:, None, None]


def cls_similarity(tokens: VisualTokens) -> torch.Tensor:
    """(B, N) cosine between each value-path patch token and the pre-projection [CLS] token."""
    return F.cosine_similarity(tokens.patches, tokens.cls_token[:, None], dim=-1)


@torch.no_grad()
def explain_batch(
    model: MicroCLIP, images: torch.Tensor, ratio: float | None = None, tokens: VisualTokens | None = None
) -> list[Explanation]:
    """images: (B, 3, S, S) in [0, 1], already resized to the model's input size. ``tokens``: the backbone's output
    for them, when already computed (:meth:`MicroCLIP.forward`).

    Runs in eval mode and leaves the model in the mode it found (a training loop can call it).
    """
    with eval_mode(model):
        out = model(images.to(next(model.parameters()).device), ratio=ratio, tokens=tokens)
    tokens = out.tokens
    h, w = tokens.grid
    w_hat = model.heads.w_star_hat()
    similarity = cls_similarity(tokens)  # (B, N)
    patch_embeds = model.backbone.project(tokens.patches)  # (B, N, E)
    patch_class = patch_embeds @ w_hat.T.to(patch_embeds.dtype)  # (B, N, C)
    fg_terms = soap_fg_parts(model, out.soap) @ w_hat.T.to(patch_embeds.dtype)  # (B, N + 1, C)

    def host(t: torch.Tensor) -> np.ndarray:
        # One device-to-host copy per tensor for the whole batch: on a GPU, per-image copies were six
        # synchronising transfers an image (193 for a batch of 32), a third of the explain call's time.
        return t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()

    logits_cls, logits_fg = host(out.logits.cls), host(out.logits.fg)
    shift = shift_logits(model, out.fg_embed)  # (its part of each [FG] logit, [FG] without it) or None
    shift_part, unshifted = (None, None) if shift is None else (host(shift[0]), host(shift[1]))
    weights, mask = host(out.soap.weights), host(out.mask)
    similarity_np, patch_class_np, fg_terms_np = host(similarity), host(patch_class), host(fg_terms)
    ratio_value = float(out.logits.ratio)
    explanations = []
    for b in range(images.shape[0]):
        explanations.append(
            Explanation(
                classes=list(model.classes),
                ratio=ratio_value,
                logits_cls=logits_cls[b],
                logits_fg=logits_fg[b],
                soap_weights=weights[b, :-1].reshape(h, w),
                null_weight=float(weights[b, -1]),
                ncut_mask=mask[b].reshape(h, w),
                cls_similarity=similarity_np[b].reshape(h, w),
                patch_class_cosine=patch_class_np[b].reshape(h, w, -1),
                grid=(h, w),
                image_size=int(images.shape[-1]),
                fg_shift_logits=shift_part,
                logits_fg_unshifted=None if unshifted is None else unshifted[b],
                soap_fg_terms=fg_terms_np[b, :-1].reshape(h, w, -1),
                null_fg_terms=fg_terms_np[b, -1],
                query=model.config.query,
                pool=model.config.pool,
            )
        )
    return explanations


def image_batch(model: MicroCLIP, image) -> torch.Tensor:
    """A PIL image (any size or mode) → a (1, 3, S, S) batch for ``model``, with the centre-crop test transform."""
    from microclip.data.images import to_rgb
    from microclip.data.transforms import test_transform

    return test_transform(model.backbone.image_size, crop="center")(to_rgb(image))[None]


def explain_image(model: MicroCLIP, image, ratio: float | None = None) -> Explanation:
    """A PIL image (any size or mode) → its Explanation, with the centre-crop test transform."""
    return explain_batch(model, image_batch(model, image), ratio)[0]


@torch.no_grad()
def explain_sharing_the_tower(models: Sequence[MicroCLIP], image, ratio: float | None = None) -> list[Explanation]:
    """A PIL image explained by each of ``models``, views of one model that share its visual tower and differ after
    it (SOAP's query or pooling, the heads): the tower reads the image once for all of them."""
    first = models[0]
    batch = image_batch(first, image).to(next(first.parameters()).device)
    with eval_mode(first):
        tokens = first.backbone(batch)
    return [explain_batch(model, batch, ratio, tokens)[0] for model in models]
