"""Explore's "what if the descriptions said something else?": typed description lines (microclip.data.descriptions),
the picture under the model, W* from its descriptions and W* from typed ones (studio.redescribe), checked against the
heads built independently from the text tower, and the ``explore_redescribe`` endpoint."""

from __future__ import annotations

import re
from html import unescape

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES, SHAPE_DESCRIPTIONS, SHAPE_TEMPLATES, draw_sample, moved_registry, serve
from PIL import Image

from microclip.data.descriptions import (
    DescriptionsError,
    description_lines,
    match_descriptions,
    parse_description_lines,
)
from microclip.explain import explain_image
from studio.redescribe import redescribe, typed_descriptions
from studio.registry import ModelRegistry
from ui.app import build_demo
from ui.redescribe import start_lines, what_if_described

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

DESCRIPTIONS, TEMPLATES = SHAPE_DESCRIPTIONS, SHAPE_TEMPLATES


# ------------------------------------------------------------------ typed lines


def test_lines_are_read_as_class_name_colon_sentence():
    text = (
        "# my descriptions\n"
        "red square: a red square with sharp corners.\n"
        "\n"
        "  green disc :  a disc: round, and green.  \n"
        "red square: a small red shape.\n"
    )
    assert parse_description_lines(text) == {
        "red square": ["a red square with sharp corners.", "a small red shape."],
        "green disc": ["a disc: round, and green."],  # the class is what comes before the first colon
    }
    assert parse_description_lines("") == {} and parse_description_lines("\n# nothing\n") == {}
    assert parse_description_lines(description_lines(DESCRIPTIONS)) == DESCRIPTIONS


@pytest.mark.parametrize(
    "text, said",
    [
        (
            "red square: a red square.\na sentence without a class",
            "line 2: expected 'class name: sentence', got 'a sen",
        ),
        ("red square:", "line 1: expected 'class name: sentence', got 'red square:'"),
        (": a sentence for nobody", "line 1: expected"),
        ("x" * 100, "got '" + "x" * 59 + "…'"),
    ],
)
def test_a_line_that_is_not_a_description_is_named_by_its_number(text, said):
    with pytest.raises(DescriptionsError, match=re.escape(said)):
        parse_description_lines(text)


def test_too_many_lines_or_characters_are_refused():
    with pytest.raises(DescriptionsError, match="3 lines; at most 2"):
        parse_description_lines("a: b\na: c\na: d", max_lines=2)
    with pytest.raises(DescriptionsError, match="200,001 characters; at most 200,000"):
        parse_description_lines("a: " + "b" * 199_998)


def test_lines_match_classes_as_a_descriptions_file_does():
    matched, unknown = match_descriptions(
        {"Red_Square": [" a red square. ", ""], "green disc": ["a green disc."], "purple star": ["a star."]}, CLASSES
    )
    assert matched == {"red square": ["a red square."], "green disc": ["a green disc."], "blue bar": []}
    assert unknown == ["purple star"]
    assert typed_descriptions("red-square: a crimson block.", CLASSES) == {"red square": ["a crimson block."]}
    with pytest.raises(DescriptionsError, match=re.escape("the typed descriptions name 'yellow moon', none of the")):
        typed_descriptions("red-square: a crimson block.\nyellow moon: a moon.", CLASSES)


# ------------------------------------------------------------------ the three columns


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory) -> ModelRegistry:
    """The tiny ViT zero-shot from DESCRIPTIONS, and "adapted": W* and SOAP moved off their start, saved and loaded
    as a checkpoint that carries the same descriptions."""
    return moved_registry(tiny_model_dir, tmp_path_factory.mktemp("redescribe"))


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return draw_sample(1, np.random.default_rng(5), size=48)


def w_star_row(registry: ModelRegistry, name: str, sentences: list[str]) -> torch.Tensor:
    """W* for one class as adaptation starts, by hand: the normalised mean of its normalised sentence embeddings."""
    encode = registry.text_encoder(registry.get(name).model.base)
    return F.normalize(F.normalize(encode(sentences), dim=-1).mean(0), dim=-1)


