"""Explore's "what if SOAP asked another question, or pooled another way?" views: the ``explore_queries`` and
``explore_pools`` endpoints and their accordions."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import gradio as gr
from PIL import Image

from microclip.model import MicroCLIP
from microclip.toyworld.truth import toy_truth
from microclip.walkthrough import PatchTruth
from studio.cache import cached, file_digest, model_identity
from studio.queries import PANEL_SIZE, SoapView, pool_views, queries_html, query_views
from studio.registry import ModelRegistry
from ui.common import INFERENCE, gpu, open_image, typed_model, user_errors
from viz.html import STUDIO_CSS
from viz.overlay import display_crop

QUERY_INTRO = (
    "SOAP pools `[FG]` by asking every patch one question, its *query*: in microCLIP the mean of the cut's foreground "
    "tokens. The reference also ships two other queries as ablations: the `[CLS]` token and the mean of every patch "
    "token. Ask this model all three on the picture above, with nothing retrained."
)
POOL_INTRO = (
    "SOAP's answer to its query is a weighted mean of the patch tokens, the weights its attention. The reference "
    "ships two plain means as ablations: the mean of the cut's foreground tokens (the cut alone, no attention) and "
    "the mean of every patch token. Pool `[FG]` all three ways on the picture above, with nothing retrained: the "
    "first two panels differ by what SOAP's attention adds over the cut."
)
Views = Callable[[MicroCLIP, Image.Image, float | None, PatchTruth | None], list[SoapView]]


@user_errors
def _ask(
    views: Views,
    vary: str,
    registry: ModelRegistry,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
    ratio: float | None = None,
) -> str:
    """The picture explained with each of ``views``' SOAPs, as one HTML block of three panels (cached)."""

    def compute() -> str:
        picture = open_image(image)
        _, model, _ = typed_model(registry, model_name, class_names)
        truth = toy_truth(picture, model.backbone.grid)
        shown = views(model, picture, None if ratio is None else float(ratio), truth)
        true_class = truth.true_class if truth is not None and truth.true_class in model.classes else None
        return queries_html(display_crop(picture, 2 * PANEL_SIZE), shown, true_class, vary)

    if not (image and os.path.isfile(image)):
        return compute()
    # the cache (studio.cache): a class pressing the same button on one example is served once
    loaded = registry.get(model_name or None)
    key = (f"explore_{vary}", loaded.name, model_identity(loaded.model), file_digest(image), class_names or "")
    return cached((*key, None if ratio is None else float(ratio)), compute)


# the explore_queries and explore_pools endpoints: SOAP's deterministic queries; [FG]'s attention and two plain means
ask_queries = partial(_ask, gpu(query_views), "query")  # gpu: on ZeroGPU Spaces the passes get a GPU; else a no-op
ask_pools = partial(_ask, gpu(pool_views), "pool")


def build_queries_view(
    registry: ModelRegistry, image: gr.Image, model: gr.Dropdown, classes: gr.Textbox, ratio: gr.Slider
) -> None:
    """Two accordions, SOAP's query and its pooling: a note, one button, three panels each."""
    inputs = [image, model, classes, ratio]
    views = (
        (
            "queries",
            "SOAP's queries",
            "What if SOAP asked another question? (no training)",
            QUERY_INTRO,
            "Ask all three queries",
            ask_queries,
        ),
        (
            "pools",
            "[FG]'s poolings",
            "What if SOAP pooled another way? (no training)",
            POOL_INTRO,
            "Pool all three ways",
            ask_pools,
        ),
    )
    for name, what, title, intro, label, ask in views:
        with gr.Accordion(title, open=False, elem_id=f"explore-{name}"):
            gr.Markdown(intro)
            button = gr.Button(label, elem_id=f"explore_{name}-button")
            result = gr.HTML("", css_template=STUDIO_CSS, elem_id=f"explore_{name}-result")
        described = f"The picture explained with each of {what}: three panels, nothing retrained."
        button.click(
            partial(ask, registry), inputs, result, api_name=f"explore_{name}", api_description=described, **INFERENCE
        )
