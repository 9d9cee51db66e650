"""The Walkthrough tab over HTTP: the ``walkthrough`` endpoint driven with ``gradio_client`` on a served app,
checked against the library and against the Explore endpoint; and its HTML pieces."""

from __future__ import annotations

import base64
import io
import re
from html import unescape
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import CLASSES, draw_sample, serve
from PIL import Image

from microclip.describe import article_for
from microclip.explain import explain_image
from microclip.resources import EXAMPLES_DIR
from microclip.walkthrough import STEP_IDS, walkthrough
from studio.examples import example_images, ordered_examples
from studio.registry import ModelRegistry
from ui.app import build_demo
from viz.html import STUDIO_CSS, num
from viz.steps import WALKTHROUGH_JS, heat_grid, render_walkthrough, signed_bar

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

BASE = "tiny"
DESCRIPTIONS = {name: [f"a {name} on a dark noisy background.", f"a picture showing one {name}."] for name in CLASSES}
TEMPLATES = ["a photo of a {}."]
EXAMPLES_DIR_PHOTO = EXAMPLES_DIR / "photo-grace-hopper.jpg"
DISPLAY = dict(opacity=0.5, cmap="jet", clip_lo=0, clip_hi=100, threshold=0, raw_map="SOAP weight", numbers=False)


@pytest.fixture(scope="module")
def registry(tiny_model_dir) -> ModelRegistry:
    registry = ModelRegistry("cpu")
    registry.add_base(
        f"local-dir:{tiny_model_dir}", None, CLASSES, BASE, templates=TEMPLATES, descriptions=DESCRIPTIONS
    )
    return registry


@pytest.fixture(scope="module")
def client(registry):
    with serve(build_demo(registry)) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("walk") / "disc.png"
    draw_sample(1, np.random.default_rng(3), size=48).save(path)
    return path


def test_walkthrough_is_a_named_endpoint_and_the_first_tab(client, registry):
    assert "/walkthrough" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    demo = build_demo(registry)
    tabs = [c["props"] for c in demo.config["components"] if c["type"] == "tabitem"]
    assert tabs[0]["label"] == "Walkthrough"


def test_the_endpoint_returns_every_step_with_the_numbers_of_this_image(client, registry, picture):
    html, numbers = client.predict(handle_file(str(picture)), BASE, "", api_name="/walkthrough")
    assert [s["id"] for s in numbers["steps"]] == list(STEP_IDS)
    loaded = registry.get(BASE)
    local = walkthrough(loaded.model, Image.open(picture))  # the library on the same model, in this process
    for key in ("cls", "fg", "fused"):
        np.testing.assert_allclose(numbers["steps"][-1]["logits"][key], local.prediction.logits[key], atol=1e-5)
    soap = numbers["steps"][STEP_IDS.index("soap")]
    explanation = explain_image(loaded.model, Image.open(picture))
    np.testing.assert_allclose(soap["weights"], explanation.soap_weights, atol=1e-7)
    assert soap["null_weight"] == pytest.approx(explanation.null_weight, abs=1e-9)
    # The HTML shows the same numbers: nine sections (one visible), the null weight, the prediction.
    assert html.count('class="wt-step"') == len(STEP_IDS) and html.count(" hidden>") == len(STEP_IDS) - 1
    assert num(soap["null_weight"], scientific=True) in html  # the null weight: always scientific
    assert f"Prediction: <b>{numbers['steps'][-1]['prediction']}</b>" in html
    # With the model's own descriptions, the heads step gives each one's signed weight in W_LLM.
    heads = numbers["steps"][STEP_IDS.index("heads")]["classes"]
    assert {d["text"] for d in heads[0]["descriptions"]} == set(DESCRIPTIONS[heads[0]["class_name"]])
    weights = [d["weight"] for d in heads[0]["descriptions"]]
    assert sum(weights) == pytest.approx(heads[0]["weight_sum"]) and all(-1 <= w <= 1 for w in weights)
    assert "weight w_j in W_LLM" in html and "share in W_LLM" not in html
    # The uniform weight is 1/(N+1), as Explore says it; the null weight in scientific notation, not 0.
    assert f"uniform weight 1/(N+1), N = {len(soap['weights']) * len(soap['weights'][0])}" in html


