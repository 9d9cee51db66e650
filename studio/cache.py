"""Answers the app has already computed, kept for the next student who asks the same question.

A class opens the same example at the same moment: thirty walkthroughs and thirty Explore pages of one
picture on one model. Each answer is a pure function of what it is keyed by (the model's weights, the
image's bytes, the class set, the options), so it is computed once and handed to everyone. Requests that
arrive while it is being computed wait for that one computation instead of starting their own.

The cache is bounded (``MAX_ENTRIES`` answers, least recently used dropped first) and lives in memory only.
Errors are never cached: the next request tries again. Cached answers are shared, so callers must treat
them as read-only (the app's results are frozen dataclasses, strings and JSON-ready dicts).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")

MAX_ENTRIES = 48  # a walkthrough page is ~0.3 MB with its numbers: tens of MB at most


class ResultCache:
    """A bounded, thread-safe LRU map from a key to a computed answer, computing each key once at a time."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._answers: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, threading.Event] = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        while True:
            with self._lock:
                if key in self._answers:
                    self._answers.move_to_end(key)
                    self.hits += 1
                    return self._answers[key]
                running = self._computing.get(key)
                if running is None:  # nobody computes it: this request does
                    running = self._computing[key] = threading.Event()
                    self.misses += 1
                    break
            running.wait()  # then look again: the answer is there, or the computation failed and we try
        try:
            answer = compute()
        except BaseException:
            with self._lock:
                del self._computing[key]
            running.set()
            raise
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
            del self._computing[key]
        running.set()
        return answer

    def __len__(self) -> int:
        with self._lock:
            return len(self._answers)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()
            self.hits = self.misses = 0


RESULTS = ResultCache()


def cached(key_parts: Sequence[Hashable], compute: Callable[[], T]) -> T:
    """``compute()``'s answer for ``key_parts``, computed once and kept (see the module's docstring).

    ``key_parts`` must name everything the answer depends on, e.g. ``("explore", model_identity(model),
    file_digest(image), tuple(classes), ratio, *display_options)``; the first part names the endpoint.
    """
    return RESULTS.get(tuple(key_parts), compute)


# ------------------------------------------------------------------ key parts

_MODEL_TOKENS: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
_TOKEN_COUNTER = itertools.count(1)
_TOKENS_LOCK = threading.Lock()


def model_identity(model: torch.nn.Module) -> tuple[int, int]:
    """Which weights ``model`` holds now: a token of the object (never reused, unlike ``id``) and the sum of
    its tensors' in-place version counters, which changes when any weight is written in place."""
    with _TOKENS_LOCK:
        token = _MODEL_TOKENS.get(model)
        if token is None:
            token = _MODEL_TOKENS[model] = next(_TOKEN_COUNTER)
    versions = sum(t._version for t in itertools.chain(model.parameters(), model.buffers()))
    return token, versions


_DIGESTS: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_DIGESTS_LOCK = threading.Lock()


def file_digest(path: str | os.PathLike | None) -> str | None:
    """The SHA-256 of a file's bytes (remembered per path, size and modification time); None for no file.

    Keyed by content, not by path: every client uploads its own copy of the same example."""
    if not path:
        return None
    info = os.stat(path)
    stamp = (os.fspath(path), info.st_mtime_ns, info.st_size)
    with _DIGESTS_LOCK:
        if stamp in _DIGESTS:
            return _DIGESTS[stamp]
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[stamp] = digest
        while len(_DIGESTS) > 1024:
            _DIGESTS.popitem(last=False)
    return digest


def frozen(value: Any) -> Hashable:
    """Lists, tuples and dicts (e.g. descriptions) as nested tuples, usable as a key part."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


__all__ = ["MAX_ENTRIES", "RESULTS", "ResultCache", "cached", "file_digest", "frozen", "model_identity"]
