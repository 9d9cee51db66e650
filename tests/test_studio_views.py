"""The non-Gradio halves of Explore, Compare and the explainer view (studio/explore.py, studio/compare.py,
studio/explainers.py, viz/explore.py), on a real explanation of the tiny random model; each text is checked
against the numbers it reports, recomputed here with NumPy."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import CLASSES, draw_sample, tiny_base_registry

from microclip.describe import article_for
from microclip.explain import explain_image
from studio.compare import rank_markdown, rank_of
from studio.examples import example_label, ordered_examples
from studio.explainers import PREDICTED, class_index
from studio.explore import (
    BRANCH_TITLES,
    ExploreSession,
    checked_patch,
    classes_placeholder,
    descriptions_markdown,
    patch_markdown,
    settings_from,
    summary_markdown,
    views,
)
from viz.explore import classes_to_show, difference_limit


@pytest.fixture(scope="module")
def explanation(tiny_model_dir):
    model = tiny_base_registry(tiny_model_dir).get("tiny").model
    return explain_image(model, draw_sample(1, np.random.default_rng(7), size=48), 0.5)


def fused_order(explanation) -> list[str]:
    return [explanation.classes[i] for i in np.argsort(-explanation.logits_fused, kind="stable")]


def test_display_settings_keep_the_percentiles_in_order_and_a_known_colormap():
    settings = settings_from(0.4, "no-such-map", 80, 20, 0.1, "cosine to [CLS]", 1)
    assert (settings.clip_lo, settings.clip_hi) == (20.0, 80.0) and settings.cmap != "no-such-map"
    assert settings.raw_map == "cls_similarity" and settings.numbers is True
    squeezed = settings_from(0.4, "jet", 100, 100, 0.0, "SOAP weight", False)
    assert squeezed.clip_hi - squeezed.clip_lo == 1.0 and squeezed.clip_hi == 100.0


def test_the_summary_names_each_branchs_prediction_and_the_foreground_count(explanation):
    text = summary_markdown(explanation, note="a note", flag="**flag**")
    assert text.startswith("**flag**") and text.endswith("_a note_")
    assert f"**Prediction: {fused_order(explanation)[0]}**" in text
    for branch in ("fused", "cls", "fg"):
        index = explanation.prediction(branch)
        assert f"{explanation.probabilities(branch)[index]:.1%}" in text
    assert f"{int(explanation.ncut_mask.sum())} of {explanation.ncut_mask.size} patches in the foreground" in text


def test_one_patch_reads_its_own_numbers(explanation):
    h, w = explanation.grid
    row, col = h - 1, 0
    text = patch_markdown(explanation, row, col)
    assert f"**Patch (row {row}, col {col})** of the {h}×{w} grid" in text
    assert f"**{explanation.cls_similarity[row, col]:+.3f}**" in text
    assert f"1/{h * w + 1}" in text
    assert ("**yes**" if explanation.ncut_mask[row, col] else "**no**") in text
    fused = explanation.prediction("fused")
    term = explanation.soap_fg_terms[row, col, fused]
    assert f"logit: **{term:+.3f}** of {explanation.logits_fg[fused]:.3f}" in text
    other = patch_markdown(explanation, 0, w - 1)  # another patch, another term
    assert f"logit: **{explanation.soap_fg_terms[0, w - 1, fused]:+.3f}**" in other


def test_a_patch_outside_the_grid_is_a_clear_error(explanation):
    session = ExploreSession(explanation, "", "tiny", {})
    assert checked_patch(session, 1.0, 2.0) == (1, 2)
    h, w = explanation.grid
    with pytest.raises(ValueError, match=f"outside the {h}×{w} patch grid"):
        checked_patch(session, h, 0)


def test_descriptions_are_listed_for_the_prediction_and_the_runner_up(explanation):
    top, runner = fused_order(explanation)[:2]
    text = descriptions_markdown(explanation, {top: [f"s{i}" for i in range(8)]}, limit=6)
    assert f"**Predicted: {top}**" in text and "- s5" in text and "- s6" not in text and "2 more" in text
    assert f"**Runner-up: {runner}**" in text and "templates only" in text


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_a_branch_that_disagrees_with_the_fused_prediction_is_marked(explanation, ratio):
    explanation = explanation.with_ratio(ratio)
    rows = {line.split("|")[1].strip(): line for line in summary_markdown(explanation).splitlines() if "|" in line}
    for branch in ("fused", "cls", "fg"):
        disagrees = explanation.prediction(branch) != explanation.prediction("fused")
        assert ("⚠ disagrees" in rows[BRANCH_TITLES[branch]]) == disagrees


def test_the_views_frame_the_selected_patch_and_draw_every_map(explanation):
    session = ExploreSession(explanation, "data:image/jpeg;base64,AAAA", "tiny", {})
    display = (0.5, "jet", 0, 100, 0, "SOAP weight", True)
    maps, raw = views(session, display)
    assert maps.count("<figure") == 3 and raw.count("<figure") == 1 and "mc-sel" not in maps
    framed, _ = views(replace(session, selected=(0, 0)), display)
    assert framed.count("mc-sel") == 3
    assert raw.count("<span style=") == explanation.soap_weights.size  # a number per patch


def test_the_contribution_chart_shows_the_top_classes_by_fused_logit(explanation):
    shown, marks = classes_to_show(explanation)
    logits = explanation.logits_fused[shown]
    assert list(logits) == sorted(logits, reverse=True)
    assert marks[int(np.argmax(explanation.logits_fused))] == "predicted"
    assert {explanation.prediction("cls"), explanation.prediction("fg")} <= set(shown)


def test_ranks_between_two_models(explanation):
    order = fused_order(explanation)
    assert [rank_of(explanation, name) for name in order] == list(range(1, len(order) + 1))
    assert rank_of(explanation, "not a class") is None
    other = explanation.with_ratio(1.0 - explanation.ratio)
    text = rank_markdown(explanation, other, order[0], "A-model", "B-model")
    assert f"rank **1** of {len(CLASSES)} under A (*A-model*)" in text
    assert "not among the classes of *A-model*" in rank_markdown(explanation, other, "x", "A-model", "B-model")


def test_the_difference_scale_is_fixed_or_the_largest_change():
    difference = np.array([[0.001, -0.004], [0.0, 0.002]])
    assert difference_limit(difference, None)[0] == pytest.approx(0.004)
    limit, line = difference_limit(difference, 0.01)
    assert limit == 0.01 and "largest |Δ| = 4.00e-03" in line and "fixed scale" in line


def test_the_class_to_explain_is_the_prediction_or_one_of_the_models_own():
    assert class_index(CLASSES, "tiny", PREDICTED) is None and class_index(CLASSES, "tiny", "") is None
    assert class_index(CLASSES, "tiny", CLASSES[2]) == 2
    with pytest.raises(ValueError, match=re.escape(f"is not one of tiny's {len(CLASSES)} classes")):
        class_index(CLASSES, "tiny", "a violin")


def test_the_placeholder_lists_at_most_eight_classes():
    names = [f"c{i}" for i in range(10)]
    text = classes_placeholder(names)
    assert "own 10 classes (c0, c1, c2, c3, c4, c5, c6, c7, ...)" in text and "c8" not in text


def test_example_labels_mark_pictures_outside_the_toy_world():
    paths, labels = ordered_examples(["/x/photo-a-b.jpg", "/x/toybird-red-wren.png"])
    assert paths == ["/x/toybird-red-wren.png", "/x/photo-a-b.jpg"] and labels == ["red wren", "⚠ a b"]
    assert example_label("/x/scene-flower.jpg") == "⚠ flower"


def test_on_a_toy_bird_the_descriptions_say_which_classes_lines_are_all_true_of_it(explanation):
    from microclip.toyworld.text import description_ties, descriptions

    lines = descriptions()
    ties = description_ties(lines)
    tied = next(c for c, t in ties.items() if len(t) == 2)  # brennic finch on the shipped table
    text = descriptions_markdown(explanation, lines, true_class=tied)
    a, b = ties[tied]
    truth = f"**This bird is {article_for(tied)} {tied}** (the toy world's truth)"
    assert f"{truth}: every line of {a}'s and {b}'s descriptions is true" in text
    assert text.endswith("can tell it from those species.")
    one = next(c for c, t in ties.items() if len(t) == 1)
    assert descriptions_markdown(explanation, lines, true_class=one).endswith(
        f"every line of {ties[one][0]}'s descriptions is true of it as well as its own, so no reader of the lines "
        "alone can tell it from that species."
    )
    alone = next(c for c, t in ties.items() if not t)
    assert descriptions_markdown(explanation, lines, true_class=alone).endswith(
        f"of the {len(lines)} classes' descriptions only its own are all true of it."
    )
    # not a toy bird, or descriptions that are not the toy LLM's: nothing said
    assert "This bird" not in descriptions_markdown(explanation, lines)
    assert "This bird" not in descriptions_markdown(explanation, {tied: ["a lovely bird."]}, true_class=tied)
