"""Explore's "How would adaptation label this picture?": DKA's label of one picture (``microclip.label_view``), checked
against a slow computation of the formula and against the labels the training step makes from the same views; what a
crop of a toy bird holds (``studio.dka``); the card's sentences (``viz.dka``); and the ``explore_label`` endpoint."""

from __future__ import annotations

import random
import re
from html import unescape

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BUNDLED_TOY_MODEL, CLASSES, ROOT, SHAPE_DESCRIPTIONS, draw_sample, moved_registry, serve
from PIL import Image

from microclip.data.transforms import CropViews, random_square_box, weak_transform
from microclip.engine import pseudo_label
from microclip.label_view import PictureLabel, label_draws, label_picture
from microclip.recipe import Recipe
from microclip.toyworld.truth import toy_sample
from studio.dka import LabelStory, crop_truth, label_story
from studio.registry import ModelRegistry
from ui.app import build_demo
from ui.dka import label_picture_html
from viz.dka import (
    LABEL_HEIGHT,
    LABEL_WIDTH,
    crops_sentence,
    decision_sentence,
    draws_sentence,
    label_html,
    label_spots,
)

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

ENDPOINT = "/explore_label"
RUN = {"gamma": 0.3, "n_crops": 3, "alpha": 0.6, "beta": 0.8}  # the "adapted" model's recipe


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory) -> ModelRegistry:
    """The tiny ViT zero-shot, and "adapted": its trainable parameters moved, saved with a recipe of its own."""
    training = {"config": Recipe(epochs=1, **RUN).to_dict()}
    return moved_registry(tiny_model_dir, tmp_path_factory.mktemp("label"), training)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return draw_sample(1, np.random.default_rng(5), size=48)


def _tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A square picture at the model's size, as the weak transform makes it: PIL's bicubic resize, then [0, 1]."""
    pixels = np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)


def test_the_label_is_dka_s_formula_computed_slowly(registry, picture):
    model = registry.get("adapted").model
    label = label_picture(model, picture, gamma=0.3, n_crops=5, alpha=0.4, beta=0.9, seed=3)
    size = model.backbone.image_size
    with torch.no_grad():
        crops = [model.encode_cls(_tensor(picture.crop(c.box), size)[None])[0] for c in label.crops]  # one at a time
        out = model.eval()(_tensor(picture, size)[None])
    g, f = out.tokens.cls_embed[0], out.fg_embed[0]
    relevance = torch.stack([crop @ g for crop in crops])
    weights = torch.exp(relevance) / torch.exp(relevance).sum()
    z = F.normalize(sum(w * crop for w, crop in zip(weights, crops)), dim=0)
    u = F.normalize(0.5 * g + 0.5 * f, dim=0)
    w_llm, w_star = model.heads.w_llm.detach(), F.normalize(model.heads.w_star.detach(), dim=-1)
    static, dynamic = (z @ w_llm.T).numpy(), (u @ w_star.T).numpy()
    np.testing.assert_allclose([c.weight for c in label.crops], weights.numpy(), atol=1e-5)
    np.testing.assert_allclose(label.static, static, atol=1e-5)
    np.testing.assert_allclose(label.dynamic, dynamic, atol=1e-5)
    np.testing.assert_allclose(label.combined, 0.3 * static + 0.7 * dynamic, atol=1e-5)
    np.testing.assert_allclose(label.cls, (g @ w_star.T).numpy(), atol=1e-5)
    assert [c.top_class for c in label.crops] == [int((crop @ w_llm.T).argmax()) for crop in crops]
    assert label.label == int(np.argmax(0.3 * static + 0.7 * dynamic))
    for crop in label.crops:  # squares of side 0.4-0.9 of the short side, inside the picture
        left, top, right, bottom = crop.box
        assert right - left == bottom - top and int(0.4 * 48) <= right - left <= int(0.9 * 48)
        assert 0 <= left and 0 <= top and right <= 48 and bottom <= 48


def test_the_label_is_the_one_the_training_step_makes_from_the_same_views(registry, picture):
    model = registry.get("adapted").model
    label = label_picture(model, picture, gamma=0.3, n_crops=4, seed=11)
    size = model.backbone.image_size
    weak = weak_transform(size)(picture)
    crops = CropViews(4, 0.5, 0.9, size).crop(picture, [c.box for c in label.crops])
    views = torch.cat([weak[None], weak[None], crops])[None]  # (1, 2 + K, 3, S, S); the strong view is not read
    unknown = torch.tensor([-1])
    dka, _ = pseudo_label(model, views, unknown, Recipe(epochs=1, gamma=0.3, n_crops=4))
    cls_only, _ = pseudo_label(model, views, unknown, Recipe(epochs=1, mode="baseline"))
    assert int(dka[0]) == label.label and int(cls_only[0]) == label.winner("cls")


def test_crops_are_drawn_from_the_seed(registry, picture):
    model = registry.get("adapted").model
    boxes = [[c.box for c in label_picture(model, picture, seed=seed).crops] for seed in (0, 0, 1)]
    assert boxes[0] == boxes[1] and boxes[0] != boxes[2] and len(boxes[0]) == 8
    with pytest.raises(ValueError, match="at least one crop"):
        label_picture(model, picture, n_crops=0)


def test_crop_views_draw_the_boxes_they_drew_before_boxes_could_be_shown(picture):
    """Training's crops are unchanged: the boxes drawn first, then cropped, is the old one-box-then-crop loop."""
    views = CropViews(6, 0.3, 0.7, 32)
    random.seed(7)
    weak = weak_transform(32)
    before = torch.stack([weak(picture.crop(random_square_box(48, 48, 0.3, 0.7))) for _ in range(6)])
    random.seed(7)
    assert torch.equal(views(picture), before)


