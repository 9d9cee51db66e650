"""Several runs of one recipe summarised: mean, spread and range.

Self-training's seed fixes the data order and the crops, and on the toy world it alone moves a run's test top-1 by
up to 4.5 points (docs/toyworld.md, rounds 37-38): one run says little about a recipe, several say how far it can be
trusted. ``evaluate.py --ckpt-path A B C`` scores each checkpoint and closes with this summary; with ``--against``
it also summarises the differences from another set pair by pair (the same seeds share their luck, round 38).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    sd: float | None  # the sample standard deviation (n - 1); None for one value
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one value")
        sd = statistics.stdev(values) if len(values) > 1 else None
        return cls(n=len(values), mean=statistics.fmean(values), sd=sd, low=min(values), high=max(values))

    def describe(self, points: bool = False) -> str:
        """``mean 86.30% ± 2.10 (sd), 84.50 to 89.00``; with ``points`` (differences), signed and in points."""
        spread = "" if self.sd is None else f" ± {self.sd:.2f} (sd)"
        if points:
            return f"mean {self.mean:+.2f} points{spread}, {self.low:+.2f} to {self.high:+.2f}"
        return f"mean {self.mean:.2f}%{spread}, {self.low:.2f} to {self.high:.2f}"

    def as_dict(self) -> dict:
        return asdict(self)
