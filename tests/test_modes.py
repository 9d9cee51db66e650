"""eval_mode: a model runs in eval mode and is handed back in the mode it came in, even after an error."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from conftest import make_clip

from microclip.modes import eval_mode
from microclip.toyworld.metrics import encode_images, encode_texts


def _modes(module: torch.nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


@pytest.mark.parametrize("training", [True, False])
def test_eval_inside_the_block_and_the_mode_it_came_in_after(training):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model.train(training)
    with eval_mode(model) as inside:
        assert inside is model and not any(_modes(model))
    assert _modes(model) == [training] * 3


def test_the_mode_comes_back_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2)).train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert all(_modes(model))


@pytest.mark.parametrize("training", [True, False])
def test_toy_world_encoders_leave_the_model_in_its_mode(training):
    clip = make_clip().train(training)
    size = clip.visual.image_size
    images = np.random.default_rng(0).integers(0, 256, size=(2, *_pair(size), 3), dtype=np.uint8)
    features = encode_images(clip, images)
    texts = encode_texts(clip, open_clip.get_tokenizer("Test-ViT-Tiny"), ["a red square.", "a blue bar."])
    assert features.shape[0] == 2 and texts.shape[0] == 2
    assert all(m.training == training for m in clip.modules())


def _pair(size) -> tuple[int, int]:
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)
