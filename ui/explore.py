"""The Explore tab: one image, one forward pass, and everything the model did with it.

The last ``Explanation`` and the crop it was computed on (a small JPEG) live in a ``gr.State``
(``studio.explore.ExploreSession``); display controls, the fusion slider and patch clicks re-render from it
without running the model again. Maps and charts are light HTML (``viz.explore``); nothing is written to files
but the zip *Download this explanation* asks for (``studio.export``).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import gradio as gr
from PIL import Image

from microclip.explain import explain_image
from microclip.heads import BRANCHES
from microclip.prepare import parse_class_names
from microclip.toyworld.truth import toy_truth
from studio.batch import BatchWorkspace
from studio.cache import cached, file_digest, model_identity
from studio.examples import example_images
from studio.explore import (
    BRANCH_TITLES,
    CLICK_A_PATCH,
    NOTES,
    PHOTO_SIZE,
    ExploreSession,
    checked_patch,
    classes_placeholder,
    descriptions_markdown,
    patch_markdown,
    summary_markdown,
    views,
)
from studio.export import write_explanation_zip
from studio.inflight import counts_as_inference
from studio.links import example_link, with_rho
from studio.registry import ModelRegistry
from studio.world import world_flag_markdown, world_markdown
from ui.common import (
    DOWNLOADS_KEPT,
    INFERENCE,
    ExampleRun,
    download_row,
    examples_gallery,
    gpu,
    image_input,
    on_example,
    open_image,
    read_descriptions,
    user_errors,
)
from ui.dka import build_label_view
from ui.epochs import build_epochs_view
from ui.explainers import build_explainers_view
from ui.layout import entry_fusion_ratio, follow_fusion_ratio
from ui.queries import build_queries_view
from ui.redescribe import RedescribeHandles, build_redescribe_view
from ui.walkthrough import build_erase_row
from viz import html as html_maps
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.explore import TOP_K, contributions_html
from viz.overlay import display_crop
from viz.panels import RAW_MAPS

SESSION_TTL_S = 2 * 3600  # a session's last explanation (≈100 kB with its picture) is dropped after 2 h idle

run_explain = gpu(explain_image)  # on ZeroGPU Spaces the forward pass gets a GPU; elsewhere a no-op


# ------------------------------------------------------------------ callbacks (one per endpoint)


# The display settings, in the order of their controls (_display_controls). Gradio names an endpoint's API
# parameters after its function's, so the endpoints that take them get them from here (takes_display).
DISPLAY_SETTINGS: dict[str, type] = {
    "opacity": float,
    "cmap": str,
    "clip_lo": float,
    "clip_hi": float,
    "threshold": float,
    "raw_map": str,
    "numbers": bool,
}


def takes_display(fn: Callable) -> Callable:
    """``fn(..., display)`` as Gradio calls it: the display settings come as the last separate arguments, named
    in the signature Gradio reads (``DISPLAY_SETTINGS``), and reach ``fn`` as one tuple."""
    signature = inspect.signature(fn)
    leading = [parameter for name, parameter in signature.parameters.items() if name != "display"]
    settings = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind)
        for name, kind in DISPLAY_SETTINGS.items()
    ]

    @functools.wraps(fn)
    def with_settings(*args: Any) -> Any:
        split = len(args) - len(DISPLAY_SETTINGS)
        return fn(*args[:split], tuple(args[split:]))

    with_settings.__signature__ = signature.replace(parameters=[*leading, *settings])
    with_settings.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k != "display"} | DISPLAY_SETTINGS
    return with_settings


@functools.lru_cache(maxsize=8)
def _decoded(path: str, mtime_ns: int, size: int) -> Image.Image:
    """One upload decoded once: the validator and the callback of the same request share it."""
    return open_image(path)


def decode_upload(path: str | None) -> Image.Image:
    if not path:
        return open_image(path)  # the "add an image first" message
    try:
        info = os.stat(path)
    except OSError:
        return open_image(path)  # the library's "file not found" message
    return _decoded(path, info.st_mtime_ns, info.st_size)


def check_explore(
    registry: ModelRegistry,
    image: str | None,
    model_name: str,
    class_names: str,
    descriptions_json: str | None,
    *_display,
) -> list:
    """Runs before ``explore`` (Gradio's validator): a bad input gets one message on the input itself,
    instead of an error badge on every output."""
    checks: list = [None] * (4 + len(_display))
    try:
        decode_upload(image)
    except gr.Error as error:
        checks[0] = gr.validate(False, error.message)
    try:
        registry.get(model_name)
    except KeyError as error:
        checks[1] = gr.validate(False, str(error.args[0]))
    except Exception as error:  # noqa: BLE001 - a model that cannot load: say so on the model input
        checks[1] = gr.validate(False, f"{model_name} cannot be loaded: {error}")
    if descriptions_json:
        try:
            read_descriptions(descriptions_json, parse_class_names(class_names) or ["_"])
        except gr.Error as error:
            checks[3] = gr.validate(False, error.message)
    return checks


@counts_as_inference
@user_errors
@takes_display
def explore(
    registry: ModelRegistry,
    image: str | None,
    model_name: str,
    class_names: str,
    descriptions_json: str | None,
    ratio: float,
    display: tuple,
) -> list:
    """Run the model once on an image and show everything (the ``explore`` endpoint)."""

    def compute() -> list:
        picture = decode_upload(image)
        loaded = registry.get(model_name)
        typed = parse_class_names(class_names)
        classes = typed or list(loaded.classes)
        descriptions, note = read_descriptions(descriptions_json, classes)
        model = registry.with_classes(model_name, classes, descriptions) if (typed or descriptions) else loaded.model
        explanation = run_explain(model, picture, float(ratio))
        session = ExploreSession(
            explanation,
            html_maps.jpeg_uri(display_crop(picture, PHOTO_SIZE)),
            loaded.name,
            descriptions if descriptions is not None else loaded.descriptions,
            world_flag_markdown(explanation.classes, loaded, bool(typed), picture),
            truth=toy_truth(picture, explanation.grid),
            link=None if descriptions else example_link(image, loaded.name, tab="explore", classes=typed),
        )
        return [session, *_prediction_outputs(session, note), *views(session, display), CLICK_A_PATCH]

    if not (image and os.path.isfile(image)):
        return compute()
    # The cache (studio.cache): a class asking about one picture is served once.
    loaded = registry.get(model_name)
    digests = (file_digest(image), class_names or "", file_digest(descriptions_json))
    return cached(("explore", loaded.name, model_identity(loaded.model), *digests, float(ratio), *display), compute)


@user_errors
@takes_display
def rerender(session: ExploreSession | None, display: tuple) -> list[str]:
    """Redraw the maps with new display settings; no forward pass (the ``rerender`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first; the display settings apply to its maps.")
    return views(session, display)


@user_errors
@takes_display
def fusion(session: ExploreSession | None, ratio: float, display: tuple) -> list:
    """Re-fuse the two branches at another ρ; no forward pass (the ``fusion`` endpoint).

    Only the predictions depend on ρ: the maps are left as they are (``gr.skip``)."""
    if session is None:
        raise gr.Error("Explain an image first; the fusion ratio re-weights its two branches.")
    session = replace(session, explanation=session.explanation.with_ratio(float(ratio)))
    return [session, *_prediction_outputs(session), gr.skip(), gr.skip()]


@user_errors
@takes_display
def patch_info(session: ExploreSession | None, row: float, col: float, display: tuple) -> list:
    """The numbers of one patch, and the maps with it framed (the ``patch_info`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first, then click a patch.")
    session = replace(session, selected=checked_patch(session, row, col))
    return [session, patch_markdown(session.explanation, *session.selected, session.truth), *views(session, display)]


@user_errors
@takes_display
def download(workspace: BatchWorkspace, session: ExploreSession | None, display: tuple) -> str:
    """The last explanation as a zip: the photo and the three maps as PNGs drawn with the display settings, the
    summary, every number as JSON and the settings (the ``explore_download`` endpoint; ``studio.export``)."""
    if session is None:
        raise gr.Error("Explain an image first; then its maps and numbers can be downloaded.")
    return str(write_explanation_zip(session, display, workspace.new()))


def select_patch(session: ExploreSession | None, evt: gr.EventData) -> tuple[int, int]:
    """A click on a map (the browser sends the patch's row and col) → the Patch row / col inputs."""
    if session is None:
        raise gr.Error("Explain an image first, then click a patch.")
    data = getattr(evt, "_data", None) or {}
    return int(data.get("row", 0)), int(data.get("col", 0))


@user_errors
def model_classes(registry: ModelRegistry, model_name: str) -> tuple[gr.Textbox, str]:
    """The classes a model knows (the class-name box's placeholder) and its world note (``model_classes``)."""
    loaded = registry.get(model_name)
    return gr.Textbox(placeholder=classes_placeholder(list(loaded.classes))), world_markdown(loaded)


def _prediction_outputs(session: ExploreSession, note: str = "") -> list:
    """Summary, the three top-k labels, the contribution chart and the descriptions."""
    explanation = session.explanation
    # Values, not gr.Label(...) updates: a component update makes Gradio rebuild the component's config for
    # the session (~3 ms each on a 2-core server, three per click); a disagreement is marked in the summary.
    labels = [dict(explanation.top_k(b, TOP_K)) for b in BRANCHES]
    summary = summary_markdown(explanation, note, session.flag, session.facts)
    if session.link:  # for a slide or a message (studio.links); the display settings are not in it
        link = with_rho(session.link, explanation.ratio)
        summary += f"\n\n[Link to this view]({link}) (this picture under this model at this ρ, in Explore)"
    return [
        summary,
        *labels,
        contributions_html(explanation),
        descriptions_markdown(
            explanation, session.descriptions, true_class=session.truth.true_class if session.truth else None
        ),
    ]


# ------------------------------------------------------------------ layout and wiring


@dataclass
class ExploreHandles:
    """Components other tabs update (the model list), and what an example click computes with the tab's
    defaults (to warm the cache)."""

    model: gr.Dropdown
    ratio: gr.Slider  # ρ, which follows the model chosen (set with it where another tab switches the model)
    example: Callable[[str], object]
    run_example: ExampleRun  # an example click's function, inputs and outputs (links use it)
    redescribe: RedescribeHandles  # what if the descriptions said something else: its lines, "Adapt with these"


@dataclass
class _Inputs:
    """The left column: what one forward pass is asked for."""

    image: gr.Image
    run: gr.Button
    world: gr.Markdown
    examples: list[str]
    gallery: gr.Gallery | None
    model: gr.Dropdown
    ratio: gr.Slider
    classes: gr.Textbox
    classes_panel: gr.Accordion
    descriptions: gr.File


@dataclass
class _Outputs:
    """The right column's components that events write to or read from."""

    maps: list[gr.HTML]  # the maps over the photo, the raw grid
    predictions: list  # summary, three top-k labels, contributions, descriptions
    display: list  # opacity, colormap, clip low / high, threshold, raw map, numbers
    patch_md: gr.Markdown
    row: gr.Number
    col: gr.Number
    show_patch: gr.Button
    save: gr.Button  # Download this explanation
    saved: gr.File
    redescribe: RedescribeHandles  # the typed description lines, and the button that takes them to Adapt


def build_explore_tab(registry: ModelRegistry) -> ExploreHandles:
    """Build the Explore tab inside the current ``gr.Tab`` and wire its endpoints.

    Laid out for the first screen (1400×1000): image, Explain and the model's world on the left; the
    prediction and the three maps on the right. Details (raw grid, contributions, descriptions, peers) follow.
    """
    session = gr.State(None, time_to_live=SESSION_TTL_S)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            given = _input_column(registry)
        with gr.Column(scale=2):
            shown = _output_column(registry, given)
    run_example = _wire_explore(registry, session, given, shown)
    _wire_views(registry, session, given, shown)
    defaults = [given.ratio.value, *(control.value for control in shown.display)]
    return ExploreHandles(
        model=given.model,
        ratio=given.ratio,
        example=lambda path: explore(registry, path, registry.default_name, "", None, *defaults),
        run_example=run_example,
        redescribe=shown.redescribe,
    )


def _input_column(registry: ModelRegistry) -> _Inputs:
    """The image, Explain, the model's world, the examples, the model, ρ and the user's own classes."""
    image = image_input(label="Image", sources=["upload", "webcam", "clipboard"], height=230, elem_id="explore-image")
    run = gr.Button("Explain", variant="primary", elem_id="explain-button")
    world = gr.Markdown(_world_note(registry, registry.default_name), elem_id="explore-world")
    examples = example_images()
    gallery = examples_gallery(examples, "explore-examples") if examples else None
    model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model", elem_id="explore-model")
    ratio = gr.Slider(
        0.0,
        1.0,
        value=entry_fusion_ratio(registry, registry.default_name),
        step=0.05,
        label="Fusion ratio ρ",
        elem_id="explore-ratio",
        info="Weight of [CLS] in the fused logits; starts at the model's own; moving it re-fuses without a forward "
        "pass",
    )
    with gr.Accordion("Your own classes (optional)", open=False) as classes_panel:
        classes = gr.Textbox(
            label="Class names",
            elem_id="explore-classes",
            lines=3,
            placeholder="Blank: the model's own classes. Or type your own, one per line or comma-separated.",
        )
        descriptions = gr.File(label="Descriptions JSON ({class: [sentences]})", file_types=[".json"])
    return _Inputs(
        image=image,
        run=run,
        world=world,
        examples=examples,
        gallery=gallery,
        model=model,
        ratio=ratio,
        classes=classes,
        classes_panel=classes_panel,
        descriptions=descriptions,
    )


def _output_column(registry: ModelRegistry, given: _Inputs) -> _Outputs:
    """The prediction and the maps first; the erase row, display controls, contributions, raw grid, one patch,
    the descriptions, the explainer comparison and the run's epochs after."""
    summary = gr.Markdown("Pick an image and press **Explain**.", label="summary", elem_id="explore-summary")
    maps = _maps_html("explore-maps")
    with gr.Row():
        for key in ("soap", "ncut", "cls"):
            gr.Markdown(NOTES[key])
    with gr.Row():
        labels = [gr.Label(num_top_classes=TOP_K, label=BRANCH_TITLES[b]) for b in BRANCHES]
    build_erase_row(registry, given.image, given.model, given.classes, "explore_erase_part", given.ratio)
    build_queries_view(registry, given.image, given.model, given.classes, given.ratio)
    redescribe = build_redescribe_view(
        registry, given.image, given.model, given.classes, given.ratio, given.descriptions
    )
    build_label_view(registry, given.image, given.model, given.classes, given.descriptions, redescribe.lines)
    display = _display_controls()
    save, saved = download_row(
        "Download this explanation (.zip)",
        "The maps as PNGs (as displayed), the summary, every number (JSON)",
        "explore-download",
    )
    contributions = gr.HTML("", elem_id="contributions")
    with gr.Row():
        with gr.Column():
            raw = _maps_html("raw-map")
            gr.Markdown(NOTES["raw"])
        with gr.Column():
            patch_md = gr.Markdown(CLICK_A_PATCH, label="patch", elem_id="patch-info")
            with gr.Row():
                row = gr.Number(value=0, precision=0, label="Patch row", minimum=0)
                col = gr.Number(value=0, precision=0, label="Patch col", minimum=0)
            show_patch = gr.Button("Show patch")
    descriptions_md = gr.Markdown(label="descriptions", elem_id="explore-descriptions")
    build_explainers_view(registry, given.image, given.model)
    build_epochs_view(registry, given.image, given.model)
    return _Outputs(
        maps=[maps, raw],
        predictions=[summary, *labels, contributions, descriptions_md],
        display=display,
        patch_md=patch_md,
        row=row,
        col=col,
        show_patch=show_patch,
        save=save,
        saved=saved,
        redescribe=redescribe,
    )


def _maps_html(elem_id: str) -> gr.HTML:
    return gr.HTML("", css_template=html_maps.MAPS_CSS, js_on_load=html_maps.MAPS_JS, elem_id=elem_id)


def _wire_explore(registry: ModelRegistry, session: gr.State, given: _Inputs, shown: _Outputs) -> ExampleRun:
    """The forward pass: Explain, a new upload, or an example picked (what an example runs, returned)."""
    run = dict(
        fn=partial(explore, registry),
        inputs=[given.image, given.model, given.classes, given.descriptions, given.ratio, *shown.display],
        outputs=[session, *shown.predictions, *shown.maps, shown.patch_md],
        validator=partial(check_explore, registry),
        **INFERENCE,
    )
    gr.on([given.run.click, given.image.upload], **run, api_name="explore")
    if given.gallery is not None:
        on_example(given.gallery, given.examples, given.image, **run)
    return ExampleRun(
        given.image,
        given.model,
        run["fn"],
        run["inputs"][1:],
        run["outputs"],
        ratio=given.ratio,
        classes=given.classes,
        classes_panel=given.classes_panel,
    )


def _wire_views(registry: ModelRegistry, session: gr.State, given: _Inputs, shown: _Outputs) -> None:
    """What re-renders without a forward pass: display settings, ρ, a patch; and the model's classes."""
    opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers = display = shown.display
    quiet = dict(show_progress="hidden")
    gr.on(
        [c.release for c in (opacity, threshold, clip_lo, clip_hi)] + [c.change for c in (cmap, raw_map, numbers)],
        rerender,
        [session, *display],
        shown.maps,
        api_name="rerender",
        trigger_mode="always_last",
        **quiet,
    )
    given.ratio.release(
        fusion,
        [session, given.ratio, *display],
        [session, *shown.predictions, *shown.maps],
        api_name="fusion",
        trigger_mode="always_last",
        **quiet,
    )
    patch = dict(
        fn=patch_info, inputs=[session, shown.row, shown.col, *display], outputs=[session, shown.patch_md, *shown.maps]
    )
    shown.show_patch.click(**patch, api_name="patch_info", **quiet)
    shown.save.click(
        partial(download, BatchWorkspace(keep=DOWNLOADS_KEPT, prefix="microclip-explore-")),
        [session, *display],
        shown.saved,
        api_name="explore_download",
        **quiet,
    )
    for target in shown.maps:
        target.click(select_patch, [session], [shown.row, shown.col], api_visibility="private", **quiet).then(
            **patch, api_visibility="private", **quiet
        )
    given.model.change(
        partial(model_classes, registry), [given.model], [given.classes, given.world], api_name="model_classes", **quiet
    )
    follow_fusion_ratio(given.model, given.ratio, registry)


def _display_controls() -> list:
    """The display settings (no forward pass): opacity, colormap, threshold, clipping, the raw grid's map."""
    with gr.Accordion("Display (no forward pass)", open=False):
        with gr.Row():
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
            cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_COLORMAP, label="Colormap")
            threshold = gr.Slider(
                0.0,
                1.0,
                value=0.0,
                step=0.05,
                label="Threshold",
                info="On the clipped 0–1 scale; lower values become transparent",
            )
        with gr.Row():
            clip_lo = gr.Slider(0, 99, value=0, step=1, label="Clip low percentile")
            clip_hi = gr.Slider(1, 100, value=100, step=1, label="Clip high percentile")
            raw_map = gr.Dropdown(list(RAW_MAPS), value="SOAP weight", label="Raw grid shows")
            numbers = gr.Checkbox(value=False, label="Numbers on the raw grid")
    return [opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers]


def _world_note(registry: ModelRegistry, name: str | None) -> str:
    if not name:
        return ""
    try:
        return world_markdown(registry.get(name))
    except Exception:  # noqa: BLE001 - the note is informative; a model that cannot load says so on use
        return ""
