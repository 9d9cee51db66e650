"""Explore's "what if the descriptions said something else?": the ``explore_redescribe`` endpoint and its accordion
(``studio.redescribe`` computes it)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import partial

import gradio as gr
import numpy as np

from microclip.data.descriptions import DescriptionsError, description_lines
from microclip.explain import explain_image
from microclip.prepare import parse_class_names
from microclip.toyworld.truth import toy_truth
from studio.cache import cached, file_digest, model_identity
from studio.redescribe import own_description_lines, redescribe, typed_descriptions
from studio.registry import ModelRegistry
from ui.common import INFERENCE, gpu, open_image, read_descriptions, user_errors
from viz.html import STUDIO_CSS
from viz.redescribe import redescribe_html

INTRO = (
    "Each class vector W* starts as the mean of its class's descriptions. Change a sentence and the vector moves: "
    "type lines as `class name: sentence` (the lines given for a class replace its descriptions; the other classes "
    "keep theirs), or start from the model's own and edit one. Nothing is retrained."
)
PLACEHOLDER = "dastrel wren: a bird with a yellow beak.\ndastrel wren: a bird with a red eye ring."
START_CLASSES = 16  # a 200-class model's descriptions are thousands of lines: its answer's first classes are the ones
# on ZeroGPU Spaces the forward passes get a GPU; elsewhere a no-op
run_redescribe, run_explain = gpu(redescribe), gpu(explain_image)


def classes_in_use(registry: ModelRegistry, model_name: str | None, class_names: str | None) -> list[str]:
    """The label set in use: the typed class names, else the model's own."""
    return parse_class_names(class_names) or list(registry.get(model_name or None).classes)


def uploaded_descriptions(descriptions_json: str | None, classes: list[str]) -> dict[str, list[str]] | None:
    """The descriptions file uploaded in Explore's class panel, for ``classes`` (None when there is none)."""
    return read_descriptions(descriptions_json, classes)[0] if descriptions_json else None


def read_typed_lines(lines: str, classes: list[str]) -> dict[str, list[str]]:
    """The classes typed ``class name: sentence`` lines describe, with their sentences; a bad line is a ``gr.Error``
    that names it."""
    try:
        return typed_descriptions(lines, classes)
    except DescriptionsError as error:
        raise gr.Error(f"Descriptions: {error}.") from None


@user_errors
def start_lines(
    registry: ModelRegistry,
    model_name: str | None,
    class_names: str | None,
    image: str | None = None,
    descriptions_json: str | None = None,
) -> str:
    """The model's descriptions of the classes in use (or those of the file uploaded in Explore's class panel), one
    ``class name: sentence`` line each, to edit: of a label set larger than ``START_CLASSES``, those of the classes
    the model ranks first on ``image`` (the first in order when there is no image)."""
    classes = classes_in_use(registry, model_name, class_names)
    given = uploaded_descriptions(descriptions_json, classes)
    if len(classes) > START_CLASSES:
        if image and os.path.isfile(image):
            model = registry.with_classes(model_name or None, classes, given)
            fused = run_explain(model, open_image(image)).logits_fused
            classes = [classes[i] for i in np.argsort(-fused, kind="stable")[:START_CLASSES]]
            gr.Info(f"The descriptions of the {START_CLASSES} classes this model ranks first on the picture.")
        else:
            classes = classes[:START_CLASSES]
            gr.Info(f"The descriptions of the first {START_CLASSES} classes; add lines for any other.")
    if given is not None:
        lines = description_lines({name: given[name] for name in classes if given.get(name)})
    else:
        lines = own_description_lines(registry, model_name or None, classes)
    if not lines:
        gr.Warning("This model has no descriptions of these classes (its templates stand in): type your own.")
    return lines


@user_errors
def what_if_described(
    registry: ModelRegistry,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
    lines: str | None,
    ratio: float | None = None,
    descriptions_json: str | None = None,
) -> str:
    """The picture under the model's descriptions (or the file uploaded in Explore's class panel) and under the typed
    ones, each branch's answer and every re-described class's logit (``explore_redescribe``)."""
    if not (lines or "").strip():
        raise gr.Error(
            "Type at least one description as 'class name: sentence', or press 'Start from the model's descriptions'."
        )
    classes = classes_in_use(registry, model_name, class_names)
    given = uploaded_descriptions(descriptions_json, classes)
    typed = read_typed_lines(lines, classes)

    def compute() -> str:
        picture = open_image(image)
        truth = toy_truth(picture, registry.get(model_name or None).model.backbone.grid)
        true_class = truth.true_class if truth is not None else None
        return redescribe_html(
            run_redescribe(registry, picture, model_name or None, classes, typed, _ratio(ratio), true_class, given)
        )

    if not (image and os.path.isfile(image)):
        return compute()
    # the cache (studio.cache): a class trying the same sentence on one example is served once
    loaded = registry.get(model_name or None)
    said = hashlib.sha256(lines.encode("utf-8")).hexdigest()
    key = ("explore_redescribe", loaded.name, model_identity(loaded.model), file_digest(image), class_names or "")
    return cached((*key, said, file_digest(descriptions_json), _ratio(ratio)), compute)


def _ratio(ratio: float | None) -> float | None:
    return None if ratio is None else float(ratio)


@dataclass(frozen=True)
class RedescribeHandles:
    """What another tab may read: the typed lines, and the button that takes them to the Adapt tab."""

    lines: gr.Textbox
    to_adapt: gr.Button


def build_redescribe_view(
    registry: ModelRegistry,
    image: gr.Image,
    model: gr.Dropdown,
    classes: gr.Textbox,
    ratio: gr.Slider,
    descriptions: gr.File,
) -> RedescribeHandles:
    """An accordion: a note, the lines to edit, a button that fills them with the model's own, one that answers, and
    one that takes the lines to an adaptation (wired by ``ui.app``, which knows the Adapt tab)."""
    with gr.Accordion(
        "What if the descriptions said something else? (no training)", open=False, elem_id="explore-redescribe"
    ):
        gr.Markdown(INTRO)
        lines = gr.Textbox(
            label="Descriptions, one per line: class name: sentence",
            placeholder=PLACEHOLDER,
            lines=4,
            max_lines=14,
            elem_id="explore_redescribe-lines",
        )
        with gr.Row():
            start = gr.Button("Start from the model's descriptions", elem_id="explore_redescribe-start")
            button = gr.Button("Describe and predict again", variant="primary", elem_id="explore_redescribe-button")
        result = gr.HTML("", css_template=STUDIO_CSS, elem_id="explore_redescribe-result")
        to_adapt = gr.Button(
            "Adapt with these descriptions (opens the Adapt tab)", size="sm", elem_id="explore_redescribe-adapt"
        )
    start.click(
        partial(start_lines, registry), [model, classes, image, descriptions], lines, api_name="explore_descriptions"
    )
    button.click(
        partial(what_if_described, registry),
        [image, model, classes, lines, ratio, descriptions],
        result,
        api_name="explore_redescribe",
        api_description="The picture under the model's class descriptions and under typed ones, nothing retrained.",
        **INFERENCE,
    )
    return RedescribeHandles(lines, to_adapt)
