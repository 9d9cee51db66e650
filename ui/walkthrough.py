"""The Walkthrough tab: one image through microCLIP, one step at a time, with this image's real numbers.

The numbers come from ``microclip.walkthrough`` (one forward pass), the page from ``viz.steps``, the toy world's
masks from ``microclip.toyworld.truth``; this module adds the out-of-world flag and wires the tab. Moving between
steps happens in the browser, without a request.

Named API endpoints: ``walkthrough`` (image, model, class names → the HTML and the JSON numbers) and
``walkthrough_download`` (the same → the page as one HTML file that steps offline).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr

from microclip.files import atomic_write_text
from microclip.prepare import parse_class_names
from microclip.toyworld.truth import erase, erase_each_part, toy_sample, toy_truth
from microclip.toyworld.world import PARTS, SPECIES
from microclip.walkthrough import to_json, walkthrough
from studio.batch import BatchWorkspace
from studio.cache import cached, file_digest, model_identity
from studio.examples import example_images, ordered_examples
from studio.links import example_link
from studio.registry import ModelRegistry
from studio.text_cache import text_encoder_for
from studio.world import world_flag_markdown
from ui.common import (
    DOWNLOADS_KEPT,
    INFERENCE,
    ExampleRun,
    download_row,
    gpu,
    image_input,
    on_example,
    open_image,
    typed_model,
    user_errors,
)
from ui.layout import refresh_on_focus
from viz.html import STUDIO_CSS
from viz.overlay import display_crop
from viz.steps import (
    PICTURE_SIZE,
    WAITING_HTML,
    WALKTHROUGH_JS,
    erase_appendix,
    erase_html,
    handout_name,
    link_line,
    render_walkthrough,
    standalone_page,
)

INTRO = (
    "**Walkthrough**: follow one image through microCLIP, step by step. Pick an example (the toy birds are "
    "the bundled model's own world) or upload a picture; every number below is this image's, from one "
    "forward pass. Click a step, or use *Next*."
)
NOT_TOY = (
    "Erasing a part needs one of the toy world's own images (a bundled toy bird, or one of its generated "
    "train/test images, unchanged): only there does the app know how to draw the same bird again."
)
run_walkthrough = gpu(walkthrough)  # on ZeroGPU Spaces the forward pass gets a GPU; elsewhere a no-op
run_erase, run_erase_each = gpu(erase), gpu(erase_each_part)


# ------------------------------------------------------------------ what the app knows about the image


# ------------------------------------------------------------------ the endpoint


@user_errors
def walk(registry: ModelRegistry, image: str | None, model_name: str | None, class_names: str | None) -> tuple:
    """One image through the model, step by step (the ``walkthrough`` endpoint): the HTML page and the numbers."""
    if image and os.path.isfile(image):  # cache (studio.cache): a class asking about one picture is served once
        loaded = registry.get(model_name or None)
        key = ("walkthrough", loaded.name, model_identity(loaded.model), file_digest(image), class_names or "")
        page, numbers = cached(key, lambda: _walk(registry, image, model_name, class_names))
        # a bundled example is one link away (studio.links), with the class names typed: offered above the page
        link = example_link(image, loaded.name, classes=parse_class_names(class_names))
        return (link_line(link) + page if link else page), numbers
    return _walk(registry, image, model_name, class_names)


def _walk(registry: ModelRegistry, image: str | None, model_name: str | None, class_names: str | None) -> tuple:
    picture = open_image(image)
    loaded, model, typed = typed_model(registry, model_name, class_names)
    descriptions = {} if typed else loaded.descriptions
    encoder = text_encoder_for(registry, model) if descriptions else None
    result = run_walkthrough(
        model,
        picture,
        descriptions=descriptions,
        text_encoder=encoder,
        templates=loaded.templates,
        truth=toy_truth(picture, tuple(model.backbone.grid)),
    )
    flag = world_flag_markdown(model.classes, loaded, bool(typed), picture)  # no second forward pass
    page = render_walkthrough(result, display_crop(picture, PICTURE_SIZE), flag=flag)
    return page, to_json(result)


@user_errors
def walk_download(
    registry: ModelRegistry,
    workspace: BatchWorkspace,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
) -> str:
    """The walkthrough of the image as one HTML file that steps through offline, as in the app (the
    ``walkthrough_download`` endpoint): a handout. Served from the same cache as the page itself."""
    page, _ = walk(registry, image, model_name, class_names)
    loaded, model, _ = typed_model(registry, model_name, class_names)
    erased = erase_appendix(run_erase_each(model, open_image(image)), model.classes)  # the tab's erase row, answered
    title = f"microCLIP walkthrough: {Path(image).name} under {loaded.name}"
    path = workspace.new() / handout_name(image)
    atomic_write_text(path, standalone_page(page, title, erased))
    return str(path)


def chosen_parts(part: str | list[str] | None) -> tuple[str, ...]:
    """The parts to erase, in PARTS order: one name (the API's original form) or several (the dropdown's)."""
    picked = [part] if isinstance(part, str) else list(part or [])
    unknown = [p for p in picked if p not in PARTS]
    if not picked or unknown:
        got = f" (got {', '.join(map(repr, unknown))})" if unknown else ""
        raise gr.Error(f"Pick one or more parts to erase, from: {', '.join(PARTS)}{got}.")
    return tuple(p for p in PARTS if p in picked)


@user_errors
def erase_part(
    registry: ModelRegistry,
    image: str | None,
    model_name: str | None,
    class_names: str | None,
    part: str | list[str] | None,
    ratio: float | None = None,
) -> str:
    """The same toy bird drawn again without ``part`` (one part, or several erased together), and each branch's
    prediction on both (``erase_part``)."""
    picture = open_image(image)
    parts = chosen_parts(part)
    sample = toy_sample(picture)
    if sample is None:
        raise gr.Error(NOT_TOY)
    species = SPECIES[sample.species].name
    shown = sample.visible_parts()
    absent = [p for p in parts if p not in shown]
    if absent:
        raise gr.Error(
            f"This {species} has no {' or '.join(p.replace('_', ' ') for p in absent)} drawn, so there is nothing "
            f"to erase there; it shows: {', '.join(shown) or 'no parts'}."
        )
    _, model, _ = typed_model(registry, model_name, class_names)
    view = run_erase(model, picture, sample, parts, None if ratio is None else float(ratio))
    return erase_html(
        view.parts, view.original, view.erased, view.changes, species if species in model.classes else None
    )


def build_erase_row(
    registry: ModelRegistry,
    image: gr.Image,
    model: gr.Dropdown,
    classes: gr.Textbox,
    api_name: str,
    ratio: gr.Slider | None = None,
) -> None:
    """An "erase parts" control (toy images only): one or more parts, a button, and the before/after table.
    Several parts go together, so a class can ask whether a branch leans on the parts one at a time or as a whole."""
    with gr.Row():
        part = gr.Dropdown(
            [(p.replace("_", " "), p) for p in PARTS],  # the API takes PARTS' names; people read words
            value=[PARTS[0]],
            multiselect=True,
            label="Erase parts (toy birds only; pick one or several)",
            scale=2,
            elem_id=f"{api_name}-part",
        )
        button = gr.Button("Erase and predict again", scale=1, elem_id=f"{api_name}-button")
    result = gr.HTML("", css_template=STUDIO_CSS, elem_id=f"{api_name}-result")
    inputs = [image, model, classes, part] + ([ratio] if ratio is not None else [])
    button.click(partial(erase_part, registry), inputs, result, api_name=api_name, **INFERENCE)


# ------------------------------------------------------------------ the tab


@dataclass
class WalkthroughHandles:
    model: gr.Dropdown
    image: gr.Image
    example: Callable[[str], object]  # what an example click computes, with the tab's defaults (to warm the cache)
    run_example: ExampleRun  # the same, wired: an example click's function, inputs and outputs (links use it)


def build_walkthrough_tab(registry: ModelRegistry) -> WalkthroughHandles:
    """Build the Walkthrough tab inside the current ``gr.Tab`` and wire the ``walkthrough`` endpoint."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=330):
            image = image_input(
                label="Image", sources=["upload", "webcam", "clipboard"], height=240, elem_id="walkthrough-image"
            )
            paths, labels = ordered_examples(example_images())
            gallery = None
            if paths:  # thumbnails with their captions; a click loads the picture and walks it through
                gallery = gr.Gallery(
                    list(zip(paths, labels)),
                    label="Examples: toy birds (the bundled model's world) first; ⚠ = outside that world",
                    columns=3,
                    height=360,
                    allow_preview=False,
                    buttons=[],  # as in the other tabs' examples: no icon over the first row's last thumbnail
                    interactive=False,
                    object_fit="contain",
                    elem_id="walkthrough-examples",
                )
            model = gr.Dropdown(
                registry.names(), value=registry.default_name, label="Model", elem_id="walkthrough-model"
            )
            classes = gr.Textbox(
                label="Class names (optional)",
                lines=2,
                placeholder="Blank: the model's own classes (with their descriptions).",
            )
            run = gr.Button("Walk through", variant="primary", elem_id="walkthrough-button")
        with gr.Column(scale=3):
            page = gr.HTML(
                WAITING_HTML, css_template=STUDIO_CSS, js_on_load=WALKTHROUGH_JS, elem_id="walkthrough-steps"
            )
            gr.Markdown(
                "**Step 9, one more question:** what does each branch predict if the bird had no beak "
                "(or crest, ...)? The toy world can draw the same bird without it."
            )
            build_erase_row(registry, image, model, classes, "erase_part")
            save, saved = download_row(
                "Download this walkthrough (.html)",
                "One file that steps through offline, as here (a handout)",
                "walkthrough-download",
            )
            with gr.Accordion("All the numbers (JSON)", open=False) as numbers_box:
                numbers = gr.JSON(label="walkthrough", elem_id="walkthrough-json")

    refresh_on_focus(model, registry)
    compute = partial(walk, registry)
    inputs, outputs = [image, model, classes], [page, numbers]
    gr.on([run.click, image.upload], compute, inputs, outputs, api_name="walkthrough", **INFERENCE)
    save.click(
        partial(walk_download, registry, BatchWorkspace(keep=DOWNLOADS_KEPT, prefix="microclip-walkthrough-")),
        inputs,
        saved,
        api_name="walkthrough_download",
        **INFERENCE,  # a toy bird's handout draws and reads it again without each part
    )
    # An example's numbers are sent only while their accordion is open (else filled when it opens): ~50 kB of nested
    # JSON is a third of what a cached walkthrough costs the server, for thirty students at once.
    numbers_open = gr.State(False)
    numbers_box.expand(lambda: True, None, numbers_open, queue=False, api_visibility="private")
    numbers_box.collapse(lambda: False, None, numbers_open, queue=False, api_visibility="private")
    numbers_box.expand(
        lambda image, *rest: compute(image, *rest)[1] if image else None,
        inputs,
        numbers,
        api_visibility="private",
        **INFERENCE,
    )

    def example(path: str, model_name: str | None, class_names: str | None, show_numbers: bool) -> tuple:
        page, result = compute(path, model_name, class_names)
        return page, result if show_numbers else None

    run_example = ExampleRun(image, model, example, [model, classes, numbers_open], outputs, classes=classes)
    if gallery is not None:
        on_example(gallery, paths, image, example, [image, *run_example.inputs], outputs, **INFERENCE)
    return WalkthroughHandles(
        model=model, image=image, example=lambda path: compute(path, registry.default_name, ""), run_example=run_example
    )
