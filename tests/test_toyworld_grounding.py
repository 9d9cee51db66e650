"""The toy CLIP's dense objective: phrase grounding, the pasted-context locality views, caption phrases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from microclip.toyworld.grounding import grouped_patch_embeddings, phrase_grounding_loss
from microclip.toyworld.pretrain import PATCH, PretrainConfig, paste_blocks, paste_lattice
from microclip.toyworld.text import ALL_PART_PHRASES, make_caption, part_phrase
from microclip.toyworld.world import PARTS, SPECIES


def slow_grounding_loss(patches, image_index, phrase_index, phrases, pool_t=0.1, t=0.05):
    """The loss of grounding.py, one (image, phrase) pair at a time."""

    def grouped(i, q):
        weights = torch.softmax(torch.stack([patches[i, j] @ phrases[q] for j in range(patches.shape[1])]) / pool_t, 0)
        return F.normalize(sum(weights[j] * patches[i, j] for j in range(patches.shape[1])), dim=0)

    named = set(zip(image_index.tolist(), phrase_index.tolist()))
    which_phrase, which_image = [], []
    for i, p in zip(image_index.tolist(), phrase_index.tolist()):
        own = grouped(i, p)
        logits = torch.stack([own @ phrases[q] for q in range(len(phrases))]) / t
        which_phrase.append(-torch.log_softmax(logits, 0)[p])
        others = [k for k in range(patches.shape[0]) if k == i or (k, p) not in named]
        scores = torch.stack([grouped(k, p) @ phrases[p] for k in others]) / t
        which_image.append(-torch.log_softmax(scores, 0)[others.index(i)])
    return 0.5 * (torch.stack(which_phrase).mean() + torch.stack(which_image).mean())


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_grouped_embeddings_are_similarity_weighted_means():
    patches, phrases = _unit(2, 5, 4), _unit(3, 4, seed=1)
    grouped = grouped_patch_embeddings(patches, phrases, pool_temperature=0.5)
    for b in range(2):
        for q in range(3):
            weights = torch.softmax(patches[b] @ phrases[q] / 0.5, 0)
            torch.testing.assert_close(grouped[b, q], F.normalize(weights @ patches[b], dim=0))


def test_loss_matches_a_pair_by_pair_transcription():
    patches, phrases = _unit(4, 6, 8), _unit(5, 8, seed=2)
    image_index = torch.tensor([0, 0, 1, 2, 3, 3])
    phrase_index = torch.tensor([1, 3, 1, 0, 4, 2])
    fast = phrase_grounding_loss(patches, image_index, phrase_index, phrases)
    torch.testing.assert_close(fast, slow_grounding_loss(patches, image_index, phrase_index, phrases))


def _world(kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four images, each showing two of four phrases (orthonormal embeddings) on 6 patches.

    "local": one patch per shown phrase says exactly that phrase, the rest say nothing (a background
    direction); "global": every patch says the mixture of the image's phrases; "slots": patch k says
    phrase k in every image, whatever the image shows (the cheat the image contrast rules out)."""
    phrases = torch.eye(5)[:4]  # dimension 4 is "background"
    shown = [(0, 1), (2, 3), (0, 2), (1, 3)]
    background = torch.eye(5)[4]
    patches = background.repeat(4, 6, 1)
    for i, (a, b) in enumerate(shown):
        if kind == "local":
            patches[i, 1], patches[i, 4] = phrases[a], phrases[b]
        elif kind == "global":
            patches[i] = F.normalize(phrases[a] + phrases[b], dim=0)
        else:
            patches[i, :4] = phrases
    image_index = torch.tensor([i for i, pair in enumerate(shown) for _ in pair])
    phrase_index = torch.tensor([p for pair in shown for p in pair])
    return patches, image_index, phrase_index, phrases


def test_local_patches_win_over_global_ones_and_over_image_independent_slots():
    local, glob, slots = (phrase_grounding_loss(*_world(kind)) for kind in ("local", "global", "slots"))
    assert local < 0.01
    # everywhere-mixed patches cannot tell an image's two phrases apart: the phrase term is log 2
    assert glob > 0.5 * math.log(2) - 1e-3
    # slots tell phrases apart but not images: every image scores the same, so the image term is
    # the log of (1 + the images whose caption does not name p) = log 3 here
    assert slots > 0.5 * math.log(3) - 1e-3


def test_no_phrases_gives_zero_loss_with_a_gradient_path():
    patches = _unit(2, 3, 4).requires_grad_()
    loss = phrase_grounding_loss(
        patches, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), _unit(1, 4)
    )
    assert loss.item() == 0.0
    loss.backward()


def test_pasted_blocks_are_patch_aligned_and_come_from_the_next_image():
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pasted, intact = paste_blocks(images, np.random.default_rng(1))
    grid = 64 // PATCH
    for i in range(5):
        replaced = ~intact[i].view(grid, grid)
        assert 2 <= replaced.any(1).sum() and 2 <= replaced.any(0).sum() and not replaced.all()
        pixels = replaced.repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1)
        assert torch.equal(pasted[i][:, pixels], images[(i + 1) % 5][:, pixels])
        assert torch.equal(pasted[i][:, ~pixels], images[i][:, ~pixels])


