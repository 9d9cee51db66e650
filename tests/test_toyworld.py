"""Tests for microclip.toyworld: the generator, the words, the cached data and the tiny CLIP pretraining."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from microclip.toyworld import TOY_MODEL_NAME, register_model_configs
from microclip.toyworld.dataset import ensure_pretrain_corpus, ensure_split, load_pretrain_corpus, load_split_masks
from microclip.toyworld.pretrain import (
    PretrainConfig,
    augment,
    build_model,
    make_batch,
    objective,
    parse_args,
    pretrain,
)
from microclip.toyworld.render import BIRD_SCALE, render_bird, rerender
from microclip.toyworld.text import (
    COMMONER_LOOKALIKE,
    DESCRIBED_PARTS,
    DESCRIBED_PARTS_PER_CLASS,
    DESCRIPTION_SEED,
    GENERIC_LINES,
    LOOKALIKE,
    NAME_RANK,
    NAME_ZIPF,
    P_LOOKALIKE,
    P_NAME,
    TEMPLATES,
    Scene,
    absent_phrase,
    borrowed_names,
    caption_vocabulary,
    described_parts,
    description_oracle_accuracy,
    description_ties,
    descriptions,
    make_caption,
    name_rate,
    part_phrase,
    pretrain_caption,
    write_assets,
)
from microclip.toyworld.world import CLASS_NAMES, PARTS, SPECIES, SPECIES_BY_NAME, attribute_distance

# ---------------------------------------------------------------- world and renderer


def test_species_pairwise_differ_in_at_least_two_attributes():
    distances = [attribute_distance(a, b) for a, b in itertools.combinations(SPECIES, 2)]
    assert len(SPECIES) == 16
    assert min(distances) >= 2


def test_class_names_are_sorted_unique_lowercase_two_words():
    assert CLASS_NAMES == sorted(CLASS_NAMES)
    assert len(set(CLASS_NAMES)) == 16
    assert all(name == name.lower() and len(name.split()) == 2 for name in CLASS_NAMES)


def test_render_is_deterministic_given_the_seed():
    a = render_bird(3, np.random.default_rng(42))
    b = render_bird(3, np.random.default_rng(42))
    c = render_bird(3, np.random.default_rng(43))
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.part_mask, b.part_mask) and np.array_equal(a.bird_mask, b.bird_mask)
    assert not np.array_equal(a.image, c.image)


def test_render_shapes_and_part_mask_inside_bird_mask():
    for seed in range(20):
        s = render_bird(seed % 16, np.random.default_rng(seed))
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.part_mask.any()
        assert not (s.part_mask & ~s.bird_mask).any()


def test_changing_only_the_species_changes_only_part_pixels():
    for seed, (i, j) in enumerate(itertools.combinations(range(16), 2)):
        if seed % 7:  # a spread of pairs keeps the test fast
            continue
        a = render_bird(i, np.random.default_rng(seed))
        b = render_bird(j, np.random.default_rng(seed))
        changed = (a.image != b.image).any(axis=-1)
        assert changed.any(), f"species {i} and {j} rendered identically"
        assert not (changed & ~(a.part_mask | b.part_mask)).any()
        outside_parts = ~(a.part_mask | b.part_mask)
        assert np.array_equal(a.bird_mask & outside_parts, b.bird_mask & outside_parts)


# ---------------------------------------------------------------- words


def test_descriptions_cover_all_classes_and_say_only_true_things():
    desc = descriptions()
    assert sorted(desc) == CLASS_NAMES
    for name, lines in desc.items():
        sp = SPECIES_BY_NAME[name]
        true_sentences = {f"a bird with {part_phrase(sp, p) or absent_phrase(p)}." for p in PARTS}
        part_lines = [line for line in lines if line not in GENERIC_LINES]
        assert part_lines and set(part_lines) <= true_sentences, name


def test_named_descriptions_say_the_same_things_around_the_class_name():
    plain, named = descriptions(), descriptions(named=True)
    assert sorted(named) == CLASS_NAMES
    for name in CLASS_NAMES:
        assert len(named[name]) == len(plain[name])
        for line, named_line in zip(plain[name], named[name]):
            assert named_line.startswith(f"the {name} ")
            # the same content: the part phrase after "a bird with", or the whole generic line
            content = line.removeprefix("a bird with ")
            assert named_line.endswith(content), (line, named_line)


def test_descriptions_are_distinct_but_incomplete():
    desc = descriptions()
    assert len({tuple(lines) for lines in desc.values()}) == len(CLASS_NAMES)
    assert all(len(parts) == DESCRIBED_PARTS_PER_CLASS < len(PARTS) for parts in DESCRIBED_PARTS.values())
    assert 0.5 < description_oracle_accuracy() < 0.9  # headroom left for adaptation, but informative


def test_another_draw_of_the_descriptions_follows_the_same_rule(tmp_path: Path, capsys):
    from microclip.data import load_descriptions
    from microclip.toyworld.descriptions_draw import main

    shipped = json.loads((Path(__file__).resolve().parent.parent / "assets/toybirds/descriptions.json").read_text())
    out = tmp_path / "drawn.json"
    assert main(["--out", str(out)]) == 0 and json.loads(out.read_text()) == shipped == descriptions()
    main(["--seed", "22", "--out", str(out)])
    drawn = load_descriptions(out, CLASS_NAMES)  # as train.py and the Adapt tab read it
    assert drawn != shipped and len({tuple(lines) for lines in drawn.values()}) == len(CLASS_NAMES)
    true_of = {  # every line that is true of a species: its parts, present or absent
        name: {f"a bird with {part_phrase(sp, p) or absent_phrase(p)}." for p in PARTS}
        for name, sp in SPECIES_BY_NAME.items()
    }
    for name, lines in drawn.items():
        assert (
            lines[DESCRIBED_PARTS_PER_CLASS:] == GENERIC_LINES
            and set(lines[:DESCRIBED_PARTS_PER_CLASS]) <= true_of[name]
        )
        present = sum(getattr(SPECIES_BY_NAME[name], p) != "none" for p in PARTS)
        named_absent = sum(" no " in line or "plain" in line for line in lines[:DESCRIBED_PARTS_PER_CLASS])
        assert named_absent == max(0, DESCRIBED_PARTS_PER_CLASS - present)  # present parts first
    # the oracle it prints, recomputed from the file's own lines: a perfect reader scores each class by its true lines
    oracle = 0.0
    for c in CLASS_NAMES:
        score = [np.mean([line in true_of[c] for line in drawn[d][:DESCRIBED_PARTS_PER_CLASS]]) for d in CLASS_NAMES]
        best = [d for d, v in zip(CLASS_NAMES, score) if v == max(score)]
        oracle += (c in best) / len(best) / len(CLASS_NAMES)
    assert f"a perfect part reader using them scores {oracle:.1%}" in capsys.readouterr().out


def test_a_draw_naming_more_parts_adds_lines_to_the_same_draw(tmp_path: Path, capsys):
    from microclip.toyworld.descriptions_draw import main

    two, three, five = (described_parts(DESCRIPTION_SEED, n) for n in (2, 3, 5))
    assert two == DESCRIBED_PARTS
    for name in CLASS_NAMES:  # the same toy LLM saying more: its first parts are kept, one more is added
        assert set(two[name]) < set(three[name]) and len(three[name]) == 3 and five[name] == list(PARTS)
    out = tmp_path / "five.json"
    assert main(["--parts", "5", "--out", str(out)]) == 0
    drawn = json.loads(out.read_text())
    for name, lines in drawn.items():
        sp = SPECIES_BY_NAME[name]
        assert lines[:5] == [f"a bird with {part_phrase(sp, p) or absent_phrase(p)}." for p in PARTS]
    # every species differs from every other in three parts, so naming all five leaves a perfect reader no tie
    assert "5 parts a species, a perfect part reader using them scores 100.0%" in capsys.readouterr().out
    for bad in (0, 6):
        with pytest.raises(ValueError, match="1 to 5 parts"):
            described_parts(DESCRIPTION_SEED, bad)
        with pytest.raises(SystemExit):
            main(["--parts", str(bad), "--out", str(out)])


def test_description_ties_are_the_classes_whose_every_line_is_true_of_another():
    # by hand: zorsaik wren has a red beak and none of the other parts; opsiva wren a red beak, white wing bands, a
    # white eye ring and a black tail tip (world.py's table)
    zorsaik, opsiva = SPECIES_BY_NAME["zorsaik wren"], SPECIES_BY_NAME["opsiva wren"]
    assert (zorsaik.beak, zorsaik.crest, opsiva.beak, opsiva.crest) == ("red", "none", "red", "none")
    lines = {
        "zorsaik wren": ["a bird with a red beak.", "a bird with no crest.", *GENERIC_LINES],
        "opsiva wren": ["the opsiva wren has a black tail tip.", "the opsiva wren is a small songbird."],
    }
    # opsiva wren's images have a red beak and no crest: zorsaik wren's lines are all true of them; not the reverse
    assert description_ties(lines) == {"zorsaik wren": [], "opsiva wren": ["zorsaik wren"]}
    # generic lines alone say nothing, so they tie nobody to them
    assert description_ties({"zorsaik wren": GENERIC_LINES, "opsiva wren": lines["opsiva wren"]}) == {
        "zorsaik wren": [],
        "opsiva wren": [],
    }
    # the shipped descriptions, plain or named, against the world's table part by part
    ties = description_ties(descriptions())
    assert ties == description_ties(descriptions(named=True))
    for c in CLASS_NAMES:
        for d in CLASS_NAMES:
            fits = all(getattr(SPECIES_BY_NAME[c], p) == getattr(SPECIES_BY_NAME[d], p) for p in DESCRIBED_PARTS[d])
            assert (d in ties[c]) == (d != c and fits), (c, d)
    # what is not the toy LLM's is not guessed at
    assert description_ties({"zorsaik wren": ["a red bird."]}) is None
    assert description_ties({"robin": ["a bird with a red beak."]}) is None
    assert description_ties({"zorsaik wren": ["the opsiva wren has a red beak."]}) is None
    assert description_ties({}) is None


def test_write_assets_matches_the_functions(tmp_path: Path):
    write_assets(tmp_path)
    assert json.loads((tmp_path / "classes.json").read_text()) == CLASS_NAMES
    assert json.loads((tmp_path / "descriptions.json").read_text()) == descriptions()
    assert json.loads((tmp_path / "templates.json").read_text()) == TEMPLATES


def test_every_pretraining_caption_carries_species_information():
    rng = np.random.default_rng(0)
    with_parts = 0
    n = 1600
    for k in range(n):
        sp = SPECIES[k % 16]
        caption = pretrain_caption(sp, rng)
        named = [other.name for other in SPECIES if other.name in caption]
        n_parts = caption.count(",") + caption.count(" and ") + (1 if " with " in caption else 0)
        assert named or n_parts >= 2, caption
        assert set(named) <= {sp.name, LOOKALIKE[sp.name]}, caption  # its own name or its look-alike's
        with_parts += " with " in caption
    assert with_parts / n >= 0.7


def test_names_follow_a_long_tail_with_noisy_look_alikes():
    """The commonest name is in ~P_NAME of its species' captions, the rarest almost never; with the "closest"
    rule a share p_lookalike of named captions carry the look-alike's name (none by default)."""
    rng = np.random.default_rng(1)
    ranks = sorted(SPECIES, key=lambda sp: NAME_RANK[sp.name])
    common, rare = ranks[0], ranks[-1]
    n = 4000
    assert P_LOOKALIKE == 0.0
    for p_lookalike in (0.25, P_LOOKALIKE):
        texts = [make_caption(common, rng, p_lookalike=p_lookalike).text for _ in range(n)]
        own = sum(common.name in t for t in texts) / n
        other = sum(LOOKALIKE[common.name] in t for t in texts) / n
        assert abs((own + other) - P_NAME) < 0.03
        assert abs(other / (own + other) - p_lookalike) < 0.04
    assert sum(rare.name in pretrain_caption(rare, rng) for _ in range(n)) / n < 0.01
    rates = [name_rate(sp.name) for sp in ranks]
    assert rates == sorted(rates, reverse=True) and rates[0] / rates[-1] > 100
    for sp in SPECIES:  # a look-alike is a closest species
        nearest = min(attribute_distance(sp, o) for o in SPECIES if o is not sp)
        assert attribute_distance(sp, SPECIES_BY_NAME[LOOKALIKE[sp.name]]) == nearest


