"""The walkthrough's numbers against the model's own forward pass and against independent NumPy
recomputations of each step (affinity graph, Laplacian, Fiedler vector, SOAP attention, [FG])."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, draw_sample

from microclip.checkpoint import load_model
from microclip.data.transforms import test_transform
from microclip.describe import article_for
from microclip.explain import explain_batch
from microclip.heads import TextEncoder, build_head_weights
from microclip.model import MethodConfig, MicroCLIP
from microclip.sentence_cache import CachedText
from microclip.soap import foreground_mask
from microclip.walkthrough import (
    STEP_IDS,
    PatchTruth,
    Walkthrough,
    mask_facts,
    stable_ratio_range,
    to_json,
    walkthrough,
    walkthrough_tensor,
)
from viz.html import num
from viz.steps import here, render_walkthrough

DESCRIPTIONS = {
    name: [f"a {name} on a dark noisy background.", f"a picture showing one {name}.", f"a small {name} in the middle."]
    for name in CLASSES
}
TEMPLATES = ["a photo of a {}."]
ROOT = Path(__file__).resolve().parent.parent
TOY_CHECKPOINT = ROOT / "checkpoints" / "toybirds-microclip.safetensors"
TOY_EXAMPLE = ROOT / "assets" / "examples" / "toybird-lumbrel-tit.png"


def build(model_dir, config: MethodConfig | None = None, perturb: bool = True) -> tuple[MicroCLIP, TextEncoder]:
    model, _, encoder = MicroCLIP.build(
        f"local-dir:{model_dir}", None, CLASSES, TEMPLATES, DESCRIPTIONS, config=config, keep_text=True
    )
    if perturb:  # an "adapted" model: SOAP no longer the identity, W* moved away from its start
        torch.manual_seed(0)
        with torch.no_grad():
            for param in model.trainable_parameters().values():
                param.add_(0.05 * torch.randn_like(param))
    return model.eval(), encoder


@pytest.fixture(scope="module")
def adapted(tiny_model_dir):
    return build(tiny_model_dir)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    picture = draw_sample(1, np.random.default_rng(5), size=32)
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.fixture(scope="module")
def toy() -> tuple[MicroCLIP, torch.Tensor]:
    if not (TOY_CHECKPOINT.is_file() and TOY_EXAMPLE.is_file()):
        pytest.skip("the shipped toy-world checkpoint or example is missing")
    from PIL import Image

    model = load_model(TOY_CHECKPOINT, "cpu").eval()
    return model, test_transform(model.backbone.image_size)(Image.open(TOY_EXAMPLE).convert("RGB"))


@pytest.fixture(params=["tiny", "toy"])
def case(request, adapted, image) -> tuple[MicroCLIP, torch.Tensor]:
    """The tiny random ViT (its 4x4 graph is nearly complete) and the shipped toy-world model on a toy
    bird (an 8x8 graph with a real split), when the checkpoint is there."""
    return (adapted[0], image) if request.param == "tiny" else request.getfixturevalue("toy")


def test_every_step_is_there_in_order_as_numbers_and_the_json_is_plain(adapted, image):
    model, encoder = adapted
    result = walkthrough_tensor(model, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES)
    assert isinstance(result, Walkthrough)
    assert tuple(type(s).__name__.removesuffix("Step").lower() for s in result.steps) == STEP_IDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.soap.null_weight = 0.0  # type: ignore[misc]
    names = {"prediction", "runner_up"}  # class names are data; any other text would be prose
    for step_object in result.steps:  # numbers only: no sentence in any step
        for field in dataclasses.fields(step_object):
            value = getattr(step_object, field.name)
            assert not (isinstance(value, str) and " " in value and field.name not in names), field.name
    data = to_json(result)
    assert [s["id"] for s in data["steps"]] == list(STEP_IDS)
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_the_model_comes_back_in_the_mode_it_came_in(adapted, image):
    model = adapted[0]
    model.train()
    try:
        first = walkthrough_tensor(model, image)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    second = walkthrough_tensor(model, image)  # in train mode the numbers were still eval-mode numbers
    assert not model.training
    np.testing.assert_array_equal(first.prediction.logits["fused"], second.prediction.logits["fused"])


@pytest.mark.parametrize(
    "config",
    [
        MethodConfig(),
        MethodConfig(ncut_sign="solver"),
        MethodConfig(ncut_threshold="mean"),
        MethodConfig(ncut_features="keys"),
        MethodConfig(pool="ncut_avg"),
        MethodConfig(fusion_ratio=0.3),
    ],
    ids=["default", "solver-sign", "mean-threshold", "keys", "ncut-avg", "ratio-0.3"],
)
def test_the_steps_compose_back_to_the_models_own_forward_pass(tiny_model_dir, image, config):
    model, _ = build(tiny_model_dir, config)
    result = walkthrough_tensor(model, image)
    with torch.no_grad():
        out = model(image[None])
    explanation = explain_batch(model, image[None])[0]
    final = result.prediction
    for branch, logits in (("cls", out.logits.cls), ("fg", out.logits.fg), ("fused", out.logits.fused)):
        np.testing.assert_allclose(final.logits[branch], logits[0].numpy(), rtol=0, atol=1e-5)
    soap = result.soap
    np.testing.assert_allclose(np.ravel(soap.weights), out.soap.weights[0, :-1].numpy(), rtol=0, atol=1e-7)
    assert soap.null_weight == pytest.approx(explanation.null_weight, abs=1e-7)
    np.testing.assert_allclose(soap.weights, explanation.soap_weights, rtol=0, atol=1e-7)
    graph = result.graph
    np.testing.assert_array_equal(graph.mask, explanation.ncut_mask)
    assert graph.fiedler_reproduces_mask
    assert final.prediction == model.classes[explanation.prediction("fused")]
    assert result.ratio == pytest.approx(config.fusion_ratio)


def test_weights_are_the_softmax_of_the_attention_logits_and_sum_to_one_with_the_null(case):
    soap = walkthrough_tensor(*case).soap
    logits = np.append(np.ravel(soap.logits), soap.null_logit)
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    np.testing.assert_allclose(np.append(np.ravel(soap.weights), soap.null_weight), expected, atol=1e-6)
    assert np.sum(soap.weights) + soap.null_weight == pytest.approx(1.0, abs=1e-6)
    assert soap.weight_sum == pytest.approx(1.0, abs=1e-6)
    assert soap.null_logit == 0.0  # the zero null token's key is zero
    assert soap.uniform == 1.0 / (soap.weights.size + 1)  # one definition: the N patches and the null token
    ranked = sorted(np.ravel(soap.weights), reverse=True)
    assert [p.weight for p in soap.top_patches] == pytest.approx(ranked[: len(soap.top_patches)])


def test_the_graph_matches_an_independent_numpy_computation(case):
    model, image = case
    graph = walkthrough_tensor(model, image).graph
    with torch.no_grad():
        tokens = model.backbone(image[None]).patches[0].double().numpy()
    dots = tokens @ tokens.T
    affinity = np.where(dots > 0.2, 1.0, 1e-6)
    np.testing.assert_array_equal(graph.affinity, dots > 0.2)
    assert graph.dot_range == pytest.approx((dots.min(), dots.max()))
    degree = affinity.sum(1)
    scale = 1.0 / (np.sqrt(degree) + 1e-6)
    laplacian = scale[:, None] * (np.diag(degree) - affinity) * scale[None, :]
    values = np.linalg.eigvalsh(laplacian)
    np.testing.assert_allclose(graph.eigenvalues, values[:4], atol=1e-9)
    np.testing.assert_allclose(np.ravel(graph.degree), degree, rtol=1e-12)
    fiedler = np.ravel(graph.fiedler)
    assert np.linalg.norm(fiedler) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(laplacian @ fiedler, values[1] * fiedler, atol=1e-8)  # an eigenvector of λ2
    assert graph.threshold == pytest.approx(np.std(fiedler, ddof=1))
    np.testing.assert_array_equal(np.ravel(graph.mask), fiedler > np.std(fiedler, ddof=1))
    library = foreground_mask(torch.from_numpy(tokens)[None].float())[0].numpy()
    np.testing.assert_array_equal(np.ravel(graph.mask), library)
    assert graph.n_foreground == int(library.sum())
    inside = library.astype(bool)
    cut = affinity[inside][:, ~inside].sum()
    assert graph.ncut_value == pytest.approx(cut / affinity[inside].sum() + cut / affinity[~inside].sum())
    assert graph.order[0] == int(np.argmax(fiedler))
    if graph.n_edges < len(fiedler) ** 2:  # a real split: some links are cut, the foreground is a part
        assert 0 < graph.n_foreground < len(fiedler) and graph.cut_edges > 0


def test_fg_and_its_logits_recomposed_from_tokens_and_the_soap_matrices(case):
    """q → softmax over the patches only (a zero null token drops out of f) → h → f → 100·f·Ŵ*."""
    model, image = case
    result = walkthrough_tensor(model, image)
    with torch.no_grad():
        tokens = model.backbone(image[None])
    patches = tokens.patches[0].double().numpy()
    mask = np.ravel(result.graph.mask)
    query = patches[mask].mean(0)
    wq, wk, wv = (
        p.weight.detach().double().numpy() for p in (model.soap.query_proj, model.soap.key_proj, model.soap.value_proj)
    )
    np.testing.assert_allclose(result.query.norm, np.linalg.norm(query), rtol=1e-5)
    logits = (patches @ wk.T) @ (wq @ query) / np.sqrt(patches.shape[1])
    np.testing.assert_allclose(np.ravel(result.soap.logits), logits, rtol=1e-4, atol=1e-5)
    alpha = np.exp(logits - logits.max())
    alpha /= alpha.sum()
    pooled = alpha @ (patches @ wv.T)
    proj = model.backbone.visual.proj.detach().double().numpy()
    fg = pooled @ proj
    fg /= np.linalg.norm(fg)
    w_star = model.heads.w_star.detach().double().numpy()
    w_hat = w_star / np.linalg.norm(w_star, axis=1, keepdims=True)
    np.testing.assert_allclose(result.prediction.logits["fg"], 100 * w_hat @ fg, atol=1e-4)
    g = tokens.cls_embed[0].double().numpy()
    assert result.fg.cos_fg_cls == pytest.approx(float(fg @ g), abs=1e-5)
    # each patch's term in [FG]'s top class's [FG] logit: 100·α_j·(P·W_v t_j)·ŵ_c / ‖P·h‖, and they add up to it
    c = int(np.argmax(result.prediction.logits["fg"]))
    terms = 100 * alpha * ((patches @ wv.T) @ proj @ w_hat[c]) / np.linalg.norm(pooled @ proj)
    np.testing.assert_allclose(np.ravel(result.fg.top_terms), terms, rtol=1e-4, atol=1e-5)
    total = result.fg.top_terms.sum() + result.fg.top_null_term
    assert total == pytest.approx(result.prediction.logits["fg"][c], abs=1e-4)


def test_a_centred_values_model_walks_through_its_own_formula(tiny_model_dir, image):
    model, _ = build(tiny_model_dir, MethodConfig(centre_values=True))
    centre = torch.randn(model.soap.width, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        model.soap.value_centre.copy_(centre)
    result = walkthrough_tensor(model, image)
    with torch.no_grad():
        out = model(image[None])
        patches = out.tokens.patches[0]
        values = (patches - centre) @ model.soap.value_proj.weight.T + centre  # by hand: W_v (s_j − c) + c
        pooled = (out.soap.weights[0, :-1, None] * values).sum(0)
    assert result.fg.centre_values and result.fg.pooled_norm == pytest.approx(float(pooled.norm()), rel=1e-5)
    np.testing.assert_allclose(result.prediction.logits["fg"], out.logits.fg[0].numpy(), atol=1e-5)
    page = render_walkthrough(result, np.zeros((32, 32, 3), np.uint8))
    assert "h = Σ α_j (W_v (s_j − c) + c)" in page and "not the reference" in page
    plain = render_walkthrough(walkthrough_tensor(build(tiny_model_dir)[0], image), np.zeros((32, 32, 3), np.uint8))
    assert "h = Σ α_j W_v s_j" in plain and "(s_j − c)" not in plain


def test_fusion_rows_are_the_exact_split_of_the_fused_logit(adapted, image):
    fusion = walkthrough_tensor(adapted[0], image, ratio=0.3).fusion
    assert fusion.ratio == 0.3
    for row in fusion.rows:
        assert row.cls_part == pytest.approx(0.3 * row.cls_logit, rel=1e-6)
        assert row.fg_part == pytest.approx(0.7 * row.fg_logit, rel=1e-6)
        assert row.cls_part + row.fg_part == pytest.approx(row.fused, abs=1e-4)


def test_fg_step_says_what_the_cut_s_plain_mean_would_predict_on_the_same_weights(toy, image):
    model, tensor = toy
    walk = walkthrough_tensor(model, tensor)
    plain = explain_batch(model.asking(pool="ncut_avg"), tensor[None])[0]  # the ablation through Explore's path
    first = walk.fg.top_cut_mean[0]
    assert first.class_name == plain.classes[plain.prediction("fg")]
    assert first.probability == pytest.approx(plain.probabilities("fg").max(), abs=1e-5)
    same = "the same class" if first.class_name == walk.fg.top[0].class_name else first.class_name
    assert f"it would predict {same} ({first.probability:.1%})" in here("fg", walk)
    page = unescape(render_walkthrough(walk, np.zeros((8, 8, 3), np.uint8)))
    assert "pooled as the plain mean of the cut's foreground (no attention)" in page
    # a model that already pools so has no "instead" to show
    averaged = walkthrough_tensor(model.asking(pool="ncut_avg"), tensor)
    assert averaged.fg.top_cut_mean is None and "Pooled as the plain mean" not in here("fg", averaged)


def test_the_shared_fg_shift_is_split_out_of_the_fusion_rows_and_named_in_the_words(toy, adapted, image):
    model, tensor = toy
    walk = walkthrough_tensor(model, tensor, ratio=0.3)
    explanation = explain_batch(model, tensor[None], ratio=0.3)[0]  # Explore's numbers, from their own pass
    for row in walk.fusion.rows:
        assert row.shift_part == pytest.approx(explanation.shift_part(row.index), abs=1e-4)
        assert row.shift_part == pytest.approx(0.7 * explanation.fg_shift_logits[row.index], abs=1e-4)
    alone = walk.fg.top_unshifted[0]
    assert alone.class_name == explanation.classes[explanation.prediction("fg_unshifted")]
    assert alone.probability == pytest.approx(explanation.probabilities("fg_unshifted").max(), abs=1e-5)
    assert "Without the shift self-training gave every image's [FG] alike" in here("fg", walk)
    page = render_walkthrough(walk, (tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert "of which the shared shift" in page
    # a model whose run did not measure the shift: no column, no sentence
    bare = walkthrough_tensor(adapted[0], image)
    assert all(row.shift_part is None for row in bare.fusion.rows) and bare.fg.top_unshifted is None
    assert "Without the shift" not in here("fg", bare)
    assert "of which the shared shift" not in render_walkthrough(bare, np.zeros((32, 32, 3), np.uint8))


def test_heads_show_each_descriptions_signed_weight_in_the_class_vectors(tiny_model_dir, image):
    fresh, encoder = build(tiny_model_dir, perturb=False)
    heads = walkthrough_tensor(fresh, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES).heads
    assert heads.n_classes == len(CLASSES) and len(heads.classes) == len(CLASSES)
    for row in heads.classes:
        assert row.source == "descriptions" and row.n_descriptions == 3
        # w_j = cos(e_j, t_c), recomputed from the text tower: the signed weight, largest first
        sentences = [d.text for d in row.descriptions]
        embeds = torch.nn.functional.normalize(encoder(sentences), dim=-1).double()
        anchor = torch.nn.functional.normalize(encoder([TEMPLATES[0].format(row.class_name)]), dim=-1)[0].double()
        weights = [d.weight for d in row.descriptions]
        np.testing.assert_allclose(weights, (embeds @ anchor).numpy(), atol=1e-5)
        assert weights == sorted(weights, reverse=True) and row.weight_sum == pytest.approx(sum(weights), abs=1e-6)
        assert row.w_llm_rebuilt_cos == pytest.approx(1.0, abs=1e-5)  # W_LLM is exactly these descriptions
        assert row.w_star_vs_initial_cos == pytest.approx(1.0, abs=1e-5)  # not adapted: W* at its start
        assert set(sentences) == set(DESCRIPTIONS[row.class_name])
    adapted, _ = build(tiny_model_dir)
    moved = walkthrough_tensor(
        adapted, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES
    ).heads
    assert all(row.w_star_vs_initial_cos < 0.9999 for row in moved.classes)
    page = render_walkthrough(
        walkthrough_tensor(adapted, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES),
        np.zeros((32, 32, 3), np.uint8),
    )
    for row in moved.classes:  # how far W* turned, in degrees from its cosine: "+1.000" would hide it
        turned = math.degrees(math.acos(row.w_star_vs_initial_cos))
        assert f"{row.w_star_vs_initial_cos:+.4f} ({turned:.1f}° from its start)" in page
    plain = walkthrough_tensor(adapted, image).heads  # no text tower: sentences unknown, no weights
    assert all(not row.descriptions and row.source == "templates" for row in plain.classes)


def test_the_heads_step_gives_the_answer_with_w_star_back_at_its_start(tiny_model_dir, image):
    adapted, encoder = build(tiny_model_dir)
    walk = walkthrough_tensor(adapted, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES)
    start = walk.heads.start
    # independently: the same tower and SOAP with fresh heads, as an adaptation on these descriptions starts
    fresh = adapted.relabel(encoder, CLASSES, TEMPLATES, DESCRIPTIONS)
    with torch.no_grad():
        fused = fresh(image[None]).logits.fused[0]
    expected = torch.argsort(fused, descending=True)[: len(start.top)].tolist()
    assert [row.index for row in start.top] == expected
    np.testing.assert_allclose([row.logit for row in start.top], fused[expected].numpy(), rtol=0, atol=1e-4)
    now = torch.nn.functional.normalize(adapted.heads.w_star.detach().double(), dim=-1)
    cosines = (now * fresh.heads.w_star_hat().detach().double()).sum(-1).numpy()
    np.testing.assert_allclose(start.turned_degrees, np.degrees(np.arccos(cosines)), rtol=0, atol=1e-3)
    assert start.adapted and start.turned_degrees.min() > 0.1  # the perturbation moved every class
    words = here("heads", walk)
    assert f"W* gives {start.top[0].class_name} ({start.top[0].probability:.1%}" in words
    assert f"{start.turned_degrees.max():.1f}°" in words
    page = unescape(render_walkthrough(walk, np.zeros((32, 32, 3), np.uint8)))
    assert "Fused, W* at its start" in page and "Fused, W* now" in page
    assert json.loads(json.dumps(to_json(walk)))["steps"][7]["start"]["top"][0]["class_name"] == start.top[0].class_name

    unmoved, _ = build(tiny_model_dir, perturb=False)  # a zero-shot model: W* sits on its start
    still = walkthrough_tensor(unmoved, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES)
    assert not still.heads.start.adapted and still.heads.start.turned_degrees.max() < 1e-3
    assert [row.index for row in still.heads.start.top] == [row.index for row in still.prediction.top["fused"]]
    assert "W* is where adaptation starts it" in here("heads", still)
    assert "Fused, W* at its start" not in render_walkthrough(still, np.zeros((32, 32, 3), np.uint8))


def test_the_start_is_left_out_without_a_text_tower_or_past_the_sentence_cap(tiny_model_dir, image, monkeypatch):
    adapted, encoder = build(tiny_model_dir)
    assert walkthrough_tensor(adapted, image).heads.start is None
    monkeypatch.setattr("microclip.walkthrough.MAX_START_SENTENCES", len(CLASSES) * 4 - 1)  # 3 lines + 1 template
    walk = walkthrough_tensor(adapted, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES)
    assert walk.heads.start is None and walk.heads.classes[0].descriptions[0].weight is not None
    assert "Explore's what-if shows it" in render_walkthrough(walk, np.zeros((32, 32, 3), np.uint8))
    assert "W* gives" not in here("heads", walk)


def test_the_start_does_not_warn_of_cut_sentences_once_a_picture(tiny_model_dir, image, caplog):
    adapted, encoder = build(tiny_model_dir)
    encoder.context_length = 8  # the longer descriptions are cut
    with caplog.at_level(logging.WARNING, logger="microclip"):
        assert build_head_weights(encoder, CLASSES, TEMPLATES, DESCRIPTIONS).n_truncated > 0
        assert "were truncated" in caplog.text  # building a model warns, so the check below can fail
        caplog.clear()
        for _ in range(2):
            walk = walkthrough_tensor(
                adapted, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES
            )
    assert walk.heads.start is not None and "truncated" not in caplog.text


def test_the_sentence_cache_counts_cut_sentences_as_its_encoder_does_and_tokenizes_each_once(tiny_model_dir):
    _, encoder = build(tiny_model_dir, perturb=False)
    encoder.context_length = 8  # short enough that the longer sentences are cut
    sentences = [s for lines in DESCRIPTIONS.values() for s in lines] + ["a bird."]
    expected, repeated = encoder.count_truncated(sentences), encoder.count_truncated(sentences[:3])
    assert 0 < expected < len(sentences)
    calls = []
    tokenize = encoder.tokenizer.encode
    encoder.tokenizer.encode = lambda text: calls.append(text) or tokenize(text)
    try:
        cached = CachedText(encoder, capacity=len(sentences) + 1)
        assert cached.count_truncated(sentences) == expected
        assert cached.count_truncated(sentences + sentences[:3]) == expected + repeated
        assert sorted(calls) == sorted(sentences)  # the second count tokenized nothing
        small = CachedText(encoder, capacity=2)  # past its capacity it forgets, and still counts right
        assert small.count_truncated(sentences) == expected and small.count_truncated(sentences) == expected
    finally:
        encoder.tokenizer.encode = tokenize


def test_stable_ratio_range_matches_a_brute_force_sweep():
    rng = np.random.default_rng(0)
    for _ in range(50):
        cls, fg = (torch.from_numpy(rng.normal(50, 5, 6)) for _ in range(2))
        winner = int(torch.argmax(0.5 * cls + 0.5 * fg))
        interval = stable_ratio_range(cls, fg, winner)
        assert interval is not None and interval[0] <= 0.5 <= interval[1]
        for rho in np.linspace(0, 1, 201):
            wins = int(torch.argmax(rho * cls + (1 - rho) * fg)) == winner
            inside = interval[0] + 1e-9 < rho < interval[1] - 1e-9
            outside = rho < interval[0] - 1e-9 or rho > interval[1] + 1e-9
            assert (wins or not inside) and (not wins or not outside)


def test_a_pil_image_of_any_size_goes_through_the_centre_crop(adapted):
    model = adapted[0]
    picture = draw_sample(0, np.random.default_rng(1), size=60).resize((90, 60))
    result = walkthrough(model, picture)
    assert result.image_size == model.backbone.image_size
    assert result.patches.n_patches == model.backbone.grid[0] * model.backbone.grid[1]
    with pytest.raises(ValueError, match="one image"):
        walkthrough_tensor(model, torch.zeros(2, 3, 32, 32))


# ------------------------------------------------------------------ what is true of this image


def _truth(grid, on_object, parts=None, true_class=None) -> PatchTruth:
    """A ground truth with the object on the given patches (whole) and parts on single patches."""
    share = np.zeros(grid)
    for patch in on_object:
        share[patch] = 1.0
    part_share = {}
    for name, patch in (parts or {}).items():
        part_share[name] = np.zeros(grid)
        part_share[name][patch] = 0.3
    return PatchTruth(share, part_share, true_class)


def test_facts_count_the_foreground_on_the_object_and_name_the_part_under_soaps_top_patch(case):
    model, image = case
    plain = walkthrough_tensor(model, image)
    grid, mask, weights = plain.grid, plain.graph.mask, plain.soap.weights
    inside = [tuple(p) for p in np.argwhere(mask)]
    outside = [tuple(p) for p in np.argwhere(~mask)]
    top = tuple(int(i) for i in np.unravel_index(np.argmax(weights), grid))
    # The object exactly on the foreground, a beak on SOAP's top patch.
    on = walkthrough_tensor(model, image, truth=_truth(grid, inside, {"beak": top}, CLASSES[0]))
    assert on.facts.n_foreground == len(inside) == on.facts.n_foreground_on_object == on.facts.n_object
    assert on.facts.soap_top == top and on.facts.soap_top_region == "beak"
    share = np.zeros(grid)
    share[tuple(np.array(inside).T)] = 1.0
    assert on.facts.soap_on_object == pytest.approx(float((weights * share).sum() / weights.sum()))
    assert on.facts.soap_on_parts == pytest.approx(0.3 * weights[top] / weights.sum())
    # The object off the foreground, no part anywhere: the facts (and so the sentences) change.
    off = walkthrough_tensor(model, image, truth=_truth(grid, outside[:3]))
    assert off.facts.n_foreground_on_object == 0 and off.facts.n_object == 3
    expected_region = "bird" if top in outside[:3] else "background"
    assert off.facts.soap_top_region == expected_region
    sentences_on = [here(step_id, on) for step_id in STEP_IDS]
    sentences_off = [here(step_id, off) for step_id in STEP_IDS]
    assert f"{len(inside)} of them on the bird" in here("graph", on)
    assert "0 of them on the bird (which covers 3 patches" in here("graph", off)
    assert "on the beak" in here("soap", on) and f"on the {expected_region}" in here("soap", off)
    # [FG]'s largest term named where it lies: a crest put on that patch is named, and the term is the walk's own.
    term_top = tuple(int(i) for i in np.unravel_index(np.argmax(plain.fg.top_terms), grid))
    crest = walkthrough_tensor(model, image, truth=_truth(grid, inside, {"crest": term_top}, CLASSES[0]))
    assert crest.facts.fg_term_top == term_top and crest.facts.fg_term_top_region == "crest"
    assert f"patch {term_top} adds the most ({plain.fg.top_terms[term_top]:+.2f}), on the crest" in here("fg", crest)
    assert sentences_on != sentences_off
    assert f"This bird is {article_for(CLASSES[0])} {CLASSES[0]}." in here("prediction", on)


def test_a_patch_a_quarter_on_the_object_counts_as_on_it():
    truth = PatchTruth(np.array([[0.25, 0.24], [0.0, 1.0]]), {"crest": np.array([[0.0, 0.01], [0.0, 0.0]])})
    assert truth.on_object.tolist() == [[True, False], [False, True]]
    assert [truth.region(p) for p in ((0, 0), (0, 1), (1, 0))] == ["bird", "crest", "background"]
    facts = mask_facts(
        truth,
        np.array([[True, True], [False, False]]),
        np.array([[0.1, 0.6], [0.2, 0.1]]),
        np.array([[0.0, 0.0], [0.0, 1.0]]),
    )
    assert (facts.n_object, facts.n_part, facts.n_foreground, facts.n_foreground_on_object) == (2, 1, 2, 1)
    assert facts.soap_top == (0, 1) and facts.soap_top_region == "crest" and facts.parts_shown == ("crest",)
    assert facts.cls_top == (1, 1) and facts.cls_top_region == "bird"


def test_without_masks_the_sentences_say_only_what_the_numbers_say(case):
    walk = walkthrough_tensor(*case)
    assert walk.facts is None
    for step_id in STEP_IDS:
        sentence = here(step_id, walk)
        assert "bird" not in sentence and "object" not in sentence and "background" not in sentence
    g = walk.graph
    n = walk.patches.n_patches
    # one unit, the pair of distinct patches, counted by hand from A: linked = cut + within a side
    linked = sum(bool(g.affinity[i, j]) for i in range(n) for j in range(i + 1, n))
    inside = g.mask.reshape(-1)
    cut = sum(bool(g.affinity[i, j]) and inside[i] != inside[j] for i in range(n) for j in range(i + 1, n))
    within = sum(bool(g.affinity[i, j]) and inside[i] == inside[j] for i in range(n) for j in range(i + 1, n))
    assert linked == cut + within and cut == g.cut_edges
    assert here("graph", walk).startswith(
        f"{linked:,} of {n * (n - 1) // 2:,} pairs of patches are linked ({linked / (n * (n - 1) // 2):.0%}); "
        f"the split cuts {cut:,} of those links and keeps {within:,} within a side."
    )
    assert f"{g.n_foreground} of {n} patches in the foreground" in here("graph", walk)
    assert num(walk.soap.null_weight, scientific=True) in here("soap", walk)


def test_ground_truth_on_another_grid_is_refused(adapted, image):
    with pytest.raises(ValueError, match="grid"):
        walkthrough_tensor(adapted[0], image, truth=_truth((3, 3), []))
