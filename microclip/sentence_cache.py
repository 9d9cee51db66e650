"""A text encoder that remembers each sentence's embedding: the walkthrough's heads step rebuilds every class's W*
from its descriptions for each picture, and the same sentences come back every time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch


class CachedText:
    """A text encoder that remembers each sentence's embedding (descriptions repeat from image to image)."""

    def __init__(self, encoder: Any, capacity: int = 4096) -> None:
        self.encoder = encoder
        self.capacity = capacity
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cut: dict[str, bool] = {}  # sentence → whether the tokenizer cuts it
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            fresh = self.encoder(missing)
            with self._lock:
                for text, row in zip(missing, fresh):
                    self._cache[text] = row
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        with self._lock:
            rows = [self._cache.get(t) for t in texts]
        if any(row is None for row in rows):  # evicted meanwhile by another request: encode directly
            return self.encoder(list(texts))
        return torch.stack(rows) if rows else self.encoder([])

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` the tokenizer cuts (``heads.build_head_weights`` warns of them); each sentence is
        tokenized once, as tokenizing is most of what rebuilding a head from cached embeddings costs."""
        with self._lock:
            known = {t: self._cut[t] for t in dict.fromkeys(texts) if t in self._cut}
        fresh = {t: bool(self.encoder.count_truncated([t])) for t in dict.fromkeys(texts) if t not in known}
        with self._lock:
            if len(self._cut) + len(fresh) > self.capacity:
                self._cut.clear()
            self._cut.update(fresh)
        known.update(fresh)
        return sum(known[t] for t in texts)

    @property
    def context_length(self) -> int:
        return self.encoder.context_length