def test_the_per_name_rule_makes_every_name_equally_reliable():
    """lookalike_rule="per_name": of the captions that carry a name (counted over the same number of images of
    every species), a share p_lookalike are of that name's look-alike and the rest of its own species."""
    rng = np.random.default_rng(5)
    p, zipf, n = 0.25, 1.0, 3000
    on_own = dict.fromkeys(CLASS_NAMES, 0)
    on_other = dict.fromkeys(CLASS_NAMES, 0)
    for sp in SPECIES:
        for _ in range(n):
            text = make_caption(sp, rng, zipf=zipf, p_lookalike=p, lookalike_rule="per_name").text
            named = [name for name in CLASS_NAMES if name in text]
            assert len(named) <= 1, text
            if named and named[0] == sp.name:
                on_own[sp.name] += 1
            elif named:
                assert LOOKALIKE[named[0]] == sp.name and named[0] in borrowed_names(sp.name), text
                on_other[named[0]] += 1
    for name in CLASS_NAMES:
        assert on_own[name] / n == pytest.approx(name_rate(name, zipf=zipf), abs=0.02)
        carried = on_own[name] + on_other[name]
        assert on_other[name] / carried == pytest.approx(p, abs=4 * (p * (1 - p) / carried) ** 0.5), name
    assert sum(len(borrowed_names(name)) for name in CLASS_NAMES) == len(CLASS_NAMES)


