"""The paired gap and its bootstrap interval (microclip.uncertainty), against a slow resampling loop."""

from __future__ import annotations

import numpy as np
import pytest

from microclip.uncertainty import PairedGap, clustered_gap, paired_gap


def _percentile_loop(difference: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The obvious bootstrap: draw items with replacement, take the mean, read the 2.5th and 97.5th percentiles."""
    rng = np.random.default_rng(seed)
    means = [difference[rng.integers(0, len(difference), len(difference))].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_the_gap_is_the_mean_difference_and_its_interval_that_of_a_plain_resampling_loop():
    rng = np.random.default_rng(1)
    b = rng.normal(70.0, 15.0, 160)
    a = b + rng.normal(-1.8, 6.0, 160)
    gap = paired_gap(a, b)
    assert gap.gap == pytest.approx(float((a - b).mean()), abs=1e-12) and gap.items == 160
    low, high = _percentile_loop(a - b, 4000, seed=2)
    # BCa and the plain percentile interval agree closely on a near-symmetric mean; 0.15 points is far below the
    # interval's own width (about 1.9 points here)
    assert gap.low == pytest.approx(low, abs=0.15) and gap.high == pytest.approx(high, abs=0.15)
    assert gap.low < gap.gap < gap.high and gap.high - gap.low > 1.0
    assert paired_gap(a, b) == gap  # seeded: the same interval on every call


def test_pairing_is_what_narrows_the_interval():
    """Items that differ a lot from one another but move together: the gap is sure once each item is compared with
    itself, and a shuffled pairing (the same two sets of scores) is not."""
    rng = np.random.default_rng(3)
    b = rng.normal(70.0, 20.0, 200)
    a = b - 1.0 + rng.normal(0.0, 0.5, 200)
    paired = paired_gap(a, b)
    shuffled = paired_gap(a, rng.permutation(b))
    assert paired.settled and paired.high < 0
    assert not shuffled.settled and (shuffled.high - shuffled.low) > 20 * (paired.high - paired.low)


def test_items_that_all_agree_give_a_point_interval_and_bad_shapes_are_refused():
    assert paired_gap(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == PairedGap(2.0, 2.0, 2.0, 2)
    with pytest.raises(ValueError, match="same items"):
        paired_gap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="same items"):
        paired_gap(np.zeros(1), np.zeros(1))


def test_words_say_the_gap_the_interval_and_the_items():
    assert PairedGap(-1.84, -3.12, -0.51, 160).words() == "gap -1.8 (95% interval -3.1 to -0.5, 160 items)"


def _cluster_loop(difference: np.ndarray, groups: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The obvious cluster bootstrap: draw groups with replacement, pool their items, take the mean."""
    rng = np.random.default_rng(seed)
    members = [difference[groups == g] for g in np.unique(groups)]
    means = []
    for _ in range(resamples):
        drawn = [members[i] for i in rng.integers(0, len(members), len(members))]
        means.append(np.concatenate(drawn).mean())
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_resampling_whole_groups_is_a_plain_cluster_loop_and_ignores_copies_within_a_group():
    rng = np.random.default_rng(5)
    sizes = rng.integers(2, 6, 160)  # 160 birds, 2 to 5 erased parts each
    groups = np.repeat(np.arange(160), sizes)
    bird = rng.normal(0.0, 8.0, 160)[groups]  # what a bird shares across its parts: the items are not independent
    a = rng.normal(25.0, 10.0, len(groups))
    b = a - 0.9 - bird - rng.normal(0.0, 3.0, len(groups))
    gap = clustered_gap(a, b, groups)
    assert gap.gap == pytest.approx(float((a - b).mean()), abs=1e-12) and (gap.items, gap.groups) == (len(a), 160)
    low, high = _cluster_loop(a - b, groups, 4000, seed=6)
    assert gap.low == pytest.approx(low, abs=0.15) and gap.high == pytest.approx(high, abs=0.15)
    # Resampled item by item, the shared part of a bird counts as if each part were a new bird: too narrow.
    assert paired_gap(a, b).high - paired_gap(a, b).low < 0.7 * (gap.high - gap.low)
    # Four copies of every item within its group are no new evidence: the same interval, where items narrow it.
    copies = np.repeat(np.arange(len(a)), 4)
    repeated = clustered_gap(a[copies], b[copies], groups[copies])
    assert (repeated.low, repeated.high) == pytest.approx((gap.low, gap.high), abs=1e-9)
    assert paired_gap(a[copies], b[copies]).high - paired_gap(a[copies], b[copies]).low < 0.6 * (
        paired_gap(a, b).high - paired_gap(a, b).low
    )
    # One item a group is the plain paired bootstrap.
    single = clustered_gap(a[:300], b[:300], np.arange(300))
    plain = paired_gap(a[:300], b[:300])
    assert (single.low, single.high) == pytest.approx((plain.low, plain.high), abs=0.02)


def test_groups_that_all_agree_give_a_point_interval_and_the_words_count_the_groups():
    assert clustered_gap(np.array([3.0, 5.0, 4.0]), np.array([1.0, 3.0, 2.0]), np.array([0, 0, 1])).low == 2.0
    with pytest.raises(ValueError, match="2 or more groups"):
        clustered_gap(np.zeros(3), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="same items"):
        clustered_gap(np.zeros(3), np.zeros(3), np.zeros(2))
    words = PairedGap(0.91, -2.5, 4.3, 630, 160).words()
    assert words == "gap +0.9 (95% interval -2.5 to +4.3, 630 items in 160 groups)"
