"""Layout pieces more than one tab wires the same way."""

from __future__ import annotations

import gradio as gr

from microclip.constants import DEFAULT_FUSION_RATIO
from microclip.errors import USER_ERRORS
from microclip.recipe import Recipe
from ui.common import model_dropdown_update


def refresh_on_focus(dropdown: gr.Dropdown, registry) -> None:
    """List the registry's models again whenever ``dropdown`` is opened (runs can be saved meanwhile). Only the
    list: the selection is the user's, and a model chosen while this answer is on its way must not be undone by it
    (it was, and the choice's own settings then followed the model chosen before)."""
    dropdown.focus(
        lambda: model_dropdown_update(registry.names()), None, dropdown, api_visibility="private", queue=False
    )


def entry_fusion_ratio(registry, name: str | None) -> float:
    """The ρ the entry answers with, where a tab's ρ slider starts; the reference's where the entry cannot be
    read (using it then says why)."""
    try:
        return registry.fusion_ratio(name)
    except (KeyError, *USER_ERRORS):
        return DEFAULT_FUSION_RATIO


def follow_fusion_ratio(dropdown: gr.Dropdown, slider: gr.Slider, registry) -> None:
    """Set ``slider`` to the ρ of the model chosen in ``dropdown``: left at 0.5, a model trained with another ρ
    would answer other than it does everywhere else (evaluate.py, the Walkthrough, the API without a ρ)."""
    dropdown.change(
        lambda name: entry_fusion_ratio(registry, name), dropdown, slider, api_visibility="private", queue=False
    )


def entry_recipe(registry, name: str | None) -> Recipe:
    """The recipe the entry was adapted with, where an Adapt run from it starts; a base model's, or an entry that
    cannot be read (using it then says why), the bundled data sets' recipe."""
    try:
        recipe = registry.adapted_recipe(name)
    except (KeyError, *USER_ERRORS):
        recipe = None
    return recipe or Recipe.for_dataset("default")