def test_the_commoner_rule_names_a_bird_after_a_commoner_look_alike_only():
    """lookalike_rule="commoner": the own name at name_rate, a commoner look-alike's at p_lookalike * (p_name -
    name_rate), never a rarer name; the commonest species is never mislabelled."""
    rng = np.random.default_rng(4)
    ranks = sorted(SPECIES, key=lambda sp: NAME_RANK[sp.name])
    assert ranks[0].name not in COMMONER_LOOKALIKE
    n = 4000
    for sp in (ranks[0], ranks[3], ranks[-1]):
        texts = [make_caption(sp, rng, p_lookalike=0.5, lookalike_rule="commoner").text for _ in range(n)]
        named = [{o.name for o in SPECIES if o.name in t} for t in texts]
        other = COMMONER_LOOKALIKE.get(sp.name)
        assert all(names <= {sp.name, other} and len(names) <= 1 for names in named)
        assert abs(sum(sp.name in names for names in named) / n - name_rate(sp.name)) < 0.025
        wrong = sum(other in names for names in named) / n if other else 0.0
        assert abs(wrong - 0.5 * (P_NAME - name_rate(sp.name))) < 0.025
    for sp in ranks[1:]:  # the closest among the commoner names
        commoner = [o for o in SPECIES if NAME_RANK[o.name] < NAME_RANK[sp.name]]
        chosen = SPECIES_BY_NAME[COMMONER_LOOKALIKE[sp.name]]
        assert chosen in commoner
        assert attribute_distance(sp, chosen) == min(attribute_distance(sp, o) for o in commoner)
    with pytest.raises(ValueError, match="lookalike_rule"):
        make_caption(ranks[0], rng, lookalike_rule="nearest")