def test_the_walkthrough_downloads_as_one_page_that_needs_nothing_else(client, picture):
    page, _ = client.predict(handle_file(str(picture)), BASE, "", api_name="/walkthrough")
    path = client.predict(handle_file(str(picture)), BASE, "", api_name="/walkthrough_download")
    assert path.endswith("microclip-walkthrough-disc.html")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert f'<div id="walkthrough">{page}</div>' in text  # the very page the tab shows
    assert WALKTHROUGH_JS in text and STUDIO_CSS in text  # its stepping and its styles, inlined
    # nothing fetched: every picture a data URI, no link, no external script or sheet
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text) + re.findall(r"url\(\s*['\"]?([^)'\"]*)", text)
    assert sources and all(source.startswith("data:") for source in sources), sorted(set(sources))[:5]
    with pytest.raises(AppError, match="image"):
        client.predict(None, BASE, "", api_name="/walkthrough_download")


def test_walkthrough_and_explore_agree_on_the_prediction(client, picture):
    _html, numbers = client.predict(handle_file(str(picture)), BASE, "", api_name="/walkthrough")
    explored = client.predict(handle_file(str(picture)), BASE, "", None, 0.5, *DISPLAY.values(), api_name="/explore")
    summary = explored[0]
    assert f"**Prediction: {numbers['steps'][-1]['prediction']}**" in summary


def test_typed_classes_and_one_class_get_a_note(client, picture):
    html, numbers = client.predict(handle_file(str(picture)), BASE, "green disc", api_name="/walkthrough")
    assert numbers["classes"] == ["green disc"] and "One class only" in html
    heads = numbers["steps"][STEP_IDS.index("heads")]["classes"]
    assert heads[0]["source"] == "templates"  # typed classes have no descriptions


def test_bad_inputs_are_one_clear_error(client, tmp_path):
    with pytest.raises(AppError, match="Add an image first"):
        client.predict(None, BASE, "", api_name="/walkthrough")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(AppError, match="cannot be used as an image"):
        client.predict(handle_file(str(text)), BASE, "", api_name="/walkthrough")
    with pytest.raises(AppError, match="nope is not in the list of choices"):
        client.predict(handle_file(str(text)), "nope", "", api_name="/walkthrough")


def test_examples_put_toy_birds_first_and_mark_the_others():
    paths, labels = ordered_examples(
        [
            "/x/photo-grace-hopper.jpg",
            "/x/toybird-zorsaik-wren.png",
            "/x/scene-flower.jpg",
            "/x/toybird-fenwhit-finch.png",
        ]
    )
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "toybird-fenwhit-finch.png",
        "toybird-zorsaik-wren.png",
        "scene-flower.jpg",
        "photo-grace-hopper.jpg",
    ]
    assert labels == ["fenwhit finch", "zorsaik wren", "⚠ flower", "⚠ grace hopper"]


def test_grids_print_their_values_and_large_ones_become_a_small_picture():
    small = heat_grid(np.arange(12.0).reshape(3, 4), ".1f", outline=np.eye(3, 4, dtype=bool))
    assert small.count("<td") == 12 and ">11.0<" in small and small.count("wt-on") == 3
    assert re.search(r"<span>0.0000</span>.*<span>11.0000</span>", small)  # the colour bar's range
    assert "colours: this map&#x27;s own min–max" in small or "colours: this map's own min–max" in small
    large = heat_grid(np.zeros((14, 14)), outline=np.eye(14, dtype=bool))  # a ViT-B/16 grid: a small picture
    assert "<td" not in large and "data:image/png;base64," in large
    encoded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", large)[1]
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))
    cell = pixels.shape[0] // 14
    assert tuple(pixels[0, 0]) == (228, 87, 46) and tuple(pixels[0, cell + 1]) != (228, 87, 46)  # (0,0) framed


