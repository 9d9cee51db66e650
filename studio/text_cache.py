"""The base model's text tower with a sentence cache: descriptions repeat from image to image (the walkthrough's
heads step weighs each class's descriptions with it)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from studio.registry import ModelRegistry

log = logging.getLogger(__name__)


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


_TEXT: dict[Any, CachedText] = {}  # the registry's text encoder (one per base model) → its sentence cache
_TEXT_LOCK = threading.Lock()


def text_encoder_for(registry: ModelRegistry, model: Any) -> CachedText | None:
    """The base model's text tower (the registry keeps one per base) with a sentence cache, or None when it
    cannot be loaded (the heads step then lists the descriptions without their weights)."""
    base = model.base
    if base is None:
        return None
    try:
        encoder = registry.text_encoder(base)
    except Exception as error:  # noqa: BLE001 - the walkthrough still works without the description weights
        log.warning("walkthrough: no text tower for %s (%s); description weights are not shown", base.describe(), error)
        return None
    with _TEXT_LOCK:
        if encoder not in _TEXT:
            _TEXT[encoder] = CachedText(encoder)
        return _TEXT[encoder]
