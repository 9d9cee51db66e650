"""ROAD deletion per branch, against grad-cam's metric called the plain way (one branch, one target per image),
and the toy world's object-cut score on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explainers import build_model, image_shape

from microclip.faithfulness import BRANCHES, deletion_drops, deletion_scores, upsample_maps
from microclip.toyworld.scoring import cut_on_object


class _OneBranch(torch.nn.Module):
    """The plain way: a classifier whose logits are one branch's, for grad-cam's own softmax target."""

    def __init__(self, model, branch: str) -> None:
        super().__init__()
        self.model, self.branch = model, branch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(images).logits, self.branch)


def test_deletion_matches_grad_cam_road_per_branch():
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = build_model()
    size, _ = image_shape(model)
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    n = model.backbone.grid[0] * model.backbone.grid[1]
    maps = np.random.default_rng(1).random((3, n))
    torch.manual_seed(5)  # the imputer's noise
    ours = deletion_drops(model, images, maps, percentiles=(30, 70))
    for branch in BRANCHES:
        plain = _OneBranch(model, branch)
        with torch.no_grad():
            predicted = plain(images).argmax(dim=1).tolist()
        torch.manual_seed(5)
        targets = [ClassifierOutputSoftmaxTarget(c) for c in predicted]
        cams = upsample_maps(maps, model.backbone.grid, size)
        expected = ROADMostRelevantFirstAverage(percentiles=[30, 70])(images, cams, targets, plain)
        np.testing.assert_allclose(ours[branch], -np.asarray(expected), atol=1e-5)


def test_deletion_scores_average_per_map_and_leave_the_mode():
    model = build_model().train()
    size, _ = image_shape(model)
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    n = model.backbone.grid[0] * model.backbone.grid[1]
    maps = {"a": np.random.default_rng(3).random((2, n)), "b": np.random.default_rng(4).random((2, n))}
    torch.manual_seed(0)
    scores = deletion_scores(model, images, maps, percentiles=(50,))
    assert model.training  # handed back in the mode it came in
    torch.manual_seed(0)
    first = deletion_drops(model, images, maps["a"], percentiles=(50,))
    assert set(scores) == {"a", "b"} and set(scores["a"]) == set(BRANCHES)
    assert scores["a"]["fg"] == pytest.approx(float(first["fg"].mean()), abs=1e-6)


def test_upsampled_maps_give_each_patch_its_own_block():
    maps = np.arange(4, dtype=np.float32).reshape(1, 4)
    pixels = upsample_maps(maps, (2, 2), 4)
    assert pixels[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_cut_on_object_by_hand():
    # Four patches: the object covers patch 0 fully, patch 1 by a quarter, patch 2 by a tenth.
    coverage = np.array([[1.0, 0.25, 0.1, 0.0]])
    both = cut_on_object(np.array([[True, True, False, False]]), coverage)
    assert both["pixel_precision"][0] == pytest.approx(0.625)  # (1 + 0.25) / 2
    assert both["iou"][0] == pytest.approx(1.0)  # the object's patches are 0 and 1 (at least a quarter)
    wide = cut_on_object(np.array([[True, False, True, True]]), coverage)
    assert wide["pixel_precision"][0] == pytest.approx(1.1 / 3)
    assert wide["iou"][0] == pytest.approx(1 / 4)  # {0} of {0, 1, 2, 3}
    empty = cut_on_object(np.zeros((1, 4), bool), coverage)
    assert empty["pixel_precision"][0] == 0.0 and empty["iou"][0] == 0.0
