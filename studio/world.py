"""What a loaded model knows, and the out-of-world flag, in words (the numbers: ``microclip.world_check``).

A classifier always answers with one of its classes, so a photo of a person shown to a model of 16
toy birds still comes out "wickstel tit, 99%". The app says what the model knows (classes, input
size, training domain) and flags images that ``microclip.world_check`` finds unlike the training images of
the model's base weights (fitted and measured by ``bench/ood.py``). Own class names on the toy model get the
words its pretraining never used. The label-set notes (one class) need no calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from microclip import world_check
from microclip.constants import CLS_ONLY_FLAG, CLS_ONLY_MODES
from studio.about import mode_note

if TYPE_CHECKING:
    from PIL import Image

    from studio.registry import LoadedModel

TOY_BASE_MARKER = "toybirds-base"  # the toy-world base model's folder name in a checkpoint's base spec
ONE_CLASS_NOTE = (
    "**One class only:** a softmax over a single class is always 100%, whatever the image. "
    "Type at least two classes to see which the model prefers."
)


def is_toy_world(loaded: LoadedModel) -> bool:
    """Whether a model is built on the bundled toy-world base (for the domain sentence only)."""
    return loaded.model.base is not None and TOY_BASE_MARKER in loaded.model.base.clip_model


def world_markdown(loaded: LoadedModel) -> str:
    """A short, visible note of what the model knows: its classes, its input size and its domain."""
    classes = loaded.classes
    shown = ", ".join(classes[:6]) + (f", … ({len(classes)} in all)" if len(classes) > 6 else "")
    size = loaded.model.backbone.image_size
    grid = "×".join(map(str, loaded.model.backbone.grid)) if hasattr(loaded.model.backbone, "grid") else "?"
    if is_toy_world(loaded):
        domain = (
            "the **toy world**: drawn birds of 16 invented species on plain backgrounds. Photos, people "
            "or real birds are outside it: it still names one of its species, but the answer means little"
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


def unseen_words_markdown(loaded: LoadedModel, class_names: list[str]) -> str:
    """A note naming the typed class words the base model never read in pretraining ("" when none, or unknown)."""
    unseen = world_check.unseen_words(loaded.model, class_names)
    if not unseen:
        return ""
    listed = "; ".join(f"*{name}* ({', '.join(found)})" for name, found in unseen.items())
    return (
        f"**Words this model never saw in pretraining:** {listed}. Its text tower never learnt what they "
        "mean, so answers naming these classes are word games, not recognition."
    )


def world_flag_markdown(
    classes: Sequence[str], loaded: LoadedModel, typed: bool, image: Image.Image | None = None
) -> str:
    """The flag shown above the prediction (``classes``: the label set it is among): one-class label sets,
    unseen words, images outside the world."""
    lines = []
    if len(classes) == 1:
        lines.append(ONE_CLASS_NOTE)
    elif typed:
        lines.append(unseen_words_markdown(loaded, list(classes)))
    if loaded.meta is not None and loaded.meta.mode in CLS_ONLY_MODES:
        lines.append(CLS_ONLY_FLAG)
    if image is not None:
        lines.append(world_check.check(loaded.model, image).flag())
    return "\n\n".join(line for line in lines if line)
