"""Saliency peers against independent computations: attention weights from nn.MultiheadAttention itself,
LeGrad and Grad-CAM transcribed with plain autograd. Nothing under test is mocked."""

from __future__ import annotations

import copy
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_clip
from test_model import random_heads

from microclip.backbone import Backbone
from microclip.explainers import (
    EXPLAINERS,
    ExplainerUnavailable,
    available_explainers,
    cam_map,
    chance_score,
    legrad_map,
    part_score,
    run_explainers,
    soap_terms,
    unavailable_explainers,
)
from microclip.model import MethodConfig, MicroCLIP

N_CLASSES = 5


def build_model(name: str = "Test-ViT-Tiny", seed: int = 0) -> MicroCLIP:
    clip = make_clip(name, seed)
    torch.manual_seed(seed + 1)
    return MicroCLIP(Backbone(clip.visual), random_heads(N_CLASSES, clip.visual.proj.shape[1])).eval()


def image_shape(model: MicroCLIP) -> tuple[int, int]:
    size = model.backbone.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def random_images(model: MicroCLIP, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *image_shape(model), generator=generator)


@pytest.fixture(scope="module")
def tiny() -> MicroCLIP:
    return build_model()


@pytest.fixture(scope="module")
def wide() -> MicroCLIP:
    return build_model("Test-ViT-Wide")  # 32×48 pixels: a 4×6 patch grid, 3 blocks


CLASSES = torch.tensor([1, 3])


# ------------------------------------------------------------------ independent references


def mha_weights(model: MicroCLIP, images: torch.Tensor) -> list[torch.Tensor]:
    """Each block's (B, H, L, L) attention, from nn.MultiheadAttention(need_weights=True) on its ln_1 output."""
    visual = model.backbone.visual
    blocks = visual.transformer.resblocks
    inputs: list[torch.Tensor] = []
    handles = [block.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for block in blocks]
    try:
        with torch.no_grad():
            visual(model.backbone.normalize_pixels(images))  # open_clip's own forward
            weights = []
            for block, x in zip(blocks, inputs):  # x: (L, B, D), the layout the blocks run in
                y = block.ln_1(x)
                weights.append(block.attn(y, y, y, need_weights=True, average_attn_weights=False)[1])
    finally:
        for handle in handles:
            handle.remove()
    return weights


def slow_rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's rollout, one image and one block at a time: (B, L, L)."""
    batch, _, length, _ = weights[0].shape
    eye = torch.eye(length)
    rollouts = []
    for b in range(batch):
        rollout = eye.clone()
        for block_weights in weights:
            attention = block_weights[b].mean(0)
            augmented = 0.5 * attention + 0.5 * eye
            augmented = augmented / augmented.sum(1, keepdim=True)
            rollout = augmented @ rollout
        rollouts.append(rollout)
    return torch.stack(rollouts)


