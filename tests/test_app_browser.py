"""The main paths in a real browser: Playwright drives Debian's chromium (never a downloaded one) through the
walkthrough (the first tab), Explore with its explainer comparison, Compare, a short adaptation started,
watched and stopped, Batch and Models.

A screenshot of every tab, at a 1400×1000 viewport, goes to ``test-artifacts/browser/`` (git-ignored) for a
person to look at: ``tab-<n>-<name>.png`` is what the first screen shows, ``*-full.png`` the whole page.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import serve, tiny_base_registry

from ui.app import build_demo
from ui.jobs import AdaptationRunner
from ui.registry import TOY_ADAPTED, default_registry

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); this test never downloads a browser",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
expect = sync_api.expect

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_model_dir):
    # The bundled toy-world models when they are there (the screenshots then show the real thing), else the
    # tiny random ViT of the other app tests.
    registry = default_registry("cpu") if TOY_ADAPTED.is_file() else tiny_base_registry(tiny_model_dir)
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


def shot(page, name: str, full: bool = False, top: bool = True) -> None:
    """Save a screenshot: the first screen (scrolled to the top unless ``top`` is False) or the whole page."""
    page.wait_for_function("() => [...document.images].every(img => img.complete)")
    if top and not full:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")


def toy_example(page, gallery: str):
    """The first example thumbnail of a tab's gallery (the toy birds, the model's own world, come first)."""
    examples = page.locator(f"#{gallery} button.thumbnail-item")
    assert examples.count() >= 1, f"no example gallery #{gallery}"
    expect(examples.first).not_to_contain_text("⚠")
    return examples.first


def visible_step(page) -> str:
    return page.locator(".wt-step:not([hidden])").first.get_attribute("data-step")


def test_walkthrough_is_the_first_tab_and_steps_through_an_example(page):
    expect(page.get_by_role("tab", name="Walkthrough", exact=True)).to_have_attribute("aria-selected", "true")
    thumbnails = page.locator("#walkthrough-examples .thumbnail-item")
    assert thumbnails.count() >= 1, "no example thumbnails on the Walkthrough tab"
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
    expect(page.locator(".wt-step[data-step='graph']")).to_contain_text("foreground patches")
    shot(page, "walkthrough-3-graph")
    page.locator(".wt-nav [data-goto='4']").click()
    soap = page.locator(".wt-step[data-step='soap']")
    expect(soap).to_contain_text("null weight α_null")
    expect(soap).to_contain_text(re.compile(r"Σ patch weights \+ α_null.*= 1\.0000"))
    shot(page, "walkthrough-5-soap")
    page.locator(".wt-nav [data-goto='7']").click()
    expect(page.locator(".wt-step[data-step='heads']")).to_contain_text("share in W_LLM")
    shot(page, "walkthrough-8-heads", full=True)
    page.locator(".wt-nav [data-goto='all']").click()
    assert page.locator(".wt-step:not([hidden])").count() == 9
    shot(page, "walkthrough-all-steps-full", full=True)

    # An out-of-world picture (marked ⚠) walks through as well.
    marked = page.locator("#walkthrough-examples .thumbnail-item", has_text="⚠")
    if marked.count():
        before = page.locator(".wt-head").inner_text()
        marked.first.click()
        expect(page.locator(".wt-head")).not_to_have_text(before)
        assert visible_step(page) == "patches"


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
    # The SOAP layer is a small PNG (a few pixels per patch) that the browser scales up over the photo.
    page.wait_for_function("() => { const img = document.querySelector('#explore-maps .mc-stage img');"
                           " return img && img.complete && img.naturalWidth > 0 && img.naturalWidth <= 128"
                           " && img.width > 2 * img.naturalWidth; }")
    shot(page, "tab-2-explore")
    shot(page, "explore-full", full=True)

    page.locator("#explainers").get_by_text("Compare explainers", exact=True).first.click()  # open the accordion
    page.locator("#explainers-button").click()
    page.wait_for_selector("#explainers-gallery img")
    table = page.locator("#explainers-table")
    expect(table).to_contain_text("Explaining class:")
    expect(table).to_contain_text("SOAP")
    assert page.locator("#explainers-gallery img").count() >= 2  # SOAP and at least one peer
    if toy:  # a known toy-world image: every map is scored against the true part masks
        expect(table).to_contain_text("mass inside the part mask")
    page.locator("#explainers").scroll_into_view_if_needed()
    shot(page, "explore-explainers", top=False)
    shot(page, "explore-explainers-full", full=True)


def test_compare_two_models(page):
    open_tab(page, "Compare")
    example = toy_example(page, "compare-examples")
    name = example.locator("img").get_attribute("src").rsplit("/", 1)[-1]
    example.click()
    page.wait_for_function("name => [...document.querySelectorAll('img')].some(i => i.offsetParent && "
                           "i.src.endsWith(name) && !i.closest('button.thumbnail-item'))", arg=name)  # the input
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_text(re.compile(r"rank|Rank"))).not_to_have_count(0)
    for side in ("compare-a", "compare-b", "compare-diff"):  # each model's maps and their difference, as HTML
        page.wait_for_selector(f"#{side} .mc-stage img")
    expect(page.locator("#compare-diff")).to_contain_text("|Δ|")
    shot(page, "tab-3-compare")


def test_adapt_start_watch_and_stop(page, image_dataset_root):
    open_tab(page, "Adapt")
    page.get_by_label("folder on the server").check()
    folder = page.locator("#adapt-folder textarea, #adapt-folder input").first
    expect(page.locator("#adapt-folder")).to_contain_text("served on 127.0.0.1 only")
    folder.fill(str(image_dataset_root / "shapes" / "train"))
    for setting, value in (("Steps", "200"), ("Batch size", "16"), ("Crops per image (K)", "4"),
                           ("Probe images", "2")):
        box = page.get_by_label(f"number input for {setting}", exact=True)
        box.fill(value)
        box.press("Enter")
    page.get_by_role("button", name="Start", exact=True).click()

    progress = page.locator("progress")
    expect(progress).to_have_attribute("max", "200")
    expect(progress).to_have_attribute("value", re.compile(r"^(?!0$)\d+$"))  # at least one step done
    expect(page.get_by_text(re.compile(r"running: step \d+/200"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"^before: "))).to_have_count(2)  # probe captions
    page.wait_for_selector(".vega-embed .mark-line path")  # the live curves are drawn
    shot(page, "tab-4-adapt")

    page.get_by_role("button", name="Stop", exact=True).click()
    stopped = page.get_by_text(re.compile(r"stopped after (\d+) of 200 steps"))
    expect(stopped).to_be_visible()
    steps = int(re.search(r"stopped after (\d+) of", stopped.inner_text())[1])
    assert 1 <= steps < 200
    shot(page, "adapt-stopped-full", full=True)


def test_batch_and_models_tabs(page):
    open_tab(page, "Batch")
    folder = page.locator("#batch-folder textarea, #batch-folder input").first
    expect(folder).to_be_editable()  # served on localhost: the folder field is on, and says why
    expect(page.locator("#batch-folder")).to_contain_text("served on 127.0.0.1 only")
    shot(page, "tab-5-batch")
    open_tab(page, "Models / About")
    expect(page.get_by_text("How microCLIP classifies an image")).to_be_visible()
    shot(page, "tab-6-models")
