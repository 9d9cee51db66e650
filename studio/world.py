"""What a loaded model knows, and the out-of-world flag, in words (the numbers: ``microclip.world_check``).

A classifier always answers with one of its classes, so a photo of a person shown to a model of 16
toy birds still comes out "wickstel tit, 99%". The app says what the model knows (classes, input
size, training domain) and flags images that ``microclip.world_check`` finds unlike the training images of
the model's base weights (fitted and measured by ``bench/ood.py``). Own class names on the toy model get the
words its pretraining never used. The label-set notes (one class) need no calibration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from microclip import world_check
from microclip.toyworld.render import BACKGROUNDS
from microclip.toyworld.world import PARTS, SPECIES
from studio.about import mode_note

if TYPE_CHECKING:
    from PIL import Image

    from studio.registry import LoadedModel

TOY_BASE_MARKER = "toybirds-base"  # the toy-world base model's folder name in a checkpoint's base spec


def is_toy_world(loaded: LoadedModel) -> bool:
    """Whether a model is built on the bundled toy-world base (for the domain sentence only)."""
    return loaded.model.base is not None and TOY_BASE_MARKER in loaded.model.base.clip_model


def _listed(words: Iterable[str], last: str = "and") -> str:
    """The words as "a, b and c": the domain sentence names the world's own parts and scenes, so it cannot drift."""
    *rest, final = list(words)
    return f"{', '.join(rest)} {last} {final}" if rest else final


def world_markdown(loaded: LoadedModel) -> str:
    """A short, visible note of what the model knows: its classes, its input size and its domain."""
    classes = loaded.classes
    shown = ", ".join(classes[:6]) + (f", … ({len(classes)} in all)" if len(classes) > 6 else "")
    size = loaded.model.backbone.image_size
    grid = "×".join(map(str, loaded.model.backbone.grid)) if hasattr(loaded.model.backbone, "grid") else "?"
    if is_toy_world(loaded):
        domain = (
            f"the **toy world**: drawn birds of {len(SPECIES)} invented species that differ only in "
            f"{_listed(p.replace('_', ' ') for p in PARTS)}, in {_listed(BACKGROUNDS, 'or')} scenes with clutter. "
            "Photos, people or real birds are outside it: it still names one of its species, but the answer "
            "means little"
        )
    elif loaded.meta is not None:
        dataset = loaded.meta.training.get("dataset") or loaded.meta.training.get("source") or "unknown data"
        domain = f"its CLIP base ({loaded.meta.base.describe()}), adapted on *{dataset}*"
    else:
        domain = f"{loaded.source}"
    known = (
        f"**What this model knows.** {len(classes)} classes ({shown}); images at {size}×{size} px "
        f"({grid} patches); domain: {domain}."
    )
    return f"{known} {mode_note(loaded.meta)}".rstrip()


def world_flag_markdown(
    classes: Sequence[str], loaded: LoadedModel, typed: bool, image: Image.Image | None = None
) -> str:
    """The flag shown above the prediction (``classes``: the label set it is among): one-class label sets,
    unseen words, a CLS-only baseline, images outside the world (:func:`microclip.world_check.page_flags`)."""
    mode = loaded.meta.mode if loaded.meta is not None else None
    verdict = world_check.check(loaded.model, image) if image is not None else None
    return world_check.page_flags(loaded.model, classes, typed, mode, verdict)