def test_a_pasted_lattice_keeps_every_second_patch_and_replaces_all_its_neighbours():
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pasted, intact = paste_lattice(images, np.random.default_rng(2))
    grid = 64 // PATCH
    offsets = set()
    for i in range(6):
        kept = intact[i].view(grid, grid)
        rows, cols = (int(x) for x in kept.nonzero()[0])  # the first kept patch fixes the lattice
        offsets.add((rows % 2, cols % 2))
        for r in range(grid):
            for c in range(grid):
                block = pasted[i][:, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH]
                on_lattice = (r % 2, c % 2) == (rows % 2, cols % 2)
                assert bool(kept[r, c]) == on_lattice
                source = images[i] if on_lattice else images[(i + 1) % 6]
                assert torch.equal(block, source[:, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH])
    assert len(offsets) > 1  # the lattice is drawn per image
    with pytest.raises(ValueError, match="locality_paste"):
        PretrainConfig(out="", locality_paste="checkerboard")
    from microclip.toyworld.pretrain import objective

    stage2 = "stage 2 (dense_steps)"  # the record says which locality the run trained
    assert "lattice" in objective(PretrainConfig(out="", locality_paste="lattice"))[stage2]
    assert "lattice" not in objective(PretrainConfig(out=""))[stage2]
    assert "overlap" in objective(PretrainConfig(out="", grounding_overlap_weight=1.0))[stage2]
    assert "overlap" not in objective(PretrainConfig(out=""))[stage2]


@pytest.mark.parametrize("seed", range(3))
def test_caption_phrases_are_the_visible_parts_it_names(seed):
    rng = np.random.default_rng(seed)
    for species in SPECIES:
        caption = make_caption(species, rng)
        visible = {part_phrase(species, p) for p in PARTS} - {None}
        assert set(caption.phrases) <= visible
        assert all(phrase in caption.text for phrase in caption.phrases)
        unlisted = [
            p
            for p in visible - set(caption.phrases)
            if p in caption.text and not any(p in other for other in caption.phrases)
        ]
        assert not unlisted, (caption, unlisted)
    assert len(ALL_PART_PHRASES) == len(set(ALL_PART_PHRASES)) == 15


def test_region_grounding_matches_a_loop_over_pairs():
    from microclip.toyworld.grounding import region_grounding_loss

    torch.manual_seed(0)
    patches = torch.nn.functional.normalize(torch.randn(4, 6, 8), dim=-1)
    phrases = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    kind = torch.tensor([0, 0, 1, 1])
    named = [(0, 0), (1, 1), (2, 0), (0, 2), (3, 3), (1, 2)]
    image_index, phrase_index = (torch.tensor(c) for c in zip(*named))
    got = region_grounding_loss(patches, image_index, phrase_index, kind, phrases, temperature=0.1)
    score = lambda b, q: float(patches[b].mean(0) @ phrases[q]) / 0.1  # noqa: E731  the mean patch similarity
    terms_image, terms_phrase = [], []
    for b, q in named:
        rivals = [
            k for k in range(4) if k != b and any(k2 == k and q2 != q and kind[q2] == kind[q] for k2, q2 in named)
        ]
        logits = torch.tensor([score(b, q)] + [score(k, q) for k in rivals])
        terms_image.append(-torch.log_softmax(logits, 0)[0])
        same = [p for p in range(4) if kind[p] == kind[q]]
        logits = torch.tensor([score(b, p) for p in same])
        terms_phrase.append(-torch.log_softmax(logits, 0)[same.index(q)])
    expected = 0.5 * (torch.stack(terms_image).mean() + torch.stack(terms_phrase).mean())
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_the_overlap_of_two_named_parts_pools_matches_a_hand_computed_case():
    from microclip.toyworld.grounding import grounding_overlap_loss

    # Two images, three patches, three phrases (unit vectors along the axes, so a patch's cosine is its coordinate).
    phrases = torch.eye(3)
    patches = F.normalize(
        torch.tensor(
            [
                [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],  # image 0: one patch answers phrases 0 and 1
                [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],  # image 1: each phrase its own patch
            ]
        ),
        dim=-1,
    )
    t = 0.1
    image_index, phrase_index = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    loss = grounding_overlap_loss(patches, image_index, phrase_index, phrases, t)
    expected = []
    for image in (0, 1):
        w = [torch.softmax(patches[image] @ phrases[p] / t, dim=0) for p in (0, 1)]
        expected += [float((w[0] * w[1]).sum())] * 2  # the pair (0, 1) and the pair (1, 0)
    assert loss.item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert expected[0] > 0.9 and expected[2] < 0.01  # the shared patch overlaps, distinct patches do not
    alone = grounding_overlap_loss(patches, torch.tensor([0, 1]), torch.tensor([0, 1]), phrases, t)
    assert alone.item() == 0.0  # no caption names two parts
