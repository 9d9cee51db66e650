"""The out-of-world check (``microclip.world_check``): the Mahalanobis distance against scipy, the token summary
against a slow per-patch loop, worlds keyed by the base weights' sha256 and written atomically, the shipped world
as ``bench/ood.py`` fitted it (toy birds pass, the ⚠ examples are flagged), the toy pretraining's words, and the
flag and the notes through ``/explore``. Nothing under test is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_sample, serve, tiny_base_registry
from scipy.spatial.distance import mahalanobis

from microclip import world_check
from microclip.backbone import file_sha256
from microclip.data.images import load_image
from microclip.resources import EXAMPLES_DIR
from microclip.toyworld.text import caption_vocabulary, make_caption
from microclip.toyworld.world import SPECIES
from studio.examples import example_images
from studio.registry import TOY_ADAPTED, TOY_BASE, default_registry

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "bench" / "results" / "ood.json"
TOY_EXAMPLES = sorted(str(p) for p in EXAMPLES_DIR.glob("toybird-*.png"))
WARNED = [str(EXAMPLES_DIR / n) for n in ("photo-grace-hopper.jpg", "scene-flower.jpg", "scene-sunset-bird.jpg")]
PHOTO = WARNED[0]

needs_toy_model = pytest.mark.skipif(not TOY_ADAPTED.is_file(), reason="the bundled toy-world checkpoint is missing")


def test_the_distance_is_scipys_mahalanobis():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    gaussian = world_check.Gaussian.fit(features, ridge=0.0)
    probe = rng.normal(size=(3, 6))
    expected = [mahalanobis(p, features.mean(0), np.linalg.inv(np.cov(features.T))) for p in probe]
    assert gaussian.distance(probe) == pytest.approx(expected, rel=1e-6)
    stored = world_check.Gaussian.from_dict(json.loads(json.dumps(gaussian.to_dict())))  # as the file keeps it
    assert stored.distance(probe) == pytest.approx(expected, rel=1e-5)


def test_the_token_summary_is_each_token_dimensions_mean_and_spread_over_the_patches():
    patches = torch.randn(2, 5, 3)
    slow = [
        [float(np.mean([patches[b, n, d] for n in range(5)])) for d in range(3)]
        + [
            float(np.sqrt(np.mean([(patches[b, n, d] - patches[b, :, d].mean()) ** 2 for n in range(5)])))
            for d in range(3)
        ]
        for b in range(2)
    ]
    assert world_check.token_summary(patches) == pytest.approx(np.array(slow), abs=1e-6)


def test_a_rule_fires_exactly_past_its_threshold_and_says_why():
    rule = world_check.Rule("token_distance", above=10.0, quantile=0.99)
    assert not rule.fires(10.0) and rule.fires(10.001) and not rule.fires(float("nan"))
    assert "99% of held-out images of its world have ≤ 10" in rule.describe(12.0)


def test_a_world_fitted_on_one_kind_of_picture_flags_another(tiny_model_dir, tmp_path):
    """End to end on a tiny random ViT: fit on shape images, save by sha256, check a bare backbone and a model."""
    registry = tiny_base_registry(tiny_model_dir)
    model = registry.get("tiny").model
    rng = np.random.default_rng(0)
    shapes = [draw_sample(i % 3, rng) for i in range(240)]
    world = world_check.fit_world(
        model, shapes[:160], shapes[160:], model.base.weights_sha256, "tiny", vocabulary=["red", "square"]
    )
    assert [r.signal for r in world.rules] == ["token_distance"] and world.rules[0].above > 0
    flat = world_check.check(model.backbone, load_image(PHOTO), world)
    assert flat.measured and flat.outside and flat.reasons and flat.signals["token_distance"] > world.rules[0].above
    # without a world, a bare backbone gets no verdict: nothing is said rather than guessed
    assert world_check.check(model.backbone, load_image(PHOTO)) == world_check.Verdict(False, (), {}, False)

    path = tmp_path / "worlds.json"
    path.write_text(json.dumps({"format": world_check.FORMAT, "worlds": {"other": world.to_dict()}}))
    world_check.save_worlds([world], path)
    stored = world_check.load_worlds(path)
    assert set(stored) == {"other", model.base.weights_sha256}  # other weights' worlds are kept
    assert stored[model.base.weights_sha256].rules == world.rules
    assert stored[model.base.weights_sha256].vocabulary == frozenset({"red", "square"})
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # atomic_write gives open()'s mode, not mkstemp's
    world_check.save_worlds([world], path, keep_others=False)  # bench/ood.py: only the weights measured now
    assert set(world_check.load_worlds(path)) == {model.base.weights_sha256}


def test_caption_vocabulary_is_exactly_the_words_captions_use():
    # Names are rare in the captions (a long tail), so they are sampled with every caption naming one.
    rng = np.random.default_rng(0)
    used = {w for _ in range(3000) for sp in SPECIES for w in world_check.words(make_caption(sp, rng).text)}
    used |= {
        w
        for _ in range(300)
        for sp in SPECIES
        for w in world_check.words(make_caption(sp, rng, p_name=1.0, zipf=0.0, p_lookalike=0.0).text)
    }
    assert used == caption_vocabulary()


def test_worlds_of_the_first_format_are_ignored(tmp_path):
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"models": {"toybirds · microCLIP adapted": {"checks": []}}}))
    assert world_check.load_worlds(path) == {}


@needs_toy_model
def test_the_shipped_world_is_the_measured_one_keyed_by_the_base_weights():
    weights = next(p for p in sorted(TOY_BASE.iterdir()) if p.suffix == ".safetensors")
    worlds = world_check.load_worlds()
    assert set(worlds) == {file_sha256(weights)}
    (world,) = worlds.values()
    measured = json.loads(MEASURED.read_text())["models"]
    assert set(measured) == set(default_registry("cpu").names())  # every bundled model was measured
    for result in measured.values():
        assert result["rules"] == [r.__dict__ for r in world.rules]
        assert result["caught"] >= 0.95 and result["false_flags"] <= 0.01 and result["toy_examples_flagged"] == 0
        assert all(result["warning_examples_flagged"].values()) and len(result["warning_examples_flagged"]) == 3
    assert {"flower", "person"}.isdisjoint(world.vocabulary) and {"zorsaik", "wren"} <= world.vocabulary


@needs_toy_model
def test_toy_birds_pass_and_the_warning_examples_are_flagged_on_every_bundled_model():
    registry = default_registry("cpu")
    for name in registry.names():
        model = registry.get(name).model
        assert [world_check.check(model, load_image(p)).outside for p in TOY_EXAMPLES] == [False] * len(TOY_EXAMPLES)
        verdicts = [world_check.check(model, load_image(p)) for p in WARNED]
        assert all(v.outside and v.measured for v in verdicts), name


@needs_toy_model
def test_a_batch_gives_each_picture_the_verdict_the_check_gives_it_alone(tmp_path, tiny_model_dir):
    """Batch and ``explain DIR`` read the verdict off the pass that explains the picture; ``check`` makes its own."""
    from microclip.batch import OUTSIDE_COLUMN, run

    model = default_registry("cpu").get(None).model
    result = run(model, EXAMPLES_DIR, tmp_path / "bundle.zip", work=tmp_path / "work")
    assert len(result.items) == len(TOY_EXAMPLES) + len(WARNED)
    for item in result.items:
        alone = world_check.check(model, load_image(EXAMPLES_DIR / item.name))
        assert item.world.outside == alone.outside and item.world.reasons == alone.reasons, item.name
        assert item.world.signals == pytest.approx(alone.signals, rel=1e-6)
    table = result.table.set_index("file")[OUTSIDE_COLUMN]
    assert {name: table[name] for name in table.index if table[name] == "yes"} == {Path(p).name: "yes" for p in WARNED}
    # a model whose base weights have no measured world says so instead of passing every picture
    tiny = tiny_base_registry(tiny_model_dir).get(None).model
    unmeasured = run(tiny, EXAMPLES_DIR, tmp_path / "tiny.zip", work=tmp_path / "work-tiny")
    assert set(unmeasured.table[OUTSIDE_COLUMN]) == {"not measured"}


@needs_toy_model
def test_unseen_words_on_the_toy_model_and_silence_elsewhere(tiny_model_dir):
    toy = default_registry("cpu").get().model
    assert world_check.unseen_words(toy, ["flower", "zorsaik wren", "Person"]) == {
        "flower": ["flower"],
        "Person": ["person"],
    }
    assert world_check.unseen_words(toy, ["zorsaik wren"]) == {}
    assert world_check.unseen_words(tiny_base_registry(tiny_model_dir).get("tiny").model, ["flower"]) is None


@needs_toy_model
def test_explore_flags_the_photo_marks_unseen_words_notes_the_world_and_orders_the_examples():
    gradio_client = pytest.importorskip("gradio_client")
    from gradio_client import handle_file

    from ui.app import build_demo

    registry = default_registry("cpu")
    with serve(build_demo(registry)) as url:
        client = gradio_client.Client(url, verbose=False)

        def summary(path: str, classes: str = "") -> str:
            return client.predict(
                handle_file(path),
                registry.default_name,
                classes,
                None,
                0.5,
                0.5,
                "jet",
                0,
                100,
                0,
                "SOAP weight",
                False,
                api_name="/explore",
            )[0]

        assert "looks outside the model's world" in summary(PHOTO)
        assert "looks outside" not in summary(TOY_EXAMPLES[0])
        typed = summary(PHOTO, "flower, person, bird")
        assert "never saw in pretraining" in typed and "*flower* (flower)" in typed and "*bird*" not in typed
        assert "looks outside" in typed  # the picture is outside the world whatever the label set
        _placeholder, world = client.predict(registry.default_name, api_name="/model_classes")
    assert "16 classes" in world and "64×64 px" in world and "toy world" in world
    kinds = [Path(p).name.split("-")[0] for p in example_images()]
    assert kinds == sorted(kinds, key=["toybird", "scene", "photo"].index) and kinds[0] == "toybird"
