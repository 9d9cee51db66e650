"""What the app says about the model's world: the out-of-world flag against its measured thresholds
(``bench/ood.py`` → ``assets/toybirds/world.json``), the Mahalanobis distance against scipy, and the flag
and the world note through ``/explore`` on the bundled toy-world models. Nothing under test is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import serve
from scipy.spatial.distance import mahalanobis

from microclip.data.images import load_image
from microclip.explain import Explanation, explain_image
from ui.common import EXAMPLES_DIR, example_images
from ui.registry import TOY_ADAPTED, default_registry
from ui.world import TOY_WORLD_FILE, WorldCheck, WorldSignals, WorldStats, load_world, outside_reasons, score_pattern

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "bench" / "results" / "ood.json"
TOY_EXAMPLES = sorted(str(p) for p in EXAMPLES_DIR.glob("toybird-*.png"))
PHOTO = str(EXAMPLES_DIR / "photo-grace-hopper.jpg")

needs_toy_model = pytest.mark.skipif(not TOY_ADAPTED.is_file(), reason="the bundled toy-world checkpoint is missing")


def random_explanation(rng: np.random.Generator, classes: int = 4, grid: int = 3) -> Explanation:
    return Explanation(classes=[f"c{i}" for i in range(classes)], ratio=0.5,
                       logits_cls=rng.normal(30, 5, classes), logits_fg=rng.normal(30, 5, classes),
                       soap_weights=rng.dirichlet(np.ones(grid * grid)).reshape(grid, grid) * 0.99,
                       null_weight=0.01, ncut_mask=rng.random((grid, grid)) > 0.5,
                       cls_similarity=rng.random((grid, grid)), patch_class_cosine=rng.random((grid, grid, classes)),
                       grid=(grid, grid), image_size=32)


def test_score_distance_is_the_mahalanobis_distance_to_the_fitted_world():
    rng = np.random.default_rng(0)
    patterns = np.stack([score_pattern(random_explanation(rng)) for _ in range(200)])
    stats = WorldStats.fit(patterns, ridge=0.0)
    probe = random_explanation(rng)
    expected = mahalanobis(score_pattern(probe), patterns.mean(0), np.linalg.inv(np.cov(patterns.T)))
    assert stats.distance(probe) == pytest.approx(expected, rel=1e-6)
    assert np.isnan(stats.distance(random_explanation(rng, classes=5)))  # another label set: does not apply


def test_the_shipped_rules_are_the_measured_ones():
    """world.json holds, for each bundled model, exactly the rules bench/ood.py chose from its measurement."""
    shipped = json.loads(TOY_WORLD_FILE.read_text())["models"]
    measured = json.loads(MEASURED.read_text())["models"]
    assert set(shipped) == set(measured) == {"toybirds · microCLIP adapted", "toybirds · base zero-shot"}
    for name, entry in shipped.items():
        assert entry["checks"] == measured[name]["checks"] and entry["checks"]
        result = measured[name]
        assert result["combined"]["false_flags"] <= 0.02 and result["combined"]["caught"] >= 0.8
        for check in entry["checks"]:  # each threshold is the measured 1% quantile of the toy test images
            assert float(f"{result['signals'][check['signal']]['threshold']:.4g}") == check.get(
                "above", check.get("below"))


def test_a_rule_fires_exactly_past_its_threshold():
    checks, _stats = load_world()["toybirds · microCLIP adapted"]
    (rule,) = [c for c in checks if c.signal == "score_distance"]
    base = dict(top_cosine=0.6, cls_cosine=0.6, fg_cosine=0.8, margin=0.9, logit_gap=3.0, ncut_coverage=0.15,
                null_weight=1e-4, disagree=False)
    inside = WorldSignals(**base, score_distance=rule.above * 0.999)
    outside = WorldSignals(**base, score_distance=rule.above * 1.001)
    assert outside_reasons(inside, checks) == []
    (reason,) = outside_reasons(outside, checks)
    assert "pattern of class scores" in reason and f"99% of the toy test images have ≤ {rule.above:.3g}" in reason
    assert not WorldCheck("score_distance", above=1.0).fires(WorldSignals(**base))  # no stats: NaN never fires


@needs_toy_model
@pytest.mark.parametrize("name", ["toybirds · microCLIP adapted", "toybirds · base zero-shot"])
def test_toy_birds_pass_and_the_photo_is_flagged_by_each_models_own_rules(name):
    registry = default_registry("cpu")
    loaded = registry.get(name)
    checks, stats = load_world()[name]

    def reasons(path: str) -> list[str]:
        return outside_reasons(WorldSignals.of(explain_image(loaded.model, load_image(path)), stats), checks)

    assert [reasons(path) for path in TOY_EXAMPLES] == [[]] * len(TOY_EXAMPLES)
    assert reasons(PHOTO)


@needs_toy_model
def test_explore_flags_the_photo_notes_the_world_and_orders_the_examples():
    gradio_client = pytest.importorskip("gradio_client")
    from gradio_client import handle_file

    from ui.app import build_demo

    registry = default_registry("cpu")
    with serve(build_demo(registry)) as url:
        client = gradio_client.Client(url, verbose=False)

        def summary(path: str, classes: str = "") -> str:
            return client.predict(handle_file(path), registry.default_name, classes, None, 0.5, 0.5, "jet", 0, 100, 0,
                                  "SOAP weight", False, api_name="/explore")[0]

        assert "looks outside the model's world" in summary(PHOTO)
        assert "looks outside" not in summary(TOY_EXAMPLES[0])
        typed = summary(PHOTO, "flower, person, bird")
        assert "Your own classes on a toy-world model" in typed and "looks outside" not in typed  # rules don't apply
        _placeholder, world = client.predict(registry.default_name, api_name="/model_classes")
    assert "16 classes" in world and "64×64 px" in world and "toy world" in world
    kinds = [Path(p).name.split("-")[0] for p in example_images()]
    assert kinds == sorted(kinds, key=["toybird", "scene", "photo"].index) and kinds[0] == "toybird"
