"""bench/class_margins.py: each class's lead over its best other class, by hand and on the shipped toy epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_bench, shipped_start_and_last_epoch

from microclip.checkpoint import load_model
from microclip.toyworld.dataset import render_split_sample
from microclip.toyworld.world import CLASS_NAMES

class_margins = load_bench("class_margins")
SAVED = shipped_start_and_last_epoch()


def test_margins_rivals_and_right_shares_by_hand():
    logits = torch.tensor(
        [
            [5.0, 3.0, 1.0],  # class 0, right by 2 over class 1
            [2.0, 4.0, 0.0],  # class 0, wrong: class 1 leads by 2
            [0.0, 1.0, 7.0],  # class 2, right by 6 over class 1
            [3.0, 0.0, 2.5],  # class 2, wrong: class 0 leads by 0.5
        ]
    )
    out = class_margins.class_margins(logits, np.array([0, 0, 2, 2]), ["a", "b", "c"])
    assert set(out) == {"a", "c"}  # a class without images has no row
    assert out["a"] == {"margin": 0.0, "right": 50.0, "rival": "b", "rival_share": 100.0}
    assert out["c"]["margin"] == pytest.approx((6.0 - 0.5) / 2) and out["c"]["right"] == 50.0
    assert out["c"]["rival_share"] == 50.0 and out["c"]["rival"] in {"a", "b"}


def test_a_tie_is_not_right():
    out = class_margins.class_margins(torch.tensor([[1.0, 1.0]]), np.array([0]), ["a", "b"])
    assert out["a"]["margin"] == 0.0 and out["a"]["right"] == 0.0


@pytest.mark.skipif(not SAVED, reason="the toy model's epochs are not shipped")
def test_on_a_shipped_epoch_the_right_share_is_the_models_own_accuracy():
    samples = [(render_split_sample("train", c, i, seed=0).image, c) for c in range(len(CLASS_NAMES)) for i in range(2)]
    images, labels = np.stack([s for s, _ in samples]), np.array([c for _, c in samples])
    model = load_model(SAVED[-1][1])
    logits = class_margins.branch_logits(model, images)
    with torch.no_grad():
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        own = model(batch).logits
    for branch, expected in (("fused", own.fused), ("cls", own.cls), ("fg", own.fg)):
        rows = class_margins.class_margins(logits[branch], labels, CLASS_NAMES)
        called = expected.argmax(1).numpy()
        for c, name in enumerate(CLASS_NAMES):
            assert rows[name]["right"] == pytest.approx(100.0 * float((called[labels == c] == c).mean()))
            top2 = expected[torch.from_numpy(labels == c)].topk(2, dim=1).values
            # the lead over the best other class is the gap between the two largest logits when right
            mask = called[labels == c] == c
            own_logit = expected[torch.from_numpy(labels == c), c]
            best_other = torch.where(torch.from_numpy(mask), top2[:, 1], top2[:, 0])
            assert rows[name]["margin"] == pytest.approx(float((own_logit - best_other).mean()), abs=1e-4)
