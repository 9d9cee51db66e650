"""Recognising toy-world images by their pixels: the bundled examples and generated splits."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from microclip.toyworld.dataset import ensure_split, load_split_masks
from microclip.toyworld.lookup import ToyWorldIndex, canonical_pixels, enlarge
from microclip.toyworld.world import CLASS_NAMES, SPECIES

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ToyWorldIndex:
    return ToyWorldIndex(data_roots=[tmp_path_factory.mktemp("no-data")])


def decoded(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("toybird-*.png")), ids=lambda p: p.stem)
def test_each_bundled_example_is_recognised_with_its_own_render(index, path):
    pixels = decoded(path)
    sample = index.lookup(pixels)
    assert sample is not None
    assert path.stem == "toybird-" + SPECIES[sample.species].name.replace(" ", "-")
    np.testing.assert_array_equal(enlarge(sample.image, pixels.shape[0] // sample.image.shape[0]), pixels)
    assert sample.part_mask.shape == sample.image.shape[:2] and sample.part_mask.any()
    assert (sample.part_mask <= sample.bird_mask).all()
    assert index.lookup(pixels[::4, ::4].copy()) is sample  # the 64-px original is the same image


def test_other_pixels_are_not_recognised(index):
    pixels = decoded(EXAMPLES / "toybird-opsiva-wren.png")
    touched = pixels.copy()
    touched[100, 100, 0] ^= 1  # one channel of one pixel
    assert index.lookup(touched) is None
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95)
    assert index.lookup(np.asarray(Image.open(jpeg).convert("RGB"))) is None
    assert index.lookup(decoded(EXAMPLES / "scene-flower.jpg")) is None
    assert index.lookup(pixels[..., 0]) is None  # not RGB


def test_canonical_pixels_undoes_only_exact_enlargements():
    small = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(canonical_pixels(enlarge(small, 3)), small)
    blurred = cv2.resize(small, (128, 128), interpolation=cv2.INTER_LINEAR)
    assert canonical_pixels(blurred) is blurred


def test_generated_split_images_are_recognised_with_their_masks(tmp_path):
    ensure_split(tmp_path, "test", n_per_class=1, seed=3)
    masks = load_split_masks(tmp_path, "test")
    index = ToyWorldIndex(data_roots=[tmp_path])
    for row in (0, 7, len(masks.paths) - 1):
        bgr = cv2.imread(str(tmp_path / "toybirds" / masks.paths[row]))
        sample = index.lookup(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        assert sample is not None, masks.paths[row]
        assert SPECIES[sample.species].name == CLASS_NAMES[int(masks.labels[row])]
        np.testing.assert_array_equal(sample.part_labels, masks.part_labels[row])
        np.testing.assert_array_equal(sample.bird_mask, masks.bird_mask[row])
    assert ToyWorldIndex(data_roots=[tmp_path / "elsewhere"]).lookup(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) is None
