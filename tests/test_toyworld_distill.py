"""Tests for the toy CLIP's patch self-distillation (microclip/toyworld/distill.py) and its place in pretraining."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_toyworld import _config as toyworld_config

from microclip.backbone import Backbone
from microclip.toyworld.distill import SelfDistillation, block_mask, distillation_loss, masked_images
from microclip.toyworld.pretrain import PretrainConfig, build_model, make_batch, pretrain

TS, TT = 0.1, 0.04


def _slow_loss(student, teacher, center, mask) -> float:
    """The same cross-entropy, patch by patch with plain floats."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for n in range(student.shape[1]):
            if not mask[b, n]:
                continue
            t = [(float(v) - float(c)) / TT for v, c in zip(teacher[b, n], center)]
            s = [float(v) / TS for v in student[b, n]]
            t_norm = math.log(sum(math.exp(v - max(t)) for v in t)) + max(t)
            s_norm = math.log(sum(math.exp(v - max(s)) for v in s)) + max(s)
            total += -sum(math.exp(tv - t_norm) * (sv - s_norm) for tv, sv in zip(t, s))
            count += 1
    return total / count


def test_loss_matches_a_patch_by_patch_computation_and_ignores_unmasked_patches():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    center = torch.randn(7, generator=g) * 0.1
    mask = torch.tensor([[True, False, True, False, False], [False, True, True, True, False]])
    loss = distillation_loss(student, teacher, center, mask, TS, TT)
    assert loss.item() == pytest.approx(_slow_loss(student, teacher, center, mask), rel=1e-5)
    changed = student.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 7, generator=g)
    assert distillation_loss(changed, teacher, center, mask, TS, TT).item() == pytest.approx(loss.item(), rel=1e-6)


def test_loss_is_smallest_when_the_student_gives_the_teachers_sharpened_distribution():
    g = torch.Generator().manual_seed(1)
    teacher, center = torch.randn(3, 4, 6, generator=g), torch.randn(6, generator=g) * 0.2
    mask = torch.ones(3, 4, dtype=torch.bool)
    agreeing = (teacher - center) * TS / TT  # softmax(agreeing / TS) == softmax((teacher - center) / TT)
    target = torch.softmax((teacher - center) / TT, dim=-1)
    entropy = -(target * target.log()).sum(-1).mean().item()
    best = distillation_loss(agreeing, teacher, center, mask, TS, TT).item()
    assert best == pytest.approx(entropy, rel=1e-5)
    for _ in range(5):
        other = agreeing + 0.5 * torch.randn(agreeing.shape, generator=g)
        assert distillation_loss(other, teacher, center, mask, TS, TT).item() > best


def test_block_mask_covers_about_the_ratio_and_is_a_function_of_the_generator():
    a = block_mask(np.random.default_rng(3), 16, (8, 8), 0.4)
    b = block_mask(np.random.default_rng(3), 16, (8, 8), 0.4)
    assert a.shape == (16, 64) and a.dtype == torch.bool and torch.equal(a, b)
    counts = a.sum(dim=1)
    assert (counts >= round(0.4 * 64)).all() and (counts < 64).all()
    assert block_mask(np.random.default_rng(3), 4, (8, 8), 0.0).sum() == 0


def test_masked_patches_become_the_mean_colour_and_the_rest_is_untouched():
    model = build_model()
    backbone = Backbone(model.visual)
    images = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, 9] = True  # row 1, column 1 of the 8x8 grid
    out = masked_images(images, mask, (8, 8))
    normalised = backbone.normalize_pixels(out)
    assert torch.allclose(normalised[0, :, 8:16, 8:16], torch.zeros(3, 8, 8), atol=1e-6)
    keep = torch.ones_like(images, dtype=torch.bool)
    keep[0, :, 8:16, 8:16] = False
    assert torch.equal(out[keep], images[keep])


