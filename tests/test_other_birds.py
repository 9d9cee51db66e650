"""The web's other birds: every part combination the 16 species do not take, unnamed, as extra pretraining images."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from microclip.toyworld.dataset import (
    ensure_other_birds_corpus,
    ensure_pretrain_corpus,
    image_rng,
    load_pretrain_corpus,
)
from microclip.toyworld.pretrain import PretrainConfig, batch_indices, make_batch, pretrain
from microclip.toyworld.render import render_bird
from microclip.toyworld.text import make_caption, part_phrase
from microclip.toyworld.world import CLASS_NAMES, OTHER_SPECIES, PART_VALUES, PARTS, SPECIES, bird


def _visible_phrases(species) -> set[str]:
    return {phrase for part in PARTS if (phrase := part_phrase(species, part)) is not None}


def test_other_birds_are_every_part_combination_the_species_do_not_take():
    every = set(itertools.product(*(PART_VALUES[p] for p in PARTS)))
    others = [sp.attributes for sp in OTHER_SPECIES]
    assert len(set(others)) == len(others) == len(every) - len(SPECIES)
    assert set(others) | {sp.attributes for sp in SPECIES} == every
    assert all(sp.name == "" for sp in OTHER_SPECIES)
    assert bird(3) is SPECIES[3] and bird(len(SPECIES)) is OTHER_SPECIES[0] and bird(767) is OTHER_SPECIES[-1]
    for index in (-1, len(SPECIES) + len(OTHER_SPECIES)):
        with pytest.raises(ValueError, match="out of range"):
            bird(index)
        with pytest.raises(ValueError, match="out of range"):
            render_bird(index, np.random.default_rng(0))


def test_an_other_birds_caption_names_no_species_and_gives_only_its_own_visible_parts():
    rng = np.random.default_rng(0)
    for k in range(0, len(OTHER_SPECIES), 7):
        species = OTHER_SPECIES[k]
        for _ in range(5):
            caption = make_caption(species, rng)
            assert not any(name in caption.text for name in CLASS_NAMES), caption.text
            assert " with " in caption.text, caption.text  # described by its parts, as unnamed captions are
            assert set(caption.phrases) <= _visible_phrases(species), (species, caption)


def test_the_other_birds_corpus_draws_each_combination_in_turn_from_its_own_stream(tmp_path: Path):
    path = ensure_other_birds_corpus(tmp_path, 20, seed=0)
    images, species = load_pretrain_corpus(path)
    assert np.array_equal(species, len(SPECIES) + np.arange(20))
    assert np.array_equal(images[3], render_bird(int(species[3]), image_rng(0, "other_birds", 3)).image)
    # the painted parts are the other bird's own: its part colours, not a species' (tail tip red vs none, say)
    assert not np.array_equal(images[3], render_bird(3, image_rng(0, "other_birds", 3)).image)
    ones, _ = load_pretrain_corpus(ensure_pretrain_corpus(tmp_path, 16, seed=0))
    assert not {im.tobytes() for im in images} & {im.tobytes() for im in ones}  # no image shared
    mtime = path.stat().st_mtime_ns
    assert ensure_other_birds_corpus(tmp_path, 20, seed=0) == path and path.stat().st_mtime_ns == mtime  # reused
    assert len(load_pretrain_corpus(ensure_other_birds_corpus(tmp_path, 24, seed=0))[1]) == 24


def _config(out: Path, data: Path, **kw) -> PretrainConfig:
    settings = dict(steps=2, dense_steps=1, batch_size=16, warmup_steps=1, dense_warmup_steps=1, n_images=16)
    settings |= dict(data_root=str(data), ckpt_every=1, eval_train_per_class=1, eval_test_per_class=1, threads=1)
    return PretrainConfig(out=str(out), **(settings | kw))


def test_a_batch_grounds_an_other_birds_visible_parts_only():
    images = np.zeros((32, 64, 64, 3), np.uint8)  # the pixels play no part in which phrases a batch names
    species = np.concatenate([np.arange(16), len(SPECIES) + np.arange(16) * 40])
    cfg = _config(Path("unused"), Path("unused"), batch_size=32, steps=0)  # step 0 is in the dense stage
    for step in range(3):
        batch = make_batch(step, cfg, images, species, _no_tokens)
        shown = species[batch_indices(step, cfg, len(images))]
        for image, phrase in zip(batch.image_index.tolist(), batch.phrase_index.tolist()):
            grounded = batch.phrases[phrase]
            assert any(p in grounded for p in _visible_phrases(bird(int(shown[image])))), grounded


def _no_tokens(texts: list[str]) -> list[str]:
    return texts


def test_from_their_stage_on_batches_draw_other_birds_and_before_it_the_16_species_only():
    images = np.broadcast_to(np.arange(48, dtype=np.uint8)[:, None, None, None], (48, 64, 64, 3)).copy()
    species = np.concatenate([np.arange(16), len(SPECIES) + np.arange(32)])
    cfg = _config(
        Path("-"), Path("-"), batch_size=16, steps=4, n_other_birds=32, other_birds_from_stage=2, augment=False
    )
    drawn = {1: set(), 2: set()}
    for step in range(6):  # steps 0-3 are stage 1, 4-5 stage 2
        shown = make_batch(step, cfg, images, species, _no_tokens).images[:, 0, 0, 0] * 255  # each image's index
        drawn[1 if step < 4 else 2] |= set(np.rint(shown.numpy()).astype(int).tolist())
    assert drawn[1] == set(range(16))  # four epochs of the 16 species' images, none of the others
    assert drawn[2] & set(range(16, 48))
    with pytest.raises(ValueError, match="other_birds_from_stage"):
        _config(Path("-"), Path("-"), other_birds_from_stage=4)


def test_pretraining_with_other_birds_records_them_and_a_resume_must_keep_them(tmp_path: Path):
    out, data = tmp_path / "run", tmp_path / "data"
    stopped = pretrain(_config(out, data, n_other_birds=16, stop_after=2))
    assert stopped["step"] == 2 and (data / "toybirds" / "pretrain_other_16_0.npz").is_file()
    with pytest.raises(ValueError, match="--resume"):
        pretrain(_config(out, data, resume=True))  # the same run without the other birds is another run
    pretrain(_config(out, data, n_other_birds=16, resume=True))
    record = json.loads((out / "pretrain.json").read_text())
    assert record["n_other_birds"] == 16 and "16 of the web's other birds" in record["objective"]["corpus"]
