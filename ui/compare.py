"""The Compare tab: one image under two models (e.g. adapted vs zero-shot), side by side.

Shows each model's top-k and maps, where their SOAP weights differ (A − B, per patch), and how the
rank of one class moves between them; and, from the epochs two runs saved, each class through both runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from microclip.errors import USER_ERRORS
from microclip.explain import explain_image
from microclip.prepare import parse_class_names
from studio.compare import RunClasses, rank_markdown, runs_markdown
from studio.epochs import NO_EPOCHS
from studio.examples import example_images
from studio.explore import PHOTO_SIZE
from studio.inflight import counts_as_inference
from studio.registry import ModelRegistry
from ui.common import INFERENCE, ExampleRun, examples_gallery, gpu, image_input, on_example, user_errors
from ui.explore import decode_upload
from viz import html as html_maps
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.explore import TOP_K, difference_html, model_maps_html
from viz.overlay import display_crop

run_explain = gpu(explain_image)

DIFFERENCE_NOTE = (
    "**Difference map.** SOAP weight under model A minus under model B, one value per patch: "
    "red where A pools more from a patch, blue where it pools less, white where they agree. "
    "It shows where adaptation moved the `[FG]` token's attention. Its colour scale is printed under it "
    "with the largest |Δ|: on *auto* the largest change is always full red or blue, however small; "
    "set a fixed scale to compare images fairly."
)


RUNS_NOTE = (
    "Models A and B as their adaptation runs went, from the epochs each saved (`train.py --keep_epochs`; the "
    "bundled toy models ship theirs): the labels each run's self-training gave every class, how many were right, "
    "and each class's test accuracy from the start to the end. Pick, say, the reference's toy model and the one "
    "with debiased labels: which classes does each run's labelling starve, and what does that cost them?"
)


def check_compare(image: str | None, *_rest) -> list:
    """Gradio's validator for ``compare``: a bad upload gets one message, on the image input."""
    try:
        decode_upload(image)
    except gr.Error as error:
        return [gr.validate(False, error.message)] + [None] * len(_rest)
    return [None] * (1 + len(_rest))


@counts_as_inference
@user_errors
def compare(
    registry: ModelRegistry,
    image: str | None,
    model_a: str,
    model_b: str,
    class_names: str,
    follow_class: str,
    opacity: float,
    cmap: str,
    fixed_scale: float | None = 0.0,
) -> list:
    """Both models on the same image (the ``compare`` endpoint).

    Returns A's and B's top-k, A's and B's maps (HTML), the difference maps (HTML) and the rank line.
    ``fixed_scale`` > 0 draws the difference on ±that value; 0 scales it to its own largest |Δ|."""
    picture = decode_upload(image)
    classes = parse_class_names(class_names)
    explanations = []
    for name in (model_a, model_b):
        model = registry.with_classes(name, classes) if classes else registry.get(name).model
        explanations.append(run_explain(model, picture))
    a, b = explanations
    photo = html_maps.jpeg_uri(display_crop(picture, PHOTO_SIZE))
    cmap = cmap if cmap in COLORMAPS else DEFAULT_COLORMAP
    tracked = (follow_class or "").strip() or a.classes[a.prediction("fused")]
    return [
        dict(a.top_k("fused", TOP_K)),
        dict(b.top_k("fused", TOP_K)),
        model_maps_html(a, photo, "A", cmap, float(opacity)),
        model_maps_html(b, photo, "B", cmap, float(opacity)),
        difference_html(a, b, photo, max(float(opacity), 0.3), float(fixed_scale or 0.0)),
        rank_markdown(a, b, tracked, model_a, model_b),
    ]


@user_errors
def compare_runs(registry: ModelRegistry, model_a: str, model_b: str) -> str:
    """The two models' adaptation runs class by class, from their saved epochs (the ``compare_runs`` endpoint); no
    image is needed and nothing is run through a model."""
    runs = []
    for name in (model_a, model_b):
        timeline = registry.timeline(name)
        if timeline is None:  # said in the output, as Explore's epoch view says it: not an error of the request
            return NO_EPOCHS.format(name=name)
        runs.append(RunClasses.of(name, timeline))
    return runs_markdown(*runs)


