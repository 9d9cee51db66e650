from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_clip
from torch import nn

from microclip.backbone import Backbone, BackboneError, create_clip, resolve_model_name


class _IdentityAttention(nn.Module):
    """The last block's attention with the attention matrix replaced by the identity."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, q, k, v, need_weights=False, attn_mask=None):
        w_v = self.attn.in_proj_weight.chunk(3)[2]
        b_v = self.attn.in_proj_bias.chunk(3)[2]
        return self.attn.out_proj(F.linear(v, w_v, b_v)), None


@pytest.mark.parametrize("name", ["Test-ViT-Tiny", "Test-ViT-Wide"])
def test_value_path_matches_open_clip_with_identity_attention(name):
    clip = make_clip(name)
    backbone = Backbone(clip.visual)
    height, width = (clip.visual.image_size,) * 2 if isinstance(clip.visual.image_size, int) else clip.visual.image_size
    images = torch.rand(2, 3, height, width)
    tokens = backbone(images)

    reference = make_clip(name)
    block = reference.visual.transformer.resblocks[-1]
    block.attn = _IdentityAttention(block.attn)
    reference.visual.output_tokens = True
    _, expected = reference.visual(backbone.normalize_pixels(images))

    assert tokens.patches.shape == (2, tokens.grid[0] * tokens.grid[1], backbone.width)
    torch.testing.assert_close(tokens.patches, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["Test-ViT-Tiny", "Test-ViT-Wide"])
def test_cls_matches_open_clip_encode_image(name):
    clip = make_clip(name)
    backbone = Backbone(clip.visual)
    size = clip.visual.image_size
    images = torch.rand(3, 3, *((size, size) if isinstance(size, int) else size))
    tokens = backbone(images)
    untouched = make_clip(name)  # open_clip's own layout and forward, independent of Backbone
    expected = F.normalize(untouched.encode_image(backbone.normalize_pixels(images)), dim=-1)
    torch.testing.assert_close(tokens.cls_embed, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(backbone.encode_cls(images), expected, atol=1e-5, rtol=1e-5)
    # The pre-projection token is what the projection maps to g.
    torch.testing.assert_close(backbone.project(tokens.cls_token), expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_last_block_layernorms(tiny_clip):
    backbone = Backbone(make_clip().visual)
    tokens = backbone(torch.rand(2, 3, 32, 32))
    tokens.patches.sum().backward()
    last = backbone.visual.transformer.resblocks[-1]
    for norm in (last.ln_1, last.ln_2, backbone.visual.ln_post):
        assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0


def test_reference_spelling_maps_to_quickgelu_openai():
    assert resolve_model_name("ViT-B/32", None) == ("ViT-B-32-quickgelu", "openai")
    assert resolve_model_name("ViT-B-16", "laion2b_s34b_b88k") == ("ViT-B-16", "laion2b_s34b_b88k")


def test_random_weights_are_seeded_and_say_so(caplog):
    first, spec = create_clip("Test-ViT-Tiny", "none", seed=3)
    second, _ = create_clip("Test-ViT-Tiny", "none", seed=3)
    other, _ = create_clip("Test-ViT-Tiny", "none", seed=4)
    assert spec.pretrained == "none" and spec.seed == 3
    assert "RANDOM WEIGHTS" in caplog.text
    assert torch.equal(first.visual.conv1.weight, second.visual.conv1.weight)
    assert not torch.equal(first.visual.conv1.weight, other.visual.conv1.weight)


def test_unknown_tag_and_model_give_clear_errors():
    with pytest.raises(BackboneError, match="neither a pretrained tag"):
        create_clip("Test-ViT-Tiny", "no-such-tag")
    with pytest.raises(BackboneError, match="unknown open_clip model"):
        create_clip("ViT-Nope-1", "none")


def test_local_weight_file_is_identified_by_hash(tmp_path):
    from safetensors.torch import save_file

    clip = make_clip(seed=7)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    loaded, spec = create_clip("Test-ViT-Tiny", str(path))
    assert spec.weights_sha256 and len(spec.weights_sha256) == 64
    assert torch.equal(loaded.visual.conv1.weight, clip.visual.conv1.weight)


def test_offline_download_failure_is_one_clear_line(monkeypatch):
    import open_clip

    def refuse(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no network")

    monkeypatch.setattr(open_clip, "create_model", refuse)
    with pytest.raises(BackboneError) as info:
        create_clip("ViT-B/32", None)
    message = str(info.value)
    assert "ViT-B-32-quickgelu" in message and "openai" in message and "--pretrained" in message
    assert "\n" not in message


def test_cls_attention_matches_multihead_attention_weights():
    from microclip.backbone import last_block_cls_attention

    clip = make_clip()
    backbone = Backbone(clip.visual)
    images = torch.rand(2, 3, 32, 32)
    captured = {}
    last = clip.visual.transformer.resblocks[-1]
    last.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0]))
    clip.encode_image(backbone.normalize_pixels(images))
    y = last.ln_1(captured["x"])
    _, weights = last.attn(y, y, y, need_weights=True, average_attn_weights=True)  # (B, L, L)
    torch.testing.assert_close(last_block_cls_attention(backbone, images), weights[:, 0, 1:], atol=1e-6, rtol=1e-5)


def test_local_dir_inside_the_project_is_recorded_relative(tiny_model_dir, monkeypatch, tmp_path):
    import shutil

    from microclip import resources

    project = tmp_path / "project"
    shutil.copytree(tiny_model_dir, project / "checkpoints" / "tiny")
    monkeypatch.setattr(resources, "PROJECT_ROOT", project)
    _, spec = create_clip(f"local-dir:{project / 'checkpoints' / 'tiny'}")
    assert spec.clip_model == "local-dir:checkpoints/tiny"
    monkeypatch.chdir(tmp_path)  # another working directory: the recorded path still resolves
    _, again = create_clip(spec.clip_model)
    assert again.weights_sha256 == spec.weights_sha256
