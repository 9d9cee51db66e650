"""Explore's "what if SOAP asked another question?" view: the ``explore_queries`` endpoint and its accordion."""

from __future__ import annotations

from functools import partial

import gradio as gr

from microclip.prepare import parse_class_names
from studio.queries import PANEL_SIZE, queries_html, query_views
from studio.registry import ModelRegistry
from ui.common import INFERENCE, open_image, user_errors
from ui.walkthrough import toy_truth
from viz.html import STUDIO_CSS
from viz.overlay import display_crop

INTRO = (
    "SOAP pools `[FG]` by asking every patch one question, its *query*: in microCLIP the mean of the cut's foreground "
    "tokens. The reference also ships two other queries as ablations: the `[CLS]` token and the mean of every patch "
    "token. Ask this model all three on the picture above, with nothing retrained."
)


@user_errors
def ask_queries(
    registry: ModelRegistry,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
    ratio: float | None = None,
) -> str:
    """The picture explained with each of SOAP's deterministic queries (``explore_queries``)."""
    picture = open_image(image)
    loaded = registry.get(model_name or None)
    typed = parse_class_names(class_names)
    model = registry.with_classes(model_name or None, typed) if typed else loaded.model
    grid = model.backbone.grid
    truth = toy_truth(picture, grid)
    views = query_views(model, picture, None if ratio is None else float(ratio), truth)
    true_class = truth.true_class if truth is not None and truth.true_class in model.classes else None
    return queries_html(display_crop(picture, 2 * PANEL_SIZE), views, true_class)


def build_queries_view(
    registry: ModelRegistry, image: gr.Image, model: gr.Dropdown, classes: gr.Textbox, ratio: gr.Slider
) -> None:
    """The accordion: a note, one button, the three panels."""
    with gr.Accordion("What if SOAP asked another question? (no training)", open=False, elem_id="explore-queries"):
        gr.Markdown(INTRO)
        button = gr.Button("Ask all three queries", elem_id="explore_queries-button")
        result = gr.HTML("", css_template=STUDIO_CSS, elem_id="explore_queries-result")
    inputs = [image, model, classes, ratio]
    button.click(partial(ask_queries, registry), inputs, result, api_name="explore_queries", **INFERENCE)
