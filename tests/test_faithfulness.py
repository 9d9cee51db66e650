"""ROAD deletion per branch, against grad-cam's metric called the plain way (one branch, one target per image),
and the toy world's object-cut score on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explainers import build_model, image_shape

from microclip.faithfulness import BRANCHES, deletion_drops, deletion_scores, patch_ranks, road_cams, upsample_maps
from microclip.scoring import cut_on_object


class _OneBranch(torch.nn.Module):
    """The plain way: a classifier whose logits are one branch's, for grad-cam's own softmax target."""

    def __init__(self, model, branch: str) -> None:
        super().__init__()
        self.model, self.branch = model, branch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(images).logits, self.branch)


def test_deletion_matches_grad_cam_road_per_branch():
    # On maps without ties the ranks ROAD is handed remove the same pixels as the scores themselves.
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = build_model()
    size, _ = image_shape(model)
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    n = model.backbone.grid[0] * model.backbone.grid[1]
    maps = np.random.default_rng(1).random((3, n))
    ours = deletion_drops(model, images, maps, percentiles=(30, 70), seed=5)  # 5: the imputer's noise
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
    scores = deletion_scores(model, images, maps, percentiles=(50,))
    assert model.training  # handed back in the mode it came in
    first = deletion_drops(model, images, maps["a"], percentiles=(50,))
    assert set(scores) == {"a", "b"} and set(scores["a"]) == set(BRANCHES)
    assert scores["a"]["fg"] == pytest.approx(float(first["fg"].mean()), abs=1e-6)


def test_a_score_is_the_same_on_every_call_and_leaves_the_caller_s_random_stream():
    model = build_model()
    size, _ = image_shape(model)
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(6))
    maps = np.random.default_rng(7).random((2, model.backbone.grid[0] * model.backbone.grid[1]))
    torch.manual_seed(11)
    first = deletion_drops(model, images, maps, percentiles=(50,))
    after_first = torch.rand(3)
    torch.manual_seed(12)
    second = deletion_drops(model, images, maps, percentiles=(50,))
    torch.manual_seed(11)
    assert torch.equal(torch.rand(3), after_first)  # the imputer's noise came from a stream of its own
    other_noise = deletion_drops(model, images, maps, percentiles=(50,), seed=1)
    for branch in BRANCHES:
        np.testing.assert_array_equal(first[branch], second[branch])
    assert any(not np.array_equal(first[b], other_noise[b]) for b in BRANCHES)  # the seed is what fixes it


def test_patch_ranks_keep_the_order_and_break_ties_at_random():
    maps = np.array([[0.3, 0.1, 0.3, 0.9], [2.0, 1.0, 0.0, -1.0]])
    ranks = patch_ranks(maps) * 3  # four patches: ranks 0..3
    assert ranks[0, 1] == 0 and ranks[0, 3] == 3 and sorted(ranks[0, [0, 2]]) == [1, 2]
    assert ranks[1].tolist() == [3, 2, 1, 0]
    assert np.array_equal(patch_ranks(maps), patch_ranks(maps))  # one seed, one order
    tie_orders = {tuple(patch_ranks(maps, seed=s)[0, [0, 2]]) for s in range(20)}
    assert len(tie_orders) == 2  # each seed orders the tie one way; both ways occur


class _Recorder:
    """A grad-cam imputer that keeps the mask of pixels kept (1) and removed (0), and changes nothing."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.kept = mask.numpy().copy()
        return image


def test_a_mask_loses_its_share_of_whole_patches_at_each_percentile():
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveMostRelevantFirst

    grid, size = (8, 8), 32
    mask = np.zeros((1, 64))
    mask[0, [3, 4, 11, 12, 19, 20, 27, 28, 35, 36, 43, 44, 51, 52, 59, 60]] = 1.0  # a quarter of the patches
    image = torch.zeros(3, size, size)
    for percentile, removed_patches in ((50, 32), (75, 16), (90, 7)):
        recorder = _Recorder()
        RemoveMostRelevantFirst(percentile, recorder)(image, torch.from_numpy(road_cams(mask, grid, size)[0]))
        removed = (recorder.kept == 0).reshape(8, 4, 8, 4).all(axis=(1, 3)).reshape(-1)
        assert (recorder.kept == 0).sum() == removed_patches * 16  # whole patches, and only its share of them
        on_mask = removed[mask[0] > 0]
        assert on_mask.all() if removed_patches >= 16 else on_mask.sum() == removed_patches  # the mask's first
    # grad-cam on the mask's own values: the tie at 0 takes every pixel below the background's share
    recorder = _Recorder()
    RemoveMostRelevantFirst(50, recorder)(image, torch.from_numpy(upsample_maps(mask, grid, size)[0]))
    assert (recorder.kept == 0).all()


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
