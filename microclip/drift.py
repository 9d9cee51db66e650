"""Label-free signs of a branch drifting in self-training. The loss sees only the fused logits, so either branch
alone can stop being a classifier while the fused answer holds: `[FG]` does, by taking on a shift that every image
shares (docs/toyworld.md, rounds 11 and 20). Both measures need no labels, so they work on a user's own data."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shared_part(embeds: torch.Tensor) -> float:
    """Mean cosine between each unit row of ``embeds`` (N, E) and the rows' mean direction: 1 when all are alike."""
    return float((embeds.float() @ F.normalize(embeds.float().mean(0), dim=0)).mean())


def agreement(branch_logits: torch.Tensor, fused_logits: torch.Tensor) -> float:
    """% of rows whose branch-alone answer is the fused answer."""
    return 100.0 * float((branch_logits.argmax(1) == fused_logits.argmax(1)).float().mean())
