"""The base model's text tower with a sentence cache: descriptions repeat from image to image (the walkthrough's
heads step weighs each class's descriptions with it)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from microclip.sentence_cache import CachedText

if TYPE_CHECKING:
    from studio.registry import ModelRegistry

log = logging.getLogger(__name__)


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
