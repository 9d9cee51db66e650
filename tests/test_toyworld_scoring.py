"""Scoring maps against the toy world's ground truth, checked by hand on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from microclip.scoring import (
    expected_hit,
    foreground_makeup,
    mass_inside,
    patch_coverage,
    patch_hits,
    percent,
    pointing_hits,
)


def _mask() -> np.ndarray:
    """One 4x4-pixel image on a 2x2 patch grid: 3 pixels of the top-right patch, 1 of the bottom-left."""
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 0, 2:4] = True
    mask[0, 1, 3] = True
    mask[0, 3, 0] = True
    return mask


def test_patch_coverage_counts_pixels_per_patch():
    coverage = patch_coverage(_mask(), (2, 2))
    assert coverage.tolist() == [[0.0, 0.75, 0.25, 0.0]]
    assert patch_hits(_mask(), (2, 2)).tolist() == [[False, True, True, False]]


def test_a_mask_that_does_not_tile_the_grid_is_refused():
    with pytest.raises(ValueError, match="does not tile"):
        patch_coverage(np.zeros((1, 5, 4), bool), (2, 2))


def test_pointing_takes_the_top_patch():
    on = patch_hits(_mask(), (2, 2))
    assert pointing_hits(np.array([[0.1, 0.9, 0.0, 0.2]]), on).tolist() == [True]
    assert pointing_hits(np.array([[0.1, 0.0, 0.0, 0.2]]), on).tolist() == [False]
    # ties share the verdict: two of the three tied patches touch the part, a flat map scores the part's share
    assert pointing_hits(np.array([[0.5, 0.5, 0.5, 0.1]]), on).tolist() == pytest.approx([2 / 3])
    assert pointing_hits(np.full((1, 4), 0.25), on).tolist() == pytest.approx([0.5])


def test_mass_inside_shifts_the_map_to_zero_and_spreads_each_patch_over_its_pixels():
    coverage = patch_coverage(_mask(), (2, 2))
    # map - min = [1, 3, 0, 0]: inside = 3 * 0.75 = 2.25 of 4
    assert mass_inside(np.array([[-1.0, 1.0, -2.0, -2.0]]), coverage) == pytest.approx([2.25 / 4])
    assert mass_inside(np.array([[5.0, 5.0, 5.0, 5.0]]), coverage).tolist() == [0.0]  # a constant map has no mass


def test_expected_hit_of_a_uniform_patch_in_a_set():
    on = np.array([[True, False, True, False], [False, False, False, False]])
    selection = np.array([[True, True, True, False], [False, False, False, False]])
    assert expected_hit(selection, on).tolist() == [2 / 3, 0.0]
    assert percent(np.array([True, False, True, False])) == 50.0


def test_foreground_makeup_by_hand():
    # Five patches: 0-1 on a part, 2 on the body, 3-4 off the bird. Image 2 selects nothing.
    on_part = np.array([[True, True, False, False, False]] * 2)
    on_bird = np.array([[True, True, True, False, False]] * 2)
    foreground = np.array([[True, False, True, True, True], [False] * 5])
    makeup = foreground_makeup(foreground, on_part, on_bird)
    assert makeup["part"].tolist() == [0.25, 0.0]
    assert makeup["body"].tolist() == [0.25, 0.0]
    assert makeup["background"].tolist() == [0.5, 0.0]
