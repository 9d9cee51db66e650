"""A module in eval mode for one block, handed back in the mode it came in (a training loop may call us)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module.eval()`` inside the block; afterwards, even after an error, ``module.train(mode it had)``.

    Like ``Module.train``, the restore sets every submodule to the outer module's mode.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
