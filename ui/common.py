"""Helpers every tab shares: safe image input, class-name parsing, error translation, GPU wrapping.

Nothing here computes anything about the method; it turns user input into library calls and
library errors into messages a user can act on.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import gradio as gr
from PIL import Image

from microclip.data.descriptions import DescriptionsError, load_descriptions
from microclip.data.images import ImageError, load_image
from microclip.errors import USER_ERRORS
from microclip.prepare import parse_class_names
from studio.examples import example_label
from studio.inflight import INFERENCE_CONCURRENCY

if TYPE_CHECKING:
    from microclip.model import MicroCLIP
    from studio.registry import LoadedModel, ModelRegistry

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DISPLAY_SIZE = 448  # pixels of the square crop the explainer comparison draws on (Explore sends a small JPEG)
INFERENCE_ID = "inference"
INFERENCE = {"concurrency_limit": INFERENCE_CONCURRENCY, "concurrency_id": INFERENCE_ID}  # every forward pass's event

# The library's user errors, and the registry's unknown model names (a KeyError whose message says which).
APP_USER_ERRORS: tuple[type[Exception], ...] = (*USER_ERRORS, KeyError)


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
    note = (
        f"{len(missing)} of {len(classes)} classes have no descriptions and use templates "
        f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})."
        if missing
        else ""
    )
    return descriptions, note


def user_errors(fn: F) -> F:
    """Turn the library's user-facing errors into ``gr.Error`` (shown in the UI and to API clients).

    A user error is logged as one line, without a traceback (Gradio would print one for every ``gr.Error``);
    other exceptions are logged with their traceback and reported as an internal error, so one bad request
    never takes the server down.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as error:
            log.warning("%s: %s", fn.__name__, error.message)
            error.print_exception = False
            raise
        except APP_USER_ERRORS as error:
            message = str(error.args[0] if isinstance(error, KeyError) and error.args else _short(error))
            log.warning("%s: %s", fn.__name__, message)
            raise gr.Error(message, print_exception=False) from None
        except Exception as error:
            log.exception("unexpected error in %s", fn.__name__)  # a bug: its traceback, once
            raise gr.Error(
                f"Internal error in {fn.__name__}: {type(error).__name__}: {error}", print_exception=False
            ) from None

    return wrapper  # type: ignore[return-value]


