"""The part probe's bookkeeping: where a sentence's closest patch lands, and the per-part summary."""

from __future__ import annotations

import numpy as np
import pytest

from microclip.toyworld.part_probe import BACKGROUND, BODY, PartProbe, landing


def test_landing_names_the_part_first_then_another_part_then_body_or_background():
    held = {"beak": False, "crest": True, "eye_ring": True}
    assert landing("eye_ring", held, on_bird=True) == "eye_ring"  # the named part wins over the others it holds
    assert landing("beak", held, on_bird=True) == "crest"  # else the first other part, in the given order
    nothing = {"beak": False, "crest": False}
    assert landing("beak", nothing, on_bird=True) == BODY
    assert landing("beak", nothing, on_bird=False) == BACKGROUND


def test_by_part_counts_each_parts_pairs_by_hand():
    probe = PartProbe(
        hits=np.array([True, False, False, True, False]),
        patch_chance=np.zeros(5),
        bird_chance=np.zeros(5),
        parts=np.array(["beak", "beak", "beak", "tail_tip", "tail_tip"]),
        landed=np.array(["beak", "eye_ring", BODY, "tail_tip", "wing_bands"]),
    )
    rows = probe.by_part()
    assert list(rows) == ["beak", "tail_tip"]
    assert rows["beak"]["accuracy"] == pytest.approx(100 / 3)
    assert rows["beak"]["pairs"] == 3
    assert rows["beak"]["lands_on"] == pytest.approx({"beak": 100 / 3, "eye_ring": 100 / 3, BODY: 100 / 3})
    assert rows["tail_tip"]["lands_on"] == pytest.approx({"tail_tip": 50.0, "wing_bands": 50.0})
    assert probe.accuracy == pytest.approx(40.0)
