"""Links that open one view (studio.links, ui.links): how a link's words resolve, hand-checked case by case, and the
view a link opens against what the tabs' own endpoints answer for the same example and model."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
import torch
from conftest import CLASSES

from microclip.checkpoint import CheckpointMeta, save_adapted
from microclip.model import MicroCLIP
from microclip.resources import EXAMPLES_DIR
from microclip.walkthrough import STEP_IDS
from studio.links import MAX_LINK_CLASSES, Link, example_link, example_of, link_key, link_query, parse_link, with_rho
from studio.registry import ModelRegistry
from ui.compare import build_compare_tab, compare
from ui.explore import build_explore_tab, explore
from ui.links import open_link
from ui.walkthrough import build_walkthrough_tab, walk

EXAMPLES = [str(EXAMPLES_DIR / n) for n in ("toybird-dastrel-wren.png", "toybird-lumbrel-tit.png", "scene-flower.jpg")]
MODELS = ["toybirds · microCLIP adapted", "toybirds · base zero-shot", "toybirds · microCLIP, values centred"]


@pytest.mark.parametrize(
    "text, key",
    [
        ("Dastrel Wren", "dastrel-wren"),
        ("dastrel_wren", "dastrel-wren"),
        ("  --X__y  ", "x-y"),
        ("[FG]", "fg"),
        ("", ""),
    ],
)
def test_link_key(text, key):
    assert link_key(text) == key


@pytest.mark.parametrize(
    "query, example",
    [
        ("example=dastrel-wren", 0),
        ("example=toybird-dastrel-wren", 0),  # the file's stem
        ("example=Dastrel%20Wren", 0),  # the caption, as typed
        ("?example=lumbrel_tit", 1),
        ("example=flower", 2),  # an out-of-world example: its caption is "⚠ flower"
        ("EXAMPLE=scene-flower", 2),
    ],
)
def test_an_example_is_found_by_any_of_its_names(query, example):
    link = parse_link(query, EXAMPLES, MODELS)
    assert link == Link(example=EXAMPLES[example]) and link.opens == "walkthrough"


def test_a_model_is_found_by_its_name_or_by_words_only_it_has():
    assert parse_link("model=toybirds-base-zero-shot", EXAMPLES, MODELS).model == MODELS[1]
    assert parse_link("model=Zero Shot", EXAMPLES, MODELS).model == MODELS[1]
    assert parse_link("model=centred", EXAMPLES, MODELS).model == MODELS[2]
    vague = parse_link("model=microclip", EXAMPLES, MODELS)  # two models have the word
    assert vague.model is None and vague.problems == (
        "The link's model=microclip could be any of 2; expected one of toybirds-microclip-adapted, "
        "toybirds-base-zero-shot, toybirds-microclip-values-centred.",
    )
    assert parse_link("model=zero", EXAMPLES, MODELS).model == MODELS[1]  # a whole word: "zero" of "zero-shot"
    assert parse_link("model=shot-zero", EXAMPLES, MODELS).model is None  # words in their order only


@pytest.mark.parametrize(
    "value, step",
    [("1", "patches"), ("5", "soap"), ("9", "prediction"), ("SOAP", "soap"), (" graph ", "graph"), ("all", "all")],
)
def test_a_step_by_number_or_name(value, step):
    link = parse_link(f"example=dastrel-wren&step={value}", EXAMPLES, MODELS)
    assert link.step == step and not link.problems and link.opens == "walkthrough"


@pytest.mark.parametrize("value", ["0", "10", "05x", "٣", "soap-step", "fg]"])
def test_a_step_the_browser_would_not_open_is_reported(value):
    link = parse_link(f"step={value}", EXAMPLES, MODELS)
    assert link.step is None and len(link.problems) == 1 and f"step={value}" in link.problems[0]
    assert f"1 to {len(STEP_IDS)}" in link.problems[0]


def test_a_link_that_names_nothing_here_keeps_what_it_does_name():
    link = parse_link("example=no-such-bird&tab=explore&model=zero-shot&utm_source=x&__theme=dark", EXAMPLES, MODELS)
    assert (link.tab, link.example, link.model, link.opens) == ("explore", None, MODELS[1], "explore")
    assert link.problems == (
        "The link's example=no-such-bird names no example here; expected one of dastrel-wren, lumbrel-tit, flower.",
    )
    assert parse_link("", EXAMPLES, MODELS) == Link() and Link().opens is None
    assert parse_link("tab=Models", EXAMPLES, MODELS).opens == "models"


def test_a_long_or_empty_answer_is_said_briefly():
    long = "x" * 5000
    (problem,) = parse_link(f"model={long}", EXAMPLES, MODELS).problems
    assert problem.startswith("The link's model=" + "x" * 39 + "… names no model here") and len(problem) < 250
    assert parse_link("example=wren", [], MODELS).problems == (
        "The link's example=wren names no example here; expected none: this app has no examples.",
    )


def test_an_example_or_a_step_outside_the_tabs_they_belong_to():
    link = parse_link("tab=batch&example=dastrel-wren", EXAMPLES, MODELS)
    assert link.example is None and link.opens == "batch" and "not in batch" in link.problems[0]
    link = parse_link("tab=explore&example=dastrel-wren&step=5", EXAMPLES, MODELS)
    assert link.example == EXAMPLES[0] and link.step is None and "step=5 is unused" in link.problems[0]


@pytest.mark.parametrize(
    "value, rho",
    [("0.7", 0.7), ("0", 0.0), ("1", 1.0), (" .25 ", 0.25), ("1e-1", 0.1), ("1.5", None), ("-0.1", None),
     ("nan", None), ("inf", None), ("half", None), ("0,7", None)],
)  # fmt: skip
def test_a_link_s_fusion_ratio(value, rho):
    link = parse_link(f"tab=explore&rho={value}", EXAMPLES, MODELS)
    assert link.rho == rho
    if rho is None:
        assert link.problems == (
            f"The link's rho={value.strip()} is not a fusion ratio; expected a number from 0 to 1.",
        )
    else:
        assert not link.problems


def test_a_link_s_class_names_are_read_as_the_class_box_reads_them():
    typed = "classes=a%20red%20bird,%20a%20blue%20bird%0Aa%20red%20bird,,dastrel%20wren"
    assert parse_link(typed, EXAMPLES, MODELS).classes == ("a red bird", "a blue bird", "dastrel wren")
    assert parse_link("classes=", EXAMPLES, MODELS) == Link()
    many = ",".join(f"bird {i}" for i in range(MAX_LINK_CLASSES + 1))
    link = parse_link(f"example=dastrel-wren&classes={many}", EXAMPLES, MODELS)
    assert link.classes == () and link.example == EXAMPLES[0]
    assert link.problems == (
        f"The link names {MAX_LINK_CLASSES + 1} classes; a link carries at most {MAX_LINK_CLASSES}, so they are "
        "unused (type them in the class box instead).",
    )
    assert len(parse_link(f"classes={many.rpartition(',')[0]}", EXAMPLES, MODELS).classes) == MAX_LINK_CLASSES


def test_class_names_or_a_ratio_outside_the_tabs_they_belong_to():
    link = parse_link("tab=adapt&classes=a,b", EXAMPLES, MODELS)
    assert link.classes == () and link.problems == (
        "Class names belong to the Walkthrough, Explore or Compare; the link opens adapt: unused.",
    )
    link = parse_link("example=dastrel-wren&rho=0.3", EXAMPLES, MODELS)
    assert link.rho is None and link.problems == (
        "A fusion ratio belongs to Explore; the link opens walkthrough, so rho=0.3 is unused.",
    )
    # a link that opens no tab sets Explore's ratio and types its names in the first tab (ui.links)
    assert parse_link("classes=a,b&rho=0.3", EXAMPLES, MODELS) == Link(classes=("a", "b"), rho=0.3)


def test_link_query_is_read_back_as_the_view_it_was_made_for():
    for example in EXAMPLES:
        for model in MODELS:
            for tab, step in (("walkthrough", "soap"), ("explore", None), (None, 3), (None, "all")):
                query = link_query(example, tab=tab, model=model, step=step)
                wanted = STEP_IDS[step - 1] if isinstance(step, int) else step
                assert parse_link(query, EXAMPLES, MODELS) == Link(tab, example, model, wanted), query
    assert link_query(EXAMPLES[0], step=5) == "?example=dastrel-wren&step=5"
    assert link_query() == ""
    names = ("a red bird", "dastrel wren", "the bird & its mate", "naïve=yes?")
    query = link_query(EXAMPLES[0], tab="explore", classes=names, rho=0.25)
    assert query.startswith("?tab=explore&example=dastrel-wren&classes=a+red+bird,dastrel+wren,the+bird+%26+its")
    assert parse_link(query, EXAMPLES, MODELS) == Link("explore", EXAMPLES[0], classes=names, rho=0.25)
    assert with_rho(link_query(EXAMPLES[0], tab="explore"), 1 / 3) == "?tab=explore&example=dastrel-wren&rho=0.333333"
    assert parse_link(with_rho("", 0.5), EXAMPLES, MODELS) == Link(rho=0.5)


def test_an_example_is_told_by_its_bytes_wherever_it_is(tmp_path):
    """A client's copy of an example (Gradio's cache, under another name) is that example; a picture of one's own,
    even one byte apart, is none."""
    copy = tmp_path / "upload.png"
    copy.write_bytes(Path(EXAMPLES[1]).read_bytes())
    assert example_of(str(copy), EXAMPLES) == EXAMPLES[1]
    assert example_link(str(copy), MODELS[1], EXAMPLES) == "?example=lumbrel-tit&model=toybirds-base-zero-shot"
    changed = tmp_path / "mine.png"
    changed.write_bytes(Path(EXAMPLES[1]).read_bytes() + b"\0")
    assert example_of(str(changed), EXAMPLES) is None and example_link(str(changed), None, EXAMPLES) is None
    assert example_of(None, EXAMPLES) is None and example_of(str(tmp_path / "gone.png"), EXAMPLES) is None


# ------------------------------------------------------------------ the view a link opens, in the app


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory) -> ModelRegistry:
    """The tiny random ViT as a zero-shot model, and adapted with ρ 0.3 (so that a link's model switch shows)."""
    registry = ModelRegistry("cpu")
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, "tiny zero-shot")
    model, _, _ = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, CLASSES)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.add_(0.05 * torch.randn_like(param))
    meta = CheckpointMeta(model.base, CLASSES, method={**model.config.to_dict(), "fusion_ratio": 0.3}, training={})
    path = save_adapted(tmp_path_factory.mktemp("links") / "adapted.safetensors", model.adapted_state(), meta)
    registry.add_checkpoint(path, "tiny adapted", default=True)
    return registry