def test_scene_words_are_grounded_phrases_only_when_given():
    rng = np.random.default_rng(2)
    captions = [make_caption(SPECIES[0], rng, scene=Scene(background=4, body_colour=7)) for _ in range(400)]
    with_city = [c for c in captions if "city buildings" in c.text]
    assert 0.35 < len(with_city) / len(captions) < 0.65
    assert all("city buildings" in c.phrases for c in with_city)
    assert all("a teal bird" in c.phrases for c in captions if "a teal bird" in c.text)
    plain = [make_caption(SPECIES[0], rng) for _ in range(200)]
    assert not any("city" in c.text or "teal" in c.text for c in plain)
    vocabulary = caption_vocabulary()  # the shipped run's captions: no scene words
    assert all(w in vocabulary for c in plain for w in re.findall(r"[a-z0-9']+", c.text.lower()))


def test_rerender_erases_only_the_named_part():
    sample = render_bird(5, np.random.default_rng(11))
    again = rerender(sample)
    assert np.array_equal(again.image, sample.image) and np.array_equal(again.part_labels, sample.part_labels)
    for k, part in enumerate(PARTS):
        on_part = sample.part_labels == 1 + k
        if not on_part.any():
            continue
        erased = rerender(sample, (part,))
        changed = (erased.image != sample.image).any(axis=2)
        assert changed.any() and not changed[~on_part].any()  # only that part's pixels differ
        assert not (erased.part_labels == 1 + k).any() and erased.erased == (part,)
        # The bird is still there; only a part that sticks out (beak, crest) takes bird pixels with it.
        assert not (erased.bird_mask ^ sample.bird_mask)[~on_part].any() and erased.bird_mask.sum() > 100
    with pytest.raises(ValueError, match="cannot erase"):
        rerender(sample, ("wings",))


def test_another_framing_draws_the_same_scene_with_a_bigger_bird_and_keeps_it_on_rerender():
    world = render_bird(3, np.random.default_rng(5))
    assert np.array_equal(render_bird(3, np.random.default_rng(5), bird_scale=BIRD_SCALE).image, world.image)
    big = render_bird(3, np.random.default_rng(5), bird_scale=(0.34, 0.36))
    assert big.bird_mask.sum() > 1.3 * world.bird_mask.sum()
    assert np.array_equal(rerender(big).image, big.image) and rerender(big).bird_scale == (0.34, 0.36)


