"""How many inference requests are running now (an adaptation run yields the CPU to them), how many may run
at once, and how many torch threads each gets."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

INFERENCE_CONCURRENCY = 2  # forward passes at once (explore + compare share this limit)


class InFlight:
    """How many inference requests (Explore, Compare, explainers) are running now; an adaptation run
    yields the CPU to them while any are (``studio.jobs``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def busy(self) -> bool:
        return self._count > 0

    def __enter__(self) -> InFlight:
        with self._lock:
            self._count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1


INFERENCE_IN_FLIGHT = InFlight()


def counts_as_inference(fn: F) -> F:
    """Mark a callback as an inference request for ``INFERENCE_IN_FLIGHT`` while it runs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with INFERENCE_IN_FLIGHT:
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def inference_threads() -> int:
    """Torch CPU threads per forward pass: the CPUs this process may use, shared by the concurrent passes.

    Measured with ``bench/app.py --profile``: on 2 busy cores, two concurrent passes with torch's default
    of 2 threads each took ~450 ms instead of ~7 ms (OpenMP workers waiting for descheduled siblings)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // INFERENCE_CONCURRENCY)
