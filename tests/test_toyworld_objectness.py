"""The object stage's losses against slow, obvious re-computations, and what a step of each does."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from microclip.toyworld.objectness import (
    background_loss,
    boundary_band,
    cut_contrast_loss,
    object_token_loss,
    pool_centring_loss,
    soap_attention_loss,
    soap_pool_loss,
)


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


def _cut_contrast_by_loop(
    raw: torch.Tensor, foreground: torch.Tensor, margin: float, ignore=None, ignore_weight: float = 0.0
) -> float:
    """The cut contrast pair by pair: a weighted mean per side, each ignored patch in a pair multiplying its
    weight by ``ignore_weight`` (0: the pair is left out)."""
    across, within = [], []  # (weight, hinge)
    for b in range(raw.shape[0]):
        for i in range(raw.shape[1]):
            for j in range(raw.shape[1]):
                weight = 1.0
                for k in (i, j):
                    if ignore is not None and ignore[b, k]:
                        weight *= ignore_weight
                cosine = float(F.cosine_similarity(raw[b, i], raw[b, j], dim=0))
                if foreground[b, i] != foreground[b, j]:
                    across.append((weight, max(0.0, cosine + margin)))
                else:
                    within.append((weight, max(0.0, margin - cosine)))
    return sum(w * h for w, h in across) / sum(w for w, _ in across) + sum(w * h for w, h in within) / sum(
        w for w, _ in within
    )


def test_cut_contrast_loss_matches_a_loop_over_pairs():
    patches, _, foreground = _batch(2)
    raw = patches * 3.0  # the cut reads raw tokens; the hinge is on their cosines
    expected = _cut_contrast_by_loop(raw, foreground, 0.1)
    assert cut_contrast_loss(raw, foreground, 0.1).item() == pytest.approx(expected)


def test_boundary_band_is_the_background_within_reach_of_the_foreground():
    grid = (5, 6)
    g = torch.Generator().manual_seed(4)
    foreground = torch.rand(3, 30, generator=g) < 0.15
    foreground[2] = False  # an empty cut has no band
    for radius in (1, 2):
        band = boundary_band(foreground, grid, radius)
        for b in range(3):
            for j in range(30):
                r, c = divmod(j, grid[1])
                near = any(
                    foreground[b, k] and max(abs(r - k // grid[1]), abs(c - k % grid[1])) <= radius for k in range(30)
                )
                assert bool(band[b, j]) == (near and not bool(foreground[b, j]))
    assert not boundary_band(foreground, grid, 0).any()


def test_ignored_patches_leave_the_background_and_cut_terms():
    patches, text, foreground = _batch(5)
    ignore = torch.zeros_like(foreground)
    ignore[:, -3:] = ~foreground[:, -3:]
    # The background term with an ignore band is the term on the background without it.
    scale = 5.0
    expected = 0.0
    for i in range(patches.shape[0]):
        mean = patches[i][~foreground[i] & ~ignore[i]].mean(0)
        log_p = torch.log_softmax(scale * (mean / mean.norm()) @ text.T, 0)
        expected += float((-log_p).mean()) - math.log(len(text))
    got = background_loss(patches, foreground, text, scale, ignore).item()
    assert got == pytest.approx(expected / patches.shape[0])
    assert got != pytest.approx(background_loss(patches, foreground, text, scale).item())
    # The cut contrast drops every pair with an ignored patch in it.
    raw = patches * 2.0
    expected = _cut_contrast_by_loop(raw, foreground, 0.1, ignore)
    assert cut_contrast_loss(raw, foreground, 0.1, ignore).item() == pytest.approx(expected)
    assert expected != pytest.approx(_cut_contrast_by_loop(raw, foreground, 0.1))
    # A soft band keeps the band's pairs at a weight between left out (0) and counted in full (1).
    soft = _cut_contrast_by_loop(raw, foreground, 0.1, ignore, ignore_weight=0.3)
    assert cut_contrast_loss(raw, foreground, 0.1, ignore, ignore_weight=0.3).item() == pytest.approx(soft)
    assert cut_contrast_loss(raw, foreground, 0.1, ignore, ignore_weight=1.0).item() == pytest.approx(
        _cut_contrast_by_loop(raw, foreground, 0.1)
    )
    assert soft != pytest.approx(expected)


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


class _Recorder:
    """Stands in for open_clip's ClipLoss to keep what it was given; returns a plain InfoNCE of its own."""

    def __call__(self, image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
        self.image = image
        logits = scale * image @ text.T
        return F.cross_entropy(logits, torch.arange(len(image)))


def _pooled_by_hand(raw: torch.Tensor, foreground: torch.Tensor) -> list[torch.Tensor]:
    """SOAP at identity, one image at a time: the cut's mean token as the query, a zero null token (logit 0)."""
    width = raw.shape[-1]
    pooled = []
    for b in range(raw.shape[0]):
        chosen = [raw[b, j] for j in range(raw.shape[1]) if foreground[b, j]]
        query = sum(chosen) / len(chosen) if chosen else torch.zeros(width, dtype=raw.dtype)
        logits = [float(query @ raw[b, j]) / math.sqrt(width) for j in range(raw.shape[1])] + [0.0]
        top = max(logits)
        weights = [math.exp(v - top) for v in logits]
        pooled.append(sum(w * raw[b, j] for j, w in enumerate(weights[:-1])) / sum(weights))  # the null's value is 0
    return pooled


def test_soap_pool_loss_pools_by_hand_computed_attention_over_the_cut_and_the_null_token():
    raw, text, foreground = _batch(4, n=7, e=5)
    raw = raw * torch.linspace(1.0, 3.0, 7, dtype=torch.float64)[None, :, None]  # unequal norms
    projection = torch.randn(5, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    text3 = F.normalize(text[:, :3], dim=-1)
    recorder = _Recorder()
    loss = soap_pool_loss(raw, foreground, text3, 4.0, lambda x: x @ projection, recorder)
    for b, pooled in enumerate(_pooled_by_hand(raw, foreground)):
        expected = F.normalize(pooled @ projection, dim=0)
        assert torch.allclose(recorder.image[b], expected, atol=1e-12)
    assert loss.item() == pytest.approx(F.cross_entropy(4.0 * recorder.image @ text3.T, torch.arange(4)).item())


def test_soap_pool_loss_trains_exactly_the_fg_that_adaptation_starts_from(tiny_model_dir):
    from microclip.model import MicroCLIP
    from microclip.soap import foreground_mask

    model, _, _ = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, ["a", "b", "c"])
    size = model.backbone.image_size
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = model(x)
        tokens = model.backbone(x)
        recorder = _Recorder()
        text = F.normalize(torch.randn(3, out.fg_embed.shape[-1], generator=torch.Generator().manual_seed(7)), dim=-1)
        soap_pool_loss(tokens.patches, foreground_mask(tokens.patches), text, 1.0, model.backbone.project, recorder)
    assert torch.allclose(recorder.image, F.normalize(out.fg_embed, dim=-1), atol=1e-5)


def test_pool_centring_loss_is_the_share_of_the_pooled_inputs_energy_in_their_mean():
    raw, _, foreground = _batch(11, b=5, n=7, e=5)
    raw = raw * 2.0 + torch.tensor([1.5, 0, 0, 0, 0], dtype=torch.float64)  # a component every token shares
    pooled = _pooled_by_hand(raw, foreground)
    mean = sum(pooled) / len(pooled)
    expected = float(mean @ mean) / (sum(float(p @ p) for p in pooled) / len(pooled))
    assert pool_centring_loss(raw, foreground).item() == pytest.approx(expected)
    assert 0.0 < expected < 1.0


def test_steps_on_the_pool_centring_loss_remove_the_shared_mean_and_keep_images_apart():
    raw, _, foreground = _batch(12, b=6, n=9, e=6)
    raw = (raw + torch.tensor([2.0, 0, 0, 0, 0, 0], dtype=torch.float64)).clone().requires_grad_(True)
    start = pool_centring_loss(raw, foreground).item()
    opt = torch.optim.Adam([raw], lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        pool_centring_loss(raw, foreground).backward()
        opt.step()
    assert start > 0.5
    assert pool_centring_loss(raw, foreground).item() < 0.05
    pooled = torch.stack(_pooled_by_hand(raw.detach(), foreground))
    assert pooled.norm(dim=-1).min() > 0.1  # not met by shrinking every image's input to nothing


def test_soap_attention_loss_is_the_kl_from_the_teacher_to_soaps_map_over_the_patches():
    raw, _, foreground = _batch(8, n=6, e=4)
    raw = raw * 2.5
    teacher = torch.rand(raw.shape[:2], generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    teacher = teacher / teacher.sum(1, keepdim=True)
    expected = 0.0
    for b in range(raw.shape[0]):
        chosen = [raw[b, j] for j in range(raw.shape[1]) if foreground[b, j]]
        query = sum(chosen) / len(chosen) if chosen else torch.zeros(4, dtype=torch.float64)
        logits = [float(query @ raw[b, j]) / 2.0 for j in range(raw.shape[1])]  # sqrt(width 4)
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        expected += sum(float(t) * (math.log(float(t)) - (v - log_z)) for t, v in zip(teacher[b], logits))
    assert soap_attention_loss(raw, foreground, teacher).item() == pytest.approx(expected / raw.shape[0])
    assert soap_attention_loss(raw, foreground, teacher).item() > 0


def test_steps_on_the_soap_attention_loss_move_soaps_top_patch_to_the_teachers():
    raw, _, foreground = _batch(10, b=3, n=12, e=8)
    foreground[0, :4] = True  # with an empty cut the query is zero and no patch can stand out
    raw = (raw * 2.0).clone().requires_grad_(True)
    target = torch.tensor([3, 7, 10])
    teacher = torch.full((3, 12), 0.02, dtype=torch.float64)
    teacher[torch.arange(3), target] = 1.0 - 0.02 * 11
    assert not torch.equal(_top_patch(raw.detach(), foreground), target)
    opt = torch.optim.Adam([raw], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        soap_attention_loss(raw, foreground, teacher).backward()
        opt.step()
    assert torch.equal(_top_patch(raw.detach(), foreground), target)


def test_the_radial_soap_attention_loss_changes_lengths_only_and_still_moves_the_top_patch():
    raw, _, foreground = _batch(10, b=3, n=12, e=8)
    foreground[0, :4] = True
    raw = (raw * torch.linspace(1.0, 3.0, 12, dtype=torch.float64)[None, :, None]).clone().requires_grad_(True)
    target = torch.tensor([3, 7, 10])
    teacher = torch.full((3, 12), 0.02, dtype=torch.float64)
    teacher[torch.arange(3), target] = 1.0 - 0.02 * 11
    full, radial = (soap_attention_loss(raw, foreground, teacher, radial=r) for r in (False, True))
    assert radial.item() == pytest.approx(full.item(), rel=1e-12)  # the same loss, another gradient
    (g_full,), (g_radial,) = (torch.autograd.grad(v, raw) for v in (full, radial))
    unit = F.normalize(raw.detach(), dim=-1)

    def across(g: torch.Tensor) -> torch.Tensor:  # each token's gradient with its radial part taken out
        return g - (g * unit).sum(-1, keepdim=True) * unit

    assert across(g_full).abs().max() > 1e-3 and across(g_radial).abs().max() < 1e-12
    # Descending on it leaves every cosine (the cut's graph) as it was, and still moves SOAP's top patch.
    cosines = unit @ unit.transpose(1, 2)
    assert not torch.equal(_top_patch(raw.detach(), foreground), target)
    opt = torch.optim.SGD([raw], lr=0.05)  # small steps: a token pushed shorter must not pass through zero
    for _ in range(250):
        opt.zero_grad()
        soap_attention_loss(raw, foreground, teacher, radial=True).backward()
        opt.step()
    after = F.normalize(raw.detach(), dim=-1)
    assert torch.allclose(after @ after.transpose(1, 2), cosines, atol=1e-9)
    assert torch.equal(_top_patch(raw.detach(), foreground), target)


def _top_patch(x: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    query = (x * foreground[..., None]).sum(1) / foreground.sum(1, keepdim=True).clamp_min(1)
    return torch.einsum("bd,bnd->bn", query, x).argmax(1)


def test_band_terms_names_only_the_terms_a_band_can_leave_out():
    from microclip.toyworld.pretrain import PretrainConfig

    assert PretrainConfig(out="x", boundary_band=1, band_terms="cut").band_terms == "cut"
    with pytest.raises(ValueError, match="band_terms"):
        PretrainConfig(out="x", boundary_band=1, band_terms="cut,sky")
