"""Explore's "Compare explainers" view: SOAP beside other saliency methods on the same image and class.

Every map is drawn on one colour scale and captioned with its cost; on a known toy-world image the
ground-truth parts are outlined and each map is scored against them (the ``explainers`` endpoint).
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import numpy as np
import torch

from microclip.data.transforms import test_transform
from microclip.explainers import (
    EXPLAINERS,
    ExplainerComparison,
    PartScore,
    chance_score,
    part_score,
    run_explainers,
    unavailable_explainers,
)
from microclip.faithfulness import deletion_scores
from microclip.toyworld.lookup import find_toyworld_sample
from microclip.toyworld.render import Sample
from microclip.toyworld.world import SPECIES
from studio.inflight import counts_as_inference
from studio.registry import ModelRegistry
from ui.common import DISPLAY_SIZE, INFERENCE_CONCURRENCY, INFERENCE_ID, gpu, image_file, open_image, user_errors
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.overlay import display_crop
from viz.peers import SCALE_NOTE, colorbar, peer_panel

PREDICTED = "predicted class"
NOT_TOY = (
    "_No part scores: this image is not a known toy-world image (a bundled `toybird-*` example or an image "
    "of a generated split under `data/toybirds`, recognised by its exact pixels; a resized or re-saved copy "
    "is not), so where its evidence lies is unknown._"
)

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
    class_index = None
    if class_choice and class_choice != PREDICTED:
        if class_choice not in loaded.classes:
            raise gr.Error(
                f"'{class_choice}' is not one of {loaded.name}'s {len(loaded.classes)} classes; pick one "
                f"from the list, or '{PREDICTED}'."
            )
        class_index = loaded.classes.index(class_choice)
    cmap = cmap if cmap in COLORMAPS else DEFAULT_COLORMAP
    tensor = test_transform(model.backbone.image_size, crop="center")(picture)
    comparison = run_compare(model, tensor, class_index)
    sample = find_toyworld_sample(np.asarray(picture))
    crop = display_crop(picture, DISPLAY_SIZE)
    outline = sample.part_mask if sample is not None else None
    gallery = [
        (image_file(peer_panel(crop, run.saliency, cmap, float(opacity), outline)), caption(name, run.ms))
        for name, run in comparison.runs.items()
        if run.saliency is not None
    ]
    drops = deletion_of(model, tensor, comparison) if deletion else None
    return [gallery, image_file(colorbar(cmap, width=DISPLAY_SIZE)), comparison_markdown(comparison, sample, drops)]


def caption(name: str, ms: float | None) -> str:
    return f"{EXPLAINERS[name].title} · {ms:.1f} ms" if ms is not None else EXPLAINERS[name].title


def _pointing(score: PartScore) -> str:
    if score.n_top == 1:
        return "yes" if score.top_on_part == 1.0 else "no"
    return f"{score.top_on_part:.0%} of {score.n_top} tied"


def comparison_markdown(
    comparison: ExplainerComparison, sample: Sample | None, deletion: dict[str, float] | None = None
) -> str:
    """The class explained, then name | ms | (scores) per explainer; notes (unavailable explainers, why a map is
    unscored) under the table, never in it. ``deletion``: each map's ROAD deletion drop of the fused prediction."""
    how = "the model's prediction" if comparison.predicted else "chosen"
    lines = [f"**Explaining class: {comparison.class_name}** ({how}). Maps on one colour scale: {SCALE_NOTE}."]
    if sample is not None:
        lines += [
            "",
            f"Toy-world image: a *{SPECIES[sample.species].name}*; its discriminative parts are outlined "
            "in white. _Top patch on a part_: is the map's highest patch on a part (with ties, the share "
            "of tied patches that are). _Mass inside_: the share of the map's mass, shifted so its lowest "
            "patch has none, that falls on part pixels.",
        ]
    if deletion is not None:
        lines += [
            "",
            "_Deletion (ROAD)_: the map's most relevant pixels removed (10% … 90%, filled in by noisy "
            "linear imputation) and the mean drop of the fused prediction's probability: a larger drop, a "
            "map the model's decision depends on more (`microclip.faithfulness`).",
        ]
    header, rule = ["method", "ms"], ["---", "---:"]
    if sample is not None:
        header, rule = header + ["top patch on a part", "mass inside the part mask"], rule + ["---", "---:"]
    if deletion is not None:
        header, rule = header + ["deletion (ROAD)"], rule + ["---:"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    missing = []
    for name, run in comparison.runs.items():
        title = EXPLAINERS[name].title
        if run.saliency is None:  # said under the table: a long reason in a cell squeezes every column
            missing.append(f"**{title}** is unavailable here: {run.error}")
            continue
        row = f"| {title} | {run.ms:.1f} |"
        if sample is not None:
            score = part_score(run.saliency, sample.part_mask)
            row += f" {_pointing(score)} | {score.mass_inside:.1%} |"
        if deletion is not None:
            row += f" {deletion[name]:+.3f} |" if name in deletion else " — |"
        lines.append(row)
    if sample is not None:
        chance = chance_score(sample.part_mask, comparison.grid)
        lines.append(
            f"| _chance (uniform map)_ | | {chance.top_on_part:.0%} | {chance.mass_inside:.1%} |"
            + (" |" if deletion is not None else "")
        )
    lines += ["", *[f"- {text}" for text in missing]] if missing else []
    if sample is None:
        lines += ["", NOT_TOY]
    return "\n".join(lines)


def deletion_of(model, tensor: torch.Tensor, comparison: ExplainerComparison) -> dict[str, float]:
    """Each available map's ROAD deletion drop of the fused prediction's probability on this one image."""
    maps = {name: run.saliency.reshape(1, -1) for name, run in comparison.runs.items() if run.saliency is not None}
    return {name: drops["fused"] for name, drops in deletion_scores(model, tensor[None], maps).items()}


def notes_markdown() -> str:
    """What each map shows (the registry's notes), and which explainers cannot run here and why."""
    missing = unavailable_explainers()
    lines = []
    for name, explainer in EXPLAINERS.items():
        suffix = f" **Unavailable here:** {missing[name]}" if name in missing else ""
        lines.append(f"- **{explainer.title}** (`{name}`). {explainer.note}{suffix}")
    return "\n".join(lines)


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
        gallery = gr.Gallery(
            label="Explainers",
            columns=6,
            height="auto",
            format="png",
            object_fit="contain",
            allow_preview=True,
            elem_id="explainers-gallery",
        )
        scale = gr.Image(
            label=f"Shared scale: {SCALE_NOTE}",
            format="png",
            interactive=False,
            height=70,
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
        concurrency_limit=INFERENCE_CONCURRENCY,
        concurrency_id=INFERENCE_ID,
    )
    model.change(
        partial(explainer_classes, registry),
        [model],
        [class_choice],
        api_name="explainer_classes",
        show_progress="hidden",
    )
