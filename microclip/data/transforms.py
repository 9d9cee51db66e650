"""The reference's image pipelines: weak, strong, multi-crop (training) and test.

All of them return float tensors in [0, 1]. CLIP normalisation is deliberately NOT applied here:
the model applies it (as the reference does in the training step), so every view can be shown or
augmented further without undoing a normalisation first.

Randomness: the crop geometry draws from Python's `random`, timm's RandAugment and
RandomResizedCrop draw from `random`, torchvision's RandomCrop/flip from torch. `SeededDataset`
seeds all three per item, which makes every view a pure function of (seed, epoch, index).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from microclip.data.images import native_pixels
from microclip.data.seeded import SeededDataset  # noqa: F401  (part of this module's public API)

ImageTransform = Callable[[Image.Image], torch.Tensor]

DEFAULT_INPUT_SIZE = 224
DEFAULT_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
NO_AUTO_AUGMENT = "none"  # also accepted: "" and None
TEST_CROPS = ("center", "random")


def _interpolation(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        choices = [m.value for m in InterpolationMode]
        raise ValueError(f"unknown interpolation {name!r}; expected one of {choices}") from None


def weak_transform(input_size: int = DEFAULT_INPUT_SIZE, interpolation: str = "bicubic") -> ImageTransform:
    """Resize(short side) -> RandomCrop(input_size) -> ToTensor; no flip, as in the reference."""
    return T.Compose(
        [T.Resize(input_size, interpolation=_interpolation(interpolation)), T.RandomCrop(input_size), T.ToTensor()]
    )


def strong_transform(
    input_size: int = DEFAULT_INPUT_SIZE,
    scale: tuple[float, float] = (0.3, 1.0),
    auto_augment: str | None = DEFAULT_AUTO_AUGMENT,
    color_jitter: float = 0.0,
    interpolation: str = "bicubic",
) -> ImageTransform:
    """timm's training transform exactly as the reference builds it.

    RandomResizedCrop(scale, ratio 3/4-4/3) -> HorizontalFlip(0.5) -> RandAugment -> ToTensor.
    mean 0 / std 1 make timm's Normalize the identity and, as a side effect the reference also has,
    make RandAugment fill with black instead of the ImageNet mean. Random erasing stays off.
    """
    from timm.data import create_transform  # lazy: importing timm costs seconds, only training needs it

    try:
        return create_transform(
            input_size,
            is_training=True,
            scale=tuple(scale),
            color_jitter=color_jitter,
            auto_augment=auto_augment_policy(auto_augment),
            interpolation=interpolation,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            re_prob=0.0,
        )
    except AssertionError as err:  # timm's only word on a policy string it cannot parse
        raise ValueError(
            f"unknown auto-augment policy {auto_augment!r} ({err}); give a timm policy such as "
            f"{DEFAULT_AUTO_AUGMENT!r} (the reference's) or {NO_AUTO_AUGMENT!r} for crop and flip only"
        ) from None


def auto_augment_policy(name: str | None) -> str | None:
    """timm's policy string for ``name``: None (no auto-augment) for "none", "" or None, else ``name`` as given."""
    if name is None or name.strip().lower() in ("", NO_AUTO_AUGMENT):
        return None
    return name


