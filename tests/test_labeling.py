from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from microclip.labeling import aggregate, crop_composite, fuse_for_labels


def test_crop_composite_softmax_weights():
    crops = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    anchor = torch.tensor([[1.0, 0.0]])
    a1, a2 = math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)
    expected = F.normalize(torch.tensor([[a1, a2]]), dim=-1)
    torch.testing.assert_close(crop_composite(crops, anchor), expected)


def test_fuse_for_labels_renormalises_the_half_half_mix():
    g = torch.tensor([[1.0, 0.0]])
    f = torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(fuse_for_labels(g, f), torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


def test_pseudo_labels_hand_made_case():
    # Two classes along the axes. Static branch prefers class 0, dynamic prefers class 1.
    w_llm = torch.eye(2)
    w_star_hat = torch.eye(2)
    composite = torch.tensor([[0.8, 0.6]])  # s = [0.8, 0.6]
    fused = torch.tensor([[0.0, 1.0]])  # d = [0.0, 1.0]
    half = aggregate(composite, fused, w_llm, w_star_hat, gamma=0.5)  # [0.4, 0.8] → 1
    static = aggregate(composite, fused, w_llm, w_star_hat, gamma=0.9)  # [0.72, 0.64] → 0
    assert half.labels.tolist() == [1] and static.labels.tolist() == [0]
    torch.testing.assert_close(half.confidence, torch.tensor([0.8]))
    assert half.static_labels.tolist() == [0] and half.dynamic_labels.tolist() == [1]


def test_label_prior_takes_the_labels_running_marginal_out_of_their_scores_by_hand():
    from microclip.labeling import LabelPrior

    # three images all nearer class 0 than class 1: the plain argmax names class 1 never
    scores = torch.tensor([[0.50, 0.48], [0.52, 0.49], [0.51, 0.50]])
    prior = LabelPrior(momentum=0.5)
    adjusted = prior.debiased(scores, strength=1.0)
    probs = [
        [math.exp(100 * a) / (math.exp(100 * a) + math.exp(100 * b)) for a, b in [row]][0] for row in scores.tolist()
    ]
    mean0 = sum(probs) / 3  # the first batch's marginal is the prior
    expected = scores - torch.log(torch.tensor([mean0, 1 - mean0])) / 100
    torch.testing.assert_close(adjusted, expected)
    assert scores.argmax(1).tolist() == [0, 0, 0] and adjusted.argmax(1).tolist() == [0, 0, 1]  # the closest call moves
    # the next batch moves the prior by (1 − momentum) toward its own marginal; strength scales the adjustment
    second = torch.tensor([[0.0, 0.02]])
    p1 = math.exp(2) / (1 + math.exp(2))
    mean = 0.5 * torch.tensor([mean0, 1 - mean0]) + 0.5 * torch.tensor([1 - p1, p1])
    torch.testing.assert_close(prior.debiased(second, strength=2.0), second - 2 * torch.log(mean) / 100)
    torch.testing.assert_close(prior.mean, mean)


def test_a_label_prior_from_the_labels_own_shares_by_hand():
    from microclip.labeling import LabelPrior

    scores = torch.tensor([[0.50, 0.48], [0.52, 0.49], [0.51, 0.50]])
    prior = LabelPrior(momentum=0.5, source="labels")
    # the first batch is adjusted by its own soft marginal, as with source="scores" ...
    first = prior.label(scores, strength=1.0)
    assert first.tolist() == LabelPrior(momentum=0.5).label(scores, strength=1.0).tolist() == [0, 0, 1]
    soft = (100 * scores).softmax(1).mean(0)
    # ... and then the prior takes in the labels' shares: two of three named class 0
    mean = 0.5 * soft + 0.5 * torch.tensor([2 / 3, 1 / 3])
    torch.testing.assert_close(prior.mean, mean)
    # the next batch is adjusted by that prior before it moves again, by its own labels (not its scores)
    second = torch.tensor([[0.50, 0.49], [0.50, 0.40]])
    adjusted = second - 2.0 * mean.log() / 100
    labels = prior.label(second, strength=2.0)
    assert torch.equal(labels, adjusted.argmax(1))
    shares = torch.bincount(labels, minlength=2).float() / 2
    torch.testing.assert_close(prior.mean, 0.5 * mean + 0.5 * shares)
    with pytest.raises(ValueError, match="source is one of"):
        LabelPrior(source="counts")


def test_a_class_the_labels_never_name_is_raised_until_they_do():
    from microclip.labeling import LabelPrior

    # every image's runner-up is class 2, a point behind: its soft marginal is near the others' (0.27 against 0.37),
    # so at λ = 1 the scores' marginal never lifts it over the point; the labels' own shares (it gets none) fall until
    # the labels name it
    scores = torch.tensor([[0.50, 0.40, 0.49]] * 4 + [[0.40, 0.50, 0.49]] * 4)
    by_scores, by_labels = LabelPrior(momentum=0.9), LabelPrior(momentum=0.9, source="labels")
    named = {"scores": [], "labels": []}
    for _ in range(10):
        named["scores"].append(int((by_scores.label(scores, 1.0) == 2).sum()))
        named["labels"].append(int((by_labels.label(scores, 1.0) == 2).sum()))
    assert sum(named["scores"]) == 0
    assert named["labels"][0] == 0 and sum(named["labels"]) > 0
