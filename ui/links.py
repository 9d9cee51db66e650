"""Links that open the app on one view (``/?example=dastrel-wren&step=soap``; :mod:`studio.links` reads them).

The browser reads the page's address as it opens and hands the query to the server only when there is one, so a
page opened without a link costs the server no event (thirty students open it at once). One event then opens the
tab, switches the model if the link names one, and shows the example as a click on its thumbnail does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import gradio as gr

from studio.examples import example_images
from studio.links import parse_link
from studio.registry import ModelRegistry
from ui.common import INFERENCE, ExampleRun, model_dropdown_update
from ui.layout import entry_fusion_ratio

# Returning undefined leaves the hidden box as it was, so its change event (the server's) does not fire.
READ_LINK_JS = "() => (window.location.search.length > 1 ? window.location.search.slice(1) : undefined)"


def wire_links(
    demo: gr.Blocks, registry: ModelRegistry, tabs: gr.Tabs, walk: ExampleRun, explore: ExampleRun, ratio: gr.Slider
) -> None:
    """Open the view a link names: ``walk`` and ``explore`` are the tabs' example runs, ``ratio`` Explore's ρ (one
    of ``explore.inputs``), which follows a model the link switches to."""
    query = gr.Textbox(visible=False)
    demo.load(None, None, query, js=READ_LINK_JS)
    query.change(
        partial(open_link, registry, walk, explore, ratio),
        [query, *walk.inputs, *explore.inputs],
        [tabs, walk.image, *walk.outputs, walk.model, explore.image, *explore.outputs, explore.model, ratio],
        api_visibility="private",
        **INFERENCE,
    )


def open_link(
    registry: ModelRegistry,
    walk: ExampleRun,
    explore: ExampleRun,
    ratio: gr.Slider,
    query: str | None,
    *values: Any,
    examples: Sequence[str] | None = None,
) -> list:
    """The link's view: the tab selected, the example shown in it as its thumbnail would show it (the other tab left
    as it was), the model switched in both tabs; what the link names that does not exist is said in a warning."""
    names = registry.names()
    link = parse_link(query or "", example_images() if examples is None else examples, names)
    for problem in link.problems:
        gr.Warning(problem)
    walk_values, explore_values = list(values[: len(walk.inputs)]), list(values[len(walk.inputs) :])
    if link.model is not None:
        walk_values[walk.position(walk.model)] = link.model
        explore_values[explore.position(explore.model)] = link.model
        explore_values[explore.position(ratio)] = entry_fusion_ratio(registry, link.model)
    skip_walk, skip_explore = [gr.skip()] * (1 + len(walk.outputs)), [gr.skip()] * (1 + len(explore.outputs))
    shown_walk, shown_explore = skip_walk, skip_explore
    if link.example is not None and link.opens == "walkthrough":
        shown_walk = [link.example, *walk.fn(link.example, *walk_values)]
    elif link.example is not None and link.opens == "explore":
        shown_explore = [link.example, *explore.fn(link.example, *explore_values)]

    def model() -> Any:
        return model_dropdown_update(names, link.model) if link.model is not None else gr.skip()

    return [
        gr.Tabs(selected=link.opens) if link.opens is not None else gr.skip(),
        *shown_walk,
        model(),
        *shown_explore,
        model(),
        explore_values[explore.position(ratio)] if link.model is not None else gr.skip(),
    ]
