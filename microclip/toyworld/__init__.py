"""The toy bird world: a procedural fine-grained dataset with part masks and a tiny CLIP trained on it.

`register_model_configs()` makes the `ToyCLIP-B-8` architecture known to open_clip; call it before
`open_clip.create_model('ToyCLIP-B-8')` or `open_clip.get_tokenizer('ToyCLIP-B-8')`.
"""

from __future__ import annotations

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"  # the same folder as microclip.backbone.MODEL_CONFIG_DIR
TOY_MODEL_NAME = "ToyCLIP-B-8"


def register_model_configs() -> None:
    """Make the toy architecture known to open_clip (idempotent; the backbone does it before building any model)."""
    from microclip.backbone import register_model_configs as register

    register()