@pytest.mark.parametrize("name", ["adapted", "zero-shot"])
def test_the_three_columns_are_the_model_and_w_star_from_each_set_of_sentences(registry, picture, name):
    loaded = registry.get(name)
    mine = {"green disc": ["a red square.", "a shape with four corners."]}  # red square's sentences
    result = redescribe(registry, picture, name, CLASSES, mine, ratio=0.4)
    # the model as it is
    own = explain_image(loaded.model, picture, 0.4)
    np.testing.assert_allclose(result.now.logits_fused, own.logits_fused, atol=1e-5)
    assert result.adapted == (name == "adapted")
    # given red square's sentences, green disc's class vector is red square's: the same logits in every branch
    i, j = CLASSES.index("green disc"), CLASSES.index("red square")
    for branch in ("cls", "fg"):
        logits = getattr(result.after, f"logits_{branch}")
        assert logits[i] == pytest.approx(logits[j], abs=1e-4)
    # the classes whose sentences did not change score as before; the re-described one moved
    k = CLASSES.index("blue bar")
    assert result.after.logits_cls[k] == pytest.approx(result.before.logits_cls[k], abs=1e-5)
    assert abs(result.after.logits_cls[i] - result.before.logits_cls[i]) > 1e-3
    # on the zero-shot model W* is exactly its descriptions': the first two columns agree
    if name == "zero-shot":
        np.testing.assert_allclose(result.before.logits_fused, result.now.logits_fused, atol=1e-5)
    # the second column's W*, row by row, is the one built by hand from the text tower
    heads = registry.with_classes(name, CLASSES, DESCRIPTIONS).heads.w_star_hat()
    for c in CLASSES:
        assert torch.allclose(heads[CLASSES.index(c)], w_star_row(registry, name, DESCRIPTIONS[c]), atol=1e-5), c
    (changed,) = result.classes
    assert (changed.name, changed.before) == ("green disc", tuple(DESCRIPTIONS["green disc"]))
    assert changed.after == tuple(mine["green disc"])
    columns = (result.now, result.before, result.after)
    assert changed.logits == pytest.approx(tuple(float(e.logits_fused[i]) for e in columns), abs=1e-5)
    for place, e in zip(changed.places, columns, strict=True):
        mine_logit = float(e.logits_fused[i])  # ties go in class order (here green disc ties red square, before it)
        ahead = sum(float(v) > mine_logit or (float(v) == mine_logit and j < i) for j, v in enumerate(e.logits_fused))
        assert place == 1 + ahead


def test_the_picture_is_read_once_for_all_three_columns(registry, picture):
    calls = []
    backbone = registry.get("adapted").model.backbone
    hook = backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        redescribe(registry, picture, "adapted", CLASSES, {"blue bar": ["a long blue stick."]})
    finally:
        hook.remove()
    assert len(calls) == 1


def test_models_that_share_the_tower_explain_as_each_does_alone(registry, picture):
    from microclip.explain import explain_sharing_the_tower

    models = [registry.get("adapted").model, registry.with_classes("adapted", CLASSES, DESCRIPTIONS)]
    for shared, model in zip(explain_sharing_the_tower(models, picture, 0.3), models, strict=True):
        alone = explain_image(model, picture, 0.3)
        np.testing.assert_allclose(shared.logits_fused, alone.logits_fused, atol=1e-5)
        np.testing.assert_allclose(shared.soap_weights, alone.soap_weights, atol=1e-6)


def test_lines_that_change_nothing_change_no_number(registry, picture):
    result = redescribe(registry, picture, "adapted", CLASSES, {"red square": list(DESCRIPTIONS["red square"])})
    assert result.classes == ()
    np.testing.assert_array_equal(result.before.logits_fused, result.after.logits_fused)


# ------------------------------------------------------------------ the endpoint


