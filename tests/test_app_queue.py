"""The app's queue under a class: Gradio's per-event analytics summary is rebuilt rarely (ui.app.GRADIO_QUEUE_ENV),
unless the person running the app set those variables themselves; queue positions go out once a second; the
classroom bench speaks the browser's protocol; a warmed app serves the first clicks from the cache; opening a tab
rebuilds the model lists only when they are stale."""

from __future__ import annotations

import importlib.util
import sys
import threading

import pytest

pytest.importorskip("gradio")

import gradio as gr  # noqa: E402
from conftest import serve, tiny_base_registry  # noqa: E402

from microclip.resources import PROJECT_ROOT as ROOT  # noqa: E402
from studio.cache import RESULTS  # noqa: E402
from studio.examples import example_images  # noqa: E402
from ui.app import GRADIO_QUEUE_ENV, QUEUE_STATUS_EVERY_S, build_demo, refresh_if_stale  # noqa: E402


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
    # Queue positions go out once a second, not to every waiting request each time a job starts.
    assert queue.live_updates is False and queue.update_intervals == QUEUE_STATUS_EVERY_S


def load_classroom():
    """bench/classroom.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("classroom", ROOT / "bench" / "classroom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_classroom_bench_speaks_the_apps_protocol(registry):
    """bench/classroom.py replays a browser's example clicks; the second round is served from the cache alone."""
    classroom = load_classroom()
    with serve(build_demo(registry)) as url:
        app = classroom.AppProtocol(url)
        image = "toybird-velmun-finch.png"
        indices = (app.example_index("walkthrough-examples", image), app.example_index("explore-examples", image))
        students = [classroom.Student(app) for _ in range(2)]
        opened = classroom.open_pages(students)
        first = classroom.run_round(1, students, indices)
        computed = RESULTS.misses
        second = classroom.run_round(2, students, indices)
    assert opened.errors == first.errors == second.errors == []
    assert len(first.walkthrough_s) == len(second.explore_s) == 2
    assert RESULTS.misses == computed  # nothing computed again


def test_a_warmed_app_serves_the_first_class_from_the_cache(registry):
    """app.py builds with warm=True: every bundled example's walkthrough and explanation is computed in the
    background at start, so the first round of clicks computes nothing."""
    classroom = load_classroom()
    RESULTS.clear()
    demo = build_demo(registry, warm=True)
    warming = [t for t in threading.enumerate() if t.name == "warm-examples"]
    for thread in warming:
        thread.join(timeout=240)
    assert warming and not any(t.is_alive() for t in warming)
    warmed = RESULTS.misses
    assert warmed >= 2 * len(example_images())  # a walkthrough and an explanation per example
    with serve(demo) as url:
        app = classroom.AppProtocol(url)
        image = "toybird-velmun-finch.png"
        indices = (app.example_index("walkthrough-examples", image), app.example_index("explore-examples", image))
        first = classroom.run_round(1, [classroom.Student(app)], indices)
    assert first.errors == [] and len(first.explore_s) == 1
    assert RESULTS.misses == warmed


def test_opening_a_tab_rebuilds_the_model_lists_only_when_they_are_stale(registry):
    names = tuple(registry.names())
    fresh = refresh_if_stale(registry, None, 4)  # a session that was never sent the lists
    assert fresh[0] == names and [update.choices for update in fresh[1:]] == [[(n, n) for n in names]] * 4
    # the lists only: a refresh that arrives late must not undo a model chosen meanwhile
    assert all(update.constructor_args == {"choices": list(names)} for update in fresh[1:])
    assert all(isinstance(update, dict) and update == gr.skip() for update in refresh_if_stale(registry, names, 4))
    stale = refresh_if_stale(registry, names[:-1] + ("a model since removed",), 4)
    assert stale[0] == names and len(stale) == 5
