from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import make_clip

from microclip.backbone import Backbone
from microclip.heads import Heads
from microclip.model import MethodConfig, MicroCLIP


def random_heads(classes: int, dim: int) -> Heads:
    return Heads(
        [f"c{i}" for i in range(classes)], F.normalize(torch.randn(classes, dim), dim=-1), torch.randn(classes, dim)
    )


def test_trainable_set_for_vit_b_32_with_102_classes_matches_reference_count():
    import open_clip

    clip = open_clip.create_model("ViT-B-32-quickgelu")  # random weights: only the shapes matter
    model = MicroCLIP(Backbone(clip.visual), random_heads(102, 512))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 1_861_632
    assert trainable == sum(p.numel() for p in model.trainable_parameters().values())
    assert not model.backbone.visual.proj.requires_grad and not model.backbone.visual.conv1.weight.requires_grad


def test_forward_shapes_and_exact_split(tiny_clip):
    model = MicroCLIP(Backbone(make_clip().visual), random_heads(3, 32))
    out = model(torch.rand(2, 3, 32, 32))
    assert out.mask.shape == (2, 16) and out.soap.weights.shape == (2, 17)
    torch.testing.assert_close(out.soap.weights.sum(1), torch.ones(2))
    # The fused logits from the tokens, computed independently: 100 (ρ g + (1-ρ) f) · Ŵ*ᵀ with unit rows.
    g = out.tokens.cls_embed / out.tokens.cls_embed.norm(dim=1, keepdim=True)
    w_hat = model.heads.w_star / model.heads.w_star.norm(dim=1, keepdim=True)
    rho = model.config.fusion_ratio
    torch.testing.assert_close(out.logits.fused, 100 * (rho * g + (1 - rho) * out.fg_embed) @ w_hat.T)
    torch.testing.assert_close(out.logits.cls_part, 100 * rho * g @ w_hat.T)
    torch.testing.assert_close(out.fg_embed.norm(dim=1), torch.ones(2))


def test_adapted_state_round_trip_and_only_adaptable_tensors():
    first = MicroCLIP(Backbone(make_clip(seed=0).visual), random_heads(3, 32))
    with torch.no_grad():
        for param in first.trainable_parameters().values():
            param.add_(torch.randn_like(param))
    state = first.adapted_state()
    assert all("ln" in k or k.startswith(("soap.", "heads.")) for k in state)
    second = MicroCLIP(Backbone(make_clip(seed=0).visual), random_heads(3, 32))
    second.load_adapted_state(state)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(first(images).logits.fused, second(images).logits.fused)


def test_wca_baseline_freezes_soap_and_learnable_null_trains():
    frozen = MicroCLIP(Backbone(make_clip().visual), random_heads(3, 32), MethodConfig(train_soap=False))
    assert not any(n.startswith("soap.") for n in frozen.trainable_parameters())
    learnable = MicroCLIP(Backbone(make_clip().visual), random_heads(3, 32), MethodConfig(learnable_null=True))
    assert "soap.null_token" in learnable.trainable_parameters()


def test_relabel_shares_the_tower_and_soap_and_builds_heads_for_new_classes(tiny_model_dir):
    from microclip.backbone import create_clip, get_tokenizer
    from microclip.heads import TextEncoder, build_head_weights

    model, _, encoder = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, ["a", "b"], keep_text=True)
    with torch.no_grad():
        for param in model.soap.parameters():
            param.add_(0.1)
    model.train()
    relabelled = model.relabel(encoder, ["cat", "dog", "emu"], ["a photo of a {}."])
    assert relabelled.classes == ("cat", "dog", "emu") and not relabelled.training and model.training
    assert relabelled.backbone is model.backbone
    for key, value in model.soap.state_dict().items():
        assert torch.equal(relabelled.soap.state_dict()[key], value)
    # the new heads are what building them from the base text tower gives
    clip, spec = create_clip(f"local-dir:{tiny_model_dir}")
    expected = build_head_weights(TextEncoder(clip, get_tokenizer(spec)), ["cat", "dog", "emu"], ["a photo of a {}."])
    torch.testing.assert_close(relabelled.heads.w_llm, expected.w_llm.to(relabelled.heads.w_llm.dtype))
