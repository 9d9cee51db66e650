"""Links that open the app on one view (``/?example=dastrel-wren&step=soap``; :mod:`studio.links` reads them).

The browser reads the page's address as it opens and hands the query to the server only when there is one, so a
page opened without a link costs the server no event (thirty students open it at once). One event then opens the
tab, switches the model if the link names one, and shows the example as a click on its thumbnail does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def wire_links(demo: gr.Blocks, registry: ModelRegistry, tabs: gr.Tabs, runs: Mapping[str, ExampleRun]) -> None:
    """Open the view a link names: ``runs`` are the example runs of the tabs a link's example opens in, by tab id."""
    query = gr.Textbox(visible=False)
    demo.load(None, None, query, js=READ_LINK_JS)
    query.change(
        partial(open_link, registry, runs),
        [query, *(given for run in runs.values() for given in run.inputs)],
        [tabs, *(shown for run in runs.values() for shown in _shown(run))],
        api_visibility="private",
        **INFERENCE,
    )


def _shown(run: ExampleRun) -> list:
    """What a link may change in one tab: the picture, what the example computes, the model, its ρ and the class
    names (with the panel they sit in)."""
    optional = [run.ratio, run.classes, run.classes_panel]
    return [run.image, *run.outputs, run.model, *(given for given in optional if given is not None)]


def open_link(
    registry: ModelRegistry,
    runs: Mapping[str, ExampleRun],
    query: str | None,
    *values: Any,
    examples: Sequence[str] | None = None,
) -> list:
    """The link's view: the tab selected, the example shown in it as its thumbnail would show it (the other tabs
    left as they were), the model switched in every tab, the class names typed in the tab it opens (the first when it
    opens none); what the link names that does not exist is said in a warning."""
    names = registry.names()
    link = parse_link(query or "", example_images() if examples is None else examples, names)
    for problem in link.problems:
        gr.Warning(problem)
    answer: list = [gr.Tabs(selected=link.opens) if link.opens is not None else gr.skip()]
    ratio = link.rho
    if ratio is None and link.model is not None:
        ratio = entry_fusion_ratio(registry, link.model)
    typed = "\n".join(link.classes)
    given = iter(values)
    for tab, run in runs.items():
        inputs = [next(given) for _ in run.inputs]
        if link.model is not None:
            inputs[run.position(run.model)] = link.model
        if run.ratio is not None and ratio is not None:
            inputs[run.position(run.ratio)] = ratio
        fills = bool(link.classes) and run.classes is not None and tab == (link.opens or next(iter(runs)))
        if fills:
            inputs[run.position(run.classes)] = typed
        shown = [gr.skip()] * (1 + len(run.outputs))
        if link.example is not None and link.opens == tab:
            shown = [link.example, *run.fn(link.example, *inputs)]
        model = model_dropdown_update(names, link.model) if link.model is not None else gr.skip()
        answer += [*shown, model]
        if run.ratio is not None:
            answer.append(ratio if ratio is not None else gr.skip())
        if run.classes is not None:
            answer.append(typed if fills else gr.skip())
        if run.classes_panel is not None:
            answer.append(gr.Accordion(open=True) if fills else gr.skip())
    return answer