def test_split_samples_found_by_lookup_can_be_rerendered(tmp_path: Path):
    from microclip.toyworld.lookup import ToyWorldIndex

    ensure_split(tmp_path, "test", n_per_class=1, seed=3)
    masks = load_split_masks(tmp_path, "test")
    import cv2

    picture = cv2.cvtColor(cv2.imread(str(tmp_path / "toybirds" / masks.paths[4])), cv2.COLOR_BGR2RGB)
    found = ToyWorldIndex([tmp_path]).lookup(picture)
    assert found is not None and np.array_equal(rerender(found).image, picture)


def test_first_per_class_takes_the_first_rows_of_each_label_in_label_order():
    from microclip.toyworld.dataset import first_per_class

    labels = np.array([2, 0, 2, 1, 0, 2, 0])
    assert first_per_class(labels, 2).tolist() == [1, 4, 3, 0, 2]  # class 0: rows 1, 4; class 1: 3; class 2: 0, 2
    assert first_per_class(labels, 1).tolist() == [1, 3, 0]


def test_erased_part_pairs_erase_each_visible_part_of_the_split_images_once(tmp_path: Path):
    from microclip.toyworld.dataset import load_split_arrays

    ensure_split(tmp_path, "test", n_per_class=1, seed=3)
    masks = load_split_masks(tmp_path, "test")
    images, _ = load_split_arrays(tmp_path, "test")
    rows = np.array([2, 9])
    originals, erased, labels = masks.erased_part_pairs(rows)
    visible = [sorted(set(np.unique(masks.part_labels[r])) - {0}) for r in rows]
    assert len(originals) == len(erased) == len(labels) == sum(len(v) for v in visible)
    assert labels == [int(masks.labels[r]) for r, v in zip(rows, visible) for _ in v]
    at = 0
    for r, parts in zip(rows, visible):
        for part_label in parts:
            assert np.array_equal(originals[at], images[r])  # the stored picture, drawn again
            changed = (erased[at] != originals[at]).any(axis=2)
            assert changed.any() and not changed[masks.part_labels[r] != part_label].any()  # that part only
            at += 1
    unknown = dataclasses.replace(masks, seed=None)
    with pytest.raises(ValueError, match="drawn again"):
        unknown.erased_part_pairs(rows)


def test_erased_set_pairs_erase_every_pair_and_every_part_together(tmp_path: Path):
    import itertools

    ensure_split(tmp_path, "test", n_per_class=1, seed=3)
    masks = load_split_masks(tmp_path, "test")
    rows = np.array([2, 9, 12])
    visible = [sorted(set(np.unique(masks.part_labels[r])) - {0}) for r in rows]
    assert max(len(v) for v in visible) >= 3  # so a pair is not the whole set
    for size in (2, None):
        originals, erased, labels, birds = masks.erased_set_pairs(rows, size)
        sets = [[tuple(v)] if size is None else list(itertools.combinations(v, size)) for v in visible]
        assert len(erased) == len(labels) == sum(len(s) for s in sets)
        at = 0
        for r, row_sets in zip(rows, sets):
            for gone in row_sets:
                changed = (erased[at] != originals[at]).any(axis=2)
                on = np.isin(masks.part_labels[r], gone)
                assert not changed[~on].any()  # nothing off the erased parts moved
                for label in gone:  # and every one of them did
                    assert changed[masks.part_labels[r] == label].any()
                assert labels[at] == int(masks.labels[r]) and birds[at] == r
                at += 1
    assert masks.erased_set_pairs(rows, 1)[2] == masks.erased_part_pairs(rows)[2]


# ---------------------------------------------------------------- cached data


def test_ensure_split_writes_an_imagefolder_and_reuses_it(tmp_path: Path):
    folder = ensure_split(tmp_path, "test", n_per_class=2, seed=5)
    files = sorted(folder.glob("*/*.png"))
    assert [p.parent.name for p in files[::2]] == CLASS_NAMES
    masks = load_split_masks(tmp_path, "test")
    assert masks.part_mask.shape == (32, 64, 64) and masks.labels.tolist() == [i // 2 for i in range(32)]
    mtime = files[0].stat().st_mtime_ns
    assert ensure_split(tmp_path, "test", n_per_class=2, seed=5) == folder
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rewritten
    ensure_split(tmp_path, "test", n_per_class=3, seed=5)  # different settings -> regenerated
    assert len(list(folder.glob("*/*.png"))) == 48
    assert not list((tmp_path / "toybirds").glob(".test-*"))  # no temporary folders left behind


def test_splits_and_pretraining_corpus_do_not_share_images(tmp_path: Path):
    ensure_split(tmp_path, "train", n_per_class=1, seed=0)
    ensure_split(tmp_path, "test", n_per_class=1, seed=0)
    images, _ = load_pretrain_corpus(ensure_pretrain_corpus(tmp_path, 16, seed=0))
    train = sorted((tmp_path / "toybirds" / "train").glob("*/*.png"))
    test = sorted((tmp_path / "toybirds" / "test").glob("*/*.png"))
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(train, test))
    assert len({im.tobytes() for im in images}) == 16


