"""Explore's "How would adaptation label this picture?": the ``explore_label`` endpoint and its accordion
(``studio.dka`` computes it, ``viz.dka`` draws it)."""

from __future__ import annotations

import hashlib
import os
from functools import partial

import gradio as gr

from studio.cache import cached, file_digest, model_identity
from studio.dka import label_story
from studio.registry import ModelRegistry
from ui.common import INFERENCE, gpu, open_image, user_errors
from ui.redescribe import classes_in_use, read_typed_lines, uploaded_descriptions
from viz.dka import label_html
from viz.html import STUDIO_CSS

INTRO = (
    "microCLIP adapts without labels: every training picture gets a pseudo-label from Dynamic Knowledge Aggregation. "
    "Random crops of the picture are read by `[CLS]` and blended (the crops most like the whole picture weigh most) "
    "into a *static* half against the frozen W_LLM; the picture's fused feature against the learnable Ŵ* is the "
    "*dynamic* half; γ blends them. See which crops and which half this picture's label comes from. A run draws new "
    "crops every epoch: *Draws of the crops* says how often each class is the label over several. *With the what-if's "
    "descriptions* makes the label with the sentences typed in the what-if above, as an adaptation with them starts."
)
MAX_SEED = 2**31 - 1
MAX_DRAWS = 32  # each draw reads K + 1 images: 32 draws of a ViT-B/32 on one CPU thread is about half a minute
run_label_story = gpu(label_story)  # on ZeroGPU Spaces the passes get a GPU; elsewhere a no-op


@user_errors
def label_picture_html(
    registry: ModelRegistry,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
    seed: float | None = 0,
    descriptions_json: str | None = None,
    use_typed_lines: bool = False,
    lines: str | None = None,
    draws: float | None = 1,
) -> str:
    """DKA's label of the picture under the model in use, its crops drawn from ``seed`` (``explore_label``); with
    ``use_typed_lines``, under ``lines`` (the what-if's ``class name: sentence`` lines, read only when asked, so lines
    left in its box do not change the label) as an adaptation with them starts; with ``draws`` > 1, how often each
    class is the label over that many draws of the crops."""
    if seed is None or not float(seed).is_integer() or not 0 <= seed <= MAX_SEED:
        raise gr.Error(f"The crops' seed is a whole number from 0 to {MAX_SEED:,}.")
    if draws is None or not float(draws).is_integer() or not 1 <= draws <= MAX_DRAWS:
        raise gr.Error(f"The crops' draws are a whole number from 1 to {MAX_DRAWS}.")
    seed, draws = int(seed), int(draws)
    if seed + draws - 1 > MAX_SEED:
        raise gr.Error(f"The draws' last seed is over {MAX_SEED:,}: start from a smaller seed.")
    classes = classes_in_use(registry, model_name, class_names)
    given = uploaded_descriptions(descriptions_json, classes)
    described = read_typed_lines(lines, classes) if use_typed_lines and (lines or "").strip() else None

    def compute() -> str:
        picture = open_image(image)
        return label_html(
            run_label_story(registry, picture, model_name or None, classes, given, seed, described, draws)
        )

    if not (image and os.path.isfile(image)):
        return compute()
    # the cache (studio.cache): a class labelling the same example is served once
    loaded = registry.get(model_name or None)
    key = ("explore_label", loaded.name, model_identity(loaded.model), file_digest(image), class_names or "")
    said = hashlib.sha256((lines or "").encode("utf-8")).hexdigest() if described else ""
    return cached((*key, file_digest(descriptions_json), seed, said, draws), compute)


def build_label_view(
    registry: ModelRegistry,
    image: gr.Image,
    model: gr.Dropdown,
    classes: gr.Textbox,
    descriptions: gr.File,
    lines: gr.Textbox,
) -> None:
    """An accordion: a note, the crops' seed, whether to use the what-if's typed descriptions, a button, the card."""
    with gr.Accordion(
        "How would adaptation label this picture? (DKA's pseudo-label)", open=False, elem_id="explore-label"
    ):
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            seed = gr.Number(
                value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Crops' seed", elem_id="explore_label-seed"
            )
            draws = gr.Number(
                value=1,
                precision=0,
                minimum=1,
                maximum=MAX_DRAWS,
                label="Draws of the crops",
                elem_id="explore_label-draws",
            )
            mine = gr.Checkbox(False, label="With the what-if's descriptions", elem_id="explore_label-typed")
            button = gr.Button("Label it as self-training would", variant="primary", elem_id="explore_label-button")
        result = gr.HTML("", css_template=STUDIO_CSS, elem_id="explore_label-result")

    button.click(
        partial(label_picture_html, registry),
        [image, model, classes, seed, descriptions, mine, lines, draws],
        result,
        api_name="explore_label",
        api_description="The picture's pseudo-label as microCLIP's self-training makes it: the crops, both halves.",
        **INFERENCE,
    )