def test_start_lines_are_the_model_s_descriptions_of_the_classes_in_use(registry):
    assert parse_description_lines(start_lines(registry, "adapted", "")) == DESCRIPTIONS
    assert parse_description_lines(start_lines(registry, "adapted", "blue bar, red square")) == {
        "blue bar": DESCRIPTIONS["blue bar"],
        "red square": DESCRIPTIONS["red square"],
    }


def test_a_large_label_set_starts_from_the_classes_the_model_ranks_first(registry, picture, tmp_path, monkeypatch):
    import ui.redescribe

    monkeypatch.setattr(ui.redescribe, "START_CLASSES", 2)  # the tiny model has 3 classes
    path = tmp_path / "disc.png"
    picture.save(path)
    fused = explain_image(registry.get("adapted").model, picture).logits_fused
    first_two = [CLASSES[i] for i in np.argsort(-fused)[:2]]
    assert list(parse_description_lines(start_lines(registry, "adapted", "", str(path)))) == first_two
    assert list(parse_description_lines(start_lines(registry, "adapted", "", None))) == CLASSES[:2]


def test_with_a_descriptions_file_the_first_column_is_explore_s_answer_with_it(registry, picture, tmp_path):
    """Explore answers with the descriptions file uploaded in its class panel; the what-if's "the model" and "its
    descriptions" are then that file's, and *Start from* fills the box with its lines."""
    import json

    from ui.explore import explore

    path, file = tmp_path / "disc.png", tmp_path / "mine.json"
    picture.save(path)
    mine = {"red square": ["a crimson block."], "green disc": ["a round green thing."], "blue bar": ["a blue rod."]}
    file.write_text(json.dumps(mine))
    assert parse_description_lines(start_lines(registry, "adapted", "", str(path), str(file))) == mine
    html = what_if_described(registry, str(path), "adapted", "", "blue bar: a long thin shape.", 0.5, str(file))
    display = (0.5, "viridis", 0, 100, 0, "SOAP weight", False)
    summary = explore(registry, str(path), "adapted", "", str(file), 0.5, *display)[1]
    result = redescribe(registry, picture, "adapted", CLASSES, {"blue bar": ["a long thin shape."]}, 0.5, given=mine)
    fused = result.now.prediction("fused")
    assert f"Prediction: {result.now.classes[fused]}" in summary  # the first column is Explore's answer
    np.testing.assert_allclose(result.now.logits_fused, result.before.logits_fused, atol=1e-5)
    (changed,) = result.classes
    assert changed.before == ("a blue rod.",) and "a blue rod." in unescape(html)


def test_the_endpoint_answers_and_says_what_is_wrong_with_the_lines(registry, picture, tmp_path):
    import gradio as gr

    path = tmp_path / "disc.png"
    picture.save(path)
    with pytest.raises(gr.Error, match="Type at least one description"):
        what_if_described(registry, str(path), "adapted", "", "  \n", 0.5)
    with pytest.raises(gr.Error, match=re.escape("Descriptions: line 1: expected 'class name: sentence'")):
        what_if_described(registry, str(path), "adapted", "", "a disc", 0.5)
    said = "Descriptions: the typed descriptions name 'disk', none of the classes in use (red square, green disc"
    with pytest.raises(gr.Error, match=re.escape(said)):
        what_if_described(registry, str(path), "adapted", "", "disk: a green disc.", 0.5)
    with serve(build_demo(registry)) as url:
        client = Client(url, verbose=False)
        html = client.predict(
            handle_file(str(path)), "adapted", "", "green disc: a red square.", 0.5, api_name="/explore_redescribe"
        )
    text = unescape(re.sub(r"<[^>]+>", " ", html))
    assert "The classes you re-described" in text and "a red square." in text
    result = redescribe(registry, picture, "adapted", CLASSES, {"green disc": ["a red square."]}, 0.5)
    shown = re.sub(r"\s+", " ", text)
    for e in (result.now, result.before, result.after):
        i = e.prediction("fused")
        assert f"{e.classes[i]} ({e.probabilities('fused')[i]:.1%})" in shown