def test_the_view_uses_the_model_s_own_recipe_and_the_reference_s_for_a_zero_shot_model(registry, picture):
    adapted = label_story(registry, picture, "adapted")
    zero_shot = label_story(registry, picture, "zero-shot")
    reference = Recipe()
    assert (adapted.label.gamma, len(adapted.label.crops), adapted.label.alpha, adapted.label.beta) == tuple(
        RUN.values()
    )
    assert adapted.recipe == "its adaptation's" and zero_shot.recipe.startswith("the reference's")
    assert (zero_shot.label.gamma, len(zero_shot.label.crops), zero_shot.label.alpha, zero_shot.label.beta) == (
        reference.gamma,
        reference.n_crops,
        reference.alpha,
        reference.beta,
    )
    assert adapted.true_class is None and adapted.crops is None and adapted.right is None  # no truth off the toy world


def test_what_a_crop_of_a_toy_bird_holds_counted_by_hand():
    part_labels = np.zeros((10, 10), np.uint8)
    part_labels[0:2, 0:2] = 1  # the beak: 4 pixels
    part_labels[8:10, 3:5] = 2  # the crest: 4 pixels
    bird = np.zeros((10, 10), bool)
    bird[:, :5] = True  # 50 pixels
    assert crop_truth(part_labels, bird, (0, 0, 5, 5)) == crop_truth(part_labels, bird, (0, 0, 5, 5))
    first = crop_truth(part_labels, bird, (0, 0, 5, 5))
    assert first.parts == ("beak",) and first.bird == pytest.approx(25 / 50)
    half_beak = crop_truth(part_labels, bird, (0, 1, 9, 10))  # rows 1-9: half the beak, all the crest
    assert half_beak.parts == ("beak", "crest") and half_beak.bird == pytest.approx(45 / 50)
    assert crop_truth(part_labels, bird, (1, 1, 3, 3)).parts == ()  # one beak pixel of four
    assert crop_truth(part_labels, bird, (5, 0, 10, 10)).bird == 0.0


def _story(static, dynamic, gamma=0.5) -> LabelStory:
    static, dynamic = np.array(static), np.array(dynamic)
    label = PictureLabel(
        classes=("a", "b", "c"),
        picture=np.zeros((8, 8, 3), np.uint8),
        gamma=gamma,
        alpha=0.5,
        beta=0.9,
        seed=0,
        crops=(),
        static=static,
        dynamic=dynamic,
        combined=gamma * static + (1 - gamma) * dynamic,
        cls=dynamic,
    )
    return LabelStory(label, "its adaptation's", debiased=False)


