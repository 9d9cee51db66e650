"""Explore's "what if SOAP asked another question, or pooled another way?": ``MicroCLIP.asking``, ``studio.queries``
and the ``explore_queries`` / ``explore_pools`` endpoints, against models built independently with each query and
pooling."""

from __future__ import annotations

import re
from dataclasses import replace
from html import unescape

import numpy as np
import pytest
import torch
from conftest import CLASSES, draw_sample, serve
from PIL import Image

from microclip.explain import Explanation, explain_image
from microclip.model import MicroCLIP
from microclip.soap import DETERMINISTIC_QUERIES, POOLS
from studio.queries import effective_patches, pool_views, queries_html, query_views
from studio.registry import ModelRegistry
from ui.app import build_demo

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

BASE = "tiny"


@pytest.fixture(scope="module")
def registry(tiny_model_dir) -> ModelRegistry:
    registry = ModelRegistry("cpu")
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, BASE)
    return registry


@pytest.fixture(scope="module")
def trained(registry) -> MicroCLIP:
    """The tiny model with SOAP moved off its identity start, so that the query's effect is SOAP's own."""
    model = registry.get(BASE).model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.soap.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


def _built_with(model: MicroCLIP, query: str | None = None, pool: str | None = None) -> MicroCLIP:
    """The same weights in a model constructed with ``query`` or ``pool`` in its config (the independent path)."""
    config = replace(model.config, query=query or model.config.query, pool=pool or model.config.pool)
    built = MicroCLIP(model.backbone, model.heads, config, model.base)
    built.soap.load_state_dict(model.soap.state_dict())
    built.fg_shift = model.fg_shift
    return built.eval()


def test_asking_another_query_is_the_model_built_with_it_and_leaves_the_model_as_it_was(trained):
    size = trained.backbone.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    for query in DETERMINISTIC_QUERIES:
        view = trained.asking(query)
        assert view.config.query == query and trained.config.query == "ncut"
        assert all(a is b for a, b in zip(view.parameters(), trained.parameters(), strict=True))  # shared, not copied
        with torch.no_grad():
            got, expected = view.eval()(images), _built_with(trained, query)(images)
        torch.testing.assert_close(got.logits.fused, expected.logits.fused)
        torch.testing.assert_close(got.soap.weights, expected.soap.weights)
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    with torch.no_grad():  # the three questions are different questions
        weights = [trained.asking(q).eval()(images).soap.weights for q in DETERMINISTIC_QUERIES]
    assert not torch.allclose(weights[0], weights[1]) and not torch.allclose(weights[0], weights[2])


def test_pooling_another_way_is_the_model_built_with_it_and_the_plain_means_weigh_alike(trained):
    size = trained.backbone.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    for pool in POOLS:
        view = trained.asking(pool=pool)
        assert (view.config.pool, view.config.query) == (pool, "ncut") and trained.config.pool == "attention"
        with torch.no_grad():
            got, expected = view.eval()(images), _built_with(trained, pool=pool)(images)
        torch.testing.assert_close(got.logits.fused, expected.logits.fused)
        torch.testing.assert_close(got.soap.weights, expected.soap.weights)
        if pool == "attention":
            continue
        # by hand: each pooled patch weighs one over their count, the null token nothing, and [FG] is their mean
        mask = got.mask.float() if pool == "ncut_avg" else torch.ones_like(got.mask, dtype=torch.float)
        share = mask / mask.sum(1, keepdim=True)
        torch.testing.assert_close(got.soap.weights, torch.cat([share, torch.zeros(3, 1)], 1))
        with torch.no_grad():
            patches = trained.backbone(images).patches
            pooled = (share.unsqueeze(-1) * patches).sum(1)
            fg = torch.nn.functional.normalize(pooled @ trained.backbone.visual.proj, dim=-1)
        torch.testing.assert_close(got.fg_embed, fg)


def test_effective_patches_by_hand():
    def explanation(weights: np.ndarray, null: float) -> Explanation:
        grid = weights.shape
        zero = np.zeros(grid)
        logits = np.zeros(len(CLASSES))
        return Explanation(CLASSES, 0.5, logits, logits, weights, null, zero > 0, zero, zero[..., None], grid, 8)

    assert effective_patches(explanation(np.array([[1.0, 0.0], [0.0, 0.0]]), 0.0)) == pytest.approx(1.0)
    assert effective_patches(explanation(np.full((2, 2), 0.2), 0.2)) == pytest.approx(5.0)  # all five alike
    assert effective_patches(explanation(np.array([[0.5, 0.5], [0.0, 0.0]]), 0.0)) == pytest.approx(2.0)


