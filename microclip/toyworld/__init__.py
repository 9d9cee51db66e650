"""The toy bird world: a procedural fine-grained dataset with part masks and a tiny CLIP trained on it.

`register_model_configs()` makes the `ToyCLIP-B-8` architecture known to open_clip; call it before
`open_clip.create_model('ToyCLIP-B-8')` or `open_clip.get_tokenizer('ToyCLIP-B-8')`.
"""

from __future__ import annotations

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TOY_MODEL_NAME = "ToyCLIP-B-8"
_registered = False


def register_model_configs() -> None:
    """Add this package's open_clip model configs to open_clip's registry (idempotent)."""
    global _registered
    import open_clip

    if _registered and TOY_MODEL_NAME in open_clip.list_models():
        return
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    _registered = True
