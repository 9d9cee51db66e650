"""Training and test views, crop geometry, and per-item seeded augmentation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.functional import to_tensor

from microclip.data.seeded import SeededDataset
from microclip.data.transforms import (
    TrainViews,
    crop_views,
    random_square_box,
    strong_transform,
    test_transform,
    weak_transform,
)

SIZE = 32


def _noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _assert_unit_float(tensor: torch.Tensor) -> None:
    assert tensor.dtype == torch.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0


def test_weak_view_shape_and_range():
    view = weak_transform(SIZE)(_noise_image(50, 40))
    assert view.shape == (3, SIZE, SIZE)
    _assert_unit_float(view)


def test_weak_view_never_flips():
    # An input already S x S: resize and crop are identities, so any difference would be a flip.
    image = _noise_image(SIZE, SIZE)
    expected = to_tensor(image)
    weak = weak_transform(SIZE)
    for seed in range(20):
        torch.manual_seed(seed)
        random.seed(seed)
        assert torch.equal(weak(image), expected)


def test_strong_view_is_timms_recipe_in_unit_range():
    strong = strong_transform(SIZE)
    text = repr(strong)
    assert "RandomResizedCrop" in text and "scale=(0.3, 1.0)" in text and "RandAugment(n=2" in text
    assert "RandomHorizontalFlip(p=0.5)" in text and "RandomErasing" not in text
    for seed in range(5):
        torch.manual_seed(seed)
        random.seed(seed)
        view = strong(_noise_image(48, 40, seed))
        assert view.shape == (3, SIZE, SIZE)
        _assert_unit_float(view)


def _strong_colours(policy: str | None, seeds: int = 30) -> list[torch.Tensor]:
    """The strong view's mean colour of a one-colour picture, once per seed."""
    strong = strong_transform(SIZE, auto_augment=policy)
    image = Image.new("RGB", (48, 40), (200, 40, 90))
    colours = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        random.seed(seed)
        colours.append(strong(image).mean(dim=(1, 2)))
    return colours


def test_strong_view_without_auto_augment_only_crops_and_flips():
    # A crop or a flip of a one-colour picture is that colour; RandAugment's colour ops (invert, solarize, ...) are not.
    truth = torch.tensor([200, 40, 90]) / 255
    for policy in ("none", "None", "", None):
        assert "RandAugment" not in repr(strong_transform(SIZE, auto_augment=policy))
        assert all(torch.allclose(colour, truth, atol=1 / 255) for colour in _strong_colours(policy))
    moved = [
        colour for colour in _strong_colours("rand-m9-mstd0.5-inc1") if not torch.allclose(colour, truth, atol=0.05)
    ]
    assert len(moved) >= 5  # the reference's policy does change colours, so the check above can fail


def test_an_unknown_auto_augment_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown auto-augment policy 'rand-q9'.*'none'"):
        strong_transform(SIZE, auto_augment="rand-q9")
    with pytest.raises(ValueError, match="unknown auto-augment policy 'fancy'"):
        strong_transform(SIZE, auto_augment="fancy")


def test_square_box_side_is_within_alpha_beta_of_the_short_side():
    rng = random.Random(0)
    width, height, alpha, beta = 300, 200, 0.5, 0.9
    sides = []
    for _ in range(500):
        left, top, right, bottom = random_square_box(width, height, alpha, beta, rng)
        side = right - left
        assert bottom - top == side
        assert int(alpha * height) <= side <= beta * height
        assert left >= 0 and right <= width and top >= 0 and bottom <= height
        sides.append(side)
    assert max(sides) - min(sides) > 0.3 * height  # the side really varies over the range
    lefts = [random_square_box(width, height, alpha, beta, rng)[0] for _ in range(200)]
    assert max(lefts) > width - beta * height - 20 and min(lefts) < 20  # positions span the image


def test_square_box_rejects_a_bad_range():
    with pytest.raises(ValueError, match="alpha"):
        random_square_box(10, 10, 0.9, 0.5)


def test_crop_views_shape():
    crops = crop_views(n_crops=5, input_size=SIZE)(_noise_image(60, 45))
    assert crops.shape == (5, 3, SIZE, SIZE)
    _assert_unit_float(crops)


