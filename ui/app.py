"""The whole app: six tabs over one model registry, every action a named API endpoint."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from microclip.files import shareable_tempdir
from studio.examples import example_images
from studio.inflight import inference_threads
from studio.jobs import AdaptationRunner
from studio.registry import ModelRegistry
from studio.sharing import ServerPathGuard
from ui.adapt import build_adapt_tab
from ui.batch import build_batch_tab
from ui.common import PAGE_CSS, model_dropdown_update
from ui.compare import build_compare_tab
from ui.explore import build_explore_tab
from ui.layout import entry_fusion_ratio
from ui.links import wire_links
from ui.models import build_models_tab, list_models
from ui.walkthrough import build_walkthrough_tab

log = logging.getLogger(__name__)

TITLE = "microCLIP Studio"
INTRO = (
    "# microCLIP Studio\n"
    "See and steer how CLIP classifies fine-grained images: the SOAP map *is* the pooling that builds "
    "the fine-grained `[FG]` token, every score splits exactly into its `[CLS]` and `[FG]` parts, and "
    "a model can be adapted to your images without labels."
)
QUEUE_SIZE = 32  # requests waiting beyond this are refused at once rather than queued for minutes
MAX_UPLOAD = "200mb"  # images and .safetensors checkpoints; zips for Adapt/Batch are capped there too
# Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event, for a monitoring
# page this app never opens: 2-8 ms of a 2-core server per click, growing through a lesson. Once every
# 1,000 events, over the last 1,000, it costs nothing a class can feel.
GRADIO_QUEUE_ENV = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000", "GRADIO_ANALYTICS_MAX_EVENTS": "1000"}
# Where each waiting request stands in the queue, sent to all of them once a second instead of whenever a job
# starts ("auto"): with thirty requests waiting that is 30 messages a second rather than ~450 in a burst.
QUEUE_STATUS_EVERY_S = 1.0


def build_demo(
    registry: ModelRegistry,
    runner: AdaptationRunner | None = None,
    server_paths: ServerPathGuard | None = None,
    runs_dir: Path | None = None,
    warm: bool = False,
) -> gr.Blocks:
    """Build the Gradio app over ``registry``; ``runner`` runs adaptations (one is made if None, saving into
    ``runs_dir``, or into a temporary folder when that is None). With ``warm``, the bundled examples'
    walkthroughs and explanations are computed in the background (:func:`warm_examples`).

    ``server_paths`` decides whether Batch and Adapt may read folders of the server (default: only when
    the app is launched on localhost without --share; checked again on every request).
    """
    guard = server_paths or ServerPathGuard()
    paths = guard.now()
    if runner is None:
        runner = AdaptationRunner(
            registry, shareable_tempdir("microclip-work-"), allow_local_paths=paths.allowed, runs_dir=runs_dir
        )
    if registry.device.type == "cpu":
        torch.set_num_threads(inference_threads())  # see inference_threads: oversubscribed OpenMP is 50× slower
    for name, value in GRADIO_QUEUE_ENV.items():  # read when gr.Blocks makes its queue; a user's setting wins
        os.environ.setdefault(name, value)
    with gr.Blocks(title=TITLE) as demo:
        guard.demo = demo  # requests are checked against the address the app is really launched on
        gr.Markdown(INTRO)
        with gr.Tabs(selected="walkthrough") as tabs:
            with gr.Tab("Walkthrough", id="walkthrough"):  # first: what a student sees after choosing an image
                walk = build_walkthrough_tab(registry)
            with gr.Tab("Explore", id="explore") as explore_tab:
                explore = build_explore_tab(registry)
            with gr.Tab("Compare", id="compare") as compare_tab:
                compare = build_compare_tab(registry)
            with gr.Tab("Adapt", id="adapt"):
                adapt = build_adapt_tab(registry, runner, server_paths=guard)
            with gr.Tab("Batch", id="batch"):
                build_batch_tab(registry, server_paths=guard)
            with gr.Tab("Models / About", id="models") as models_tab:
                models = build_models_tab(
                    registry, follow=[explore.model], refresh=[compare.model_a, compare.model_b], ratios=[explore.ratio]
                )
        wire_links(
            demo,
            registry,
            tabs,
            {"walkthrough": walk.run_example, "explore": explore.run_example, "compare": compare.run_example},
        )
        # Models can appear while the app runs (an adaptation finishes, a checkpoint is uploaded): loading
        # the page lists them (the ``list_models`` endpoint); opening a tab lists them again only when this
        # session's lists are stale. A tab click is the commonest event of a lesson, and a Gradio event that
        # rebuilds four dropdowns costs a 2-core server more than one cached explanation.
        dropdowns = [explore.model, compare.model_a, compare.model_b, models]
        shown = gr.State(None)  # the model names this session's lists were last sent
        listed = [shown, *dropdowns]
        demo.load(partial(refresh_models, registry), dropdowns, listed, api_name="list_models", show_progress="hidden")
        gr.on(
            [tab.select for tab in (explore_tab, compare_tab, models_tab)],
            partial(refresh_if_stale, registry, n_lists=len(dropdowns)),
            shown,
            listed,
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )
        # A saved adaptation joins every model list, but no tab changes model on its own: Explore and the
        # Walkthrough switch only when "Use it in Explore" is pressed (then the tab opens, so it is seen).
        adapt.saved_name.change(
            partial(relist_models, registry, len(dropdowns)),
            None,
            listed,
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )
        adapt.use_saved.click(
            partial(use_saved, registry),
            [adapt.saved_name],
            [explore.model, explore.ratio, walk.model, tabs],
            api_visibility="private",
            show_progress="hidden",
        )
        # Explore's typed descriptions to an adaptation from the same model (the run's own checks read them)
        explore.redescribe.to_adapt.click(
            partial(to_adapt, registry),
            [explore.redescribe.lines, explore.model],
            [adapt.description_lines, adapt.model, adapt.more, tabs],
            api_visibility="private",
            show_progress="hidden",
            queue=False,
        )
    if warm:
        warm_examples([walk.example, explore.example])
    # Bounded everywhere the app is served from (app.py, Spaces, tests): a full waiting line refuses at
    # once instead of queueing for minutes; cheap re-render events run two at a time.
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2, status_update_rate=QUEUE_STATUS_EVERY_S)


def to_adapt(registry: ModelRegistry, lines: str | None, model_name: str | None) -> tuple[Any, ...]:
    """Explore's typed description lines and model, handed to the Adapt tab, which opens with its settings unfolded
    where the lines are (its model list refreshed: Explore may show a model saved since the page opened)."""
    names = registry.names()
    model = model_dropdown_update(names, model_name) if model_name in names else gr.skip()
    return lines or "", model, gr.Accordion(open=True), gr.Tabs(selected="adapt")


def warm_examples(computations: list[Callable[[str], object]]) -> threading.Thread:
    """Compute every bundled example's walkthrough and explanation once, in a background thread, so that the
    first class to click one is served from the cache (studio.cache) like the second."""

    def run() -> None:
        for path in example_images():
            for compute in computations:
                try:
                    compute(path)
                except Exception as error:  # noqa: BLE001 - a warm-up never stops the app; a click reports it
                    log.warning("warming %s: %s", Path(path).name, error)

    thread = threading.Thread(target=run, name="warm-examples", daemon=True)
    thread.start()
    return thread


def refresh_models(
    registry: ModelRegistry,
    explore_model: str | None,
    compare_a: str | None,
    compare_b: str | None,
    models_tab: str | None,
) -> list:
    """Every model list with the registry's current names; selections kept (the ``list_models`` endpoint).
    The names sent go first, into the session's state (not part of the API)."""
    names = registry.names()  # read once: the state records exactly the lists sent
    return [tuple(names), *list_models(names, [explore_model, compare_a, compare_b, models_tab])]