def test_small_numbers_are_written_in_scientific_notation():
    assert num(3.57e-4) == "3.57e-04" and num(0.25) == "0.2500" and num(0.0) == "0.0000" and num(None) == "–"
    assert num(2.46e-05, 3) == "2.46e-05" and num(0.0123, 3) == "0.012"


def test_signed_bars_are_never_empty_and_negative_ones_go_left():
    positive, negative, tiny = signed_bar(0.5, 1.0), signed_bar(-0.5, 1.0), signed_bar(-1e-9, 1.0)
    halves = re.compile(r'<span class="wt-sbar-half">(.*?)</span><span class="wt-sbar-half">(.*)</span></span>$')
    left, right = halves.search(positive).groups()
    assert not left and "width:max(1px,50.0%)" in right
    left, right = halves.search(negative).groups()
    assert "width:max(1px,50.0%)" in left and not right.strip("</span>")
    assert "max(1px," in tiny  # at least one pixel, however small


def test_render_runs_without_descriptions_and_for_ablations(registry):
    from microclip.data.transforms import test_transform
    from microclip.explain import explain_batch
    from microclip.model import MethodConfig, MicroCLIP
    from studio.explore import summary_markdown

    loaded = registry.get(BASE)
    picture = draw_sample(0, np.random.default_rng(0), size=40)
    ablation = MicroCLIP(
        loaded.model.backbone, loaded.model.heads, MethodConfig(pool="ncut_avg", query="token_avg"), loaded.model.base
    ).eval()
    for model in (loaded.model, ablation):
        html = render_walkthrough(walkthrough(model, picture), np.zeros((64, 64, 3), np.uint8))
        assert html.count('class="wt-step"') == len(STEP_IDS)
        assert html.count('class="wt-here"') == len(STEP_IDS)  # every step says what it found on this image
        # The method's words only where they are true of the model shown: an ablation's query and pooling say so.
        method, html = model is loaded.model, unescape(html)
        assert ("The query: the mean foreground token" in html) == method
        assert ("The query: the mean of every patch token (an ablation)" in html) != method
        assert ("the plain mean of the cut's foreground tokens (an ablation)" in html) != method
        assert ("One softmax over the patches plus a zero null token" in html) == method
        assert ("This model pools [FG] without it" in html) != method
        summary = summary_markdown(explain_batch(model, test_transform(model.backbone.image_size)(picture)[None])[0])
        assert ("SOAP's query is their mean." in summary) == method
        # a plain-mean pooling never reads the query, so the summary names the pooling and no query at all
        assert ("[FG] is the plain mean of the cut's foreground tokens here (an ablation)" in summary) != method
        assert "this model takes the mean of every patch token" not in summary


# ------------------------------------------------------------------ the bundled toy world: masks and the flag


@pytest.fixture(scope="module")
def toy_registry():
    from studio.registry import TOY_ADAPTED, default_registry

    if not TOY_ADAPTED.is_file():
        pytest.skip("the bundled toy-world checkpoint is missing")
    return default_registry("cpu")


@pytest.fixture(scope="module")
def toy_bird(tmp_path_factory):
    """A toy-world image the app recognises (the renderer's first example, enlarged as the bundled ones are),
    drawn here so the test does not depend on which PNGs are shipped; and its ground truth."""
    from microclip.toyworld.lookup import enlarge, example_samples

    sample = example_samples()[0]
    path = tmp_path_factory.mktemp("toy") / "toybird.png"
    Image.fromarray(enlarge(sample.image, 4)).save(path)
    return path, sample


