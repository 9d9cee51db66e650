"""Explore's "Compare explainers" view: SOAP beside other saliency methods on the same image and class.

Every map is drawn on one colour scale and captioned with its cost; on a known toy-world image the
ground-truth parts are outlined and each map is scored against them (the ``explainers`` endpoint).
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import numpy as np

from microclip.data.transforms import test_transform
from microclip.explainers import run_explainers
from microclip.toyworld.lookup import find_toyworld_sample
from microclip.toyworld.world import SPECIES
from studio.explainers import (
    PREDICTED,
    ToyParts,
    class_index,
    comparison_markdown,
    deletion_of,
    notes_markdown,
    panel_files,
    shows_signed,
)
from studio.images import image_file
from studio.inflight import counts_as_inference
from studio.registry import ModelRegistry
from ui.common import DISPLAY_SIZE, INFERENCE, gpu, maps_gallery, open_image, user_errors
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.overlay import display_crop
from viz.peers import SCALE_NOTE, colorbar

run_compare = gpu(run_explainers)  # on ZeroGPU Spaces the explainers get a GPU; elsewhere a no-op


@counts_as_inference
@user_errors
def compare_explainers(
    registry: ModelRegistry,
    image: str | None,
    model_name: str,
    class_choice: str | None,
    cmap: str,
    opacity: float,
    deletion: bool = False,
) -> list:
    """Every available explainer's map of one image for one class, timed and, on toy images, scored
    (the ``explainers`` endpoint); ``deletion`` adds each map's ROAD deletion score (slower: every map is
    deleted at nine percentiles). Returns the gallery, the colour bar and a Markdown table."""
    picture = open_image(image)
    loaded = registry.get(model_name)
    model = loaded.model
    chosen = class_index(list(loaded.classes), loaded.name, class_choice)
    cmap = cmap if cmap in COLORMAPS else DEFAULT_COLORMAP
    tensor = test_transform(model.backbone.image_size, crop="center")(picture)
    comparison = run_compare(model, tensor, chosen)
    sample = find_toyworld_sample(np.asarray(picture))
    truth = ToyParts(SPECIES[sample.species].name, sample.part_mask) if sample is not None else None
    crop = display_crop(picture, DISPLAY_SIZE)
    gallery = panel_files(crop, comparison, cmap, float(opacity), truth.part_mask if truth else None)
    drops = deletion_of(model, tensor, comparison) if deletion else None
    scale = image_file(colorbar(cmap, width=DISPLAY_SIZE, signed=shows_signed(comparison)))
    return [gallery, scale, comparison_markdown(comparison, truth, drops)]


@user_errors
def explainer_classes(registry: ModelRegistry, model_name: str) -> gr.Dropdown:
    """The class picker for a model: its prediction, or one of its own classes (``explainer_classes``)."""
    return gr.Dropdown(choices=[PREDICTED, *registry.get(model_name).classes], value=PREDICTED)


def build_explainers_view(registry: ModelRegistry, image: gr.Image, model: gr.Dropdown) -> None:
    """The "Compare explainers" accordion, inside Explore; uses Explore's image and model."""
    try:
        classes = list(registry.get(model.value).classes) if model.value else []
    except Exception:  # noqa: BLE001 - the view still builds; the endpoint reports the error on use
        classes = []
    with gr.Accordion("Compare explainers", open=False, elem_id="explainers"):
        gr.Markdown(
            "SOAP beside other saliency methods on the same image and the same model: the model's own "
            "maps, attention baselines, LeGrad and the Grad-CAM family. Each is timed alone; on toy-world "
            "images each is scored against the true part masks. Uses the model's own classes."
        )
        with gr.Row():
            class_choice = gr.Dropdown(
                [PREDICTED, *classes],
                value=PREDICTED,
                label="Class to explain",
                allow_custom_value=True,
                elem_id="explainers-class",
            )  # checked by us
            cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_COLORMAP, label="Colormap")
            opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Opacity")
            deletion = gr.Checkbox(
                value=False,
                label="Deletion scores (ROAD)",
                elem_id="explainers-deletion",
                info="Slower: each map's top pixels are removed at nine levels",
            )
            run = gr.Button("Compare explainers", variant="secondary", elem_id="explainers-button")
        # Six to a row: every map and its caption fit on a 1400×1000 screen without the gallery clipping a row.
        gallery = maps_gallery("Explainers", 6, "explainers-gallery")
        scale = gr.Image(
            label=f"Shared scale: {SCALE_NOTE}; under it, signed maps' scale around zero",
            format="png",
            interactive=False,
            height=150,  # two bars: the shared one and, under it, the signed maps' (SOAP per class)
            show_label=True,
            elem_id="explainers-colorbar",
        )
        table = gr.Markdown(elem_id="explainers-table")
        with gr.Accordion("What each map shows", open=False):
            gr.Markdown(notes_markdown())
    run.click(
        partial(compare_explainers, registry),
        [image, model, class_choice, cmap, opacity, deletion],
        [gallery, scale, table],
        api_name="explainers",
        **INFERENCE,
    )
    model.change(
        partial(explainer_classes, registry),
        [model],
        [class_choice],
        api_name="explainer_classes",
        show_progress="hidden",
    )