def relist_models(registry: ModelRegistry, n_lists: int) -> list:
    """The registry's current names for ``n_lists`` model lists, the lists only: a list refreshed while the app runs
    keeps the model chosen in it. Sent with the value it had when the refresh was asked for, a refresh that came late
    undid a choice made meanwhile (Explore switched back from a run just saved and used). The names go first."""
    names = registry.names()
    return [tuple(names), *[model_dropdown_update(names) for _ in range(n_lists)]]


def refresh_if_stale(registry: ModelRegistry, shown: tuple[str, ...] | None, n_lists: int) -> list:
    """:func:`relist_models` when the registry's names differ from those this session was sent, else
    nothing at all (``gr.skip``: no dropdown is rebuilt)."""
    if shown is not None and tuple(registry.names()) == tuple(shown):
        return [gr.skip()] * (1 + n_lists)
    return relist_models(registry, n_lists)


def use_saved(registry: ModelRegistry, saved: str | None) -> tuple[gr.Dropdown, float, gr.Dropdown, gr.Tabs]:
    """Explore and the Walkthrough switch to the model just saved, and Explore opens (asked for, never silent).
    Explore's ρ is the model's own, sent with it: left to the model list's change event, it came 2–3 s after the
    switch (the browser sends the event once the opened tab is drawn), and on a loaded server the old model's ρ was
    still shown beside the new model seconds later."""
    if not saved or saved not in registry.names():
        raise gr.Error("Save the run first: then this button switches Explore and the Walkthrough to it.")
    names = registry.names()
    explore, walkthrough = model_dropdown_update(names, saved), model_dropdown_update(names, saved)
    return explore, entry_fusion_ratio(registry, saved), walkthrough, gr.Tabs(selected="explore")


def launch_kwargs(
    host: str | None = None, port: int | None = None, share: bool = False, auth: tuple[str, str] | None = None
) -> dict:
    """The arguments ``demo.launch`` gets from app.py (and the tests), in one place.

    ``None`` host/port leave Gradio's defaults: $GRADIO_SERVER_NAME / $GRADIO_SERVER_PORT if set
    (HuggingFace Spaces sets them), else 127.0.0.1:7860. ``auth`` (user, password) makes Gradio ask
    for a login before the page or any endpoint answers.
    """
    kwargs = dict(
        server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD, show_error=True, css=PAGE_CSS
    )
    if auth is not None:
        kwargs |= dict(auth=auth, auth_message="microCLIP Studio: log in with the name and password you were given.")
    return kwargs


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``user:password`` → (user, password); the password may contain ':'; a bad value is a clear error."""
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError("--auth needs user:password (both non-empty), e.g. --auth student:correct-horse")
    return user.strip(), password
