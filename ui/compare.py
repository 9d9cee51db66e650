"""The Compare tab: one image under two models (e.g. adapted vs zero-shot), side by side.

Shows each model's top-k and maps, where their SOAP weights differ (A − B, per patch), and how the
rank of one class moves between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from microclip.explain import Explanation, explain_image
from ui.common import (
    DISPLAY_SIZE,
    INFERENCE_CONCURRENCY,
    INFERENCE_ID,
    example_images,
    gpu,
    image_input,
    open_image,
    parse_class_names,
    user_errors,
)
from ui.registry import ModelRegistry
from viz.overlay import display_crop
from viz.panels import RenderSettings, render_difference, render_panels

TOP_K = 5
run_explain = gpu(explain_image)

DIFFERENCE_NOTE = ("**Difference map.** SOAP weight under model A minus under model B, one value per patch: "
                   "red where A pools more from a patch, blue where it pools less, white where they agree. "
                   "It shows where adaptation moved the `[FG]` token's attention.")


def rank_of(explanation: Explanation, name: str) -> int | None:
    """1-based rank of a class in the fused prediction, or None if the model lacks it."""
    order = [label for label, _ in explanation.top_k("fused", len(explanation.classes))]
    return order.index(name) + 1 if name in order else None


def rank_markdown(a: Explanation, b: Explanation, name: str, name_a: str, name_b: str) -> str:
    """How the rank of one class differs between model A and model B."""
    rank_a, rank_b = rank_of(a, name), rank_of(b, name)
    if rank_a is None or rank_b is None:
        missing = name_a if rank_a is None else name_b
        return f"Class **{name}** is not among the classes of *{missing}*; type a shared class, or a label set."
    if rank_a == rank_b:
        change = "the same rank under both"
    else:
        change = f"{abs(rank_b - rank_a)} place{'s' if abs(rank_b - rank_a) > 1 else ''} " \
                 f"{'higher' if rank_a < rank_b else 'lower'} under A"
    return (f"Class **{name}**: rank **{rank_a}** of {len(a.classes)} under A (*{name_a}*), "
            f"rank **{rank_b}** of {len(b.classes)} under B (*{name_b}*): {change}.")


@user_errors
def compare(registry: ModelRegistry, image: str | None, model_a: str, model_b: str, class_names: str,
            follow_class: str, opacity: float, cmap: str) -> list:
    """Both models on the same image (the ``compare`` endpoint)."""
    picture = open_image(image)
    classes = parse_class_names(class_names)
    explanations = []
    for name in (model_a, model_b):
        model = registry.with_classes(name, classes) if classes else registry.get(name).model
        explanations.append(run_explain(model, picture))
    a, b = explanations
    crop = display_crop(picture, DISPLAY_SIZE)
    settings = RenderSettings(opacity=float(opacity), cmap=cmap)
    panels_a, panels_b = (render_panels(e, crop, settings) for e in (a, b))
    difference = render_difference(a, b, crop, opacity=max(float(opacity), 0.3))
    tracked = (follow_class or "").strip() or a.classes[a.prediction("fused")]
    return [dict(a.top_k("fused", TOP_K)), dict(b.top_k("fused", TOP_K)),
            panels_a.soap, panels_b.soap, panels_a.ncut, panels_b.ncut, difference.overlay, difference.raw,
            rank_markdown(a, b, tracked, model_a, model_b)]


@dataclass
class CompareHandles:
    """Components other tabs update (the model lists)."""

    model_a: gr.Dropdown
    model_b: gr.Dropdown


def build_compare_tab(registry: ModelRegistry) -> CompareHandles:
    """Build the Compare tab inside the current ``gr.Tab`` and wire its endpoint."""
    names = registry.names()
    default_b = next((n for n in names if n != registry.default_name), registry.default_name)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            image = image_input(label="Image", sources=["upload", "webcam", "clipboard"], height=260)
            examples = example_images()
            if examples:
                gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Examples",
                            examples_per_page=12)
            model_a = gr.Dropdown(names, value=registry.default_name, label="Model A (e.g. adapted)")
            model_b = gr.Dropdown(names, value=default_b, label="Model B (e.g. zero-shot)")
            classes = gr.Textbox(label="Class names for both (optional)", lines=2,
                                 placeholder="Blank: each model's own classes.")
            track = gr.Textbox(label="Class to follow", placeholder="Blank: model A's prediction")
            with gr.Row():
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                cmap = gr.Dropdown(["jet", "viridis", "inferno", "turbo", "magma"], value="jet", label="Colormap")
            run = gr.Button("Compare", variant="primary")
        with gr.Column(scale=2):
            rank = gr.Markdown("Pick an image and two models, then press **Compare**.", label="rank")
            with gr.Row():
                label_a = gr.Label(num_top_classes=TOP_K, label="A: fused top-k")
                label_b = gr.Label(num_top_classes=TOP_K, label="B: fused top-k")
            with gr.Row():
                soap_a = gr.Image(label="A: SOAP attention", format="png", interactive=False)
                soap_b = gr.Image(label="B: SOAP attention", format="png", interactive=False)
            with gr.Row():
                ncut_a = gr.Image(label="A: NCut foreground", format="png", interactive=False)
                ncut_b = gr.Image(label="B: NCut foreground", format="png", interactive=False)
            with gr.Row():
                diff_overlay = gr.Image(label="SOAP weight A − B", format="png", interactive=False)
                diff_raw = gr.Image(label="A − B on the patch grid", format="png", interactive=False)
            gr.Markdown(DIFFERENCE_NOTE)

    run.click(partial(compare, registry), [image, model_a, model_b, classes, track, opacity, cmap],
              [label_a, label_b, soap_a, soap_b, ncut_a, ncut_b, diff_overlay, diff_raw, rank], api_name="compare",
              concurrency_limit=INFERENCE_CONCURRENCY, concurrency_id=INFERENCE_ID)
    return CompareHandles(model_a=model_a, model_b=model_b)