@dataclass
class CompareHandles:
    """Components other tabs update (the model lists)."""

    model_a: gr.Dropdown
    model_b: gr.Dropdown
    run_example: ExampleRun  # an example click's function, inputs and outputs (links use it)


def _zero_shot(registry: ModelRegistry, name: str) -> bool:
    """Whether the entry is a zero-shot base model; an entry whose file cannot be read now is not (using it says
    why)."""
    try:
        return registry.zero_shot(name)
    except (KeyError, *USER_ERRORS):
        return False


def build_compare_tab(registry: ModelRegistry) -> CompareHandles:
    """Build the Compare tab inside the current ``gr.Tab`` and wire its endpoint."""
    names = registry.names()
    # B starts as the "before" of the lesson's question (what did adaptation change?): a zero-shot base model, else
    # the first other model (with the bundled models, the first other was the centred variant of the same method)
    others = [n for n in names if n != registry.default_name]
    default_b = next((n for n in others if _zero_shot(registry, n)), others[0] if others else registry.default_name)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            image = image_input(label="Image", sources=["upload", "webcam", "clipboard"], height=230)
            run = gr.Button("Compare", variant="primary")
            model_a = gr.Dropdown(names, value=registry.default_name, label="Model A (e.g. adapted)")
            model_b = gr.Dropdown(names, value=default_b, label="Model B (e.g. zero-shot)", elem_id="compare-model-b")
            examples = example_images()
            if examples:
                gallery = examples_gallery(examples, "compare-examples")
            classes = gr.Textbox(
                label="Class names for both (optional)", lines=2, placeholder="Blank: each model's own classes."
            )
            track = gr.Textbox(label="Class to follow", placeholder="Blank: model A's prediction")
            with gr.Row():
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_COLORMAP, label="Colormap")
            fixed = gr.Number(
                value=0.0,
                minimum=0.0,
                label="Difference scale ± (SOAP weight)",
                info="0 = auto (its own largest |Δ|). A fixed value, e.g. 0.01, keeps tiny changes pale.",
            )
        with gr.Column(scale=2):
            rank = gr.Markdown("Pick an image and two models, then press **Compare**.", label="rank")
            with gr.Row():
                label_a = gr.Label(num_top_classes=TOP_K, label="A: fused top-k")
                label_b = gr.Label(num_top_classes=TOP_K, label="B: fused top-k")
            with gr.Row():
                maps_a = gr.HTML("", css_template=html_maps.MAPS_CSS, js_on_load=None, elem_id="compare-a")
                maps_b = gr.HTML("", css_template=html_maps.MAPS_CSS, js_on_load=None, elem_id="compare-b")
            diff = gr.HTML("", css_template=html_maps.MAPS_CSS, js_on_load=None, elem_id="compare-diff")
            gr.Markdown(DIFFERENCE_NOTE)
    with gr.Accordion("Two runs, class by class", open=False):  # the page's full width: a table of 16+ rows
        gr.Markdown(RUNS_NOTE)
        run_classes = gr.Button("Compare the two runs")
        classes_out = gr.Markdown("", elem_id="compare-runs")

    inputs = [image, model_a, model_b, classes, track, opacity, cmap, fixed]
    outputs = [label_a, label_b, maps_a, maps_b, diff, rank]
    event = dict(fn=partial(compare, registry), inputs=inputs, outputs=outputs, validator=check_compare, **INFERENCE)
    run.click(**event, api_name="compare")
    run_classes.click(partial(compare_runs, registry), [model_a, model_b], classes_out, api_name="compare_runs")
    if examples:  # an example runs at once, as in the Walkthrough and Explore
        on_example(gallery, examples, image, **event)
    run_example = ExampleRun(image, model_a, event["fn"], inputs[1:], outputs, classes=classes)  # a link's model is A
    return CompareHandles(model_a=model_a, model_b=model_b, run_example=run_example)