def block_by_hand(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pre-LN block on batch-first x (B, L, D), with its attention probabilities (B, H, L, L) exposed."""
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def split(t):
        return t.reshape(batch, length, heads, head_dim).transpose(1, 2)

    probs = (split(q) @ split(k).transpose(-1, -2) / head_dim**0.5).softmax(-1)
    mixed = (probs @ split(v)).transpose(1, 2).reshape(batch, length, width)
    x = x + block.ls_1(attn.out_proj(mixed))
    return x + block.ls_2(block.mlp(block.ln_2(x))), probs


def upsample_minmax_patch_average(grid_maps: torch.Tensor, patch: int) -> torch.Tensor:
    """LeGrad's documented post-processing (bilinear ×patch, per-image min-max), then back to the grid."""
    batch, h, w = grid_maps.shape
    pixels = F.interpolate(grid_maps[:, None], scale_factor=patch, mode="bilinear")[:, 0]
    low = pixels.amin(dim=(1, 2), keepdim=True)
    high = pixels.amax(dim=(1, 2), keepdim=True)
    pixels = (pixels - low) / (high - low)
    return pixels.reshape(batch, h, patch, w, patch).mean(dim=(2, 4))


def legrad_by_hand(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor, layer_index: int):
    """LeGrad for open_clip ViTs, from the paper's formula, with plain autograd."""
    visual = model.backbone.visual
    blocks = visual.transformer.resblocks
    start = len(blocks) + layer_index if layer_index < 0 else layer_index
    class_rows = model.heads.w_star_hat().detach()[class_index]  # (B, E)
    relevance = 0.0
    with torch.enable_grad():
        x = visual._embeds(model.backbone.normalize_pixels(images)).detach().requires_grad_(True)
        for depth, block in enumerate(blocks):
            x, probs = block_by_hand(block, x)
            if depth < start:
                continue
            feature = F.normalize(visual.ln_post(x.mean(1)) @ visual.proj, dim=-1)  # (B, E)
            score = (feature * class_rows).sum()
            grad = torch.autograd.grad(score, probs, retain_graph=True)[0].clamp(min=0)  # (B, H, L, L)
            relevance = relevance + grad.mean(1).mean(1)[:, 1:]  # heads, then query rows; patch columns
    h, w = model.backbone.grid
    return relevance.detach().reshape(-1, h, w)


def cam_by_hand(method: str, model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> np.ndarray:
    """Grad-CAM / HiResCAM / LayerCAM at the last block's ln_1 for the [CLS]-branch logit, on the grid."""
    visual = model.backbone.visual
    blocks = visual.transformer.resblocks
    with torch.no_grad():
        x = visual._embeds(model.backbone.normalize_pixels(images)).transpose(0, 1)  # (L, B, D)
        for block in blocks[:-1]:
            x = block(x)
    last = blocks[-1]
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        activations = last.ln_1(x)  # (L, B, D)
        out = x + last.ls_1(last.attn(activations, activations, activations, need_weights=False)[0])
        out = out + last.ls_2(last.mlp(last.ln_2(out)))
        cls_embed = F.normalize(visual.ln_post(out[0]) @ visual.proj, dim=-1)
        logits = 100.0 * cls_embed @ model.heads.w_star_hat().detach().T  # (B, C)
        score = logits[torch.arange(len(class_index)), class_index].sum()
        grads = torch.autograd.grad(score, activations)[0]
    acts = activations.detach()[1:].transpose(0, 1)  # (B, N, D)
    grads = grads[1:].transpose(0, 1)
    if method == "gradcam":
        cam = (acts * grads.mean(1, keepdim=True)).sum(-1)  # weights: the mean gradient over the patch tokens
    elif method == "hirescam":
        cam = (acts * grads).sum(-1)
    else:  # layercam
        cam = (acts * grads.clamp(min=0)).sum(-1)
    h, w = model.backbone.grid
    return cam.clamp(min=0).reshape(-1, h, w).numpy()


def cam_post_processing(grid_maps: np.ndarray, size: tuple[int, int], patch: int) -> np.ndarray:
    """grad-cam's documented post-processing (min-max, cv2 bilinear resize, min-max again), then the grid.

    Bilinear upsampling followed by patch averaging is not the identity (neighbouring patches bleed into
    each other), so the hand-computed grid map goes through the same steps before comparing.
    """

    def minmax(values):
        values = values - values.min()
        return values / (1e-7 + values.max())

    out = []
    for cam in grid_maps:
        pixels = minmax(cv2.resize(np.float32(minmax(cam)), (size[1], size[0])))
        h, w = cam.shape
        out.append(pixels.reshape(h, patch, w, patch).mean(axis=(1, 3)))
    return np.stack(out)


# ------------------------------------------------------------------ attention baselines


@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_rollout_matches_a_slow_loop_over_multihead_attention_weights(which, request):
    model = request.getfixturevalue(which)
    images = random_images(model)
    expected = slow_rollout(mha_weights(model, images))[:, 0, 1:]
    got = EXPLAINERS["rollout"](model, images, CLASSES)
    assert got.shape == (2, *model.backbone.grid)
    torch.testing.assert_close(got.reshape(2, -1), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_cls_attention_is_the_last_blocks_cls_row_averaged_over_heads(which, request):
    model = request.getfixturevalue(which)
    images = random_images(model)
    expected = mha_weights(model, images)[-1].mean(1)[:, 0, 1:]
    got = EXPLAINERS["cls_attention"](model, images, CLASSES)
    torch.testing.assert_close(got.reshape(2, -1), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_soap_rolled_out_spreads_soaps_weights_by_a_slow_rollout_of_the_earlier_blocks(which, request):
    model = request.getfixturevalue(which)
    images = random_images(model)
    with torch.no_grad():
        weights = model(images).soap.weights[:, :-1]
    before_last = slow_rollout(mha_weights(model, images)[:-1])[:, 1:, 1:]
    expected = torch.stack([sum(w[j] * rows[j] for j in range(len(w))) for w, rows in zip(weights, before_last)])
    got = EXPLAINERS["soap_rollout"](model, images, CLASSES)
    assert got.shape == (2, *model.backbone.grid)
    torch.testing.assert_close(got.reshape(2, -1), expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got.reshape(2, -1), weights, atol=1e-3)  # the earlier blocks did spread them


def test_model_maps_are_the_forward_pass_numbers(tiny):
    images = random_images(tiny)
    with torch.no_grad():
        out = tiny(images)
    h, w = tiny.backbone.grid
    torch.testing.assert_close(EXPLAINERS["soap"](tiny, images, CLASSES).reshape(2, -1), out.soap.weights[:, :-1])
    torch.testing.assert_close(EXPLAINERS["ncut"](tiny, images, CLASSES).reshape(2, -1), out.mask.float())
    patch = out.tokens.patches[1, 5]
    expected = F.cosine_similarity(patch, out.tokens.cls_token[1], dim=0)
    assert EXPLAINERS["cls_similarity"](tiny, images, CLASSES)[1].reshape(-1)[5] == pytest.approx(
        float(expected), abs=1e-5
    )


def _scrambled_soap(model: MicroCLIP, config: MethodConfig, seed: int) -> MicroCLIP:
    """The same tower and heads with ``config`` and SOAP's projections (and centre, and a learnable null) away from
    their start, so that each value differs from its token; the reference's null stays zero."""
    other = MicroCLIP(model.backbone, model.heads, config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in other.soap.state_dict(keep_vars=True).items():
            if name != "null_token" or config.learnable_null:
                tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator))
    return other


CONFIGS = [MethodConfig(), MethodConfig(centre_values=True), MethodConfig(learnable_null=True)]


@pytest.mark.parametrize(
    "config",
    [*CONFIGS, MethodConfig(pool="ncut_avg")],
    ids=["reference", "centred values", "learnable null", "ncut average"],
)
def test_soaps_terms_add_up_to_the_fg_logit_the_model_gives_for_every_class(tiny, config):
    model = _scrambled_soap(tiny, config, seed=3)
    images = random_images(model)
    with torch.no_grad():
        fg_logits = model(images).logits.fg  # (B, C): the forward pass's own
    w_hat = model.heads.w_star_hat()
    for c in range(N_CLASSES):
        patches, null = soap_terms(model, images, w_hat[[c, c]])
        torch.testing.assert_close(patches.sum(1) + null, fg_logits[:, c], atol=1e-4, rtol=1e-5)
    if config.learnable_null:
        assert null.abs().min() > 1e-4  # a learned null's value does add to the logit


def test_soaps_contribution_map_is_weight_times_projected_value_along_the_class_by_a_slow_loop(wide):
    model = _scrambled_soap(wide, MethodConfig(), seed=4)
    images = random_images(model)
    got = EXPLAINERS["soap_contribution"](model, images, CLASSES)
    assert got.shape == (2, *model.backbone.grid)
    with torch.no_grad():
        out = model(images)
    value_weight = model.soap.value_proj.weight.detach()
    proj = model.backbone.visual.proj.detach()
    w_hat = F.normalize(model.heads.w_star.detach(), dim=-1)
    for b in range(2):
        pooled = sum(out.soap.weights[b, j] * (value_weight @ out.tokens.patches[b, j]) for j in range(got[b].numel()))
        length = float(torch.linalg.vector_norm(pooled @ proj))
        for j in range(got[b].numel()):
            value = value_weight @ out.tokens.patches[b, j]
            term = 100.0 * float(out.soap.weights[b, j]) * float((value @ proj) @ w_hat[CLASSES[b]]) / length
            assert float(got[b].reshape(-1)[j]) == pytest.approx(term, rel=1e-4, abs=1e-5)
    other = EXPLAINERS["soap_contribution"](model, images, CLASSES.flip(0))
    assert not torch.allclose(got, other)  # class-specific


# ------------------------------------------------------------------ LeGrad and Grad-CAM through their packages


@pytest.mark.parametrize("layer_index", [-1, -2])
def test_legrad_matches_the_formula_transcribed_with_autograd(tiny, layer_index):
    images = random_images(tiny)
    patch = tiny.backbone.visual.patch_size[0]
    expected = upsample_minmax_patch_average(legrad_by_hand(tiny, images, CLASSES, layer_index), patch)
    got = legrad_map(tiny, images, CLASSES, layer_index=layer_index)
    assert got.shape == (2, *tiny.backbone.grid)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_legrad_depends_on_the_class(tiny):
    images = random_images(tiny)[:1].repeat(2, 1, 1, 1)
    maps = legrad_map(tiny, images, torch.tensor([0, 2]))
    assert not torch.allclose(maps[0], maps[1], atol=1e-3)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam"])
@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_cams_match_a_hand_computation_at_the_last_ln_1(method, which, request):
    model = request.getfixturevalue(which)
    images = random_images(model)
    patch = model.backbone.visual.patch_size[0]
    expected = cam_post_processing(cam_by_hand(method, model, images, CLASSES), image_shape(model), patch)
    got = cam_map(method, model, images, CLASSES)
    assert got.shape == (2, *model.backbone.grid)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_every_explainer_gives_one_map_per_image_on_the_grid(tiny, wide):
    for model in (tiny, wide):
        images = random_images(model)
        for name in available_explainers(model):
            maps = EXPLAINERS[name](model, images, CLASSES)
            assert maps.shape == (2, *model.backbone.grid), name
            assert torch.isfinite(maps).all(), name
    assert wide.backbone.grid == (4, 6)
    assert "legrad" in unavailable_explainers(wide) and "square" in unavailable_explainers(wide)["legrad"]
    with pytest.raises(ExplainerUnavailable, match="square patch grid"):
        EXPLAINERS["legrad"](wide, random_images(wide), CLASSES)


# ------------------------------------------------------------------ the model is left as it was found


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def snapshot(model: MicroCLIP) -> dict:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [len(getattr(m, name)) for m in model.modules() for name in _HOOKS],
        "instance_attributes": [
            sorted(k for k in vars(m) if not k.startswith("_") and k != "training") for m in model.modules()
        ],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_explainers_leave_the_model_exactly_as_they_found_it(mode):
    model = build_model()
    model.train(mode == "train")
    model.soap.train(False)  # a mixed state must survive too
    model.heads.w_star.grad = torch.full_like(model.heads.w_star, 0.25)  # an optimiser's pending gradient
    before = snapshot(model)
    images = random_images(model)
    for name in EXPLAINERS:
        EXPLAINERS[name](model, images, CLASSES)
    after = snapshot(model)
    for key in ("training", "requires_grad", "hooks", "instance_attributes"):
        assert after[key] == before[key], key
    for grad_before, grad_after in zip(before["grads"], after["grads"]):
        assert (grad_before is None and grad_after is None) or torch.equal(grad_before, grad_after)
    for name, tensor in before["state"].items():
        assert torch.equal(after["state"][name], tensor), name


@pytest.mark.parametrize("update", ["in place", "new storage"])
def test_cached_package_wrappers_follow_weight_updates(update):
    model = build_model()
    images = random_images(model)
    legrad_map(model, images, CLASSES)
    cam_map("gradcam", model, images, CLASSES)  # both now cached for this backbone
    with torch.no_grad():
        for param in model.backbone.visual.transformer.resblocks[-1].parameters():
            if update == "in place":  # an optimiser step, load_state_dict
                param.mul_(1.5)
            else:  # what .to() does: the Parameter gets new storage
                param.data = param.data * 1.5
    fresh = copy.deepcopy(model)  # another backbone object: nothing cached for it
    torch.testing.assert_close(legrad_map(model, images, CLASSES), legrad_map(fresh, images, CLASSES))
    torch.testing.assert_close(cam_map("gradcam", model, images, CLASSES), cam_map("gradcam", fresh, images, CLASSES))


# ------------------------------------------------------------------ running several, and a missing package


def test_run_explainers_times_each_and_defaults_to_the_prediction(tiny):
    image = random_images(tiny, batch=1)[0]
    comparison = run_explainers(tiny, image)
    with torch.no_grad():
        predicted = int(tiny(image[None]).logits.fused[0].argmax())
    assert comparison.predicted and comparison.class_index == predicted
    assert comparison.class_name == tiny.classes[predicted]
    assert list(comparison.runs) == list(EXPLAINERS)
    for run in comparison.runs.values():
        assert run.error is None and run.saliency.shape == tiny.backbone.grid
        assert isinstance(run.ms, float) and run.ms > 0
    chosen = run_explainers(tiny, image, class_index=2, names=["legrad", "soap"])
    assert not chosen.predicted and chosen.class_index == 2 and list(chosen.runs) == ["legrad", "soap"]
    expected = legrad_map(tiny, image[None], torch.tensor([2]))[0].numpy()
    np.testing.assert_allclose(chosen.runs["legrad"].saliency, expected, atol=1e-6)
    with pytest.raises(KeyError, match="unknown explainer"):
        run_explainers(tiny, image, names=["saliency-of-my-dreams"])


def test_an_explainer_s_time_is_the_median_of_its_calls(tiny, monkeypatch):
    """A garbage collection or another request in one call must not make one method look 30 times slower: the
    clock is stepped by hand, so that the three calls of each explainer take 50, 4 and 6 ms."""
    import microclip.explainers as explainers

    ticks = iter([0.0, 0.050, 1.0, 1.004, 2.0, 2.006] * 4)
    monkeypatch.setattr(explainers.time, "perf_counter", lambda: next(ticks))
    comparison = run_explainers(tiny, random_images(tiny, batch=1)[0], names=["soap", "cls_attention"], repeats=3)
    assert [run.ms for run in comparison.runs.values()] == [pytest.approx(6.0), pytest.approx(6.0)]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        run_explainers(tiny, random_images(tiny, batch=1)[0], names=["soap"], repeats=0)


def test_missing_legrad_is_reported_with_the_fix_not_a_crash(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "legrad", None)  # `import legrad` now raises ImportError
    assert "legrad" not in available_explainers(tiny)
    assert "pip install --no-deps legrad-torch" in unavailable_explainers()["legrad"]
    with pytest.raises(ExplainerUnavailable, match="pip install --no-deps legrad-torch"):
        legrad_map(tiny, random_images(tiny), CLASSES)
    comparison = run_explainers(tiny, random_images(tiny, batch=1)[0], names=["soap", "legrad"])
    assert comparison.runs["soap"].saliency is not None
    assert comparison.runs["legrad"].saliency is None and "legrad-torch" in comparison.runs["legrad"].error


# ------------------------------------------------------------------ scores against a part mask


def test_part_score_pointing_and_mass_inside_by_hand():
    mask = np.zeros((8, 8), bool)  # 2×2 grid of 4×4-pixel patches
    mask[0, 0] = True  # one pixel of patch (0, 0)
    mask[4:8, 4:6] = True  # half of patch (1, 1)
    saliency = np.array([[3.0, 1.0], [1.0, 2.0]])
    score = part_score(saliency, mask)
    assert score.top_on_part == 1.0 and score.n_top == 1  # the top patch (0, 0) touches a part
    # mass after shifting by the minimum: [[2, 0], [0, 1]]; on part pixels: 2·1/16 + 1·8/16
    assert score.mass_inside == pytest.approx((2 / 16 + 8 / 16) / 3)
    miss = part_score(np.array([[0.0, 5.0], [1.0, 2.0]]), mask)
    assert miss.top_on_part == 0.0
    tied = part_score(np.array([[1.0, 1.0], [0.0, 1.0]]), mask)  # three tied top patches, two on a part
    assert tied.n_top == 3 and tied.top_on_part == pytest.approx(2 / 3)
    chance = chance_score(mask, (2, 2))
    assert chance.top_on_part == 0.5 and chance.mass_inside == pytest.approx((1 / 16 + 8 / 16) / 4)
    odd = np.zeros((10, 10), bool)  # 10 px do not tile a 4×4 grid: the mask is resized (nearest) to 12 px
    odd[:3, :3] = True
    peak = np.zeros((4, 4))
    peak[0, 0] = 1.0
    assert part_score(peak, odd).top_on_part == 1.0
    assert part_score(peak[::-1, ::-1].copy(), odd).top_on_part == 0.0
