from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from microclip.backbone import get_tokenizer
from microclip.heads import (
    BranchLogits,
    Heads,
    TextEncoder,
    build_head_weights,
    description_weighted,
    template_embeddings,
)


def test_template_embedding_sums_unnormalised_rows():
    table = {"a x": torch.tensor([3.0, 0.0]), "b x": torch.tensor([0.0, 1.0])}

    def encode(texts):
        return torch.stack([table[t] for t in texts])

    t_c = template_embeddings(encode, ["x"], ["a {}", "b {}"])
    # Reference: normalize(sum of raw rows) = normalize([3, 1]); standard ensembling would give [1, 1]/√2.
    torch.testing.assert_close(t_c[0], torch.tensor([3.0, 1.0]) / math.sqrt(10))


def test_w_llm_weights_descriptions_by_cosine_to_template():
    e1 = torch.tensor([1.0, 0.0])
    e2 = F.normalize(torch.tensor([1.0, 1.0]), dim=0)
    anchor = torch.tensor([1.0, 0.0])
    w1, w2 = 1.0, 1 / math.sqrt(2)
    expected = F.normalize((w1 * e1 + w2 * e2) / (w1 + w2), dim=0)
    torch.testing.assert_close(description_weighted(torch.stack([e1, e2]), anchor), expected)


def test_build_heads_from_descriptions_and_fallback(tiny_clip):
    from microclip.backbone import BaseModelSpec

    tokenizer = get_tokenizer(BaseModelSpec("Test-ViT-Tiny", "none"))
    encoder = TextEncoder(tiny_clip, tokenizer)
    descriptions = {"cat": ["a small furry animal.", "whiskers and a tail."], "dog": []}
    weights = build_head_weights(encoder, ["cat", "dog"], ["a photo of a {}."], descriptions)
    embeds = F.normalize(encoder(descriptions["cat"]), dim=-1)
    torch.testing.assert_close(weights.w_star_init[0], F.normalize(embeds.mean(0), dim=0))
    torch.testing.assert_close(weights.w_llm[0], description_weighted(embeds, weights.template_embeds[0]))
    # A class without descriptions uses its template embedding in both heads.
    torch.testing.assert_close(weights.w_llm[1], weights.template_embeds[1])
    torch.testing.assert_close(weights.w_star_init[1], weights.template_embeds[1])
    handcrafted = build_head_weights(encoder, ["cat", "dog"], ["a photo of a {}."], descriptions, True)
    torch.testing.assert_close(handcrafted.w_star_init, handcrafted.template_embeds)


def test_long_descriptions_are_counted_as_truncated(tiny_clip, caplog):
    from microclip.backbone import BaseModelSpec

    encoder = TextEncoder(tiny_clip, get_tokenizer(BaseModelSpec("Test-ViT-Tiny", "none")))
    long = " ".join(["feather"] * 40)  # the test model's context is 24 tokens
    weights = build_head_weights(encoder, ["bird"], descriptions={"bird": [long, "a bird.", long]})
    assert weights.n_truncated == 2
    assert "2 description sentences" in caplog.text


def test_fusion_split_is_exact():
    torch.manual_seed(0)
    w_star = torch.randn(4, 8)
    heads = Heads(["a", "b", "c", "d"], F.normalize(torch.randn(4, 8), dim=-1), w_star)
    g = F.normalize(torch.randn(3, 8), dim=-1)
    f = F.normalize(torch.randn(3, 8), dim=-1)
    logits = heads.branch_logits(g, f, ratio=0.3)
    w_hat = F.normalize(w_star, dim=-1)
    torch.testing.assert_close(logits.fused, 100 * (0.3 * g + 0.7 * f) @ w_hat.T)
    torch.testing.assert_close(logits.fg_part, 70 * f @ w_hat.T)
    torch.testing.assert_close(logits.cls_part, 30 * g @ w_hat.T)
    refused = logits.with_ratio(1.0)
    assert isinstance(refused, BranchLogits)
    torch.testing.assert_close(refused.fused, 100 * g @ w_hat.T)