def test_query_views_are_each_query_s_explanation_the_model_s_own_first(registry, trained):
    picture = draw_sample(1, np.random.default_rng(3), size=48)
    registry_model = registry.get(BASE).model
    assert registry_model is trained  # the fixture moved SOAP in the registry's model itself
    views = query_views(trained, picture, 0.5)
    assert [v.query for v in views] == ["ncut", "global", "token_avg"] and [v.trained for v in views] == [1, 0, 0]
    for view in views:
        alone = explain_image(_built_with(trained, view.query), picture, 0.5)
        np.testing.assert_allclose(view.explanation.soap_weights, alone.soap_weights, atol=1e-6)
        np.testing.assert_allclose(view.explanation.logits_fg, alone.logits_fg, atol=1e-5)
        assert view.explanation.query == view.query and view.facts is None  # not a toy image: no masks
    global_first = query_views(trained.asking("global"), picture)
    assert [v.query for v in global_first][0] == "global" and global_first[0].trained


def test_pool_views_are_each_pooling_s_explanation_the_model_s_own_first(trained):
    picture = draw_sample(2, np.random.default_rng(4), size=48)
    views = pool_views(trained, picture, 0.5)
    assert [v.pool for v in views] == ["attention", "ncut_avg", "naive_avg"] and [v.trained for v in views] == [1, 0, 0]
    for view in views:
        alone = explain_image(_built_with(trained, pool=view.pool), picture, 0.5)
        np.testing.assert_allclose(view.explanation.soap_weights, alone.soap_weights, atol=1e-6)
        np.testing.assert_allclose(view.explanation.logits_fg, alone.logits_fg, atol=1e-5)
        assert (view.explanation.pool, view.query) == (view.pool, "ncut")
    n_patches = views[0].explanation.soap_weights.size
    assert views[1].effective_patches == pytest.approx(views[1].explanation.ncut_mask.sum(), rel=1e-5)
    assert views[2].effective_patches == pytest.approx(n_patches, rel=1e-5)  # e^H of a flat map is its size
    # a model trained with a plain mean shows that one first, as trained, and SOAP's attention as the method's
    averaged = pool_views(trained.asking(pool="ncut_avg"), picture)
    assert [v.pool for v in averaged] == ["ncut_avg", "attention", "naive_avg"] and averaged[0].trained
    # ... and asked its queries, three equal answers, which the note explains
    asked = query_views(trained.asking(pool="ncut_avg"), picture)
    assert all(np.array_equal(v.explanation.logits_fg, asked[0].explanation.logits_fg) for v in asked)
    note = "pools [FG] as the plain mean of the cut&#x27;s foreground tokens, which never reads SOAP&#x27;s query"
    crop = np.zeros((8, 8, 3), np.uint8)
    assert note in queries_html(crop, asked) and note not in queries_html(crop, query_views(trained, picture))


@pytest.mark.parametrize(
    ("endpoint", "label", "titles"),
    [
        (
            "/explore_queries",
            "Query",
            [
                "the mean of the cut's foreground tokens (as trained)",
                "the [CLS] token (an ablation)",
                "the mean of every patch token (an ablation)",
            ],
        ),
        (
            "/explore_pools",
            "Pooling",
            [
                "SOAP's attention over the patches and a null token (as trained)",
                "the plain mean of the cut's foreground tokens (an ablation)",
                "the plain mean of every patch token (an ablation)",
            ],
        ),
    ],
)
def test_the_endpoint_shows_each_view_s_answers(registry, trained, tmp_path, endpoint, label, titles):
    path = tmp_path / "disc.png"
    draw_sample(1, np.random.default_rng(3), size=48).save(path)
    with serve(build_demo(registry)) as url:
        client = Client(url, verbose=False)
        html = unescape(client.predict(handle_file(str(path)), BASE, "", 0.5, api_name=endpoint))
    assert re.findall(rf"<b>{label}: ([^<]*)</b>", html) == titles
    views = (query_views if label == "Query" else pool_views)(trained, Image.open(path), 0.5)
    top = max(float(v.explanation.soap_weights.max()) for v in views)
    assert f"full colour at {top:.3f}, the largest weight any of them gives a patch" in html  # one scale for all
    for view in views:
        e = view.explanation
        fg = e.prediction("fg")
        assert f"{e.classes[fg]} ({e.probabilities('fg')[fg]:.1%})" in html
        assert f"{view.spread} patches and null" in html
    assert html.count("<img") == 3