def test_crops_come_from_the_original_image():
    # Left half black, right half white, crops at most 0.4 of the short side: a crop is mostly one colour
    # only if it was cut from the original, not from a resized or flipped view.
    pixels = np.zeros((100, 400, 3), dtype=np.uint8)
    pixels[:, 200:] = 255
    random.seed(0)
    crops = crop_views(n_crops=20, alpha=0.3, beta=0.4, input_size=SIZE)(Image.fromarray(pixels))
    means = crops.mean(dim=(1, 2, 3))
    assert ((means < 0.05) | (means > 0.95)).sum() >= 15


def test_train_views_stack_weak_strong_and_crops():
    views = TrainViews(input_size=SIZE, n_crops=3)(_noise_image(50, 40))
    assert views.shape == (2 + 3, 3, SIZE, SIZE)
    _assert_unit_float(views)


def test_center_test_transform_is_deterministic_and_central():
    pixels = np.zeros((SIZE, 3 * SIZE, 3), dtype=np.uint8)
    pixels[:, SIZE : 2 * SIZE] = 255  # only the middle third is white
    image = Image.fromarray(pixels)
    view = test_transform(SIZE, crop="center")(image)
    assert view.shape == (3, SIZE, SIZE)
    assert view.mean() > 0.95


def test_random_test_transform_varies_with_the_seed():
    image = _noise_image(3 * SIZE, SIZE)
    transform = test_transform(SIZE, crop="random")
    views = []
    for seed in range(4):
        torch.manual_seed(seed)
        views.append(transform(image))
    assert any(not torch.equal(views[0], v) for v in views[1:])


def test_an_exact_nearest_enlargement_reaches_the_model_as_the_image_it_enlarges():
    small = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    enlarged = small.repeat(4, axis=0).repeat(4, axis=1)
    transform = test_transform(SIZE, crop="center")
    assert torch.equal(transform(Image.fromarray(enlarged)), to_tensor(Image.fromarray(small)))
    # one pixel off: not an enlargement, so the bicubic resize reads it (and blurs the blocks' edges)
    enlarged[5, 7] ^= 1
    resized = transform(Image.fromarray(enlarged))
    plain = to_tensor(Image.fromarray(enlarged).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    assert not torch.equal(resized, to_tensor(Image.fromarray(small)))
    assert (resized - plain).abs().max() < 0.05  # torchvision's bicubic, antialiased, against PIL's


def test_unknown_test_crop_is_rejected():
    with pytest.raises(ValueError, match="center"):
        test_transform(SIZE, crop="middle")


# --- SeededDataset ----------------------------------------------------------------------------


def _seeded(seed: int = 0) -> SeededDataset:
    base = [(_noise_image(48, 40, i), i % 3) for i in range(6)]
    return SeededDataset(base, TrainViews(input_size=SIZE, n_crops=2), seed=seed)


def test_seeded_items_are_reproducible_across_instances_and_access_order():
    a, b = _seeded(), _seeded()
    forward = [a[i][0] for i in range(6)]
    backward = {i: b[i][0] for i in reversed(range(6))}
    again = a[3][0]  # a repeated access gives the same views too
    for i in range(6):
        assert torch.equal(forward[i], backward[i])
    assert torch.equal(again, forward[3])


def test_seeded_items_depend_on_epoch_seed_and_index():
    a = _seeded()
    first = a[0][0]
    a.set_epoch(1)
    assert not torch.equal(first, a[0][0])
    assert not torch.equal(first, _seeded(seed=1)[0][0])


def test_seeded_item_returns_label_and_index():
    views, label, index = _seeded()[4]
    assert views.shape == (4, 3, SIZE, SIZE) and label == 1 and index == 4


def test_seeded_access_does_not_disturb_the_global_rngs():
    dataset = _seeded()
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    dataset[0]
    dataset[5]
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_seeded_items_do_not_depend_on_the_worker_count():
    dataset = _seeded()
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=2, shuffle=False, num_workers=workers)
        batches[workers] = torch.cat([views for views, _, _ in loader])
    assert torch.equal(batches[0], batches[2])
