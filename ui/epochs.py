"""Explore's "Self-training, epoch by epoch" view: SOAP's map and each branch's answer for the image at the start
of the model's adaptation run and after every epoch (the ``epochs`` endpoint; microclip/timeline.py explains the
image at each epoch, studio/epochs.py words and draws it)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr
import numpy as np
from PIL import Image

from microclip.timeline import EpochView, Timeline
from microclip.toyworld.render import rerender
from microclip.toyworld.text import description_ties
from microclip.toyworld.truth import sample_truth, toy_sample
from studio.cache import cached, file_digest
from studio.epochs import NO_EPOCHS, epoch_panels, species_markdown, timeline_markdown
from studio.inflight import counts_as_inference
from studio.registry import ModelRegistry
from ui.common import DISPLAY_SIZE, INFERENCE, gpu, maps_gallery, open_image, user_errors
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.overlay import display_crop


def _views(timeline: Timeline, picture: Image.Image) -> list[EpochView]:
    return timeline.explain(picture)


run_timeline = gpu(_views)  # on ZeroGPU Spaces the epochs' forward passes get a GPU; elsewhere a no-op


@dataclass(frozen=True)
class _Answer:
    """What the forward passes give for one image (cached); the pictures are drawn from it per request, since a
    picture file handed to Gradio is deleted after a while (studio.images) and a cached answer outlives it."""

    crop: np.ndarray
    views: list[EpochView]
    outline: np.ndarray | None
    markdown: str


def _explain(timeline: Timeline, image: str | None, model_name: str) -> _Answer:
    picture = open_image(image)
    views = run_timeline(timeline, picture)
    sample = toy_sample(picture)  # looked up once: the words' truth and the pictures' outline
    truth = sample_truth(sample, views[0].explanation.grid) if sample is not None else None
    outline = sample.part_mask if sample is not None else None
    erased, everything = {}, None
    if sample is not None and truth.true_class in timeline.classes:
        # the native render: the model reads an enlarged example as the render it enlarges (UndoNearestEnlargement)
        shown = sample.visible_parts()
        erased = {part: run_timeline(timeline, Image.fromarray(rerender(sample, (part,)).image)) for part in shown}
        if len(shown) > 1:
            everything = run_timeline(timeline, Image.fromarray(rerender(sample, shown).image))
    crop = display_crop(picture, DISPLAY_SIZE)
    markdown = timeline_markdown(model_name, views, truth, erased, everything)
    # the run's, the same for any image
    species = species_markdown(
        *(
            timeline.per_class(w)
            for w in ("labels", "acc", "confused_with", "labels_right", "labels_confused_with", "lead")
        ),
        ties=description_ties(timeline.model.meta.descriptions),  # None off the toy world
    )
    return _Answer(crop, views, outline, markdown + ("\n" + species if species else ""))


@counts_as_inference
@user_errors
def epochs(registry: ModelRegistry, image: str | None, model_name: str, cmap: str, opacity: float) -> list:
    """The image at every epoch its model's run saved (the ``epochs`` endpoint): the gallery of SOAP's maps and
    the Markdown table; a model without saved epochs gets an empty gallery and a note saying how to keep them."""
    loaded = registry.get(model_name)
    timeline = registry.timeline(loaded.name)
    if timeline is None:
        return [[], NO_EPOCHS.format(name=loaded.name)]
    cmap = cmap if cmap in COLORMAPS else DEFAULT_COLORMAP
    if not image:
        open_image(image)  # the clear "add an image first" message
    answer = cached(("epochs", timeline.token, file_digest(image)), lambda: _explain(timeline, image, loaded.name))
    return [epoch_panels(answer.crop, answer.views, cmap, float(opacity), answer.outline), answer.markdown]


def build_epochs_view(registry: ModelRegistry, image: gr.Image, model: gr.Dropdown) -> None:
    """The "Self-training, epoch by epoch" accordion, inside Explore; uses Explore's image and model."""
    with gr.Accordion("Self-training, epoch by epoch", open=False, elem_id="epochs"):
        gr.Markdown(
            "Where self-training took SOAP's map and each branch's answer on this image: the model at the start "
            "of its adaptation run (SOAP at identity, W* from the descriptions) and after every epoch, from the "
            "checkpoints the run saved (`train.py --keep_epochs`, a run saved in the Adapt tab, the bundled toy "
            "model). No labels were used; the run's logged test accuracy, where it had a test split, is shown "
            "beside each epoch, and what the run could see without labels (each branch's agreement with the fused "
            "answer on its training batches, and how many of them its labels gave each class) below. Uses the "
            "model's own classes."
        )
        with gr.Row():
            cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_COLORMAP, label="Colormap")
            opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Opacity")
            run = gr.Button("Show every epoch", variant="secondary", elem_id="epochs-button")
        gallery = maps_gallery("SOAP's map at each epoch (one colour scale)", 5, "epochs-gallery")
        table = gr.Markdown(elem_id="epochs-table")
    run.click(
        partial(epochs, registry), [image, model, cmap, opacity], [gallery, table], api_name="epochs", **INFERENCE
    )
