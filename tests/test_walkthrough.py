"""The walkthrough's numbers against the model's own forward pass and against independent NumPy
recomputations of each step (affinity graph, Laplacian, Fiedler vector, SOAP attention, [FG])."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, draw_sample

from microclip.checkpoint import load_model
from microclip.data.transforms import test_transform
from microclip.explain import explain_batch
from microclip.heads import TextEncoder
from microclip.model import MethodConfig, MicroCLIP
from microclip.soap import foreground_mask
from microclip.walkthrough import STEP_IDS, stable_ratio_range, step, walkthrough, walkthrough_tensor

DESCRIPTIONS = {name: [f"a {name} on a dark noisy background.", f"a picture showing one {name}.",
                       f"a small {name} in the middle."] for name in CLASSES}
TEMPLATES = ["a photo of a {}."]
ROOT = Path(__file__).resolve().parent.parent
TOY_CHECKPOINT = ROOT / "checkpoints" / "toybirds-microclip.safetensors"
TOY_EXAMPLE = ROOT / "assets" / "examples" / "toybird-wickstel-tit.png"


def build(model_dir, config: MethodConfig | None = None, perturb: bool = True) -> tuple[MicroCLIP, TextEncoder]:
    model, _, encoder = MicroCLIP.build(f"local-dir:{model_dir}", None, CLASSES, TEMPLATES, DESCRIPTIONS,
                                        config=config, keep_text=True)
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


def test_every_step_is_there_in_order_and_the_result_is_plain_json(adapted, image):
    model, encoder = adapted
    result = walkthrough_tensor(model, image, descriptions=DESCRIPTIONS, text_encoder=encoder, templates=TEMPLATES)
    assert tuple(s["id"] for s in result["steps"]) == STEP_IDS
    assert all(s["why"].endswith(".") and len(s["why"]) > 40 for s in result["steps"])
    assert json.loads(json.dumps(result, allow_nan=False)) == result


@pytest.mark.parametrize("config", [MethodConfig(), MethodConfig(ncut_sign="solver"),
                                    MethodConfig(ncut_threshold="mean"), MethodConfig(ncut_features="keys"),
                                    MethodConfig(pool="ncut_avg"), MethodConfig(fusion_ratio=0.3)],
                         ids=["default", "solver-sign", "mean-threshold", "keys", "ncut-avg", "ratio-0.3"])
def test_the_steps_compose_back_to_the_models_own_forward_pass(tiny_model_dir, image, config):
    model, _ = build(tiny_model_dir, config)
    result = walkthrough_tensor(model, image)
    with torch.no_grad():
        out = model(image[None])
    explanation = explain_batch(model, image[None])[0]
    final = step(result, "prediction")
    for branch, logits in (("cls", out.logits.cls), ("fg", out.logits.fg), ("fused", out.logits.fused)):
        np.testing.assert_allclose(final["logits"][branch], logits[0].numpy(), rtol=0, atol=1e-5)
    soap = step(result, "soap")
    np.testing.assert_allclose(np.ravel(soap["weights"]), out.soap.weights[0, :-1].numpy(), rtol=0, atol=1e-7)
    assert soap["null_weight"] == pytest.approx(explanation.null_weight, abs=1e-7)
    np.testing.assert_allclose(soap["weights"], explanation.soap_weights, rtol=0, atol=1e-7)
    graph = step(result, "graph")
    np.testing.assert_array_equal(graph["mask"], explanation.ncut_mask)
    assert graph["fiedler_reproduces_mask"]
    assert final["prediction"] == model.classes[explanation.prediction("fused")]
    assert result["ratio"] == pytest.approx(config.fusion_ratio)


def test_weights_are_the_softmax_of_the_attention_logits_and_sum_to_one_with_the_null(case):
    soap = step(walkthrough_tensor(*case), "soap")
    logits = np.append(np.ravel(soap["logits"]), soap["null_logit"])
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    np.testing.assert_allclose(np.append(np.ravel(soap["weights"]), soap["null_weight"]), expected, atol=1e-6)
    assert np.sum(soap["weights"]) + soap["null_weight"] == pytest.approx(1.0, abs=1e-6)
    assert soap["weight_sum"] == pytest.approx(1.0, abs=1e-6)
    assert soap["null_logit"] == 0.0  # the zero null token's key is zero
    ranked = sorted(np.ravel(soap["weights"]), reverse=True)
    assert [p["weight"] for p in soap["top_patches"]] == pytest.approx(ranked[:len(soap["top_patches"])])


def test_the_graph_matches_an_independent_numpy_computation(case):
    model, image = case
    graph = step(walkthrough_tensor(model, image), "graph")
    with torch.no_grad():
        tokens = model.backbone(image[None]).patches[0].double().numpy()
    dots = tokens @ tokens.T
    affinity = np.where(dots > 0.2, 1.0, 1e-6)
    np.testing.assert_array_equal(graph["affinity"], (dots > 0.2).astype(int))
    degree = affinity.sum(1)
    scale = 1.0 / (np.sqrt(degree) + 1e-6)
    laplacian = scale[:, None] * (np.diag(degree) - affinity) * scale[None, :]
    values = np.linalg.eigvalsh(laplacian)
    np.testing.assert_allclose(graph["eigenvalues"], values[:4], atol=1e-9)
    np.testing.assert_allclose(np.ravel(graph["degree"]), degree, rtol=1e-12)
    fiedler = np.ravel(graph["fiedler"])
    assert np.linalg.norm(fiedler) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(laplacian @ fiedler, values[1] * fiedler, atol=1e-8)  # an eigenvector of λ2
    assert graph["threshold"] == pytest.approx(np.std(fiedler, ddof=1))
    np.testing.assert_array_equal(np.ravel(graph["mask"]), fiedler > np.std(fiedler, ddof=1))
    library = foreground_mask(torch.from_numpy(tokens)[None].float())[0].numpy()
    np.testing.assert_array_equal(np.ravel(graph["mask"]), library)
    assert graph["n_foreground"] == int(library.sum())
    inside = library.astype(bool)
    cut = affinity[inside][:, ~inside].sum()
    assert graph["ncut_value"] == pytest.approx(cut / affinity[inside].sum() + cut / affinity[~inside].sum())
    assert graph["order"][0] == int(np.argmax(fiedler))
    if graph["n_edges"] < len(fiedler) ** 2:  # a real split: some links are cut, the foreground is a part
        assert 0 < graph["n_foreground"] < len(fiedler) and graph["cut_edges"] > 0


def test_fg_and_its_logits_recomposed_from_tokens_and_the_soap_matrices(case):
    """q → softmax over the patches only (a zero null token drops out of f) → h → f → 100·f·Ŵ*."""
    model, image = case
    result = walkthrough_tensor(model, image)
    with torch.no_grad():
        tokens = model.backbone(image[None])
    patches = tokens.patches[0].double().numpy()
    mask = np.ravel(step(result, "graph")["mask"])
    query = patches[mask].mean(0)
    wq, wk, wv = (p.weight.detach().double().numpy() for p in (model.soap.query_proj, model.soap.key_proj,
                                                      model.soap.value_proj))
    np.testing.assert_allclose(step(result, "query")["norm"], np.linalg.norm(query), rtol=1e-5)
    logits = (patches @ wk.T) @ (wq @ query) / np.sqrt(patches.shape[1])
    np.testing.assert_allclose(np.ravel(step(result, "soap")["logits"]), logits, rtol=1e-4, atol=1e-5)
    alpha = np.exp(logits - logits.max())
    alpha /= alpha.sum()
    pooled = alpha @ (patches @ wv.T)
    proj = model.backbone.visual.proj.detach().double().numpy()
    fg = pooled @ proj
    fg /= np.linalg.norm(fg)
    w_star = model.heads.w_star.detach().double().numpy()
    w_hat = w_star / np.linalg.norm(w_star, axis=1, keepdims=True)
    np.testing.assert_allclose(step(result, "prediction")["logits"]["fg"], 100 * w_hat @ fg, atol=1e-4)
    g = tokens.cls_embed[0].double().numpy()
    assert step(result, "fg")["cos_fg_cls"] == pytest.approx(float(fg @ g), abs=1e-5)


def test_fusion_rows_are_the_exact_split_of_the_fused_logit(adapted, image):
    fusion = step(walkthrough_tensor(adapted[0], image, ratio=0.3), "fusion")
    assert fusion["ratio"] == 0.3
    for row in fusion["rows"]:
        assert row["cls_part"] == pytest.approx(0.3 * row["cls_logit"], rel=1e-6)
        assert row["fg_part"] == pytest.approx(0.7 * row["fg_logit"], rel=1e-6)
        assert row["cls_part"] + row["fg_part"] == pytest.approx(row["fused"], abs=1e-4)


def test_heads_show_how_each_description_weighs_in_the_class_vectors(tiny_model_dir, image):
    fresh, encoder = build(tiny_model_dir, perturb=False)
    heads = step(walkthrough_tensor(fresh, image, descriptions=DESCRIPTIONS, text_encoder=encoder,
                                    templates=TEMPLATES), "heads")
    assert heads["n_classes"] == len(CLASSES) and len(heads["classes"]) == len(CLASSES)
    for row in heads["classes"]:
        assert row["source"] == "descriptions" and row["n_descriptions"] == 3
        shares = [d["share_in_w_llm"] for d in row["descriptions"]]
        assert sum(shares) == pytest.approx(1.0) and shares == sorted(shares, reverse=True)
        assert row["w_llm_rebuilt_cos"] == pytest.approx(1.0, abs=1e-5)  # W_LLM is exactly these descriptions
        assert row["w_star_vs_initial_cos"] == pytest.approx(1.0, abs=1e-5)  # not adapted: W* at its start
        texts = {d["text"] for d in row["descriptions"]}
        assert texts == set(DESCRIPTIONS[row["class"]])
    adapted, _ = build(tiny_model_dir)
    moved = step(walkthrough_tensor(adapted, image, descriptions=DESCRIPTIONS, text_encoder=encoder,
                                    templates=TEMPLATES), "heads")
    assert all(row["w_star_vs_initial_cos"] < 0.9999 for row in moved["classes"])
    plain = step(walkthrough_tensor(adapted, image), "heads")  # no text tower: sentences unknown, no weights
    assert all("descriptions" not in row and row["source"] == "templates" for row in plain["classes"])


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
    assert result["image_size"] == model.backbone.image_size
    assert step(result, "patches")["n_patches"] == model.backbone.grid[0] * model.backbone.grid[1]
    with pytest.raises(ValueError, match="one image"):
        walkthrough_tensor(model, torch.zeros(2, 3, 32, 32))
