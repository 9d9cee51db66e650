from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import make_clip

from microclip.backbone import Backbone
from microclip.heads import Heads
from microclip.model import MethodConfig, MicroCLIP


def random_heads(classes: int, dim: int) -> Heads:
    return Heads([f"c{i}" for i in range(classes)], F.normalize(torch.randn(classes, dim), dim=-1),
                 torch.randn(classes, dim))


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
    torch.testing.assert_close(out.logits.fused, out.logits.cls_part + out.logits.fg_part)
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