@pytest.fixture(scope="module")
def tabs(registry):
    with gr.Blocks():
        with gr.Tabs():
            with gr.Tab("Walkthrough", id="walkthrough"):
                walkthrough = build_walkthrough_tab(registry)
            with gr.Tab("Explore", id="explore"):
                explore_tab = build_explore_tab(registry)
            with gr.Tab("Compare", id="compare"):
                compare_tab = build_compare_tab(registry)
    return {
        "walkthrough": walkthrough.run_example,
        "explore": explore_tab.run_example,
        "compare": compare_tab.run_example,
    }


def opened(registry, runs, query: str) -> dict:
    """``open_link`` with every input at its component's start value; its outputs by tab: the picture, what the
    example computes, the model (and, where the tab has them, ρ, the class names and the panel they sit in)."""
    values = [c.value for run in runs.values() for c in run.inputs]
    out = open_link(registry, runs, query, *values, examples=EXAMPLES)
    got, at = {"tab": out[0]}, 1
    for tab, run in runs.items():
        n = 1 + len(run.outputs)
        got[tab] = out[at : at + n]
        got[f"{tab}_model"] = out[at + n]
        at += n + 1
        for key in ("ratio", "classes", "classes_panel"):
            if getattr(run, key) is not None:
                got[f"{tab}_{key}"] = out[at]
                at += 1
    assert at == len(out)
    return got


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def test_a_link_to_an_example_shows_the_walkthrough_the_endpoint_answers(registry, tabs):
    got = opened(registry, tabs, "example=lumbrel-tit&step=soap")
    assert got["tab"].selected == "walkthrough"
    image, page, numbers = got["walkthrough"]
    assert image == EXAMPLES[1]
    assert page == walk(registry, EXAMPLES[1], "tiny adapted", "")[0]  # the default model, as the tab starts
    # the page offers a link to itself: the same example, model and (kept current in the browser) step
    link = link_query(EXAMPLES[1], model="tiny adapted")
    href = link.replace("&", "&amp;") + "&amp;step=1"
    assert page.startswith(f'<div class="wt-linkline"><a class="wt-link" href="{href}"')
    assert parse_link(link, EXAMPLES, registry.names()) == Link(example=EXAMPLES[1], model="tiny adapted")
    assert numbers is None  # sent only while their accordion is open, as an example click does
    assert all(is_skip(v) for v in [*got["explore"], *got["compare"], got["explore_model"], got["explore_ratio"]])
    assert all(is_skip(got[key]) for key in ("walkthrough_model", "walkthrough_classes", "explore_classes_panel"))