def random_square_box(
    width: int, height: int, alpha: float = 0.5, beta: float = 0.9, rng: random.Random | None = None
) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) of side U(alpha, beta) * min(width, height), placed uniformly."""
    if not 0.0 < alpha <= beta <= 1.0:
        raise ValueError(f"crop scale range must satisfy 0 < alpha <= beta <= 1, got alpha={alpha}, beta={beta}")
    # Default: the module-level generator, which SeededDataset seeds per item.
    draw = rng if rng is not None else random
    side = max(1, int(draw.uniform(alpha, beta) * min(width, height)))
    left = draw.randint(0, width - side)
    top = draw.randint(0, height - side)
    return left, top, left + side, top + side


class CropViews:
    """K square crops of the original image (see `random_square_box`), each through the weak transform."""

    def __init__(
        self,
        n_crops: int = 8,
        alpha: float = 0.5,
        beta: float = 0.9,
        input_size: int = DEFAULT_INPUT_SIZE,
        interpolation: str = "bicubic",
    ) -> None:
        random_square_box(1, 1, alpha, beta, random.Random(0))  # validate the range now, not per item
        self.n_crops = int(n_crops)
        self.alpha, self.beta = float(alpha), float(beta)
        self.input_size = int(input_size)
        self.weak = weak_transform(input_size, interpolation)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(K, 3, S, S) crops in [0, 1]."""
        return self.crop(image, self.draw_boxes(*image.size))

    def draw_boxes(self, width: int, height: int, rng: random.Random | None = None) -> list[tuple[int, int, int, int]]:
        """The K boxes one call draws (from ``rng``, else Python's ``random``), so a picture's crops can be shown."""
        return [random_square_box(width, height, self.alpha, self.beta, rng) for _ in range(self.n_crops)]

    def crop(self, image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
        """(len(boxes), 3, S, S): each box of ``image`` through the weak transform."""
        if not boxes:
            return torch.empty(0, 3, self.input_size, self.input_size)
        return torch.stack([self.weak(image.crop(box)) for box in boxes])

    def __repr__(self) -> str:
        return f"CropViews(n_crops={self.n_crops}, alpha={self.alpha}, beta={self.beta}, input_size={self.input_size})"


def crop_views(
    n_crops: int = 8, alpha: float = 0.5, beta: float = 0.9, input_size: int = DEFAULT_INPUT_SIZE
) -> CropViews:
    """The reference's multi-crop views: callable PIL image -> (n_crops, 3, S, S)."""
    return CropViews(n_crops, alpha, beta, input_size)


class TrainViews:
    """PIL image -> (2 + K, 3, S, S): [weak, strong, crop_1 .. crop_K], the inputs of one training step."""

    WEAK, STRONG, FIRST_CROP = 0, 1, 2  # row indices in the stacked output

    def __init__(
        self,
        input_size: int = DEFAULT_INPUT_SIZE,
        n_crops: int = 8,
        alpha: float = 0.5,
        beta: float = 0.9,
        scale: tuple[float, float] = (0.3, 1.0),
        auto_augment: str | None = DEFAULT_AUTO_AUGMENT,
        color_jitter: float = 0.0,
        interpolation: str = "bicubic",
    ) -> None:
        self.input_size = int(input_size)
        self.n_crops = int(n_crops)
        self.weak = weak_transform(input_size, interpolation)
        self.strong = strong_transform(input_size, scale, auto_augment, color_jitter, interpolation)
        self.crops = CropViews(n_crops, alpha, beta, input_size, interpolation)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        weak = self.weak(image)  # (3, S, S)
        strong = self.strong(image)  # (3, S, S)
        crops = self.crops(image)  # (K, 3, S, S)
        return torch.cat([weak[None], strong[None], crops], dim=0)

    def __repr__(self) -> str:
        return f"TrainViews(weak={self.weak}, strong={self.strong}, crops={self.crops})"


class UndoNearestEnlargement:
    """A square picture that is an exact k× nearest-neighbour enlargement of a ``size``-px one → that one.

    A bicubic resize back to ``size`` would blur the blocks' edges, so an enlarged copy of a model-sized image (the
    app's toy examples are 4× enlargements, to stay crisp on screen) would reach the model as other pixels than the
    image it stands for. Every other picture passes unchanged.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if width != height or width <= self.size or width % self.size:
            return image  # decided from the size alone: most pictures skip the array copy native_pixels needs
        small = native_pixels(np.asarray(image), self.size)
        return image if small.shape[0] == height else Image.fromarray(small)


def test_transform(
    input_size: int = DEFAULT_INPUT_SIZE, crop: str = "center", interpolation: str = "bicubic"
) -> ImageTransform:
    """[Undo an exact nearest enlargement] -> Resize(short side) -> CenterCrop ("center", clean) or RandomCrop
    ("random", reference) -> ToTensor."""
    if crop not in TEST_CROPS:
        raise ValueError(f"unknown test crop {crop!r}; expected one of {TEST_CROPS}")
    cropper = T.CenterCrop(input_size) if crop == "center" else T.RandomCrop(input_size)
    resize = T.Resize(input_size, interpolation=_interpolation(interpolation))
    return T.Compose([UndoNearestEnlargement(input_size), resize, cropper, T.ToTensor()])


# pytest would otherwise try to collect `test_transform` when a test module imports it by name.
test_transform.__test__ = False  # type: ignore[attr-defined]
