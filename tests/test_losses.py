from __future__ import annotations

import math

import torch

from microclip.losses import FairnessRegulariser, fairness_loss


def test_fairness_minimum_is_two_log_c_at_uniform():
    for classes in (2, 10, 102):
        uniform = torch.full((classes,), 1.0 / classes)
        assert math.isclose(fairness_loss(uniform).item(), 2 * math.log(classes), rel_tol=1e-6)
        skewed = torch.softmax(torch.randn(classes), 0)
        assert fairness_loss(skewed).item() > 2 * math.log(classes)


def test_running_marginal_averages_with_stopgrad():
    regulariser = FairnessRegulariser()
    first = torch.tensor([[10.0, 0.0], [10.0, 0.0]])
    regulariser(first)
    p1 = torch.softmax(first, 1).mean(0)
    second = torch.zeros(2, 2, requires_grad=True)
    loss = regulariser(second)
    expected = 0.5 * (p1 + torch.tensor([0.5, 0.5]))
    assert math.isclose(loss.item(), -2 * expected.log().mean().item(), rel_tol=1e-6)
    loss.backward()
    assert second.grad is not None
    regulariser.reset()
    assert regulariser.running is None
