"""How sure a comparison of two scores on the same items is: the paired gap and its bootstrap interval.

Two maps' deletion scores on the same 160 images, or two branches' drops on the same erased parts, differ per item
by far more than their means do; what decides a target row is the mean of the per-item differences. Resampling the
items (scipy's bootstrap, BCa) says how far that mean would move on another draw of as many items from the same
world. It says nothing about another pretraining or adaptation draw, which moves the scores more (docs/toyworld.md,
rounds 9 and 10). Items that come in groups (the several erased parts of one bird) are not independent draws:
``clustered_gap`` resamples whole groups instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap

LEVEL = 0.95
SEED = 0  # the resampling's; a report's intervals are the same on every run


@dataclass(frozen=True)
class PairedGap:
    """mean(a - b) over items, and the ``LEVEL`` bootstrap interval of that mean."""

    gap: float
    low: float
    high: float
    items: int
    groups: int | None = None  # set when whole groups of items were resampled (``clustered_gap``)

    def to_dict(self) -> dict:
        fields = asdict(self)
        return fields if self.groups is not None else {k: v for k, v in fields.items() if k != "groups"}

    @property
    def settled(self) -> bool:
        """Whether the interval leaves out zero: the sign of the gap holds on another draw of the items."""
        return self.low > 0 or self.high < 0

    def words(self, scale: float = 1.0) -> str:
        """e.g. "gap -1.8 (95% interval -3.1 to -0.5, 160 items)", values times ``scale``; resampled by group,
        "(..., 630 items in 160 groups)"."""
        counted = f"{self.items} items" + (f" in {self.groups} groups" if self.groups is not None else "")
        return (
            f"gap {self.gap * scale:+.1f} ({LEVEL:.0%} interval {self.low * scale:+.1f} to {self.high * scale:+.1f}, "
            f"{counted})"
        )


def paired_gap(a: np.ndarray, b: np.ndarray, seed: int = SEED) -> PairedGap:
    """The gap between two scores measured on the same items, ``a[i]`` and ``b[i]`` for item ``i``, with its
    ``LEVEL`` interval (one level for every report, so ``words`` can name it)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired_gap needs two 1-D arrays of the same items (2 or more), got {a.shape} and {b.shape}")
    difference = a - b
    gap = float(difference.mean())
    if np.ptp(difference) == 0:  # every item agrees: no resample can move the mean (and BCa is undefined)
        return PairedGap(gap, gap, gap, len(a))
    interval = bootstrap(
        (difference,), np.mean, confidence_level=LEVEL, method="BCa", rng=np.random.default_rng(seed)
    ).confidence_interval
    return PairedGap(gap, float(interval.low), float(interval.high), len(a))


def clustered_gap(a: np.ndarray, b: np.ndarray, groups: np.ndarray, seed: int = SEED) -> PairedGap:
    """As ``paired_gap``, for items that come in groups (``groups[i]``: item i's group, e.g. the bird whose part was
    erased): whole groups are resampled, so items that share a group move together (a cluster bootstrap; BCa on the
    mean as the ratio of the resampled groups' summed differences to their summed sizes)."""
    a, b, groups = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(groups)
    if a.shape != b.shape or groups.shape != a.shape or a.ndim != 1:
        raise ValueError(
            f"clustered_gap needs three 1-D arrays of the same items, got {a.shape}, {b.shape}, {groups.shape}"
        )
    difference = a - b
    _, index = np.unique(groups, return_inverse=True)
    sums, sizes = np.bincount(index, weights=difference), np.bincount(index).astype(np.float64)
    if len(sums) < 2:
        raise ValueError(f"clustered_gap needs 2 or more groups, got {len(sums)}")
    gap = float(difference.mean())
    if np.ptp(sums / sizes) == 0:  # every group's mean is the gap: any resample of groups gives it again
        return PairedGap(gap, gap, gap, len(a), len(sums))

    def mean_of_items(summed: np.ndarray, size: np.ndarray, axis: int = -1) -> np.ndarray:
        return summed.sum(axis=axis) / size.sum(axis=axis)

    interval = bootstrap(
        (sums, sizes),
        mean_of_items,
        paired=True,
        vectorized=True,
        confidence_level=LEVEL,
        method="BCa",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return PairedGap(gap, float(interval.low), float(interval.high), len(a), len(sums))
