"""The object stage's losses against slow, obvious re-computations, and what a step of each does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from microclip.toyworld.objectness import background_loss, cut_contrast_loss, object_token_loss


def _batch(seed: int = 0, b: int = 4, n: int = 9, e: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    patches = F.normalize(torch.randn(b, n, e, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1)
    foreground = torch.rand(b, n, generator=g) < 0.4
    foreground[0] = False  # an image whose cut is empty contributes no foreground token
    foreground[1, 0] = True
    return patches, text, foreground


def test_object_token_loss_is_the_mean_cross_entropy_of_each_foreground_token():
    patches, text, foreground = _batch()
    scale = 7.0
    losses = []
    for i in range(patches.shape[0]):
        for j in range(patches.shape[1]):
            if foreground[i, j]:
                logits = [scale * float(patches[i, j] @ text[k]) for k in range(len(text))]
                top = max(logits)
                log_sum = top + math.log(sum(math.exp(v - top) for v in logits))
                losses.append(log_sum - logits[i])
    assert object_token_loss(patches, foreground, text, scale).item() == pytest.approx(sum(losses) / len(losses))


def test_background_loss_is_zero_when_the_background_says_nothing_and_positive_when_it_does():
    patches, text, foreground = _batch(1)
    scale = 5.0
    expected = 0.0
    for i in range(patches.shape[0]):
        mean = patches[i][~foreground[i]].mean(0)
        pooled = mean / mean.norm()
        log_p = torch.log_softmax(scale * torch.stack([pooled @ t for t in text]), 0)
        expected += float((-log_p).mean()) - math.log(len(text))
    assert background_loss(patches, foreground, text, scale).item() == pytest.approx(expected / patches.shape[0])
    assert background_loss(patches, foreground, text, scale).item() > 0
    # A background orthogonal to every caption gives each caption the same score: the loss is zero.
    flat = torch.zeros_like(patches)
    flat[..., -1] = 1.0
    text_without_last = F.normalize(torch.cat([text[:, :-1], torch.zeros_like(text[:, :1])], dim=1), dim=-1)
    assert background_loss(flat, foreground, text_without_last, scale).item() == pytest.approx(0.0, abs=1e-12)


def test_cut_contrast_loss_matches_a_loop_over_pairs():
    patches, _, foreground = _batch(2)
    raw = patches * 3.0  # the cut reads raw tokens; the hinge is on their cosines
    margin = 0.1
    across, within = [], []
    for b in range(raw.shape[0]):
        for i in range(raw.shape[1]):
            for j in range(raw.shape[1]):
                cosine = float(F.cosine_similarity(raw[b, i], raw[b, j], dim=0))
                if foreground[b, i] != foreground[b, j]:
                    across.append(max(0.0, cosine + margin))
                else:
                    within.append(max(0.0, margin - cosine))
    expected = sum(across) / len(across) + sum(within) / len(within)
    assert cut_contrast_loss(raw, foreground, margin).item() == pytest.approx(expected)


def test_steps_on_the_cut_contrast_separates_the_two_sides_of_the_cut():
    patches, _, foreground = _batch(3, b=2, n=16, e=8)
    foreground[:, :6], foreground[:, 6:] = True, False
    raw = (patches * 2.0).clone().requires_grad_(True)

    def gap(x: torch.Tensor) -> float:  # mean within-side cosine minus mean across-side cosine
        unit = F.normalize(x.detach(), dim=-1)
        c = unit @ unit.transpose(1, 2)
        return float(c[:, :6, :6].mean() + c[:, 6:, 6:].mean()) / 2 - float(c[:, :6, 6:].mean())

    before = gap(raw)
    opt = torch.optim.Adam([raw], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        cut_contrast_loss(raw, foreground, 0.1).backward()
        opt.step()
    assert gap(raw) > before + 0.5
