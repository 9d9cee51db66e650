"""The main paths in a real browser: Playwright drives Debian's chromium (never a downloaded one) through the
walkthrough (the first tab), Explore with its explainer comparison (a readable table, no clipped gallery), Compare,
a short adaptation started, watched, stopped and saved (Adapt's controls, status and curves on the first screen of
a 1400×1000 projector; saving never switches Explore's model on its own), Batch and Models.

A screenshot of every tab, at a 1400×1000 viewport, goes to ``test-artifacts/browser/`` (git-ignored) for a
person to look at: ``tab-<n>-<name>.png`` is what the first screen shows, ``*-full.png`` the whole page; a failed
test leaves ``failed-<test>.png`` and ``failed-<test>.txt`` (every input's value) beside them. With the bundled
toy-world models, the pictures the lesson (docs/teaching.md) shows are also copied, shrunk, to ``docs/img/``
(``LESSON_SHOTS``) when MICROCLIP_LESSON_SHOTS=1 is set.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import serve, tiny_base_registry
from PIL import Image

from microclip.checkpoint import epochs_beside, read_adapted, save_adapted
from microclip.describe import article_for
from microclip.toyworld.text import description_ties
from studio.examples import example_images, example_label
from studio.jobs import AdaptationRunner
from studio.links import link_query
from studio.registry import TOY_ADAPTED, TOY_DEBIASED_NAME, default_registry
from ui.app import build_demo

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium); this test never downloads a browser",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
LESSON_IMAGES = ROOT / "docs" / "img"
# screenshot → the picture docs/teaching.md shows (only taken with the bundled toy-world models)
LESSON_SHOTS = {
    "tab-1-walkthrough": "walkthrough.png",
    "walkthrough-5-soap": "walkthrough-soap.png",
    "walkthrough-out-of-world": "walkthrough-out-of-world.png",
    "tab-2-explore": "explore.png",
    "explore-explainers": "explore-explainers.png",
    "explore-redescribe": "explore-redescribe.png",
    "explore-label": "explore-label.png",
    "explore-epochs": "explore-epochs.png",
    "explore-epochs-classes": "explore-epochs-classes.png",
    "tab-3-compare": "compare.png",
    "tab-4-adapt": "adapt.png",
    "adapt-saved": "adapt-saved.png",
}
LESSON_WIDTH = 1000  # pixels: readable in the lesson, a fraction of the screenshot's bytes
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
WAIT_MS = 60_000
# Every wait, an assertion's too (Playwright's expect waits 5 s by default): a 2-core machine running the suite beside
# other work answers late, not wrongly, and a test here checks what the page shows, never how soon.
expect.set_options(timeout=WAIT_MS)
PENDING_MS = 10_000
# no event pending and no transition running (endless animations, such as a spinner's, do not count)
SETTLED = """() => !document.querySelector('.pending') && document.getAnimations().every(
    a => a.playState !== 'running' || a.effect.getTiming().iterations === Infinity)"""
BUNDLED = TOY_ADAPTED.is_file()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_model_dir):
    # The bundled toy-world models when they are there (the screenshots then show the real thing), else the
    # tiny random ViT of the other app tests.
    registry = default_registry("cpu") if BUNDLED else tiny_base_registry(tiny_model_dir)
    runner = AdaptationRunner(registry, tmp_path_factory.mktemp("browser-runs"))
    with serve(build_demo(registry, runner)) as url:
        yield url
        for job_id in list(runner._jobs):  # never leave a training thread behind a failed test
            runner.stop(job_id)


@pytest.fixture(scope="module")
def page(app_url):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.set_default_timeout(WAIT_MS)
            tab.goto(app_url)
            tab.wait_for_selector("#walkthrough-button")
            yield tab
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def page_on_failure(request, page):
    """A test that fails leaves the page as it was for the next reader: the whole page's screenshot and the value
    of every input (an intermittent failure is otherwise seen once and gone)."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed:
        return
    name = f"failed-{request.node.name}"
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    values = page.evaluate("""() => [...document.querySelectorAll('[id] input, [id] textarea')].map((e) => {
      const label = e.getAttribute('aria-label') || e.type;
      return `${e.closest('[id]').id}\t${label}\t${e.value}`; })""")
    selected = page.locator("[role=tab][aria-selected=true]").all_inner_texts()
    (ARTIFACTS / f"{name}.txt").write_text("\n".join([f"tab\t{selected}", *values]) + "\n", encoding="utf-8")


def shot(page, name: str, full: bool = False, top: bool = True) -> None:
    """Save a screenshot: the first screen (scrolled to the top unless ``top`` is False) or the whole page; the
    lesson's pictures are also copied, shrunk to ``LESSON_WIDTH`` and to 256 colours, into docs/img/ when
    MICROCLIP_LESSON_SHOTS is set (so an ordinary run leaves the checkout as it was)."""
    page.wait_for_function("() => [...document.images].every(img => img.complete)")
    try:  # Gradio fades a component to a fifth while its event runs, and back in after: wait for both
        page.wait_for_function(SETTLED, timeout=PENDING_MS)
    except sync_api.TimeoutError:
        pass  # a live run's status may be polled for as long as it runs; the shot shows it as it is
    if top and not full:
        page.evaluate("window.scrollTo(0, 0)")
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    if BUNDLED and name in LESSON_SHOTS and os.environ.get("MICROCLIP_LESSON_SHOTS"):
        LESSON_IMAGES.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as picture:
            small = picture.convert("RGB").resize(
                (LESSON_WIDTH, round(picture.height * LESSON_WIDTH / picture.width)), Image.LANCZOS
            )
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            LESSON_IMAGES / LESSON_SHOTS[name], optimize=True
        )


