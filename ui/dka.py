"""Explore's "How would adaptation label this picture?": the ``explore_label`` endpoint and its accordion
(``studio.dka`` computes it, ``viz.dka`` draws it)."""

from __future__ import annotations

import os
from functools import partial

import gradio as gr

from microclip.prepare import parse_class_names
from studio.cache import cached, file_digest, model_identity
from studio.dka import label_story
from studio.registry import ModelRegistry
from ui.common import INFERENCE, gpu, open_image, read_descriptions, user_errors
from viz.dka import label_html
from viz.html import STUDIO_CSS

INTRO = (
    "microCLIP adapts without labels: every training picture gets a pseudo-label from Dynamic Knowledge Aggregation. "
    "Random crops of the picture are read by `[CLS]` and blended (the crops most like the whole picture weigh most) "
    "into a *static* half against the frozen W_LLM; the picture's fused feature against the learnable Ŵ* is the "
    "*dynamic* half; γ blends them. See which crops and which half this picture's label comes from."
)
MAX_SEED = 2**31 - 1
run_label_story = gpu(label_story)  # on ZeroGPU Spaces the passes get a GPU; elsewhere a no-op


@user_errors
def label_picture_html(
    registry: ModelRegistry,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
    seed: float | None = 0,
    descriptions_json: str | None = None,
) -> str:
    """DKA's label of the picture under the model in use, its crops drawn from ``seed`` (``explore_label``)."""
    if seed is None or not float(seed).is_integer() or not 0 <= seed <= MAX_SEED:
        raise gr.Error(f"The crops' seed is a whole number from 0 to {MAX_SEED:,}.")
    seed = int(seed)
    typed = parse_class_names(class_names)
    classes = typed or list(registry.get(model_name or None).classes)
    given = read_descriptions(descriptions_json, classes)[0] if descriptions_json else None

    def compute() -> str:
        picture = open_image(image)
        return label_html(run_label_story(registry, picture, model_name or None, typed or None, given, seed))

    if not (image and os.path.isfile(image)):
        return compute()
    # the cache (studio.cache): a class labelling the same example is served once
    loaded = registry.get(model_name or None)
    key = ("explore_label", loaded.name, model_identity(loaded.model), file_digest(image), class_names or "")
    return cached((*key, file_digest(descriptions_json), seed), compute)


def build_label_view(
    registry: ModelRegistry, image: gr.Image, model: gr.Dropdown, classes: gr.Textbox, descriptions: gr.File
) -> None:
    """An accordion: a note, the crops' seed, a button, the card."""
    with gr.Accordion(
        "How would adaptation label this picture? (DKA's pseudo-label)", open=False, elem_id="explore-label"
    ):
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            seed = gr.Number(
                value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Crops' seed", elem_id="explore_label-seed"
            )
            button = gr.Button("Label it as self-training would", variant="primary", elem_id="explore_label-button")
        result = gr.HTML("", css_template=STUDIO_CSS, elem_id="explore_label-result")
    button.click(
        partial(label_picture_html, registry),
        [image, model, classes, seed, descriptions],
        result,
        api_name="explore_label",
        api_description="The picture's pseudo-label as microCLIP's self-training makes it: the crops, both halves.",
        **INFERENCE,
    )
