from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import draw_sample
from test_engine import fresh_model

from microclip.explain import Explanation, explain_batch, explain_image


@pytest.fixture(scope="module")
def model():
    return fresh_model().eval()


def test_explanation_matches_the_forward_pass(model):
    images = torch.rand(2, 3, 32, 32)
    explanations = explain_batch(model, images)
    with torch.no_grad():
        out = model(images)
    for b, explanation in enumerate(explanations):
        np.testing.assert_allclose(explanation.logits_fused, out.logits.fused[b].numpy(), rtol=1e-5, atol=1e-5)
        assert explanation.soap_weights.shape == (4, 4)
        assert explanation.soap_weights.sum() + explanation.null_weight == pytest.approx(1.0, abs=1e-5)
        # Each branch's share, from the tokens rather than from the fused logit it is a split of.
        g = out.tokens.cls_embed[b] / out.tokens.cls_embed[b].norm()
        w_hat = (model.heads.w_star / model.heads.w_star.norm(dim=1, keepdim=True)).detach()
        rho = explanation.ratio
        for c in range(3):
            cls_part, fg_part = explanation.contributions(c)
            assert cls_part == pytest.approx(100 * rho * float(g @ w_hat[c]), abs=1e-4)
            assert fg_part == pytest.approx(100 * (1 - rho) * float(out.fg_embed[b] @ w_hat[c]), abs=1e-4)


def test_soaps_terms_add_up_to_each_classs_fg_logit_and_are_soaps_weight_times_value(model):
    images = torch.rand(2, 3, 32, 32)
    explanations = explain_batch(model, images)
    with torch.no_grad():
        out = model(images)
        w_hat = model.heads.w_star_hat()
        values = model.soap.value_proj.weight @ out.tokens.patches[1, 7]  # the reference's SOAP: W_v t
        length = float((out.soap.pooled[1] @ model.backbone.visual.proj).norm())
        by_hand = 100 * float(out.soap.weights[1, 7]) * (values @ model.backbone.visual.proj) @ w_hat[2] / length
    for b, explanation in enumerate(explanations):
        assert explanation.soap_fg_terms.shape == (4, 4, len(model.classes))
        totals = explanation.soap_fg_terms.sum(axis=(0, 1)) + explanation.null_fg_terms
        np.testing.assert_allclose(totals, out.logits.fg[b].numpy(), rtol=1e-5, atol=1e-4)  # the forward pass's own
    assert explanations[1].soap_fg_terms.reshape(16, -1)[7, 2] == pytest.approx(float(by_hand), abs=1e-5)
    again = Explanation.from_dict(json.loads(explanations[0].to_json()))
    np.testing.assert_allclose(again.soap_fg_terms, explanations[0].soap_fg_terms)
    saved_before = {k: v for k, v in explanations[0].to_dict().items() if k not in ("soap_fg_terms", "null_fg_terms")}
    assert Explanation.from_dict(saved_before).soap_fg_terms is None  # an explanation saved before the terms


def test_each_image_of_a_batch_gets_its_own_maps(model):
    # The batch is copied to the host once and sliced; each slice must be what that image alone gives.
    images = torch.rand(3, 3, 32, 32)
    batch = explain_batch(model, images)
    for b, explanation in enumerate(batch):
        alone = explain_batch(model, images[b : b + 1])[0]
        for field in (
            "logits_cls",
            "logits_fg",
            "soap_weights",
            "cls_similarity",
            "patch_class_cosine",
            "soap_fg_terms",
        ):
            np.testing.assert_allclose(getattr(explanation, field), getattr(alone, field), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(explanation.ncut_mask, alone.ncut_mask)
        assert explanation.null_weight == pytest.approx(alone.null_weight, abs=1e-6)
        assert explanation.patch_class_cosine.shape == (4, 4, len(model.classes))
    assert not np.array_equal(batch[0].soap_weights, batch[1].soap_weights)


def test_fusion_ratio_without_a_new_forward_pass(model):
    images = torch.rand(1, 3, 32, 32)
    explanation = explain_batch(model, images)[0]
    for ratio in (0.0, 0.3, 1.0):
        with torch.no_grad():
            rerun = model(images, ratio=ratio).logits.fused[0].numpy()
        np.testing.assert_allclose(explanation.with_ratio(ratio).logits_fused, rerun, rtol=1e-5, atol=1e-4)


def test_cls_similarity_and_patch_class_cosine_are_cosines(model):
    images = torch.rand(1, 3, 32, 32)
    explanation = explain_batch(model, images)[0]
    with torch.no_grad():
        tokens = model(images).tokens
    patch = tokens.patches[0, 5]
    expected = torch.nn.functional.cosine_similarity(patch, tokens.cls_token[0], dim=0).item()
    assert explanation.cls_similarity.reshape(-1)[5] == pytest.approx(expected, abs=1e-5)
    with torch.no_grad():
        projected = model.backbone.project(patch[None])[0]
        w_hat = model.heads.w_star_hat()[2]
    assert explanation.patch_class_cosine.reshape(16, 3)[5, 2] == pytest.approx(float(projected @ w_hat), abs=1e-5)


def test_json_round_trip_and_any_pil_image(model):
    image = draw_sample(1, np.random.default_rng(0), size=57).convert("P")  # odd size, palette mode
    explanation = explain_image(model, image)
    again = Explanation.from_dict(json.loads(explanation.to_json()))
    np.testing.assert_allclose(again.logits_fused, explanation.logits_fused)
    assert again.ncut_mask.dtype == bool and again.grid == (4, 4)
    for (name_a, prob_a), (name_b, prob_b) in zip(again.top_k("fg", 2), explanation.top_k("fg", 2)):
        assert name_a == name_b and prob_a == pytest.approx(prob_b, rel=1e-5)
