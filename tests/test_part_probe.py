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


def test_the_confusion_bench_words_a_part_in_any_colour_as_the_descriptions_do():
    from conftest import load_bench

    from microclip.toyworld.part_probe import description_sentence
    from microclip.toyworld.world import CLASS_NAMES, PARTS, SPECIES_BY_NAME

    sentence_in = load_bench("toyworld_part_confusion").sentence_in
    assert sentence_in("tail_tip", "white") == "a bird with a white tail tip."
    assert sentence_in("wing_bands", "black") == "a bird with black wing bands."
    assert sentence_in("eye_ring", "red") == "a bird with a red eye ring."
    for name in CLASS_NAMES:  # a species' own colour gives its descriptions' sentence
        for part in PARTS:
            value = getattr(SPECIES_BY_NAME[name], part)
            if value != "none":
                assert sentence_in(part, value) == description_sentence(name, part)
