"""microclip.drift: the label-free drift measures, against loops and hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microclip.drift import agreement, shared_part


def test_shared_part_is_the_mean_cosine_to_the_mean_direction():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(7, 5))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    mean = rows.sum(0) / np.linalg.norm(rows.sum(0))
    expected = sum(float(np.dot(row, mean)) for row in rows) / len(rows)
    assert shared_part(torch.tensor(rows)) == pytest.approx(expected, abs=1e-6)
    assert shared_part(torch.tensor([[0.6, 0.8]] * 4)) == pytest.approx(1.0)
    # two opposite pairs at right angles: the mean direction is the diagonal, each row at 45° to it
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert shared_part(square) == pytest.approx(np.sqrt(0.5))


def test_agreement_counts_rows_answering_as_the_fused_logits():
    fused = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    branch = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
    assert agreement(branch, fused) == 50.0
    assert agreement(fused, fused) == 100.0
