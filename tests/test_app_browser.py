"""The main path in a real browser: Playwright drives Debian's chromium (never a downloaded one) through
loading the app, explaining an example image, and starting, watching and stopping a short adaptation.

Screenshots of each stage go to ``test-artifacts/browser/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import serve, tiny_base_registry

from ui.app import build_demo
from ui.jobs import AdaptationRunner

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); this test never downloads a browser",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_model_dir):
    registry = tiny_base_registry(tiny_model_dir)
    runner = AdaptationRunner(registry, tmp_path_factory.mktemp("browser-runs"))
    with serve(build_demo(registry, runner)) as url:
        yield url
        for job_id in list(runner._jobs):  # never leave a training thread behind a failed test
            runner.stop(job_id)


@pytest.fixture(scope="module")
def page():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(WAIT_MS)
            yield tab
        finally:
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_explore_an_example_then_start_watch_and_stop_an_adaptation(app_url, page, image_dataset_root):
    page.goto(app_url)
    page.wait_for_selector("#explain-button")
    shot(page, "1-loaded")

    # Explore: a click on an example loads it and explains it.
    examples = page.locator("#explore-examples button.thumbnail-item")
    assert examples.count() >= 1, "no example gallery on the Explore tab"
    examples.nth(min(3, examples.count() - 1)).click()
    page.wait_for_selector("#explore-maps .mc-stage img")
    page.wait_for_selector("#contributions table")
    summary = page.locator("#explore-summary")
    sync_api.expect(summary).to_contain_text("Prediction:")
    sync_api.expect(summary).to_contain_text("Null token")
    # The SOAP layer is a small PNG (a few pixels per patch) that the browser scales up over the photo.
    layer = page.locator("#explore-maps .mc-stage img").first
    assert layer.evaluate("img => img.complete && img.naturalWidth > 0 && img.width > 4 * img.naturalWidth")
    shot(page, "2-explored")

    # Adapt: a run on the test's small images (a server folder), long enough to be stopped midway.
    page.get_by_role("tab", name="Adapt").click()
    page.get_by_label("folder on the server").check()
    folder = page.get_by_label("Folder on the server", exact=True)
    folder.fill(str(image_dataset_root / "shapes" / "train"))
    for setting, value in (("Steps", "200"), ("Batch size", "16"), ("Crops per image (K)", "4"),
                           ("Probe images", "2")):
        box = page.get_by_label(f"number input for {setting}", exact=True)
        box.fill(value)
        box.press("Enter")
    page.get_by_role("button", name="Start", exact=True).click()

    progress = page.locator("progress")
    sync_api.expect(progress).to_have_attribute("max", "200")
    sync_api.expect(progress).to_have_attribute("value", re.compile(r"^(?!0$)\d+$"))  # at least one step done
    sync_api.expect(page.get_by_text(re.compile(r"running: step \d+/200"))).to_be_visible()
    sync_api.expect(page.get_by_text(re.compile(r"^before: "))).to_have_count(2)  # probe captions
    page.wait_for_selector(".vega-embed .mark-line path")  # the live curves are drawn
    page.wait_for_function("() => [...document.images].every(img => img.complete)")
    shot(page, "3-adapting")

    page.get_by_role("button", name="Stop", exact=True).click()
    stopped = page.get_by_text(re.compile(r"stopped after (\d+) of 200 steps"))
    sync_api.expect(stopped).to_be_visible()
    steps = int(re.search(r"stopped after (\d+) of", stopped.inner_text())[1])
    assert 1 <= steps < 200
    shot(page, "4-stopped")