# one per bundled toy bird: a sentence the first example happens to get right must hold on every example
N_TOY_EXAMPLES = sum(Path(p).name.startswith("toybird-") for p in example_images())


@pytest.mark.parametrize("index", range(N_TOY_EXAMPLES))
def test_on_a_toy_bird_every_step_says_what_the_masks_show(toy_registry, tmp_path, index):
    from microclip.toyworld.lookup import enlarge, example_samples
    from microclip.toyworld.world import PARTS, SPECIES
    from ui.walkthrough import walk

    sample = example_samples()[index]
    path = tmp_path / "toybird.png"
    Image.fromarray(enlarge(sample.image, 4)).save(path)
    html, numbers = walk(toy_registry, str(path), toy_registry.default_name, "")
    h, w = numbers["grid"]
    size = sample.bird_mask.shape[0]
    # The bird's share of each patch, from the pixel mask by NumPy alone (64 px → 8×8 patches of 8 px).
    bird = sample.bird_mask.reshape(h, size // h, w, size // w).mean(axis=(1, 3))
    mask = np.asarray(numbers["steps"][STEP_IDS.index("graph")]["mask"], dtype=bool)
    facts = numbers["facts"]
    assert facts["n_object"] == int((bird >= 0.25).sum())
    assert facts["n_foreground_on_object"] == int((mask & (bird >= 0.25)).sum())
    assert (
        f"{int(mask.sum())} of 64 patches in the foreground, {facts['n_foreground_on_object']} of them on "
        f"the bird (which covers {facts['n_object']} patches"
    ) in html
    weights = np.asarray(numbers["steps"][STEP_IDS.index("soap")]["weights"])
    top = np.unravel_index(np.argmax(weights), weights.shape)
    labels = sample.part_labels.reshape(h, size // h, w, size // w)[top[0], :, top[1], :]
    touched = [PARTS[i - 1] for i in np.unique(labels) if i]
    region = facts["soap_top_region"]
    assert (region in touched) if touched else region == ("bird" if bird[top] >= 0.25 else "background")
    phrase = {"bird": "the bird, off its parts", "background": "the background"}.get(
        region, "the " + region.replace("_", " ")
    )
    assert f"it is on {phrase}." in html
    assert html.count('class="wt-here"') == len(STEP_IDS)
    assert f"This bird is {article_for(SPECIES[sample.species].name)} {SPECIES[sample.species].name}." in html
    assert "few dark cells cross" not in html and "separates the object from its background" not in html
    # the [FG] step: what the cut's plain mean would name on the same weights, right or wrong by the bird's species
    from microclip.explain import explain_image

    model = toy_registry.get(toy_registry.default_name).model
    plain = explain_image(model.asking(pool="ncut_avg"), Image.open(path))
    named = plain.classes[plain.prediction("fg")]
    verdict = "right" if named == SPECIES[sample.species].name else "wrong"
    assert f"({plain.probabilities('fg').max():.1%}, {verdict})." in html
    # the heads step: which other classes' lines are all true of this bird's species, from the world's table
    from microclip.toyworld import text

    descriptions = toy_registry.get(toy_registry.default_name).descriptions
    species = SPECIES[sample.species]
    true_lines = {f"a bird with {text.part_phrase(species, p) or text.absent_phrase(p)}." for p in PARTS}
    informative = {d: set(lines) - set(text.GENERIC_LINES) for d, lines in descriptions.items()}
    fitting = [d for d, said in informative.items() if d != species.name and said and said <= true_lines]
    heads_fact = html.split("8 · The two heads")[1].split("9 · ")[0]
    owners = " and ".join(f"{d}&#x27;s" for d in fitting)
    expected = (
        f"every line of {owners} descriptions is true of it as well as its own"
        if fitting
        else f"of the {len(descriptions)} classes&#x27; descriptions only its own are all true of it."
    )
    assert f"This bird is {article_for(species.name)} {species.name}: {expected}" in heads_fact


def test_an_out_of_world_picture_is_flagged_at_the_top_and_on_the_prediction_step(toy_registry, toy_bird):
    from studio.world import world_flag_markdown
    from ui.walkthrough import walk

    html, numbers = walk(toy_registry, str(EXAMPLES_DIR / "photo-grace-hopper.jpg"), toy_registry.default_name, "")
    assert numbers["facts"] is None  # not a toy image: no masks, no claims about a bird
    assert html.count('class="wt-banner"') == 2 and "looks outside the model" in html
    prediction = html[html.index('data-step="prediction"') :]
    assert 'class="wt-banner"' in prediction and "looks outside the model" in prediction
    loaded = toy_registry.get(toy_registry.default_name)
    toy_html, _ = walk(toy_registry, str(toy_bird[0]), loaded.name, "")
    flagged = bool(world_flag_markdown(loaded.model.classes, loaded, False, Image.open(toy_bird[0])))
    assert ('class="wt-banner"' in toy_html) == flagged  # the banner is the verdict, nothing else


def test_erasing_a_part_draws_the_same_bird_without_it_and_predicts_again(toy_registry, toy_bird):
    from microclip.toyworld.lookup import enlarge
    from microclip.toyworld.render import rerender
    from microclip.toyworld.world import PARTS, SPECIES
    from ui.walkthrough import erase_part

    path, sample = toy_bird
    shown = [p for i, p in enumerate(PARTS) if (sample.part_labels == 1 + i).any()]
    absent = [p for p in PARTS if p not in shown]
    part = shown[0]
    html = erase_part(toy_registry, str(path), toy_registry.default_name, "", part)
    model = toy_registry.get(toy_registry.default_name).model
    erased = rerender(sample, (part,))
    changed = sample.image != erased.image
    assert changed.any() and not changed.any(axis=2)[~(sample.part_labels == 1 + PARTS.index(part))].any()
    after = explain_image(model, Image.fromarray(enlarge(erased.image, 4)))  # as the shown picture is enlarged
    before = explain_image(model, Image.open(path))
    species = SPECIES[sample.species].name
    assert before.logits_fg_unshifted is not None  # the bundled run recorded [FG]'s shared shift: a fourth row
    for branch in ("fused", "cls", "fg", "fg_unshifted"):
        p_after = after.probabilities(branch)
        name = after.classes[after.prediction(branch)]
        assert f"{name} ({p_after.max():.1%})" in html
        true = before.classes.index(species)
        assert f"{before.probabilities(branch)[true]:.1%} → {p_after[true]:.1%}" in html
    assert "[FG] without its shared shift" in html
    assert f"Without the {part.replace('_', ' ')}" in html
    if absent:
        with pytest.raises(gr.Error, match="nothing to erase"):
            erase_part(toy_registry, str(path), toy_registry.default_name, "", absent[0])
    with pytest.raises(gr.Error, match="toy world's own images"):
        erase_part(toy_registry, str(EXAMPLES_DIR_PHOTO), toy_registry.default_name, "", part)


def test_several_parts_are_erased_together_in_one_render(toy_registry, toy_bird):
    from microclip.toyworld.lookup import enlarge
    from microclip.toyworld.render import rerender
    from microclip.toyworld.world import PARTS, SPECIES
    from ui.walkthrough import erase_part

    path, sample = toy_bird
    shown = sample.visible_parts()
    assert len(shown) >= 2
    picked = [shown[-1], shown[0]]  # the dropdown's order is the user's; the render and the words take PARTS order
    html = erase_part(toy_registry, str(path), toy_registry.default_name, "", picked)
    both = rerender(sample, tuple(picked))
    each = [rerender(sample, (p,)).image for p in picked]
    on_either = np.isin(sample.part_labels, [1 + PARTS.index(p) for p in picked])
    changed = (sample.image != both.image).any(axis=2)
    assert not changed[~on_either].any()  # nothing off the two parts moved
    for alone in each:  # and each part's pixels are those of erasing it alone: both went, in one render
        moved = (alone != sample.image).any(axis=2)
        assert moved.any() and (both.image[moved] == alone[moved]).all()
    assert f"Without the {shown[0].replace('_', ' ')} and {shown[-1].replace('_', ' ')}" in html
    model = toy_registry.get(toy_registry.default_name).model
    after = explain_image(model, Image.fromarray(enlarge(both.image, 4)))
    true = after.classes.index(SPECIES[sample.species].name)
    assert f"→ {after.probabilities('fg')[true]:.1%}" in html
    with pytest.raises(gr.Error, match="one or more parts"):
        erase_part(toy_registry, str(path), toy_registry.default_name, "", [])
    with pytest.raises(gr.Error, match="'wings'"):
        erase_part(toy_registry, str(path), toy_registry.default_name, "", [shown[0], "wings"])


def test_the_erase_endpoint_takes_one_part_by_name_or_several_in_a_list(client, toy_bird):
    """Callers written for one part keep working; the dropdown's list erases several parts in one render."""
    path, sample = toy_bird
    first, last = sample.visible_parts()[0], sample.visible_parts()[-1]
    one = client.predict(handle_file(str(path)), BASE, "", first, api_name="/erase_part")
    assert f"Without the {first.replace('_', ' ')}<" in one
    several = client.predict(handle_file(str(path)), BASE, "", [last, first], api_name="/erase_part")
    assert f"Without the {first.replace('_', ' ')} and {last.replace('_', ' ')}<" in several
    with pytest.raises(AppError, match="one or more parts"):
        client.predict(handle_file(str(path)), BASE, "", [], api_name="/erase_part")


def test_the_handout_of_a_toy_bird_answers_the_erase_row_for_each_part_and_all_of_them(client, toy_bird, picture):
    """The file cannot ask the server to draw the bird again, so it carries what the tab's erase row answers for
    each part the bird shows, one at a time and then all together: the endpoint's own answers."""
    path, sample = toy_bird
    text = Path(client.predict(handle_file(str(path)), BASE, "", api_name="/walkthrough_download")).read_text("utf-8")
    parts = sample.visible_parts()
    assert len(parts) > 1 and text.count("Each branch, before and after") == len(parts) + 1
    for part in [*parts, list(parts)]:
        assert client.predict(handle_file(str(path)), BASE, "", part, api_name="/erase_part") in text, part
    # a picture the toy world did not draw has nothing to erase, and its handout says nothing of it
    other = client.predict(handle_file(str(picture)), BASE, "", api_name="/walkthrough_download")
    assert "each part erased in turn" not in Path(other).read_text(encoding="utf-8")


def test_the_truth_is_said_with_the_article_its_name_takes(toy_registry, tmp_path):
    """ "an opsiva wren", "a dastrel wren": the sentence that names the bird the toy world drew, in the walkthrough
    and in Explore (it said "a opsiva wren")."""
    from microclip.toyworld.lookup import enlarge, example_samples
    from microclip.toyworld.world import SPECIES
    from ui.explore import explore
    from ui.walkthrough import walk

    by_name = {SPECIES[s.species].name: s for s in example_samples()}
    for name, article in (("opsiva wren", "an"), ("dastrel wren", "a")):
        path = tmp_path / f"{name}.png"
        Image.fromarray(enlarge(by_name[name].image, 4)).save(path)
        html, _ = walk(toy_registry, str(path), toy_registry.default_name, "")
        assert f"This bird is {article} {name}." in html
        ratio = toy_registry.fusion_ratio(toy_registry.default_name)
        display = (0.5, "viridis", 0, 100, 0, "SOAP weight", False)
        summary = explore(toy_registry, str(path), toy_registry.default_name, "", None, ratio, *display)[1]
        assert f"**This bird is {article} {name}** (the toy world drew it)" in summary
