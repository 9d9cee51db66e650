"""The paired gap and its bootstrap interval (microclip.uncertainty), against a slow resampling loop."""

from __future__ import annotations

import numpy as np
import pytest

from microclip.uncertainty import PairedGap, paired_gap


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