def in_first_screen(page, selector: str) -> bool:
    """Whether the element is wholly inside the 1400×1000 viewport with the page scrolled to the top."""
    page.evaluate("window.scrollTo(0, 0)")
    box = page.locator(selector).first.bounding_box()
    return (
        box is not None
        and box["y"] >= 0
        and box["y"] + box["height"] <= VIEWPORT["height"]
        and box["x"] + box["width"] <= VIEWPORT["width"]
    )


# A word split over two lines ("metho d", "15 .4"): some word of the element has more than one line box.
WORDS_SPLIT_JS = """(root) => {
  const split = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    for (const m of node.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
      if (tops.size > 1) split.push(m[0]);
    }
  }
  return split;
}"""


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")


def toy_example(page, gallery: str):
    """The first example thumbnail of a tab's gallery (the toy birds, the model's own world, come first)."""
    examples = page.locator(f"#{gallery} button.thumbnail-item")
    expect(examples.first, f"no example gallery #{gallery}").to_be_visible()  # drawn after the page's first events
    assert_label_clear(page.locator(f"#{gallery}"), gallery)
    expect(examples.first).not_to_contain_text("⚠")
    return examples.first


def visible_step(page) -> str:
    return page.locator(".wt-step:not([hidden])").first.get_attribute("data-step")


def test_walkthrough_is_the_first_tab_and_steps_through_an_example(page, tmp_path):
    expect(page.get_by_role("tab", name="Walkthrough", exact=True)).to_have_attribute("aria-selected", "true")
    thumbnails = page.locator("#walkthrough-examples .thumbnail-item")
    # waited for: on a loaded machine the gallery was drawn after the page's first button
    expect(thumbnails.first, "no example thumbnails on the Walkthrough tab").to_be_visible()
    assert_label_clear(page.locator("#walkthrough-examples"), "walkthrough-examples")
    expect(thumbnails.first).to_contain_text(re.compile(r"^(?!⚠)"))  # a toy bird comes first, unmarked
    thumbnails.first.click()
    page.wait_for_selector(".wt-nav")
    expect(page.locator(".wt-head")).to_contain_text("Prediction:")
    assert page.locator(".wt-step").count() == 9 and visible_step(page) == "patches"
    shot(page, "tab-1-walkthrough")

    page.locator(".wt-step:not([hidden]) [data-goto='next']").click()  # Next → step 2, in the browser
    assert visible_step(page) == "tokens"
    page.locator(".wt-nav [data-goto='2']").click()  # the graph and its cut
    assert visible_step(page) == "graph"
    current = page.locator(".wt-nav [data-goto='2']")
    expect(current).to_have_class("wt-active")  # the strip shows where the student is, even under the mouse
    assert "inset" in current.evaluate("b => getComputedStyle(b).boxShadow")
    assert page.locator(".wt-nav .wt-active").count() == 1
    assert page.locator(".wt-nav [aria-current=step]").get_attribute("data-goto") == "2"  # a screen reader hears it
    expect(page.locator(".wt-step[data-step='graph']")).to_contain_text("foreground patches")
    shot(page, "walkthrough-3-graph")
    page.locator(".wt-nav [data-goto='4']").click()
    if page.locator(".wt-link").count():  # a bundled example: its link follows the step shown
        assert page.locator(".wt-link").get_attribute("href").endswith("&step=5")
    soap = page.locator(".wt-step[data-step='soap']")
    expect(soap).to_contain_text("null weight α_null")
    expect(soap).to_contain_text(re.compile(r"Σ patch weights \+ α_null.*= 1\.0000"))
    shot(page, "walkthrough-5-soap")
    page.keyboard.press("ArrowRight")  # the focus is on step 5's button: the arrow keys step, as Next and Back do
    assert visible_step(page) == "fg"
    page.keyboard.press("ArrowLeft")
    assert visible_step(page) == "soap"
    page.keyboard.press("End")  # the last step, and back to the first
    assert visible_step(page) == "prediction"
    page.keyboard.press("Home")
    assert visible_step(page) == "patches" and page.locator(".wt-nav [aria-current]").count() == 1
    page.locator(".wt-nav [data-goto='7']").click()
    expect(page.locator(".wt-step[data-step='heads']")).to_contain_text("weight w_j in W_LLM")
    if BUNDLED:  # the adapted toy model: the answer with W* back at its start, beside the answer now
        expect(page.locator(".wt-step[data-step='heads']")).to_contain_text("Put back at its start")
        expect(page.locator(".wt-step[data-step='heads']")).to_contain_text("Fused, W* at its start")
    shot(page, "walkthrough-8-heads", full=True)
    page.locator(".wt-nav [data-goto='all']").click()
    assert page.locator(".wt-step:not([hidden])").count() == 9
    shot(page, "walkthrough-all-steps-full", full=True)

    # The handout: the same walkthrough as one file, opened from disk with the app out of reach, steps as here.
    # Before it is written, its box is one line, not an empty drop zone that the button beside it grows to match.
    assert page.locator("#walkthrough-download").bounding_box()["height"] < 100
    assert page.locator("#walkthrough-download-button").bounding_box()["height"] < 100
    page.locator("#walkthrough-download-button").click()
    link = page.locator("#walkthrough-download a[href$='.html']")
    expect(link).to_have_count(1)
    handout = tmp_path / "handout.html"
    handout.write_bytes(page.request.get(link.get_attribute("href")).body())
    offline = page.context.browser.new_context(viewport=VIEWPORT, offline=True)
    try:
        sheet = offline.new_page()
        sheet.goto(handout.as_uri())
        expect(sheet.locator(".wt-head")).to_have_text(page.locator(".wt-head").inner_text())
        assert sheet.locator(".wt-step:not([hidden])").count() == 1  # the first step, as in the app
        sheet.locator(".wt-step:not([hidden]) [data-goto='next']").click()
        assert visible_step(sheet) == "tokens"
        sheet.keyboard.press("ArrowRight")
        assert visible_step(sheet) == "graph"
        sheet.locator(".wt-nav [data-goto='all']").click()
        assert sheet.locator(".wt-step:not([hidden])").count() == 9
        if BUNDLED:  # a toy bird's handout ends with the erase row's answer for each part, the bird drawn without it
            expect(sheet.get_by_text("Step 9, one more question: each part erased in turn")).to_be_visible()
            assert sheet.get_by_text("Each branch, before and after").count() >= 2
        assert sheet.evaluate("() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)")
        shot(sheet, "walkthrough-handout-full", full=True)
        # Printed: every step, no buttons, the colour bars kept (browsers drop backgrounds when printing by default)
        sheet.emulate_media(media="print")
        sheet.locator(".wt-nav [data-goto='0']").evaluate("b => b.click()")  # one step shown on screen...
        assert all(step.is_visible() for step in sheet.locator(".wt-step").all())  # ...all nine on paper
        expect(sheet.locator(".wt-nav")).to_be_hidden()
        bar = sheet.locator(".wt-step .mc-bar").first
        assert bar.evaluate("e => getComputedStyle(e).printColorAdjust") == "exact"
        shot(sheet, "walkthrough-handout-print-full", full=True)
        # A handout opened at one step, as a link to the app's walkthrough does: by number, or by name after "#"
        for suffix, step in (("?step=3", "graph"), ("#step=SOAP", "soap"), ("?step=all", None)):
            linked = offline.new_page()
            linked.goto(handout.as_uri() + suffix)
            shown = linked.locator(".wt-step:not([hidden])")
            assert shown.count() == (1 if step else 9) and (step is None or visible_step(linked) == step), suffix
    finally:
        offline.close()

    # An out-of-world picture (marked ⚠) walks through as well.
    marked = page.locator("#walkthrough-examples .thumbnail-item", has_text="⚠")
    if marked.count():
        before = page.locator(".wt-head").inner_text()
        marked.first.click()
        expect(page.locator(".wt-head")).not_to_have_text(before)
        assert visible_step(page) == "patches"
        shot(page, "walkthrough-out-of-world")

    # The numbers behind the page: sent when their accordion opens, then with every example while it is open.
    page.get_by_text("All the numbers (JSON)").click()
    numbers = page.locator("#walkthrough-json")
    expect(numbers).to_contain_text("steps")
    if marked.count():  # back to the toy bird: its numbers replace the out-of-world picture's
        json_before = numbers.inner_text()
        thumbnails.first.click()
        expect(numbers).not_to_have_text(json_before)