def test_a_link_with_class_names_types_them_in_the_tab_it_opens(registry, tabs):
    typed = "\n".join(CLASSES[:2])
    page = walk(registry, EXAMPLES[1], "tiny adapted", typed)[0]
    # the walkthrough of an example among typed names offers the link that gives it back
    link = link_query(EXAMPLES[1], model="tiny adapted", classes=CLASSES[:2])
    assert page.startswith(f'<div class="wt-linkline"><a class="wt-link" href="{link.replace("&", "&amp;")}&amp;')
    got = opened(registry, tabs, link[1:])
    assert got["walkthrough"][1] == page and got["walkthrough_classes"] == typed
    assert page != walk(registry, EXAMPLES[1], "tiny adapted", "")[0]  # the names change the page
    assert all(is_skip(got[key]) for key in ("explore_classes", "explore_classes_panel", "compare_classes"))
    # in Explore the box sits in a closed panel: the link opens it, so the student sees why the classes are these
    got = opened(registry, tabs, f"tab=explore&example=dastrel-wren&classes={','.join(CLASSES[1:3])}&rho=0.8")
    assert got["explore_classes"] == "\n".join(CLASSES[1:3]) and got["explore_classes_panel"].open is True
    assert got["explore_ratio"] == 0.8 and is_skip(got["explore_model"])
    display = [c.value for c in tabs["explore"].inputs[4:]]
    answer = explore(registry, EXAMPLES[0], "tiny adapted", "\n".join(CLASSES[1:3]), None, 0.8, *display)
    assert got["explore"][2] == answer[1] and sorted(got["explore"][3]) == sorted(CLASSES[1:3])  # summary, top-k
    wanted = link_query(EXAMPLES[0], tab="explore", model="tiny adapted", classes=CLASSES[1:3], rho=0.8)
    assert f"[Link to this view]({wanted})" in answer[1]
    # a link that names no tab types its names in the first (the page opens there)
    got = opened(registry, tabs, f"classes={CLASSES[0]},{CLASSES[2]}")
    assert not isinstance(got["tab"], gr.Tabs) and got["walkthrough_classes"] == f"{CLASSES[0]}\n{CLASSES[2]}"