def test_on_a_toy_bird_each_panel_says_where_soap_looked_and_whether_each_branch_is_right(tmp_path):
    from microclip.toyworld.lookup import enlarge, example_samples
    from microclip.toyworld.truth import toy_truth
    from microclip.toyworld.world import SPECIES
    from microclip.walkthrough import mask_facts
    from studio.registry import TOY_ADAPTED, default_registry
    from ui.queries import ask_pools, ask_queries
    from viz.steps import region_phrase

    if not TOY_ADAPTED.is_file():
        pytest.skip("the bundled toy-world checkpoint is missing")
    toy = default_registry("cpu")
    sample = example_samples()[0]
    path = tmp_path / "toybird.png"
    Image.fromarray(enlarge(sample.image, 4)).save(path)
    html = unescape(ask_queries(toy, str(path), toy.default_name, "", None))
    model, species = toy.get(toy.default_name).model, SPECIES[sample.species].name
    truth = toy_truth(Image.open(path), model.backbone.grid)
    panels = html.split("<b>Query: ")[1:]
    assert len(panels) == 3
    for panel, query in zip(panels, ("ncut", "global", "token_avg"), strict=True):
        e = explain_image(model.asking(query), Image.open(path))
        facts = mask_facts(truth, e.ncut_mask, e.soap_weights, e.cls_similarity)
        assert f"{facts.soap_top} on {region_phrase(facts.soap_top_region)}" in panel
        for branch in ("fg", "fused"):
            named = e.classes[e.prediction(branch)]
            verdict = "right" if named == species else "wrong"
            assert f"{named} ({e.probabilities(branch).max():.1%}) · {verdict}" in panel
    # pooled another way: a plain mean has no top patch, so its panel counts what it pooled and how much is bird
    html = unescape(ask_pools(toy, str(path), toy.default_name, "", None))
    panels = html.split("<b>Pooling: ")[1:]
    assert len(panels) == 3 and "top patch" in panels[0] and "top patch" not in "".join(panels[1:])
    on_bird = truth.object_share >= 0.25
    for panel, pool in zip(panels[1:], ("ncut_avg", "naive_avg"), strict=True):
        e = explain_image(model.asking(pool=pool), Image.open(path))
        pooled = e.ncut_mask if pool == "ncut_avg" else np.ones_like(e.ncut_mask)
        assert f"patches pooled, alike</td><td>{int(pooled.sum())}, {int((pooled & on_bird).sum())} of them" in panel
        named = e.classes[e.prediction("fg")]
        assert f"{named} ({e.probabilities('fg').max():.1%}) · {'right' if named == species else 'wrong'}" in panel


def test_explore_s_words_for_a_model_that_pools_with_a_plain_mean(trained):
    """A model trained with a pooling ablation (the Adapt tab makes them) is not described as SOAP's attention."""
    from studio.explore import patch_markdown, summary_markdown

    picture = draw_sample(1, np.random.default_rng(5), size=48)
    method = explain_image(trained, picture)
    assert "SOAP's query is their mean." in summary_markdown(method) and "**Null token:**" in summary_markdown(method)
    asked = summary_markdown(explain_image(trained.asking(query="global"), picture))  # attention, another query
    assert "this model takes the [CLS] token (an ablation)" in asked and "**Null token:**" in asked
    for pool, phrase in (("ncut_avg", "the cut's foreground tokens"), ("naive_avg", "every patch token")):
        e = explain_image(trained.asking(pool=pool), picture)
        summary = summary_markdown(e)
        assert f"[FG] is the plain mean of {phrase} here (an ablation)" in summary
        assert "**Null token:**" not in summary and "SOAP's query is their mean" not in summary
        pooled = int(e.ncut_mask.sum()) if pool == "ncut_avg" else e.soap_weights.size
        row, col = np.unravel_index(int(np.argmax(e.soap_weights)), e.grid)
        assert e.soap_weights[row, col] == pytest.approx(1 / pooled)  # by hand: a plain mean's share
        assert f"a plain mean (an ablation): 1/{pooled} for every" in patch_markdown(e, int(row), int(col))
