"""The app's queue: Gradio's per-event analytics summary is rebuilt rarely (ui.app.GRADIO_QUEUE_ENV), unless
the person running the app set those variables themselves."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")

from conftest import tiny_base_registry  # noqa: E402

from ui.app import GRADIO_QUEUE_ENV, build_demo  # noqa: E402


@pytest.fixture(scope="module")
def registry(tiny_model_dir):
    return tiny_base_registry(tiny_model_dir)


def test_queue_summarises_rarely_unless_the_user_set_it(registry, monkeypatch):
    """One build (a demo costs seconds): one variable left to the app, the other set by the user."""
    monkeypatch.delenv("GRADIO_ANALYTICS_MAX_EVENTS", raising=False)
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "7")
    queue = build_demo(registry)._queue
    assert queue.ANALYTICS_MAX_EVENTS == int(GRADIO_QUEUE_ENV["GRADIO_ANALYTICS_MAX_EVENTS"]) < 10_000
    assert queue.ANAYLTICS_CACHE_FREQUENCY == 7
    assert int(GRADIO_QUEUE_ENV["GRADIO_ANALYTICS_CACHE_FREQUENCY"]) >= 100
