"""The Models / About tab: what each model is, uploading adapted checkpoints, and how the method works."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import gradio as gr

from studio.about import METHOD_MARKDOWN, model_markdown
from studio.registry import ModelRegistry
from ui.common import model_dropdown_update, user_errors
from ui.layout import entry_fusion_ratio

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]


@user_errors
def model_info(registry: ModelRegistry, model_name: str) -> str:
    """Describe one registered model (the ``model_info`` endpoint); loads it if needed."""
    return model_markdown(registry.get(model_name))


@user_errors
def upload_model(registry: ModelRegistry, n_follow: int, n_ratios: int, n_refresh: int, checkpoint: str | None) -> list:
    """Add an uploaded ``.safetensors`` checkpoint (the ``upload_model`` endpoint).

    Returns its description, then dropdown updates: this tab's and ``n_follow`` others select the
    new model; then the model's ρ for ``n_ratios`` sliders that follow it; then ``n_refresh`` more
    dropdowns that only list it. A pickle renamed ``.safetensors`` or any unreadable file is refused
    with the checkpoint reader's message, and nothing is registered.
    """
    if not checkpoint:
        raise gr.Error("Choose a .safetensors checkpoint to upload.")
    name = registry.add_upload(checkpoint)
    names = registry.names()
    return [
        model_markdown(registry.get(name)),
        *[model_dropdown_update(names, name)] * (1 + n_follow),
        *[entry_fusion_ratio(registry, name)] * n_ratios,
        *[model_dropdown_update(names)] * n_refresh,
    ]


def list_models(names: list[str], current: Sequence[str | None]) -> list[gr.Dropdown]:
    """Refresh model dropdowns to list ``names`` (models added by an adaptation run appear); selections kept."""
    return [model_dropdown_update(names, value) for value in current]


def build_models_tab(
    registry: ModelRegistry,
    follow: Sequence[gr.Dropdown] = (),
    refresh: Sequence[gr.Dropdown] = (),
    ratios: Sequence[gr.Slider] = (),
) -> gr.Dropdown:
    """Build the Models / About tab. After an upload the ``follow`` dropdowns (other tabs' model
    lists) select the new model and the ``ratios`` sliders show its ρ; the ``refresh`` ones only list it.
    A slider's ρ comes in the same answer as the model, as with *Use it in Explore*: a client of ``/upload_model``
    learns the ρ Explore will answer with, and the page does not wait on the list's change event for it."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model")
            show = gr.Button("Show")
            upload = gr.File(
                label="Add an adapted checkpoint (.safetensors only; never pickles)",
                file_types=[".safetensors"],
                elem_id="models-upload",
            )
            add = gr.Button("Add model", variant="primary")
        with gr.Column(scale=2):
            info = gr.Markdown("Pick a model and press **Show**.", label="model", elem_id="models-info")
    with gr.Accordion("How the method works", open=True):
        gr.Markdown(METHOD_MARKDOWN, latex_delimiters=LATEX)

    gr.on([show.click, model.change], partial(model_info, registry), [model], [info], api_name="model_info")
    add.click(
        partial(upload_model, registry, len(follow), len(ratios), len(refresh)),
        [upload],
        [info, model, *follow, *ratios, *refresh],
        api_name="upload_model",
    )
    return model