def test_a_link_to_explore_under_another_model_switches_the_model_and_its_ratio(registry, tabs):
    got = opened(registry, tabs, "tab=explore&example=dastrel-wren&model=zero-shot")
    assert got["tab"].selected == "explore"
    switched = {got[f"{tab}_model"].value for tab in ("walkthrough", "explore", "compare")}
    assert switched == {"tiny zero-shot"}
    assert got["explore_ratio"] == registry.fusion_ratio("tiny zero-shot") == 0.5  # the adapted default's is 0.3
    image, _session, summary, *_ = got["explore"]
    display = [c.value for c in tabs["explore"].inputs[4:]]
    answer = explore(registry, EXAMPLES[0], "tiny zero-shot", "", None, 0.5, *display)
    assert image == EXAMPLES[0] and summary == answer[1]
    assert summary.endswith("[Link to this view](?tab=explore&example=dastrel-wren&model=tiny-zero-shot&rho=0.5) "
                            "(this picture under this model at this ρ, in Explore)")  # fmt: skip
    assert all(is_skip(v) for v in [*got["walkthrough"], *got["compare"]])


def test_a_link_to_compare_shows_the_comparison_the_endpoint_answers(registry, tabs):
    got = opened(registry, tabs, "tab=compare&example=flower")
    assert got["tab"].selected == "compare" and got["compare"][0] == EXAMPLES[2]
    run = tabs["compare"]
    answer = compare(registry, EXAMPLES[2], *[c.value for c in run.inputs])
    assert got["compare"][-1] == answer[-1] and "rank" in answer[-1].lower()  # the rank line, the same words
    assert is_skip(got["compare_model"]) and all(is_skip(v) for v in [*got["walkthrough"], *got["explore"]])


def test_a_link_with_a_wrong_name_warns_and_opens_the_rest(registry, tabs):
    with pytest.warns(UserWarning, match="model=nope names no model"):
        got = opened(registry, tabs, "tab=explore&model=nope")
    assert got["tab"].selected == "explore" and all(is_skip(v) for v in [*got["walkthrough"], *got["explore"]])


def test_a_link_knows_every_tab_of_the_app(registry):
    """studio.links.TABS (the services know no Gradio) are the app's tab ids, in order."""
    from studio.links import TABS
    from ui.app import build_demo

    demo = build_demo(registry)
    assert tuple(block.id for block in demo.blocks.values() if isinstance(block, gr.Tab)) == TABS
