from __future__ import annotations

import math

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