def gpu(fn: F) -> F:
    """``spaces.GPU(fn)`` on HuggingFace ZeroGPU Spaces; ``fn`` itself everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn)


MAPS_GALLERY_IDS = ("epochs-gallery", "explainers-gallery")
EXAMPLES_GALLERY_IDS = ("walkthrough-examples", "explore-examples", "compare-examples")
# Gradio 6 gives a height="auto" gallery a fixed-height box (at least 450 px on a wide screen, at most 55% of the
# window): one row of maps sat above a band of empty space, three rows scrolled. The maps galleries take the height
# of their rows instead. A gallery's label floats over the box's top left corner, covering the first row's top: the
# maps galleries get a band above the first row (which also clears their buttons, top right); the examples
# galleries, whose labels run to two lines in their narrow column (35 px covered) and which have no buttons, take the
# label into the flow. Passed to demo.launch (Gradio 6 takes page CSS there), with launch_kwargs.
DOWNLOAD_CLASS = "mc-download"  # a file box the app writes into (PAGE_CSS keeps it one line high until it has a file)
PAGE_CSS = "\n".join(
    [f"#{name} .fixed-height {{ min-height: 0; max-height: none; }}" for name in MAPS_GALLERY_IDS]
    + [f"#{name} .grid-wrap {{ padding-top: var(--size-8); }}" for name in MAPS_GALLERY_IDS]
    + [f'#{name} [data-testid="block-label"] {{ position: relative; }}' for name in EXAMPLES_GALLERY_IDS]
    # the epoch timeline's tables are dense rows of numbers: less than the default cell padding keeps a run's classes
    # (16 for the toy world, in six columns) on one screen
    + ["#epochs-table td, #epochs-table th { padding: var(--size-1) var(--size-2); }"]
    # a download row's box before its first file: an empty file box is a 260-pixel drop zone (a button beside it grew
    # to match), for a link that is one line once it is there
    + [f".{DOWNLOAD_CLASS} .empty.large {{ min-height: 0; height: 48px; }}"]
)


def maps_gallery(label: str, columns: int, elem_id: str) -> gr.Gallery:
    """A gallery of map pictures (PNG, each with its caption), as many to a row as ``columns``, none clipped.

    ``elem_id`` is one of ``MAPS_GALLERY_IDS``, whose boxes ``PAGE_CSS`` fits to their rows."""
    return gr.Gallery(
        label=label,
        columns=columns,
        height="auto",
        format="png",
        object_fit="contain",
        allow_preview=True,
        elem_id=elem_id,
    )


def examples_gallery(paths: list[str], elem_id: str) -> gr.Gallery:
    """Labelled example thumbnails; a click on one is read with ``example_picker``."""
    gr.set_static_paths([str(Path(p).parent) for p in paths[:1]])  # served as they are, no copy per request
    return gr.Gallery(
        [(path, example_label(path)) for path in paths],
        label="Examples: toy birds (the model's world) first; the last ones (⚠) are outside it",
        columns=3,
        height="auto",
        allow_preview=False,
        buttons=[],
        elem_id=elem_id,
        interactive=False,
    )


@dataclass(frozen=True)
class ExampleRun:
    """What a tab computes for one of its examples: ``fn(path, *inputs)`` gives ``outputs``; ``image`` shows the
    path and ``model`` is the tab's model list (one of ``inputs``). An example click runs it, and so does a link to
    the example (ui.links)."""

    image: gr.Image
    model: gr.Dropdown
    fn: Callable
    inputs: list
    outputs: list
    ratio: gr.Slider | None = None  # a ρ among ``inputs`` that follows the model chosen (Explore's)
    classes: gr.Textbox | None = None  # the class-name box among ``inputs``, which a link may fill
    classes_panel: gr.Accordion | None = None  # the closed panel that box sits in, opened when a link fills it

    def position(self, component: gr.components.Component) -> int:
        """Where ``component`` is among ``inputs`` (by identity: a link replaces its value)."""
        return next(i for i, given in enumerate(self.inputs) if given is component)


def on_example(
    gallery: gr.Gallery, paths: list[str], image: gr.Image, fn: Callable, inputs: list, outputs: list, **options: Any
) -> None:
    """A click on an example thumbnail shows it in ``image`` and runs ``fn`` on it, in one event.

    ``fn``, ``inputs`` and ``outputs`` are the tab's own listener's, with ``image`` its first input. One event,
    not a select and a ``.then``: every Gradio event costs a 2-core server ~15 ms of its own work, and thirty
    students click the same example at once. The tab's validator is not needed: the picture is one of ours.
    """
    if inputs[0] is not image:
        raise ValueError("on_example: the listener's first input must be the image the example goes into")
    options.pop("validator", None)

    def picked(evt: gr.SelectData, *rest: Any) -> list:
        path = paths[int(evt.index)]
        return [path, *fn(path, *rest)]

    gallery.select(picked, inputs[1:], [image, *outputs], api_visibility="private", **options)


# Each download is written into its own folder, which Gradio copies into its cache as the call returns; a class
# pressing a download button at once must not push a folder out before its copy is made (the Batch tab's 8 are
# bundles of up to 200 images; these are one picture's, about 1 MB at most).
DOWNLOADS_KEPT = 64


def typed_model(
    registry: ModelRegistry, model_name: str | None, class_names: str | None
) -> tuple[LoadedModel, MicroCLIP, list[str]]:
    """The registry's entry, the model that answers (the entry's own, or with heads for the classes the user typed,
    cached by the registry) and the typed classes (empty: the entry's own)."""
    loaded = registry.get(model_name or None)
    typed = parse_class_names(class_names)
    return loaded, registry.with_classes(model_name or None, typed) if typed else loaded.model, typed


def download_row(button: str, file_label: str, elem_id: str) -> tuple[gr.Button, gr.File]:
    """A button that writes a file and the box its download link appears in (``<elem_id>-button``, ``<elem_id>``)."""
    with gr.Row(equal_height=True):
        save = gr.Button(button, elem_id=f"{elem_id}-button", scale=1)
        saved = gr.File(
            label=file_label, interactive=False, height=90, elem_id=elem_id, elem_classes=DOWNLOAD_CLASS, scale=2
        )
    return save, saved


def model_dropdown_update(names: list[str], value: str | None = None) -> gr.Dropdown:
    """A dropdown update listing ``names``; ``value`` selected if given (else the selection is left alone)."""
    if value is None:
        return gr.Dropdown(choices=names)
    return gr.Dropdown(choices=names, value=value if value in names else (names[0] if names else None))
