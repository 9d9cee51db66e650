"""Layout pieces more than one tab wires the same way."""

from __future__ import annotations

import gradio as gr

from ui.common import model_dropdown_update


def refresh_on_focus(dropdown: gr.Dropdown, registry) -> None:
    """List the registry's models again whenever ``dropdown`` is opened (runs can be saved meanwhile)."""
    dropdown.focus(
        lambda value: model_dropdown_update(registry.names(), value),
        dropdown,
        dropdown,
        api_visibility="private",
        queue=False,
    )