def test_explore_an_example_and_compare_explainers(page):
    open_tab(page, "Explore")
    example = toy_example(page, "explore-examples")
    toy = "toybird-" in (example.locator("img").get_attribute("src") or "")
    example.click()
    page.wait_for_selector("#explore-maps .mc-stage img")
    page.wait_for_selector("#contributions table")
    summary = page.locator("#explore-summary")
    expect(summary).to_contain_text("Prediction:")
    expect(summary).to_contain_text("Null token")
    if BUNDLED:  # the bundled run recorded [FG]'s shared shift: the summary says what [FG] answers without it
        expect(summary).to_contain_text("without its shared shift")
    # The SOAP layer is a small PNG (a few pixels per patch) that the browser scales up over the photo.
    page.wait_for_function(
        "() => { const img = document.querySelector('#explore-maps .mc-stage img');"
        " return img && img.complete && img.naturalWidth > 0 && img.naturalWidth <= 128"
        " && img.width > 2 * img.naturalWidth; }"
    )
    if toy:  # the descriptions behind the answer, read against the bird's own species
        expect(page.locator("#explore-descriptions")).to_contain_text("This bird is a")
    shot(page, "tab-2-explore")
    page.locator("#explore-download-button").click()  # the maps as pictures, to keep
    expect(page.locator("#explore-download a[href$='.zip']")).to_have_count(1)
    shot(page, "explore-full", full=True)

    if toy:  # erase two parts together: every bundled toy bird shows its beak and its tail tip
        page.locator("#explore_erase_part-part input").click()
        page.get_by_role("option", name="tail tip", exact=True).click()
        page.locator("#explore_erase_part-button").click()
        erased = page.locator("#explore_erase_part-result")
        expect(erased).to_contain_text("Without the beak and tail tip")
        expect(erased).to_contain_text("[FG] only")
        # Each branch's name on one line: the longest ("[FG] without its shared shift") once wrapped into five.
        heights = erased.locator("table td:first-child").evaluate_all("cells => cells.map(c => c.clientHeight)")
        assert max(heights) <= 1.5 * min(heights), heights
        erased.scroll_into_view_if_needed()
        shot(page, "explore-erase-parts", top=False)
        # the same bird asked with each of SOAP's queries, then pooled each way: three maps each, the model's own
        # first (as trained)
        views = (
            ("queries", "What if SOAP asked another question?", "the mean of every patch token (an ablation)"),
            ("pools", "What if SOAP pooled another way?", "patches pooled, alike"),
        )
        for name, title, says in views:
            page.locator(f"#explore-{name}").get_by_text(title).first.click()
            page.locator(f"#explore_{name}-button").click()
            asked = page.locator(f"#explore_{name}-result")
            expect(asked).to_contain_text(says)
            assert asked.locator("img").count() == 3
            asked.scroll_into_view_if_needed()
            shot(page, f"explore-{name}", top=False)
        # how self-training would label the bird: its crops drawn on it, each crop's row, the two halves
        page.locator("#explore-label").get_by_text("How would adaptation label this picture?").first.click()
        page.locator("#explore_label-draws input").fill("4")
        page.locator("#explore_label-button").click()
        labelled = page.locator("#explore_label-result")
        expect(labelled).to_contain_text("DKA labels this picture")
        expect(labelled).to_contain_text("Over 4 draws of the crops (seeds 0–3)")
        expect(labelled).to_contain_text("The two halves and the label")
        assert labelled.locator("img.wt-thumb").count() == labelled.locator("svg rect").count() >= 1
        card, column = (page.locator(sel).bounding_box() for sel in ("#explore_label-result .wt", "#explore-label"))
        assert card["x"] + card["width"] <= column["x"] + column["width"] + 1, (card, column)
        page.locator("#explore-label").evaluate("e => e.scrollIntoView({block: 'start'})")
        shot(page, "explore-label", top=False)

    # What if the descriptions said something else: the model's own lines to start from, one class re-described,
    # and the three columns (the model, W* from its descriptions, W* from yours) with that class's row
    predicted = summary.inner_text().split("Prediction: ", 1)[1].split(" (")[0].strip()
    page.locator("#explore-redescribe").get_by_text("What if the descriptions said").first.click()
    page.locator("#explore_redescribe-start").click()
    lines = page.locator("#explore_redescribe-lines textarea")
    if BUNDLED:  # the toy model's descriptions, one line each
        expect(lines).to_have_value(re.compile(rf"(^|\n){re.escape(predicted)}: "))
    lines.fill(f"{predicted}: a bird with a yellow fan crest.\n{predicted}: a bird with no tail tip.")
    page.locator("#explore_redescribe-button").click()
    described = page.locator("#explore_redescribe-result")
    expect(described).to_contain_text("The classes you re-described")
    expect(described).to_contain_text("a bird with a yellow fan crest.")
    assert described.locator("th").first.inner_text() == "branch"
    # nothing cut: the card is no wider than the column it sits in (a wide table scrolls inside its figure)
    card, column = (
        page.locator(sel).bounding_box() for sel in ("#explore_redescribe-result .wt", "#explore-redescribe")
    )
    assert card["x"] + card["width"] <= column["x"] + column["width"] + 1, (card, column)
    page.locator("#explore-redescribe").evaluate("e => e.scrollIntoView({block: 'start'})")
    shot(page, "explore-redescribe", top=False)
    # the same lines to an adaptation from the same model: the Adapt tab opens with them
    chosen = page.locator("#explore-model input").first.input_value()
    page.locator("#explore_redescribe-adapt").click()
    expect(page.get_by_role("tab", name="Adapt", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#adapt-description-lines textarea")).to_have_value(lines.input_value())
    expect(page.locator("#adapt-model input").first).to_have_value(chosen)
    page.locator("#adapt-description-lines textarea").fill("")  # the Adapt test's runs use the world's own
    page.locator("#adapt-more").get_by_text("More settings").first.click()  # folded again, as that test starts
    expect(page.locator("#adapt-description-lines textarea")).to_be_hidden()
    open_tab(page, "Explore")

    page.locator("#explainers").get_by_text("Compare explainers", exact=True).first.click()  # open the accordion
    page.locator("#explainers-button").click()
    page.wait_for_selector("#explainers-gallery img")
    table = page.locator("#explainers-table")
    expect(table).to_contain_text("Explaining class:")
    expect(table).to_contain_text("SOAP")
    assert page.locator("#explainers-gallery img").count() >= 2  # SOAP and at least one peer
    if toy:  # a known toy-world image: every map is scored against the true part masks
        expect(table).to_contain_text("mass inside the part mask")
    # A readable table: notes (an explainer unavailable here) under it, never in a cell; no word split in two.
    cells = table.locator("table")
    expect(cells).not_to_contain_text("unavailable")
    assert cells.evaluate(WORDS_SPLIT_JS) == []
    # No clipped gallery row: every map and its caption are inside the gallery's box, nothing scrolls inside it.
    assert_gallery_fits(page.locator("#explainers-gallery"), "explainer")
    page.locator("#explainers").scroll_into_view_if_needed()
    shot(page, "explore-explainers", top=False)
    shot(page, "explore-explainers-full", full=True)
    # Deletion asked for: one more column, and each branch's drops in a table of their own; both still readable.
    page.locator("#explainers-deletion input[type=checkbox]").check()
    page.locator("#explainers-button").click()
    expect(table).to_contain_text("Deletion, branch by branch", timeout=120_000)
    table.locator("table").last.scroll_into_view_if_needed()
    shot(page, "explore-explainers-deletion", top=False)
    assert table.locator("table").count() == 2
    assert [t.evaluate(WORDS_SPLIT_JS) for t in table.locator("table").all()] == [[], []]

    # The same image through the bundled model's adaptation run: one map per saved epoch, and the table.
    page.locator("#epochs").get_by_text("Self-training, epoch by epoch", exact=True).first.click()
    page.locator("#epochs-button").click()
    epochs_table = page.locator("#epochs-table")
    if BUNDLED:
        page.wait_for_selector("#epochs-gallery img")
        expect(epochs_table).to_contain_text("start")
        expect(epochs_table).to_contain_text("Without labels")  # the signs each epoch logged
        expect(page.locator("#epochs-gallery .thumbnail-item")).to_have_count(len(epochs_beside(TOY_ADAPTED)))
        assert_gallery_fits(page.locator("#epochs-gallery"), "epochs")
    else:  # the tiny test model has no saved run: the view says how to keep one
        expect(epochs_table).to_contain_text("--keep_epochs")
    page.locator("#epochs").scroll_into_view_if_needed()
    shot(page, "explore-epochs", top=False)
    shot(page, "explore-epochs-full", full=True)
    assert epochs_table.evaluate(WORDS_SPLIT_JS) == []
    if BUNDLED:  # the run's classes, under the image's tables: the last table, no taller than one screen
        expect(epochs_table).to_contain_text("Each class through self-training")
        classes = epochs_table.locator("table").last
        expect(classes).to_contain_text("most often mistaken for")
        expect(classes).to_contain_text("labels right")  # the bundled run's labels, checked against the truth
        ties = description_ties(read_adapted(TOY_ADAPTED)[1].descriptions)  # the run's own descriptions
        expect(epochs_table).to_contain_text(
            f"The descriptions tie {sum(1 for t in ties.values() if t)} of the {len(ties)} classes to another"
        )
        # the section's title and facts at the top of the screen, the table under them; where the table would
        # run past the bottom, scrolled up by what it lacks, so the lesson picture shows every row
        epochs_table.get_by_text("Each class through self-training").evaluate("e => e.scrollIntoView({block: 'start'})")
        box = classes.bounding_box()
        assert box is not None and box["height"] <= 1000 and box["width"] <= 1400
        page.evaluate("(lacking) => window.scrollBy(0, lacking)", max(0, box["y"] + box["height"] + 4 - 1000))
        box = classes.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 1000
        shot(page, "explore-epochs-classes", top=False)


GALLERY_FIT_JS = """(g) => {
  const box = g.getBoundingClientRect();
  const inner = [...g.querySelectorAll('*')].filter((e) => e.scrollHeight > e.clientHeight + 2 &&
    ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowY));
  const items = [...g.querySelectorAll('.thumbnail-item, .caption-label, figcaption')];
  const clipped = items.filter((e) => e.getBoundingClientRect().bottom > box.bottom + 1).length;
  const lastRow = Math.max(...items.map((e) => e.getBoundingClientRect().bottom));
  const firstRow = Math.min(...[...g.querySelectorAll('.thumbnail-item')].map((e) => e.getBoundingClientRect().top));
  const label = g.querySelector('[data-testid="block-label"]');
  const labelOver = label ? label.getBoundingClientRect().bottom - firstRow : -1;
  const scrolled = Math.max(0, ...inner.map((e) => e.scrollTop));
  return {clipped: inner.length + clipped, emptyBelow: box.bottom - lastRow, labelOver: labelOver, hasLabel: !!label,
          scrolled: scrolled};
}"""


def assert_label_clear(gallery, name: str) -> None:
    """An examples gallery opens at its first row, with its label above it (it covered the top 35 px of the
    Walkthrough's first examples)."""
    fit = gallery.evaluate(GALLERY_FIT_JS)
    assert fit["hasLabel"], f"the {name} gallery shows no label"
    assert fit["labelOver"] <= 0, f"the {name} gallery's label covers {fit['labelOver']:.0f} px of its first row"
    assert fit["scrolled"] == 0, f"the {name} gallery opens scrolled {fit['scrolled']} px down"


def assert_gallery_fits(gallery, name: str) -> None:
    """Every map and caption inside the gallery's box, nothing scrolling in it, no band of empty space below its
    last row (Gradio 6's fixed-height box left up to 300 px; ui.common.PAGE_CSS fits the box to its rows), and its
    label above the first row, not over it (it covered the top 12 px of the first maps)."""
    gallery.scroll_into_view_if_needed()
    fit = gallery.evaluate(GALLERY_FIT_JS)
    assert fit["clipped"] == 0, f"the {name} gallery clips a row or a caption"
    assert fit["emptyBelow"] < 40, f"the {name} gallery leaves {fit['emptyBelow']:.0f} px empty under its last row"
    assert fit["hasLabel"], f"the {name} gallery shows no label"
    assert fit["labelOver"] <= 0, f"the {name} gallery's label covers {fit['labelOver']:.0f} px of its first row"


def test_compare_two_models(page):
    open_tab(page, "Compare")
    example = toy_example(page, "compare-examples")
    name = example.locator("img").get_attribute("src").rsplit("/", 1)[-1]
    example.click()
    page.wait_for_function(
        "name => [...document.querySelectorAll('img')].some(i => i.offsetParent && "
        "i.src.endsWith(name) && !i.closest('button.thumbnail-item'))",
        arg=name,
    )  # the input
    # The example runs on click, as in the other tabs: no Compare press needed.
    page.wait_for_selector("#compare-diff .mc-stage img")
    expect(page.get_by_text(re.compile(r"rank|Rank"))).not_to_have_count(0)
    for side in ("compare-a", "compare-b", "compare-diff"):  # each model's maps and their difference, as HTML
        page.wait_for_selector(f"#{side} .mc-stage img")
    expect(page.locator("#compare-diff")).to_contain_text("|Δ|")
    shot(page, "tab-3-compare")

    if BUNDLED:  # the reference's toy run beside the one with debiased labels, class by class
        page.locator("#compare-model-b input").click()
        page.get_by_role("option", name=TOY_DEBIASED_NAME, exact=True).click()
        page.get_by_text("Two runs, class by class", exact=True).click()  # open the accordion
        page.get_by_role("button", name="Compare the two runs", exact=True).click()
        runs = page.locator("#compare-runs")
        expect(runs).to_contain_text("Starved by one run's labels and not the other's: brennic finch")
        table = runs.locator("table")
        expect(table).to_contain_text("B − A")
        assert table.locator("tr").count() == 17  # the header and the 16 species
        runs.scroll_into_view_if_needed()
        shot(page, "compare-runs", top=False)
        assert runs.evaluate(WORDS_SPLIT_JS) == []  # no number or word broken over two lines


def test_adapt_start_watch_stop_and_save_without_a_silent_switch(page, image_dataset_root):
    open_tab(page, "Explore")
    explore_model = page.locator("#explore-model input").first.input_value()
    open_tab(page, "Adapt")
    # On a 1400×1000 projector, Start and what it changes are on the first screen, side by side.
    for part in ("#adapt-start", "#adapt-stop", "#adapt-status", "#adapt-progress", "#adapt-loss"):
        assert in_first_screen(page, part), f"{part} is not on the first screen of Adapt at 1400×1000"
    page.get_by_label("folder on the server").check()
    folder = page.locator("#adapt-folder textarea, #adapt-folder input").first
    expect(page.locator("#adapt-folder")).to_contain_text("served on 127.0.0.1 only")
    folder.fill(str(image_dataset_root / "shapes" / "train"))
    page.get_by_text("More settings", exact=True).click()  # the less used settings are folded away
    if BUNDLED:  # λ starts at the chosen model's (the bundled debiased model's, the reference's 0), as ρ
        # does: chosen before the settings below, which a choice resets
        debias, model = (
            page.get_by_label("number input for Label debiasing (λ)", exact=True),
            page.locator("#adapt-model input"),
        )
        started_from = model.input_value()
        expect(debias).to_have_value("0")
        for name, value in ((TOY_DEBIASED_NAME, "3"), (started_from, "0")):
            model.click()
            page.get_by_role("option", name=name, exact=True).click()
            expect(debias).to_have_value(value)
    settings = {"Steps": "200", "Batch size": "16", "Crops per image (K)": "4", "Probe images": "4"}
    settings["Weight of [CLS] in the fused answer (ρ)"] = "0.3"  # the saved model answers with it, in Explore too
    for setting, value in settings.items():
        box = page.get_by_label(f"number input for {setting}", exact=True)
        box.fill(value)
        box.press("Enter")
    # where the labels come from: the method's by default; the baseline's and the truth's a click away
    expect(page.locator("#adapt-labels input:checked")).to_have_value(re.compile(r"^DKA's pseudo-labels"))
    for choice in ("[CLS] alone labels itself", "the folders' true labels"):
        expect(page.locator("#adapt-labels")).to_contain_text(choice)
    expect(page.locator("#adapt-debias")).to_contain_text("Label debiasing (λ)")
    page.locator("#adapt-labels").scroll_into_view_if_needed()
    shot(page, "adapt-more-settings", top=False)
    for choice in ("the scores' softmax", "the labels' own shares"):  # what λ's class marginal is a mean of
        expect(page.locator("#adapt-prior")).to_contain_text(choice)
    expect(page.get_by_label("number input for Debiasing's momentum", exact=True)).to_have_value("0.9")
    expect(page.locator("#adapt-cut input:checked")).to_have_value("as the chosen model")
    expect(page.locator("#adapt-cut")).to_contain_text("the last block's keys")  # what the cut reads
    expect(page.get_by_label("number input for SOAP's share of the learning rate", exact=True)).to_have_value("1")
    page.locator("#adapt-prior").scroll_into_view_if_needed()
    shot(page, "adapt-prior", top=False)
    page.get_by_text("More settings", exact=True).click()
    page.get_by_role("button", name="Start", exact=True).click()

    progress = page.locator("progress")
    expect(progress).to_have_attribute("max", "200")
    expect(progress).to_have_attribute("value", re.compile(r"^(?!0$)\d+$"))  # at least one step done
    expect(page.get_by_text(re.compile(r"running: step \d+/200"))).to_be_visible()
    page.wait_for_selector("#adapt-loss .vega-embed .mark-line path")  # the live curves are drawn
    for part in ("#adapt-start", "#adapt-status", "#adapt-progress", "#adapt-loss", "#adapt-accuracy"):
        assert in_first_screen(page, part), f"{part} left the first screen during the run"
    expect(page.locator("#adapt-loss .role-legend")).to_contain_text("smoothed")  # a legend, not the title
    legends = page.locator("#adapt-loss .role-legend text, #adapt-accuracy .role-legend text").evaluate_all(
        "texts => texts.map((t) => t.textContent)"
    )  # SVG text has no innerText
    assert legends and not [text for text in legends if "…" in text], legends  # no label cut
    # The label-free drift curves are drawn, both series (an empty first poll once left them uncoloured for the whole
    # run: test_a_plot_sent_no_points_first_draws_every_series_that_comes).
    page.wait_for_selector("#adapt-branches .vega-embed .mark-line path")
    for series in ("[CLS] alone", "[FG] alone"):
        expect(page.locator("#adapt-branches .role-legend")).to_contain_text(series)
    # Four probe cards, whole, with whole captions.
    captions = page.locator("#adapt-probes figcaption")
    expect(captions.first).to_contain_text("before: ")
    expect(page.locator("#adapt-probes .ad-probe")).to_have_count(4)
    for text in captions.all_inner_texts():
        assert re.search(r"\(highest\)$", text), text
    cut = page.locator("#adapt-probes").evaluate("""(root) => {
      const box = root.getBoundingClientRect();
      return [...root.querySelectorAll('.ad-probe, figcaption')].filter((e) => e.getBoundingClientRect().right >
        box.right + 1 || e.scrollWidth > e.clientWidth + 1).length; }""")
    assert cut == 0, "a probe card or caption is clipped"
    shot(page, "tab-4-adapt")

    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.locator("#adapt-status")).to_contain_text(re.compile(r"stopping: step \d+/200|stopped after"))
    # The run ends after its current step, which may be an epoch's end (its shift measured, its epoch saved), and the
    # status shows it at the next poll, whichever of Stop's answer and the polls comes last.
    stopped = page.get_by_text(re.compile(r"stopped after (\d+) of 200 steps"))
    expect(stopped).to_be_visible()
    steps = int(re.search(r"stopped after (\d+) of", stopped.inner_text())[1])
    assert 1 <= steps < 200

    # Save: the model is listed, and the status says plainly that no other tab switched to it.
    page.get_by_label("Checkpoint name (optional)").fill("class demo")
    page.get_by_role("button", name="Save checkpoint", exact=True).click()
    expect(page.locator("#adapt-status")).to_contain_text("saved as class demo")
    expect(page.locator("#adapt-status")).to_contain_text("keep the model they show")
    page.locator("#adapt-download-curves").click()  # the curves, step by step, to keep
    expect(page.locator("a[href$='-curves.csv']")).to_have_count(1)  # a download link (its shown name is cut)
    page.locator("#adapt-save").scroll_into_view_if_needed()
    shot(page, "adapt-saved", top=False)
    shot(page, "adapt-stopped-full", full=True)
    open_tab(page, "Explore")
    assert page.locator("#explore-model input").first.input_value() == explore_model  # no silent switch
    # Asked for: "Use it in Explore" switches Explore (and opens it).
    open_tab(page, "Adapt")
    page.locator("#adapt-use-saved").click()
    expect(page.get_by_role("tab", name="Explore", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#explore-model input").first).to_have_value("class demo")
    # ... with the model's own ρ shown as the model is: sent with it, not 2–3 s later by the list's change event
    assert page.get_by_label("number input for Fusion ratio ρ", exact=True).input_value() == "0.3"


def test_a_plot_sent_no_points_first_draws_every_series_that_comes(page):
    """Gradio's LinePlot builds its chart (the series' colours) from the first value it is sent and then only swaps
    the rows: sent an empty table first, as a poll before a run's first step did on a loaded machine, the Adapt
    tab's curves had no line and an empty legend for the whole run. ``plot_values`` sends None instead; here the
    real component is sent no points, then two series' rows."""
    import gradio as gr

    from ui.adapt import plot_values

    rows = [{"step": step, "agree_cls": 90.0 - step, "agree_fg": 70.0 + step} for step in (1, 2, 3)]
    with gr.Blocks() as demo:
        plot = gr.LinePlot(x="step", y="value", color="series", elem_id="plot")
        before, after = gr.Button("before the first step"), gr.Button("after three steps")
        before.click(lambda: plot_values([])[-1], None, plot)  # the branches' plot
        after.click(lambda: plot_values(rows)[-1], None, plot)
    with serve(demo) as url:
        tab = page.context.browser.new_page(viewport=VIEWPORT)
        try:
            tab.goto(url)
            for button in (before, after):
                tab.get_by_role("button", name=button.value).click()
                tab.wait_for_function(SETTLED, timeout=PENDING_MS)
            legend = tab.locator("#plot .role-legend")
            for series in ("[CLS] alone", "[FG] alone"):
                expect(legend).to_contain_text(series)
            drawn = tab.locator("#plot .mark-line path").evaluate_all(
                "paths => paths.filter((p) => (p.getAttribute('d') || '').length > 1).length"
            )
            assert drawn == 2, f"{drawn} of the two series' lines drawn"
        finally:
            tab.close()


def test_batch_and_models_tabs(page, tmp_path):
    open_tab(page, "Batch")
    folder = page.locator("#batch-folder textarea, #batch-folder input").first
    expect(folder).to_be_editable()  # served on localhost: the folder field is on, and says why
    expect(page.locator("#batch-folder")).to_contain_text("served on 127.0.0.1 only")
    shot(page, "tab-5-batch")
    open_tab(page, "Models / About")
    expect(page.get_by_text("How microCLIP classifies an image")).to_be_visible()
    shot(page, "tab-6-models")
    if not BUNDLED:
        return
    # A checkpoint uploaded in the browser is added, and Explore switches to it with its own ρ
    state, meta = read_adapted(TOY_ADAPTED)
    meta.method = {**meta.method, "fusion_ratio": 0.3}
    save_adapted(tmp_path / "leaning.safetensors", state, meta)
    page.locator("#models-upload input[type=file]").set_input_files(str(tmp_path / "leaning.safetensors"))
    expect(page.locator("#models-upload")).to_contain_text("leaning.safetensors")
    page.get_by_role("button", name="Add model", exact=True).click()
    expect(page.locator("#models-info")).to_contain_text("leaning")
    open_tab(page, "Explore")
    expect(page.locator("#explore-model input").first).to_have_value("leaning")
    expect(page.get_by_label("number input for Fusion ratio ρ", exact=True)).to_have_value("0.3")


def test_a_link_behind_a_login_opens_its_view_once_logged_in(page, tiny_model_dir):
    """Behind --auth the page asks for a name and password first; the login reloads the page at the same address,
    so the link's view opens then (the docs had told students to open the link again)."""
    with serve(build_demo(tiny_base_registry(tiny_model_dir)), auth=("student", "correct-horse")) as url:
        context = page.context.browser.new_context(viewport=VIEWPORT)
        try:
            linked = context.new_page()
            linked.set_default_timeout(WAIT_MS)
            linked.goto(url + link_query(example_images()[1], step="soap"))
            linked.get_by_label("username").fill("student")
            linked.get_by_label("password").fill("correct-horse")
            linked.get_by_role("button", name="Login").click()
            expect(linked.locator(".wt-nav")).to_be_visible()
            assert visible_step(linked) == "soap"
            assert linked.url.endswith(link_query(example_images()[1], step="soap"))
        finally:
            context.close()


def ratio_of(page) -> str:
    """Explore's fusion ratio as its slider's number box shows it."""
    return page.locator("#explore-ratio input[type=number]").input_value()


def test_a_link_opens_the_view_it_names(page, app_url):
    """A link (studio.links) opens the tab, the example, the step and the model it names, as clicks would; what it
    names that does not exist is said in a warning, and the rest still opens."""
    examples = example_images()
    if len(examples) < 3:
        pytest.skip("fewer than three bundled examples")
    context = page.context.browser.new_context(viewport=VIEWPORT, permissions=["clipboard-read", "clipboard-write"])
    try:
        linked = context.new_page()
        linked.set_default_timeout(WAIT_MS)
        # The walkthrough of the second example, as a click on its thumbnail shows it on a page just opened
        linked.goto(app_url)
        linked.locator("#walkthrough-examples .thumbnail-item").nth(1).click()
        expect(linked.locator(".wt-head")).to_be_visible()
        clicked = linked.locator(".wt-head").inner_text()
        linked.goto(app_url + link_query(examples[1], step="soap"))  # as a slide would give it
        expect(linked.locator(".wt-nav")).to_be_visible()
        expect(linked.get_by_role("tab", name="Walkthrough", exact=True)).to_have_attribute("aria-selected", "true")
        expect(linked.locator(".wt-head")).to_have_text(clicked)
        expect(linked.locator(".wt-step:not([hidden])")).to_have_count(1)
        assert visible_step(linked) == "soap"
        shot(linked, "link-walkthrough-soap")
        # the page's own "Link to this step" gives that address back (with the model), and it opens the same view
        offered = linked.locator(".wt-link").get_attribute("href")
        assert offered.startswith("?example=") and offered.endswith("&step=5")
        linked.locator(".wt-copy").click()  # Copy puts the whole address on the clipboard (the app is on localhost)
        expect(linked.locator(".wt-copy")).to_have_text("Copied")
        assert linked.evaluate("() => navigator.clipboard.readText()") == app_url.rstrip("/") + "/" + offered
        linked.goto(app_url + offered)
        expect(linked.locator(".wt-head")).to_have_text(clicked)
        assert visible_step(linked) == "soap"

        # Explore, on the third example, under another model when the bundled ones are there
        model = "toybirds · base zero-shot" if BUNDLED else None
        linked.goto(app_url + link_query(examples[2], tab="explore", model=model))
        expect(linked.get_by_role("tab", name="Explore", exact=True)).to_have_attribute("aria-selected", "true")
        summary = linked.locator("#explore-summary")
        expect(summary).to_contain_text("Prediction:")
        if BUNDLED:  # the toy world drew it: the summary names the species the example shows
            truth = example_label(examples[2])
            expect(summary).to_contain_text(f"This bird is {article_for(truth)} {truth}")
            expect(linked.locator("#explore-model input").first).to_have_value(model)
        # its summary offers the link to the view shown (the same example and model)
        shown = linked.locator("#explore-model input").first.input_value()
        offered = summary.get_by_role("link", name="Link to this view").get_attribute("href")
        assert offered == link_query(examples[2], tab="explore", model=shown, rho=float(ratio_of(linked)))
        shot(linked, "link-explore")
        # with class names and a fusion ratio: the names in the class box, its panel open, ρ on the slider, and the
        # view's own link carries them back
        names = [example_label(examples[2]), example_label(examples[0])]
        linked.goto(app_url + link_query(examples[2], tab="explore", classes=names, rho=0.8))
        expect(linked.locator("#explore-classes textarea")).to_have_value("\n".join(names))
        expect(summary).to_contain_text("Prediction:")
        assert ratio_of(linked) == "0.8"
        offered = summary.get_by_role("link", name="Link to this view").get_attribute("href")
        shot(linked, "link-explore-classes")
        shown = linked.locator("#explore-model input").first.input_value()  # a new page: the default model
        assert offered == link_query(examples[2], tab="explore", model=shown, classes=names, rho=0.8)

        # Compare, on the same example: the two models' maps and their difference
        linked.goto(app_url + link_query(examples[2], tab="compare"))
        expect(linked.get_by_role("tab", name="Compare", exact=True)).to_have_attribute("aria-selected", "true")
        expect(linked.locator("#compare-diff .mc-stage img").first).to_be_visible()
        expect(linked.locator("#compare-diff")).to_contain_text("|Δ|")

        # A link naming what is not there says so, and opens the rest (here: nothing to show, the first tab)
        linked.goto(app_url + "?example=no-such-bird&step=12")
        expect(linked.get_by_text("The link's example=no-such-bird names no example here")).to_be_visible()
        expect(linked.get_by_text("The link's step=12 names no step")).to_be_visible()
        expect(linked.locator(".wt-nav")).to_have_count(0)
    finally:
        context.close()