def test_the_sentence_names_the_half_that_decided_with_its_lead():
    said = decision_sentence(_story([0.5, 0.2, 0.1], [0.1, 0.3, 0.0]))
    assert said.startswith("The static half puts a first, the dynamic half b.")
    assert "(0.5 × 0.300 = 0.150) outweighs the dynamic half's (0.5 × 0.200 = 0.100): the label is a." in said
    said = decision_sentence(_story([0.3, 0.2, 0.0], [0.0, 0.3, 0.0]))
    assert "the dynamic half's lead (0.150) outweighs the static half's (0.050): the label is b." in said
    said = decision_sentence(_story([0.5, 0.0, 0.45], [0.0, 0.5, 0.45]))
    assert said.endswith("Neither wins the blend: c, ranked high by both, does.")
    both = decision_sentence(_story([0.1, 0.5, 0.0], [0.0, 0.4, 0.1]))
    assert both == "Both halves put b first, so the blend does too."


@pytest.fixture(scope="module")
def toy_registry() -> ModelRegistry:
    registry = ModelRegistry("cpu")
    registry.add_checkpoint(BUNDLED_TOY_MODEL, "toy", default=True)
    return registry


def test_on_a_bundled_toy_bird_the_card_states_what_each_crop_holds(toy_registry):
    path = ROOT / "assets" / "examples" / "toybird-sarnith-finch.png"
    picture = Image.open(path)
    story = label_story(toy_registry, picture, "toy")
    sample = toy_sample(picture)
    assert story.true_class == "sarnith finch" and story.label.picture.shape[:2] == sample.part_labels.shape
    assert story.crops == tuple(crop_truth(sample.part_labels, sample.bird_mask, c.box) for c in story.label.crops)
    assert len(story.crops) == toy_registry.adapted_recipe("toy").n_crops
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", label_html(story))))
    name = story.label.classes[story.label.label]
    verdict = f"DKA labels this picture {name} : " + ("right." if story.right else "wrong, it is a sarnith finch.")
    assert verdict in text and crops_sentence(story) in text
    heaviest = max(range(len(story.crops)), key=lambda i: story.label.crops[i].weight)
    assert f"Crop {heaviest + 1} weighs most" in text
    empty = sum(not crop.parts for crop in story.crops)  # counted from the masks, said in words
    assert ("Every crop holds a part whole" if empty == 0 else f"{empty} of {len(story.crops)} crops hold") in text


def test_the_endpoint_answers_and_refuses_a_bad_seed(registry, picture, tmp_path):
    import gradio as gr

    path = tmp_path / "disc.png"
    picture.save(path)
    for bad in (-1, 1.5, None):
        with pytest.raises(gr.Error, match="The crops' seed is a whole number"):
            label_picture_html(registry, str(path), "adapted", "", bad)
    for bad in (0, 33, 2.5, None):
        with pytest.raises(gr.Error, match="The crops' draws are a whole number from 1 to 32"):
            label_picture_html(registry, str(path), "adapted", "", 0, None, False, None, bad)
    with pytest.raises(gr.Error, match="The draws' last seed is over"):
        label_picture_html(registry, str(path), "adapted", "", 2**31 - 2, None, False, None, 3)
    with serve(build_demo(registry)) as url:
        client = Client(url, verbose=False)
        # lines left in the what-if's box are not read unless the box is ticked
        html = client.predict(handle_file(str(path)), "adapted", "", 5, None, False, "a disc", 3, api_name=ENDPOINT)
        typed = client.predict(
            handle_file(str(path)), "adapted", "", 5, None, True, "green disc: a red square.", 1, api_name=ENDPOINT
        )
    story = label_story(registry, picture, "adapted", seed=5, draws=3)
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))
    assert draws_sentence(story) in text and "Over 3 draws of the crops (seeds 5–7)" in text
    assert f"DKA labels this picture {story.label.classes[story.label.label]} ." in text
    assert decision_sentence(story) in text and "drawn from seed 5" in text
    assert "With your descriptions of green disc (typed in the what-if above)" in unescape(typed)
    with pytest.raises(gr.Error, match=re.escape("Descriptions: line 1: expected 'class name: sentence'")):
        label_picture_html(registry, str(path), "adapted", "", 5, None, True, "a disc")