def test_ema_update_and_centre_match_a_hand_computation():
    torch.manual_seed(0)
    model = build_model()
    distill = SelfDistillation(model.visual, prototypes=8, hidden=16)
    student = Backbone(model.visual)
    teacher_before = [p.clone() for p in distill.teacher.visual.parameters()]
    head_before = [p.clone() for p in distill.teacher_head.parameters()]
    with torch.no_grad():
        for p in [*model.visual.parameters(), *distill.head.parameters()]:
            p.add_(0.01 * torch.randn_like(p))
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected_mean = distill.teacher_head(distill.teacher(images).patches).mean(dim=(0, 1))
    distill.loss(student, images, block_mask(np.random.default_rng(0), 3, (8, 8), 0.4))
    distill.update(model.visual, momentum=0.9)
    for before, after, now in zip(teacher_before, distill.teacher.visual.parameters(), model.visual.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * now, atol=1e-6)
    for before, after, now in zip(head_before, distill.teacher_head.parameters(), distill.head.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * now, atol=1e-6)
    assert torch.allclose(distill.center, 0.1 * expected_mean, atol=1e-6)
    assert all(not p.requires_grad for p in distill.teacher.parameters())


def _config(out: Path, data: Path, **kw) -> PretrainConfig:
    """test_toyworld.py's six-step run (three CLIP steps, three dense), with self-distillation on."""
    return toyworld_config(out, data, **{"distill_weight": 1.0, "distill_prototypes": 16, "distill_hidden": 32, **kw})


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("distill")
    out = root / "full"
    return out, pretrain(_config(out, root / "data"))


def test_distillation_trains_in_the_dense_stage_only_and_is_saved(distilled_run):
    out, summary = distilled_run
    parts = summary["final_loss_parts"]
    assert "distill" in parts and parts["distill"] > 0
    state = load_file(str(out / "state.safetensors"))
    assert "distill.center" in state and any(k.startswith("distill.teacher.visual.") for k in state)
    assert summary["distill"]["distill_weight"] == 1.0


def test_killed_then_resumed_distilled_run_matches_an_uninterrupted_run(distilled_run, tmp_path: Path):
    full_out, _ = distilled_run
    data = full_out.parent / "data"
    pretrain(_config(tmp_path, data, stop_after=5))  # killed inside the dense stage, teacher moved twice
    pretrain(_config(tmp_path, data, resume=True))
    full = load_file(str(full_out / "state.safetensors"))
    resumed = load_file(str(tmp_path / "state.safetensors"))
    keys = [k for k in full if k.startswith(("model.", "distill.", "optim."))]
    assert any(k.startswith("distill.") for k in keys)
    assert all(torch.equal(full[k], resumed[k]) for k in keys)


def test_a_plain_stage_one_may_go_on_into_a_distilled_stage_two(distilled_run, tmp_path: Path):
    data = distilled_run[0].parent / "data"
    pretrain(_config(tmp_path, data, stop_after=3, distill_weight=0.0))
    assert not any(k.startswith("distill.") for k in load_file(str(tmp_path / "state.safetensors")))
    summary = pretrain(_config(tmp_path, data, stop_after=4, resume=True))
    assert summary["step"] == 4 and "distill" in summary["part_losses"][-1]
    assert any(k.startswith("distill.") for k in load_file(str(tmp_path / "state.safetensors")))


def test_distillation_leaves_the_batch_draws_as_they_were(distilled_run):
    import open_clip

    from microclip.toyworld import TOY_MODEL_NAME
    from microclip.toyworld.dataset import ensure_pretrain_corpus, load_pretrain_corpus

    data = distilled_run[0].parent / "data"
    images, species = load_pretrain_corpus(ensure_pretrain_corpus(str(data), 16, 0))
    tokenizer = open_clip.get_tokenizer(TOY_MODEL_NAME)
    on, off = _config(data, data), _config(data, data, distill_weight=0.0)
    for step in (2, 4):  # stage 1, stage 2
        a, b = make_batch(step, on, images, species, tokenizer), make_batch(step, off, images, species, tokenizer)
        assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens) and torch.equal(a.pasted, b.pasted)
        assert b.distill_mask is None and (a.distill_mask is None) == (step < on.steps)
    assert PretrainConfig(out="").distill_weight == 0.0  # off unless asked for
