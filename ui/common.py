"""Helpers every tab shares: safe image input, class-name parsing, error translation, GPU wrapping.

Nothing here computes anything about the method; it turns user input into library calls and
library errors into messages a user can act on.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from PIL import Image

from microclip.backbone import BackboneError
from microclip.checkpoint import CheckpointError
from microclip.data.descriptions import DescriptionsError, load_descriptions
from microclip.data.images import ImageError, load_image
from microclip.resources import PROJECT_ROOT

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

EXAMPLES_DIR = PROJECT_ROOT / "assets" / "examples"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DISPLAY_SIZE = 448  # pixels of the square crop every map is drawn on
INFERENCE_CONCURRENCY = 2  # forward passes at once (explore + compare share this limit)
INFERENCE_ID = "inference"

# Errors the library raises with a message meant for the user; anything else is a bug and is logged.
USER_ERRORS: tuple[type[Exception], ...] = (ImageError, CheckpointError, DescriptionsError, BackboneError, ValueError,
                                            KeyError)


def image_input(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` (``type="filepath"``) that hands the uploaded file to us *undecoded*.

    Stock ``gr.Image`` opens every upload with PIL before our function runs, so a text file named
    ``.jpg`` or a decompression-bomb header fails inside Gradio with a generic error. Passing the
    path through lets ``microclip.data.images.load_image`` decide, with its clear messages and its
    CMYK / 16-bit / palette / EXIF handling. (The hook is replaced on the instance: a ``gr.Image``
    subclass would make Gradio write a ``.pyi`` stub next to this module.)
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    stock = component.preprocess

    def preprocess(payload: Any) -> str | None:
        if payload is None:
            return None
        if payload.path is None or (payload.url and payload.url.startswith("data:")):
            return stock(payload)  # webcam / clipboard data URLs: let Gradio write the file
        return str(payload.path)

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def open_image(path: str | None) -> Image.Image:
    """Decode an uploaded image with the library's checks; a bad file becomes a ``gr.Error``."""
    if not path:
        raise gr.Error("Add an image first: upload one, paste it, use the webcam, or pick an example.")
    try:
        return load_image(path)
    except ImageError as error:
        raise gr.Error(f"This file cannot be used as an image: {_short(error)}") from None


def _short(error: Exception) -> str:
    """The error's message without Gradio's long temporary upload path."""
    return re.sub(r"\S*/gradio/\S*/", "", str(error))


def parse_class_names(text: str | None) -> list[str]:
    """Class names typed one per line or separated by commas; blanks and repeats dropped, order kept."""
    names = [part.strip() for part in re.split(r"[,\n]", text or "")]
    return list(dict.fromkeys(name for name in names if name))


def read_descriptions(path: str | None, classes: list[str]) -> tuple[dict[str, list[str]] | None, str]:
    """An uploaded CuPL-style descriptions JSON for ``classes`` and a note about missing classes.

    Classes without an entry fall back to templates (in the app a partial file is still useful).
    """
    if not path:
        return None, ""
    try:
        descriptions = load_descriptions(path, classes, allow_missing=True)
    except DescriptionsError as error:
        raise gr.Error(f"Descriptions file: {_short(error)}") from None
    missing = [name for name, sentences in descriptions.items() if not sentences]
    note = (f"{len(missing)} of {len(classes)} classes have no descriptions and use templates "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})." if missing else "")
    return descriptions, note


def user_errors(fn: F) -> F:
    """Turn the library's user-facing errors into ``gr.Error`` (shown in the UI and to API clients).

    Other exceptions are logged with their traceback and reported as an internal error, so one
    bad request never takes the server down.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else _short(error)
            raise gr.Error(str(message)) from None
        except Exception as error:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Internal error in {fn.__name__}: {type(error).__name__}: {error}") from None

    return wrapper  # type: ignore[return-value]


def gpu(fn: F) -> F:
    """``spaces.GPU(fn)`` on HuggingFace ZeroGPU Spaces; ``fn`` itself everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn)


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    """Paths of the bundled example pictures, sorted (empty when there are none)."""
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def model_dropdown_update(names: list[str], value: str | None = None) -> gr.Dropdown:
    """A dropdown update listing ``names``; ``value`` selected if given (else the selection is left alone)."""
    if value is None:
        return gr.Dropdown(choices=names)
    return gr.Dropdown(choices=names, value=value if value in names else (names[0] if names else None))
