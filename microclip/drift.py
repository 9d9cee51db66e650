"""Label-free signs of a branch drifting in self-training. The loss sees only the fused logits, so either branch
alone can stop being a classifier while the fused answer holds: `[FG]` does, by taking on a shift that every image
shares (docs/toyworld.md, rounds 11 and 20). Both measures need no labels, so they work on a user's own data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from microclip.constants import LOGIT_SCALE
from microclip.modes import eval_mode

SHIFT_IMAGES = 2000  # the shift's means are taken over at most this many training images, evenly spaced

# What engine.pseudo_label logs per training step (as train_<name> in an epoch's row): each branch's agreement with
# the fused answer (%) and the part of its embeddings every image shares.
SIGNS = ("agree_cls", "agree_fg", "shared_cls", "shared_fg")


def shared_part(embeds: torch.Tensor) -> float:
    """Mean cosine between each unit row of ``embeds`` (N, E) and the rows' mean direction: 1 when all are alike."""
    return float((embeds.float() @ F.normalize(embeds.float().mean(0), dim=0)).mean())


def agreement(branch_logits: torch.Tensor, fused_logits: torch.Tensor) -> float:
    """% of rows whose branch-alone answer is the fused answer."""
    return 100.0 * float((branch_logits.argmax(1) == fused_logits.argmax(1)).float().mean())


def epoch_signs(row: Mapping[str, object]) -> dict[str, float]:
    """An epoch's label-free signs from its log row (``train_agree_fg`` → ``agree_fg``); those it lacks are left out
    (the start has none, and runs logged before a sign existed lack it)."""
    return {name: float(row[f"train_{name}"]) for name in SIGNS if f"train_{name}" in row}


# ------------------------------------------------------------------ the shift every image's [FG] takes on


def mean_fg(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean `[FG]` token f (E,) over images in batches (B, 3, S, S) in [0, 1], in eval mode."""
    device = next(model.parameters()).device
    total, count = None, 0
    with eval_mode(model), torch.no_grad():
        for images in batches:
            f = model(images.to(device)).fg_embed.float().sum(0).cpu()
            total, count = (f if total is None else total + f), count + len(images)
    if total is None:
        raise ValueError("no images to measure [FG]'s shift on")
    return total / count


def fg_shift(
    model: torch.nn.Module, start: dict[str, torch.Tensor], data: Dataset, batch_size: int = 64
) -> tuple[torch.Tensor, int]:
    """The shift self-training gave every image's `[FG]` token: mean f with the model as it is, minus mean f with
    the adapted tensors ``start`` (the run's first), over ``data`` (items ``(image tensor, ...)``, no labels
    needed; at most ``SHIFT_IMAGES``, evenly spaced). Returns the shift (E,) and how many images it was measured
    on; the model is left as it was. docs/toyworld.md, round 20, measured it; the explanations subtract it."""
    keep = np.linspace(0, len(data) - 1, min(len(data), SHIFT_IMAGES)).round().astype(int).tolist()
    subset = Subset(data, keep)

    def batches() -> Iterable[torch.Tensor]:
        return (batch[0] for batch in DataLoader(subset, batch_size=batch_size, shuffle=False))

    now = model.adapted_state()
    end = mean_fg(model, batches())
    model.load_adapted_state(start)
    try:
        begin = mean_fg(model, batches())
    finally:
        model.load_adapted_state(now)
    return end - begin, len(keep)


def shift_class_logits(model: torch.nn.Module) -> torch.Tensor | None:
    """(C,) 100 · s · Ŵ*: what the run's shared shift s (``model.fg_shift``) adds to each class's `[FG]` logit, on
    every image alike; None when the run did not measure it."""
    shift = getattr(model, "fg_shift", None)
    if shift is None:
        return None
    w_hat = model.heads.w_star_hat()
    return LOGIT_SCALE * shift.to(w_hat) @ w_hat.T


def shift_logits(model: torch.nn.Module, fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For ``fg`` (..., E): :func:`shift_class_logits`, the shift's exact part of every image's `[FG]` logits, and
    (..., C) 100 · normalize(f − s) · Ŵ*, `[FG]` alone without it; None when the run did not measure s."""
    part = shift_class_logits(model)
    if part is None:
        return None
    w_hat = model.heads.w_star_hat()
    unshifted = F.normalize(fg.to(w_hat) - model.fg_shift.to(w_hat), dim=-1) @ w_hat.T
    return part, LOGIT_SCALE * unshifted
