"""Cross-entropy on pseudo-labels plus MUST's fairness (marginal-entropy) regulariser (docs/method.md §5.3)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def fairness_loss(running_marginal: torch.Tensor) -> torch.Tensor:
    """L_fair = −(1/C) Σ_c log p̃_c / 0.5; its minimum 2·ln C is reached at the uniform marginal."""
    return -2.0 * running_marginal.log().mean()


class FairnessRegulariser:
    """Keeps the within-epoch running marginal p̃ ← ½(stopgrad(p̃_prev) + p̄_batch).

    Under DDP the batch marginal is averaged over all processes (with gradient through every
    process's probabilities), so N processes on a global batch equal one process on it.
    """

    def __init__(self) -> None:
        self.running: torch.Tensor | None = None

    def reset(self) -> None:
        """Called at the first iteration of every epoch, as MUST and the reference do."""
        self.running = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        batch_marginal = global_mean(logits.softmax(dim=1))
        if self.running is None:
            marginal = batch_marginal
        else:
            marginal = 0.5 * (self.running + batch_marginal)
        self.running = marginal.detach()
        return fairness_loss(marginal)


def global_mean(probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch dimension; over every process's batch when DDP is running."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return probs.mean(0)
    from torch.distributed.nn.functional import all_reduce

    total = all_reduce(probs.sum(0), op=dist.ReduceOp.SUM)
    count = torch.tensor([float(probs.shape[0])], device=probs.device)
    dist.all_reduce(count)
    return total / count


def pseudo_label_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)