def test_with_typed_descriptions_the_heads_are_built_from_them_as_an_adaptation_starts(registry, picture):
    typed = {"green disc": ["a red square."]}
    story = label_story(registry, picture, "adapted", typed=typed, seed=2)
    started = registry.with_classes("adapted", CLASSES, {**SHAPE_DESCRIPTIONS, **typed})
    expected = label_picture(started, picture, seed=2, **RUN)
    for half in ("static", "dynamic", "combined", "cls"):
        np.testing.assert_allclose(story.label.scores(half), expected.scores(half), atol=1e-6)
    as_is = label_story(registry, picture, "adapted", seed=2).label
    disc = CLASSES.index("green disc")
    assert story.redescribed == ("green disc",) and abs(story.label.static[disc] - as_is.static[disc]) > 1e-3
    others = [i for i in range(len(CLASSES)) if i != disc]  # W_LLM is frozen: the others' rows are as they were
    np.testing.assert_allclose(story.label.static[others], as_is.static[others], atol=1e-6)


def test_a_large_photo_goes_into_the_card_shrunk(registry):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8))
    html = label_html(label_story(registry, photo, "adapted"))
    assert len(html) < 300_000  # at full size the picture and its crops are megabytes of PNG
    assert 'viewBox="0 0 1200 900"' in html  # the boxes keep the photo's own pixels


def test_with_a_descriptions_file_the_label_is_made_with_its_sentences_as_explore_answers(registry, picture):
    given = {name: [f"a picture of one {name}."] for name in CLASSES}
    story = label_story(registry, picture, "adapted", given=given, seed=4)
    expected = label_picture(registry.with_classes("adapted", CLASSES, given), picture, seed=4, **RUN)
    np.testing.assert_allclose(story.label.combined, expected.combined, atol=1e-6)
    own = label_story(registry, picture, "adapted", seed=4).label
    assert not np.allclose(story.label.static, own.static, atol=1e-4)  # W_LLM from the file's sentences


def test_draws_are_the_labels_of_each_seed_made_in_one_batch(registry, picture):
    model = registry.get("adapted").model
    seeds = range(3, 9)
    one_by_one = [label_picture(model, picture, seed=seed, **RUN).label for seed in seeds]
    assert label_draws(model, picture, seeds, **RUN) == one_by_one
    story = label_story(registry, picture, "adapted", seed=3, draws=6)
    assert story.draws == tuple(one_by_one) and label_story(registry, picture, "adapted", seed=3).draws == ()


def test_box_numbers_take_a_free_corner_of_their_box():
    # four boxes sharing their top-left corner (as random crops of one bird often do): one number a corner, none
    # on another, each inside its own box
    boxes = [(0, 0, 40, 40), (0, 0, 48, 44), (0, 0, 56, 52), (0, 0, 64, 64)]
    spots = label_spots(boxes, unit=1.0)
    rects = [(x, y, x + LABEL_WIDTH, y + LABEL_HEIGHT) for x, y in spots]
    for i, (a, box) in enumerate(zip(rects, boxes)):
        assert box[0] <= a[0] and a[2] <= box[2] and box[1] <= a[1] and a[3] <= box[3]
        for b in rects[i + 1 :]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    assert spots[0] == (1.2, 1.2)  # the first box keeps the top-left
    assert spots[1][0] > 40  # the second, whose top-left is taken, moves to its top-right
    apart = label_spots([(0, 0, 30, 30), (32, 32, 64, 64)], unit=1.0)  # boxes apart: both at their top-left
    assert apart == [(1.2, 1.2), (33.2, 33.2)]
    # one box number can go nowhere free (five boxes alike, four corners): it takes the least crowded corner
    assert len(set(label_spots([(0, 0, 64, 64)] * 5, unit=1.0))) == 4


def test_the_draws_sentence_counts_each_label_most_often_first():
    story = _story([0.5, 0.2, 0.1], [0.1, 0.3, 0.0])
    story = LabelStory(story.label, story.recipe, story.debiased, true_class="b", draws=(0, 1, 0, 2, 0, 1))
    said = draws_sentence(story)
    assert said == "Over 6 draws of the crops (seeds 0–5) the label is a 3 times, b twice, c once: right in 2 of 6."
    assert draws_sentence(_story([0.5, 0.2, 0.1], [0.1, 0.3, 0.0])) == ""
