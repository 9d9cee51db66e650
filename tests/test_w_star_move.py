"""bench/w_star_move.py: an adapted model's W* put back at its start, against the model built independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES, load_bench

from microclip.checkpoint import CheckpointMeta, save_adapted
from microclip.data.datasets import build_dataset
from microclip.data.transforms import SeededDataset, test_transform
from microclip.engine import evaluate
from microclip.model import MicroCLIP
from studio.registry import ModelRegistry

DESCRIPTIONS = {c: [f"a picture of a {c}.", f"a {c} on a plain ground."] for c in CLASSES}
TEMPLATES = ["a photo of a {}."]


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory) -> ModelRegistry:
    """The tiny ViT zero-shot, and the same with only W* moved (so W* put back at its start is the zero-shot model)."""
    registry = ModelRegistry("cpu")
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, "zero-shot", TEMPLATES, DESCRIPTIONS)
    model, _, _ = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, CLASSES, TEMPLATES, DESCRIPTIONS)
    with torch.no_grad():
        model.heads.w_star.add_(0.3 * torch.randn(model.heads.w_star.shape, generator=torch.Generator().manual_seed(0)))
    meta = CheckpointMeta(model.base, CLASSES, model.config.to_dict(), templates=TEMPLATES, descriptions=DESCRIPTIONS)
    registry.add_checkpoint(
        save_adapted(tmp_path_factory.mktemp("w") / "a.safetensors", model.adapted_state(), meta), "moved"
    )
    return registry


def test_w_star_put_back_is_the_zero_shot_model_and_its_turn_is_measured_by_hand(registry, image_dataset_root):
    bench = load_bench("w_star_move")
    size = registry.get("zero-shot").model.backbone.image_size
    dataset = SeededDataset(build_dataset(str(image_dataset_root / "shapes"), "test"), test_transform(size), seed=0)
    rows = bench.w_star_rows(registry, ["moved", "zero-shot"], dataset)
    zero_shot = evaluate(registry.get("zero-shot").model, dataset)
    for name in ("moved", "zero-shot"):  # the tower and SOAP are the base's: W* at its start is the zero-shot model
        assert rows[name]["w_star_at_start"] == {b: zero_shot.accuracy(b) for b in zero_shot.predictions}
    assert rows["zero-shot"]["as_it_is"] == rows["zero-shot"]["w_star_at_start"]
    assert rows["zero-shot"]["w_star_turned_degrees"] == pytest.approx(0.0, abs=0.05)
    # the angle by hand: each class's moved row against the normalised mean of its normalised sentence embeddings
    moved = registry.get("moved").model.heads.w_star.detach()
    encode = registry.text_encoder(registry.get("moved").model.base)
    angles = []
    for i, c in enumerate(CLASSES):
        start = F.normalize(F.normalize(encode(DESCRIPTIONS[c]), dim=-1).mean(0), dim=-1)
        cos = float(F.normalize(moved[i], dim=-1) @ start)
        angles.append(math.degrees(math.acos(min(1.0, cos))))
    assert rows["moved"]["w_star_turned_degrees"] == pytest.approx(float(np.mean(angles)), abs=1e-3)
    assert rows["moved"]["w_star_turned_degrees"] > 1.0
    # only W* moved: its W* on the zero-shot tower is the model itself; a zero-shot model has no such cell
    assert rows["moved"]["only_w_star_adapted"] == rows["moved"]["as_it_is"]
    assert rows["zero-shot"]["only_w_star_adapted"] is None