# ---------------------------------------------------------------- tiny CLIP pretraining


def test_registered_tokenizer_has_context_40():
    register_model_configs()
    import open_clip

    assert open_clip.get_tokenizer(TOY_MODEL_NAME)(["a photo of a bird."]).shape == (1, 40)


def _config(out: Path, data: Path, **kw) -> PretrainConfig:
    # As many images as the batch: every step sees the same 16 images (with new captions), the classic
    # "can it fit one batch" check, which a few steps at a high learning rate pass reliably.
    # Three CLIP steps, then three of the dense stage (its warmup of one step, then locality ramping in).
    return PretrainConfig(
        out=str(out),
        steps=3,
        dense_steps=3,
        batch_size=16,
        lr=3e-3,
        warmup_steps=1,
        dense_lr=3e-3,
        dense_warmup_steps=1,
        n_images=16,
        data_root=str(data),
        ckpt_every=2,
        eval_train_per_class=2,
        eval_test_per_class=1,
        threads=1,
        **kw,
    )


def _checkerboard(n: int, cell: int = 4, size: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size]
    board = (((ys // cell) + (xs // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(np.repeat(board[None, :, :, None], 3, axis=3), n, axis=0)


def _changes_along_rows(images: np.ndarray) -> np.ndarray:
    """How often neighbouring pixels differ (black/white), per image: fewer when the board is zoomed in."""
    grey = images[..., 0].astype(np.int16) > 127
    return (grey[:, :, 1:] != grey[:, :, :-1]).mean(axis=(1, 2))


def test_zoom_augmentation_enlarges_the_chosen_images_and_off_draws_nothing_extra():
    board = _checkerboard(8)
    # off: the same draws as a call that never heard of zooming, and shifts/flips keep the cell size
    plain = augment(board, np.random.default_rng(3))
    assert np.array_equal(plain, augment(board, np.random.default_rng(3), zoom_min=1.0, p_zoom=0.5))
    base_rate = _changes_along_rows(plain)
    assert np.allclose(base_rate, base_rate[0], atol=0.02)
    # every image zoomed (side below 1): wider cells, fewer changes
    zoomed = augment(board, np.random.default_rng(3), zoom_min=0.5, p_zoom=1.0)
    assert zoomed.shape == board.shape and zoomed.dtype == np.uint8
    rates = _changes_along_rows(zoomed)
    assert (rates < base_rate * 0.95).all()
    # no square is smaller than zoom_min of the frame: cells at most twice as wide, changes at least half as often
    assert (rates >= base_rate * 0.45).all()
    # p_zoom picks a share of the batch; the rest only shift and flip
    many = augment(_checkerboard(200), np.random.default_rng(4), zoom_min=0.5, p_zoom=0.5)
    share = float((_changes_along_rows(many) < base_rate[0] * 0.95).mean())
    assert 0.3 < share < 0.7


def test_zoom_from_stage_two_leaves_stage_one_batches_as_they_were(six_step_run):
    import open_clip

    out, _ = six_step_run
    data = out.parent / "data"
    images, species = load_pretrain_corpus(ensure_pretrain_corpus(str(data), 16, 0))
    tokenizer = open_clip.get_tokenizer(TOY_MODEL_NAME)
    off = _config(out, data)
    later = _config(out, data, zoom_min=0.5, p_zoom=1.0, zoom_from_stage=2)
    everywhere = _config(out, data, zoom_min=0.5, p_zoom=1.0)
    first, second = 1, off.steps + 1  # a stage-1 step, a stage-2 step
    batch = {
        (name, step): make_batch(step, cfg, images, species, tokenizer)
        for name, cfg in (("off", off), ("later", later), ("everywhere", everywhere))
        for step in (first, second)
    }
    assert torch.equal(batch["later", first].images, batch["off", first].images)
    assert not torch.equal(batch["everywhere", first].images, batch["off", first].images)
    assert torch.equal(batch["later", second].images, batch["everywhere", second].images)
    assert not torch.equal(batch["later", second].images, batch["off", second].images)


@pytest.mark.parametrize("flags", [["--zoom_from_stage", "4"], ["--zoom_min", "0"], ["--p_zoom", "1.5"]])
def test_zoom_settings_out_of_range_are_refused_by_name(flags, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", *flags])
    assert flags[0].removeprefix("--") in capsys.readouterr().err


@pytest.fixture(scope="module")
def six_step_run(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pretrain")
    out = root / "full"
    return out, pretrain(_config(out, root / "data"))


def test_another_pretraining_seed_is_measured_on_the_worlds_own_splits(six_step_run, tmp_path: Path):
    data = six_step_run[0].parent / "data"
    before = {s: (data / "toybirds" / s / "meta.json").read_text() for s in ("train", "test")}
    summary = pretrain(_config(tmp_path / "seed1", data, seed=1))
    assert "zero_shot_names" in summary["metrics"]
    for split, meta in before.items():  # the splits the seed-0 run made are still there, untouched
        assert (data / "toybirds" / split / "meta.json").read_text() == meta
        assert json.loads(meta)["seed"] == 0


def test_short_pretraining_lowers_the_loss(six_step_run):
    _, summary = six_step_run
    assert summary["probe_loss_end"] < summary["probe_loss_start"]


def test_killed_then_resumed_run_matches_an_uninterrupted_run(six_step_run, tmp_path: Path):
    full_out, _ = six_step_run
    data = full_out.parent / "data"
    stopped = pretrain(_config(tmp_path, data, stop_after=4))  # killed inside the dense stage
    assert stopped["step"] == 4 and not (tmp_path / "open_clip_model.safetensors").exists()
    pretrain(_config(tmp_path, data, resume=True))
    full = load_file(str(full_out / "state.safetensors"))
    resumed = load_file(str(tmp_path / "state.safetensors"))
    model_keys = [k for k in full if k.startswith("model.")]
    assert model_keys and all(torch.equal(full[k], resumed[k]) for k in model_keys)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 6


def test_a_finished_stage_one_may_go_on_into_another_stage_two(six_step_run, tmp_path: Path):
    data = six_step_run[0].parent / "data"
    pretrain(_config(tmp_path, data, stop_after=3))  # the end of stage 1
    base = {**_config(tmp_path, data).__dict__, "resume": True}
    options = {"centring_weight": 1.0, "pooled_weight": 1.0, "fg_pool_weight": 1.0}
    summary = pretrain(PretrainConfig(**{**base, "dense_steps": 2, "stop_after": 4, **options}))
    assert summary["step"] == 4 and {"centring", "pooled", "fg_pool"} <= set(summary["part_losses"][-1])
    with pytest.raises(ValueError, match="--resume"):  # inside stage 2 its length is fixed
        pretrain(PretrainConfig(**{**base, "dense_steps": 5}))


def test_a_finished_stage_two_may_go_on_into_the_object_stage(six_step_run, tmp_path: Path):
    full_out, _ = six_step_run
    data = full_out.parent / "data"
    for name in ("state.safetensors", "state.json"):  # the six-step run ended at the end of stage 2
        (tmp_path / name).write_bytes((full_out / name).read_bytes())
    base = {**_config(tmp_path, data).__dict__, "resume": True}
    summary = pretrain(
        PretrainConfig(**{**base, "object_steps": 2, "soap_pool_weight": 1.0, "soap_attention_weight": 1.0})
    )
    parts = json.loads((tmp_path / "state.json").read_text())["part_losses"]
    assert {"object", "background", "cut", "soap_pool", "soap_attention"} <= set(parts[-1]) and "object" not in parts[5]
    assert summary["object_steps"] == 2 and summary["object_stage"]["cut_margin"] == 0.1
    assert summary["object_stage"]["soap_pool_weight"] == summary["object_stage"]["soap_attention_weight"] == 1.0
    assert len(summary["commands"]) == 2  # the run that made stage 1 and 2, and the one that went on
    with pytest.raises(ValueError, match="--resume"):  # inside stage 3 its length is fixed
        pretrain(PretrainConfig(**{**base, "object_steps": 3}))


def test_a_fine_tune_starts_from_its_init_and_records_how_that_was_made(six_step_run, tmp_path: Path):
    full_out, first = six_step_run
    data = full_out.parent / "data"
    parent = json.loads((full_out / "pretrain.json").read_text())
    start = build_model(str(full_out)).state_dict()
    exported = load_file(str(full_out / "open_clip_model.safetensors"))  # what open_clip's local-dir loads
    assert all(torch.equal(start[k], exported[k].float()) for k in exported)
    cfg = _config(tmp_path, data, init=str(full_out), command="fine-tune")
    summary = pretrain(PretrainConfig(**{**cfg.__dict__, "steps": 0, "dense_steps": 1}))
    assert summary["commands"] == parent["commands"] + ["fine-tune"]
    assert summary["init"] == str(full_out)
    assert summary["total_wall_time_s"] == pytest.approx(summary["wall_time_s"] + parent["wall_time_s"], abs=0.11)
    assert "total_wall_time_s" not in first  # a run from random weights has only its own time


def test_the_recorded_objective_lists_the_stage_3_terms_the_weights_switch_on():
    def stage3(**weights) -> str:
        return objective(PretrainConfig(out="", **weights))["stage 3 (object_steps)"]

    default = stage3()
    assert "plus three" in default and "every foreground token" in default and "[FG] SOAP" not in default
    pool = stage3(object_weight=0.0, soap_pool_weight=1.0)
    assert "plus three" in pool and "every foreground token" not in pool and "[FG] SOAP" in pool
    pulled = stage3(soap_attention_weight=1.0, soap_attention_radial=True)
    assert "plus four" in pulled and "lengths only" in pulled
    centred = stage3(soap_attention_weight=1.0, pool_centring_weight=1.0)
    assert "plus five" in centred and "batch mean of what SOAP's value map is applied to" in centred
    assert "plus no losses" in stage3(object_weight=0.0, background_weight=0.0, cut_weight=0.0)
    banded = stage3(boundary_band=1, band_terms="cut")
    assert "left out of the cut term(s)" in banded and "soft band" not in banded
    assert "kept at weight 0.3 instead (a soft band)" in stage3(boundary_band=1, band_terms="cut", band_weight=0.3)
    for bad in (dict(band_weight=0.3), dict(boundary_band=1, band_terms="background", band_weight=0.3)):
        with pytest.raises(ValueError, match="band_weight softens the cut term"):
            PretrainConfig(out="", **bad)
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        PretrainConfig(out="", boundary_band=1, band_terms="cut", band_weight=1.0)


def test_output_folder_loads_with_open_clip(six_step_run):
    import open_clip

    out, summary = six_step_run
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    trained = load_file(str(out / "state.safetensors"))["model.visual.proj"]
    assert torch.allclose(model.visual.proj, trained, atol=1e-2)  # fp16 export of the trained weights
    from PIL import Image

    pixels = preprocess(Image.fromarray(render_bird(0, np.random.default_rng(0)).image))
    assert pixels.shape == (3, 64, 64)
    with torch.no_grad():
        img = model.encode_image(pixels[None])
        txt = model.encode_text(tokenizer(["a bird with a red beak."]))
    assert img.shape == txt.shape == (1, 128)
    assert set(summary["metrics"]) == {"zero_shot_names", "zero_shot_descriptions", "linear_probe"}
    recorded = json.loads((out / "pretrain.json").read_text())["captions"]
    assert recorded == {
        "p_name": P_NAME,
        "name_zipf": NAME_ZIPF,
        "p_lookalike": P_LOOKALIKE,
        "lookalike_rule": "closest",
    }


def test_a_split_another_process_finished_meanwhile_is_kept_not_replaced(tmp_path: Path, monkeypatch):
    """Two training runs started together both generate the train split; the one that finishes second must not
    delete the first one's folder as stale (a run already reading it saw three classes vanish)."""
    import microclip.toyworld.dataset as dataset

    real_render = dataset.render_split_sample
    seen = {}

    def render_while_another_process_finishes(split, label, index, seed, *args, **kwargs):
        if not seen:  # the other process generates the same split, and starts reading it, before we end
            seen["started"] = True
            seen["folder"] = real_ensure(tmp_path, "test", n_per_class=1)
            seen["inode"] = seen["folder"].stat().st_ino
            seen["file"] = next(seen["folder"].rglob("*.png"))
        return real_render(split, label, index, seed, *args, **kwargs)

    real_ensure = dataset.ensure_split
    monkeypatch.setattr(dataset, "render_split_sample", render_while_another_process_finishes)
    # the nested call sees no split yet and generates it; keep it from nesting again
    monkeypatch.setattr(dataset, "split_is_current", _current_after_first_check(dataset.split_is_current))
    folder = dataset.ensure_split(tmp_path, "test", n_per_class=1)
    assert folder == seen["folder"] and folder.stat().st_ino == seen["inode"]  # the same folder, not a new one
    assert seen["file"].is_file() and len(list(folder.rglob("*.png"))) == len(dataset.CLASS_NAMES)
    assert [p.name for p in (tmp_path / "toybirds").iterdir() if p.name.startswith(".")] == []  # no temp left


def _current_after_first_check(real):
    calls = []

    def split_is_current(*args, **kwargs):
        calls.append(args)
        return False if len(calls) == 1 else real(*args, **kwargs)  # the outer call's first look: nothing there

    return split_is_current
