"""bench/fg_shift.py: the shared shift in [FG], checked on hand-built embeddings and on the shipped toy model's
epochs against the model's own [FG] logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_bench, shipped_start_and_last_epoch

from microclip.checkpoint import load_model
from microclip.toyworld.dataset import render_split_sample
from microclip.toyworld.world import CLASS_NAMES, PARTS
from microclip.uncertainty import clustered_gap

fg_shift = load_bench("fg_shift")
SAVED = shipped_start_and_last_epoch()  # [(0, start), (last, its file)]
LAST = SAVED[-1][0] if SAVED else None


def test_taking_away_a_shared_shift_restores_the_answers():
    # Four orthonormal class directions; every image of class y is e_y, then every image moves by 3·e_0.
    classes = torch.eye(4, 8)
    labels = np.array([0, 1, 2, 3, 1, 2])
    start = classes[labels]
    shift = 3.0 * classes[0]
    now = start + shift
    # By hand: class y ≠ 0 scores 1 on its own row and 3 on class 0's, so only the class-0 images stay right.
    assert fg_shift.accuracy(now, classes, labels) == pytest.approx(100.0 / 6)
    measured_shift = now.mean(0) - start.mean(0)
    assert torch.allclose(measured_shift, shift)
    assert fg_shift.accuracy(fg_shift.unshifted(now, measured_shift), classes, labels) == 100.0


def test_answer_spread_counts_silent_classes_and_the_commonest_share():
    assert fg_shift.answer_spread(np.array([0, 0, 0, 2]), 4) == {"never_named": 2, "top_share": 75.0}
    assert fg_shift.answer_spread(np.array([0, 1, 2]), 3) == {"never_named": 0, "top_share": pytest.approx(100 / 3)}


def test_nearest_mean_accuracy_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    train_labels = np.array([5, 5, 9, 9])  # labels need not be 0..C-1
    test = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.71, 0.70]])
    # class 5's mean direction is (0.949, 0.316), class 9's (0.316, 0.949): the third point is nearer class 5.
    assert fg_shift.nearest_mean_accuracy(train, train_labels, test, np.array([5, 9, 5])) == 100.0
    assert fg_shift.nearest_mean_accuracy(train, train_labels, test, np.array([5, 9, 9])) == pytest.approx(200 / 3)


def _rendered(split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    samples = [(render_split_sample(split, c, i, seed=0), c) for c in range(len(CLASS_NAMES)) for i in range(per_class)]
    return np.stack([s.image for s, _ in samples]), np.array([c for _, c in samples])


@pytest.mark.skipif(not SAVED, reason="the toy model's epochs are not shipped")
def test_rows_on_the_shipped_epochs_match_the_models_own_fg_answers():
    test, train = _rendered("test", 2), _rendered("train", 2)
    rows = fg_shift.measure_epochs(SAVED, test, train)
    assert [row["epoch"] for row in rows] == [0, LAST]
    assert rows[0]["fg_unshifted"] == rows[0]["fg"]  # nothing has moved at the start
    images = torch.from_numpy(test[0]).permute(0, 3, 1, 2).float() / 255.0
    for row, (_, path) in zip(rows, SAVED):
        with torch.no_grad():
            logits = load_model(path).eval()(images).logits
        assert row["fg"] == pytest.approx(100.0 * float((logits.fg.argmax(1).numpy() == test[1]).mean()))
        assert row["cls"] == pytest.approx(100.0 * float((logits.cls.argmax(1).numpy() == test[1]).mean()))
        assert 0.0 <= row["shared_fg"] <= 1.0 and -1.0 <= row["cos_fg_cls"] <= 1.0
    # both branches' shifts, by hand from the two models' train embeddings
    train_images = torch.from_numpy(train[0]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        ends = [load_model(path).eval()(train_images) for _, path in SAVED]
    f_shift = ends[1].fg_embed.mean(0) - ends[0].fg_embed.mean(0)
    g_shift = ends[1].tokens.cls_embed.mean(0) - ends[0].tokens.cls_embed.mean(0)
    assert rows[1]["shift_fg"] == pytest.approx(float(f_shift.norm()), abs=1e-5)
    assert rows[1]["shift_cls"] == pytest.approx(float(g_shift.norm()), abs=1e-5)
    assert rows[1]["cos_shifts"] == pytest.approx(float(f_shift @ g_shift / f_shift.norm() / g_shift.norm()), abs=1e-4)
    assert rows[0]["shift_fg"] == 0.0 and rows[0]["cos_shifts"] is None


def _erased_pairs() -> tuple[list, list, list, list]:
    """Two parts of three test birds, each erased in turn: (originals, erased, labels, birds)."""
    from microclip.toyworld.render import rerender

    samples = [(render_split_sample("test", c, 0, seed=0), c) for c in (1, 6, 11)]
    pairs = ([], [], [], [])
    for bird, (sample, label) in enumerate(samples):
        for part in sorted({int(p) for p in np.unique(sample.part_labels) if p})[:2]:
            pairs[0].append(sample.image)
            pairs[1].append(rerender(sample, (PARTS[part - 1],)).image)
            pairs[2].append(label)
            pairs[3].append(bird)
    return pairs


@pytest.mark.skipif(not SAVED, reason="the toy model's epochs are not shipped")
def test_every_epochs_row_carries_its_own_models_part_removal():
    test, train = _rendered("test", 1), _rendered("train", 1)
    pairs = _erased_pairs()
    rows = fg_shift.measure_epochs(SAVED, test, train, pairs=pairs)
    for row, (_, path) in zip(rows, SAVED):
        model = load_model(path).eval()
        own = fg_shift.part_removal(model, torch.zeros(model.heads.w_star.shape[1]), pairs)
        for branch in ("cls", "fg", "fused"):  # these do not depend on the shift
            assert row["part_removal"][branch] == pytest.approx(own[branch], abs=1e-4)
        assert row["part_removal"]["gap_by_bird"]["gap"] == pytest.approx(own["gap_by_bird"]["gap"], abs=1e-4)
    assert rows[0]["part_removal"] != rows[1]["part_removal"]  # each epoch's own model, not the last one's


@pytest.mark.skipif(not SAVED, reason="the toy model's epochs are not shipped")
def test_part_removal_matches_the_models_own_probabilities():
    pairs = _erased_pairs()
    model = load_model(SAVED[-1][1]).eval()
    shift = torch.full((model.heads.w_star.shape[1],), 0.05)
    drops = fg_shift.part_removal(model, shift, pairs)

    def true_class(pictures, branch):
        with torch.no_grad():
            logits = getattr(
                model(torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 255.0).logits, branch
            )
        return logits.softmax(-1)[torch.arange(len(pairs[2])), torch.as_tensor(pairs[2])]

    own = {b: 100.0 * (true_class(pairs[0], b) - true_class(pairs[1], b)).numpy() for b in ("cls", "fg", "fused")}
    for branch, drop in own.items():
        assert drops[branch] == pytest.approx(float(drop.mean()), abs=1e-3)  # points; float32 sums in another order
    # [FG]'s drop minus [CLS]'s, whole birds resampled: the same interval as from the model's own drops
    by_bird = clustered_gap(own["fg"], own["cls"], np.asarray(pairs[3]))
    assert drops["gap_by_bird"]["gap"] == pytest.approx(drops["fg"] - drops["cls"], abs=1e-4)
    assert drops["gap_by_bird"]["groups"] == 3 and drops["gap_by_bird"]["items"] == 6
    assert drops["gap_by_bird"]["low"] == pytest.approx(by_bird.low, abs=1e-3)
    assert drops["gap_by_bird"]["high"] == pytest.approx(by_bird.high, abs=1e-3)
    assert drops["fg_unshifted"] != pytest.approx(drops["fg"])  # the shift is taken away before the softmax
    unmoved = fg_shift.part_removal(model, torch.zeros_like(shift), pairs)["fg_unshifted"]
    assert unmoved == pytest.approx(drops["fg"], abs=1e-3)  # re-normalising a unit vector moves it by rounding only


@pytest.mark.skipif(not SAVED, reason="the toy model's epochs are not shipped")
def test_value_map_parts_score_the_trained_model_with_each_value_map_and_leave_it_as_it_was():
    test, train = _rendered("test", 2), _rendered("train", 2)
    start, model = (load_model(path).eval() for _, path in SAVED)
    before = model.soap.value_proj.weight.clone()
    parts = fg_shift.value_map_parts(start, model, test, train)
    assert torch.equal(model.soap.value_proj.weight, before)
    row = fg_shift.measure_epochs(SAVED, test, train)
    assert parts["as_trained"]["fg"] == row[1]["fg"]
    assert parts["as_trained"]["shift_fg"] == pytest.approx(row[1]["shift_fg"], abs=1e-6)
    # by hand: the trained model with the start's value map (the identity), everything else as trained
    images = lambda split: torch.from_numpy(split[0]).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    with torch.no_grad():
        model.soap.value_proj.weight.copy_(torch.eye(len(before)))
        logits = model(images(test)).logits.fg
        moved = model(images(train)).fg_embed.mean(0) - start(images(train)).fg_embed.mean(0)
    assert parts["at_start"]["fg"] == pytest.approx(100.0 * float((logits.argmax(1).numpy() == test[1]).mean()))
    assert parts["at_start"]["shift_fg"] == pytest.approx(float(moved.norm()), abs=1e-5)
    assert 0.0 < parts["mean_part_share"] < 1.0
    # and with SOAP's query and key maps at the start too (identities): only the LayerNorms moved
    with torch.no_grad():
        for proj in (model.soap.query_proj, model.soap.key_proj):
            proj.weight.copy_(torch.eye(len(before)))
        logits = model(images(test)).logits.fg
        moved = model(images(train)).fg_embed.mean(0) - start(images(train)).fg_embed.mean(0)
    assert parts["soap_at_start"]["fg"] == pytest.approx(100.0 * float((logits.argmax(1).numpy() == test[1]).mean()))
    assert parts["soap_at_start"]["shift_fg"] == pytest.approx(float(moved.norm()), abs=1e-5)
    assert parts["soap_at_start"]["shift_fg"] < parts["at_start"]["shift_fg"]
