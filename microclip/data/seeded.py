"""Per-item seeded augmentation: item i's views are a pure function of (seed, epoch, i).

The reference leaves worker seeding to PyTorch's defaults, so its augmentations depend on the
number of workers and on the order they fetch items. Seeding per item removes both dependencies,
which is what lets a resumed run reproduce an uninterrupted one exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed derived from (seed, epoch, index); neighbouring items get unrelated streams."""
    words = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed Python's `random`, NumPy's and torch's CPU generators, and restore all three on exit.

    Only the CPU torch generator is touched (`torch.manual_seed` would also reseed CUDA, which
    `fork_rng(devices=[])` does not restore), so the caller's training randomness is unaffected
    when items are loaded in the main process.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededDataset(Dataset):
    """Wrap a dataset of (image, label) so that `transform` runs under a per-item seed.

    Returns (views, label, index). Call `set_epoch(epoch)` before each epoch. DataLoader workers
    hold copies of this object, so do not use `persistent_workers=True` (they would keep a stale
    epoch); a fresh loader per epoch, or workers=0, picks the new epoch up.
    """

    def __init__(self, base: Dataset, transform: Callable[[Any], Any], seed: int = 0) -> None:
        self.base = base
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch`."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, label = self.base[index]
        with isolated_rng(item_seed(self.seed, self.epoch, index)):
            views = self.transform(image)
        return views, label, int(index)

    def __getattr__(self, name: str) -> Any:
        # Expose the wrapped dataset's metadata (classes, samples, has_labels) to the caller.
        if name == "base":  # not set yet (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.base, name)
