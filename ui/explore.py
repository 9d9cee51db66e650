"""The Explore tab: one image, one forward pass, and everything the model did with it.

The last ``Explanation`` and the crop it was computed on (a small JPEG) live in a ``gr.State``; display
controls, the fusion slider and patch clicks re-render from it without running the model again. Maps
and charts go to the browser as light HTML (``viz.html``): tiny per-patch layers over one photo, scaled
up there, with colour bars labelled by the real values; nothing is written to files.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from functools import partial

import gradio as gr
from PIL import Image

from microclip.constants import DEFAULT_FUSION_RATIO
from microclip.explain import Explanation, explain_image
from microclip.heads import BRANCHES
from microclip.walkthrough import MaskFacts, PatchTruth, mask_facts, uniform_weight
from studio.cache import cached, file_digest, model_identity
from studio.inflight import counts_as_inference
from studio.registry import ModelRegistry
from studio.world import world_flag_markdown, world_markdown
from ui.common import (
    INFERENCE_CONCURRENCY,
    INFERENCE_ID,
    example_images,
    example_picker,
    examples_gallery,
    gpu,
    image_input,
    open_image,
    parse_class_names,
    read_descriptions,
    user_errors,
)
from ui.explainers import build_explainers_view
from ui.walkthrough import build_erase_row, toy_truth
from viz import html as html_maps
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.overlay import display_crop
from viz.panels import RAW_MAPS, RenderSettings, raw_values
from viz.steps import cls_fact, foreground_fact, region_phrase, soap_fact

TOP_K = 5
SESSION_TTL_S = 2 * 3600  # a session's last explanation (≈100 kB with its picture) is dropped after 2 h idle
PHOTO_SIZE = 320  # pixels of the JPEG crop under the maps; the browser scales it (the toy model sees 64)
BRANCH_TITLES = {"fused": "TokenFusion (fused)", "cls": "[CLS] only", "fg": "[FG] only"}

NOTES = {
    "soap": "**SOAP attention.** The weight each patch gets when SOAP pools the fine-grained `[FG]` token. "
    "These *are* the pooling weights, so the map is the mechanism, not a post-hoc estimate. "
    "Weight not shown here went to the null token (below).",
    "ncut": "**NCut foreground.** The patches a normalised cut of the patch-token affinity graph put in the "
    "foreground. Their mean is SOAP's query; it is a mask (on or off), not a score.",
    "cls": "**Similarity to `[CLS]`.** Cosine between each patch token and the global `[CLS]` token: what the "
    "global branch already summarises. Compare with SOAP to see what `[FG]` adds.",
    "raw": "**Raw patch grid.** The chosen map with one flat block per patch: exactly the numbers the model "
    "computed, before any upsampling. Click any map to read one patch.",
}


@dataclass(frozen=True)
class ExploreSession:
    """What the last forward pass produced, kept per browser session."""

    explanation: Explanation
    photo: str  # data URI of the model's centre crop (JPEG), encoded once and shared by every map view
    model_name: str
    descriptions: dict[str, list[str]]  # behind the classes used (may be empty)
    flag: str = ""  # the world note for this image (one-class label set, out-of-world signals)
    selected: tuple[int, int] | None = None  # last clicked patch (row, col)
    truth: PatchTruth | None = None  # where the bird and its parts are, on a known toy image

    @property
    def facts(self) -> MaskFacts | None:
        """What is true of this image, from its masks (None when they are not known)."""
        e = self.explanation
        return mask_facts(self.truth, e.ncut_mask, e.soap_weights, e.cls_similarity) if self.truth else None


run_explain = gpu(explain_image)  # on ZeroGPU Spaces the forward pass gets a GPU; elsewhere a no-op


# ------------------------------------------------------------------ callbacks (one per endpoint)


def settings_from(
    opacity: float, cmap: str, clip_lo: float, clip_hi: float, threshold: float, raw_map: str, numbers: bool
) -> RenderSettings:
    """The display controls as a ``RenderSettings`` (percentiles kept in order)."""
    lo, hi = sorted((float(clip_lo), float(clip_hi)))
    if hi - lo < 1.0:
        hi = min(100.0, lo + 1.0)
        lo = hi - 1.0
    return RenderSettings(
        float(opacity),
        cmap if cmap in COLORMAPS else DEFAULT_COLORMAP,
        lo,
        hi,
        float(threshold),
        RAW_MAPS.get(raw_map, raw_map),
        bool(numbers),
    )


def maps_html(session: ExploreSession, settings: RenderSettings) -> str:
    """The SOAP, NCut and [CLS]-similarity maps over the photo, each with its colour bar or legend."""
    e, s, selected, facts = session.explanation, settings, session.selected, session.facts
    return html_maps.maps_block(
        session.photo,
        [
            html_maps.value_figure(
                "SOAP attention",
                e.soap_weights,
                s.cmap,
                s.clip,
                s.opacity,
                s.threshold,
                selected,
                note=f"weight per patch. {soap_fact(e.soap_weights, e.null_weight, facts)}",
            ),
            html_maps.mask_figure(
                "NCut foreground",
                e.ncut_mask,
                s.opacity,
                selected,
                note=foreground_fact(int(e.ncut_mask.sum()), e.ncut_mask.size, facts),
            ),
            html_maps.value_figure(
                "Similarity to [CLS]",
                e.cls_similarity,
                s.cmap,
                s.clip,
                s.opacity,
                s.threshold,
                selected,
                note=f"cosine per patch. {cls_fact(e.cls_similarity, facts)}",
            ),
        ],
    )


def raw_html(session: ExploreSession, settings: RenderSettings) -> str:
    """The chosen map on the bare patch grid, one block per patch, optionally with its numbers."""
    label = next((name for name, key in RAW_MAPS.items() if key == settings.raw_map), settings.raw_map)
    values = raw_values(session.explanation, settings.raw_map)
    figure = html_maps.raw_figure(
        f"Raw patch grid: {label}",
        values,
        settings.cmap,
        settings.clip,
        settings.numbers,
        ".3f" if settings.raw_map == "soap" else ".2f",
        session.selected,
    )
    return html_maps.maps_block(None, [figure])  # blocks only: no photo to send again


def _views(session: ExploreSession, settings: RenderSettings) -> list[str]:
    return [maps_html(session, settings), raw_html(session, settings)]


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
def explore(
    registry: ModelRegistry,
    image: str | None,
    model_name: str,
    class_names: str,
    descriptions_json: str | None,
    ratio: float,
    opacity: float,
    cmap: str,
    clip_lo: float,
    clip_hi: float,
    threshold: float,
    raw_map: str,
    numbers: bool,
) -> list:
    """Run the model once on an image and show everything (the ``explore`` endpoint)."""
    options = (class_names, descriptions_json, ratio, opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers)
    run = functools.partial(_explore, registry, image, model_name, *options)
    if not (image and os.path.isfile(image)):
        return run()
    # The cache (studio.cache): a class asking about one picture is served once.
    loaded = registry.get(model_name)
    key = (
        "explore",
        loaded.name,
        model_identity(loaded.model),
        file_digest(image),
        class_names or "",
        file_digest(descriptions_json),
        float(ratio),
        *options[3:],
    )
    return cached(key, run)


def _explore(
    registry: ModelRegistry,
    image: str | None,
    model_name: str,
    class_names: str,
    descriptions_json: str | None,
    ratio: float,
    opacity: float,
    cmap: str,
    clip_lo: float,
    clip_hi: float,
    threshold: float,
    raw_map: str,
    numbers: bool,
) -> list:
    picture = decode_upload(image)
    loaded = registry.get(model_name)
    typed = parse_class_names(class_names)
    classes = typed or list(loaded.classes)
    descriptions, note = read_descriptions(descriptions_json, classes)
    model = registry.with_classes(model_name, classes, descriptions) if (typed or descriptions) else loaded.model
    explanation = run_explain(model, picture, float(ratio))
    flag = world_flag_markdown(explanation.classes, loaded, bool(typed), picture)
    session = ExploreSession(
        explanation,
        html_maps.jpeg_uri(display_crop(picture, PHOTO_SIZE)),
        loaded.name,
        descriptions if descriptions is not None else loaded.descriptions,
        flag,
        truth=toy_truth(picture, explanation.grid),
    )
    settings = settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers)
    return [
        session,
        *_prediction_outputs(session, note),
        *_views(session, settings),
        "Click a patch on any map to read its numbers.",
    ]


@user_errors
def rerender(
    session: ExploreSession | None,
    opacity: float,
    cmap: str,
    clip_lo: float,
    clip_hi: float,
    threshold: float,
    raw_map: str,
    numbers: bool,
) -> list[str]:
    """Redraw the maps with new display settings; no forward pass (the ``rerender`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first; the display settings apply to its maps.")
    return _views(session, settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers))


@user_errors
def fusion(
    session: ExploreSession | None,
    ratio: float,
    opacity: float,
    cmap: str,
    clip_lo: float,
    clip_hi: float,
    threshold: float,
    raw_map: str,
    numbers: bool,
) -> list:
    """Re-fuse the two branches at another ρ; no forward pass (the ``fusion`` endpoint).

    Only the predictions depend on ρ: the maps are left as they are (``gr.skip``)."""
    if session is None:
        raise gr.Error("Explain an image first; the fusion ratio re-weights its two branches.")
    session = replace(session, explanation=session.explanation.with_ratio(float(ratio)))
    return [session, *_prediction_outputs(session), gr.skip(), gr.skip()]


@user_errors
def patch_info(
    session: ExploreSession | None,
    row: float,
    col: float,
    opacity: float,
    cmap: str,
    clip_lo: float,
    clip_hi: float,
    threshold: float,
    raw_map: str,
    numbers: bool,
) -> list:
    """The numbers of one patch, and the maps with it framed (the ``patch_info`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first, then click a patch.")
    h, w = session.explanation.grid
    row, col = int(row), int(col)
    if not (0 <= row < h and 0 <= col < w):
        raise gr.Error(f"Patch ({row}, {col}) is outside the {h}×{w} patch grid.")
    session = replace(session, selected=(row, col))
    settings = settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers)
    return [session, patch_markdown(session.explanation, row, col, session.truth), *_views(session, settings)]


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
    classes = loaded.classes
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    return (
        gr.Textbox(
            placeholder=f"Blank: the model's own {len(classes)} classes ({shown}). "
            "Or type your own, one per line or comma-separated."
        ),
        world_markdown(loaded),
    )


# ------------------------------------------------------------------ text built from an explanation


def _prediction_outputs(session: ExploreSession, note: str = "") -> list:
    """Summary, the three top-k labels, the contribution chart and the descriptions."""
    explanation = session.explanation
    labels = []
    for branch in BRANCHES:
        disagrees = branch != "fused" and explanation.prediction(branch) != explanation.prediction("fused")
        labels.append(
            gr.Label(
                value=dict(explanation.top_k(branch, TOP_K)),
                label=BRANCH_TITLES[branch] + ("  ⚠ disagrees with fused" if disagrees else ""),
            )
        )
    return [
        summary_markdown(explanation, note, session.flag, session.facts),
        *labels,
        contributions_html(explanation),
        descriptions_markdown(explanation, session.descriptions),
    ]


def classes_to_show(explanation: Explanation) -> tuple[list[int], dict[int, str]]:
    """Classes for the contribution bars: the prediction, the runner-up, each branch's own pick, top 5."""
    fused_order = [explanation.classes.index(name) for name, _ in explanation.top_k("fused", len(explanation.classes))]
    marks = {fused_order[0]: "predicted"}
    if len(fused_order) > 1:
        marks[fused_order[1]] = "runner-up"
    for branch, tag in (("cls", "[CLS] pick"), ("fg", "[FG] pick")):
        marks.setdefault(explanation.prediction(branch), tag)
    shown = list(dict.fromkeys([*marks, *fused_order]))[: max(TOP_K, len(marks))]
    shown.sort(key=lambda c: -explanation.logits_fused[c])  # by fused logit, so the gaps grow downwards
    return shown, marks


def contributions_html(explanation: Explanation) -> str:
    """The [CLS] / [FG] split of the shown classes' fused logits, as an HTML chart the browser draws."""
    shown, marks = classes_to_show(explanation)
    rows = [
        html_maps.ContributionRow(explanation.classes[c], marks.get(c, ""), *explanation.contributions(c))
        for c in shown
    ]
    return html_maps.contribution_html(rows, explanation.ratio)


def summary_markdown(explanation: Explanation, note: str = "", flag: str = "", facts: MaskFacts | None = None) -> str:
    """The world flag, each branch's prediction (disagreements marked), NCut's patch count and the null weight;
    on a toy image, the true species and where the foreground and SOAP's top patch fell."""
    fused = explanation.prediction("fused")
    mask = explanation.ncut_mask
    lines = [flag, ""] if flag else []
    lines += [
        f"**Prediction: {explanation.classes[fused]}** (fused at ρ = {explanation.ratio:.2f})",
        "",
        "| branch | predicts | probability |",
        "|---|---|---|",
    ]
    for branch in BRANCHES:
        index = explanation.prediction(branch)
        flag_text = " ⚠ disagrees" if index != fused else ""
        lines.append(
            f"| {BRANCH_TITLES[branch]} | {explanation.classes[index]}{flag_text} | "
            f"{explanation.probabilities(branch)[index]:.1%} |"
        )
    if facts is not None and facts.true_class is not None:
        right = facts.true_class == explanation.classes[fused]
        lines += [
            "",
            f"**This bird is a {facts.true_class}** (the toy world drew it): the fused prediction is "
            f"{'right' if right else 'wrong'}.",
        ]
    lines += [
        "",
        f"**NCut:** {foreground_fact(int(mask.sum()), mask.size, facts)} SOAP's query is their mean. "
        f"**Null token:** {html_maps.num(explanation.null_weight, scientific=True)} of SOAP's attention; "
        "the patches share the rest.",
    ]
    if note:
        lines += ["", f"_{note}_"]
    return "\n".join(lines)


def patch_markdown(explanation: Explanation, row: int, col: int, truth: PatchTruth | None = None) -> str:
    """One patch's SOAP weight, NCut membership and cosines (and, on a toy image, what it shows)."""
    fused = explanation.prediction("fused")
    order = [explanation.classes.index(name) for name, _ in explanation.top_k("fused", 2)]
    n = explanation.soap_weights.size
    lines = [
        f"**Patch (row {row}, col {col})** of the {explanation.grid[0]}×{explanation.grid[1]} grid",
        "",
        f"- SOAP weight: **{html_maps.num(float(explanation.soap_weights[row, col]))}** (uniform weight "
        f"1/(N+1) = 1/{n + 1} = {html_maps.num(uniform_weight(n))}, N patches and the null token)",
        f"- NCut foreground: **{'yes' if explanation.ncut_mask[row, col] else 'no'}**",
        f"- cosine to `[CLS]`: **{explanation.cls_similarity[row, col]:+.3f}**",
        f"- cosine to predicted class *{explanation.classes[fused]}*: "
        f"**{explanation.patch_class_cosine[row, col, fused]:+.3f}**",
    ]
    if len(order) > 1:
        runner = order[1]
        lines.append(
            f"- cosine to runner-up *{explanation.classes[runner]}*: "
            f"**{explanation.patch_class_cosine[row, col, runner]:+.3f}**"
        )
    if truth is not None:
        lines.append(
            f"- shows: **{region_phrase(truth.region((row, col)))}** ({truth.object_share[row, col]:.0%} "
            "of its pixels on the bird, from the toy world's masks)"
        )
    return "\n".join(lines)


def descriptions_markdown(explanation: Explanation, descriptions: dict[str, list[str]], limit: int = 6) -> str:
    """The sentences behind the predicted class and the runner-up (W_LLM and W* were built from them)."""
    order = [name for name, _ in explanation.top_k("fused", 2)]
    parts = []
    for tag, name in zip(("Predicted", "Runner-up"), order):
        sentences = descriptions.get(name) or []
        parts.append(f"**{tag}: {name}**")
        if sentences:
            parts += [f"- {s}" for s in sentences[:limit]]
            if len(sentences) > limit:
                parts.append(f"- _... {len(sentences) - limit} more_")
        else:
            parts.append("- _no descriptions: this class's head was built from templates only_")
        parts.append("")
    return "\n".join(parts)


# ------------------------------------------------------------------ layout and wiring


@dataclass
class ExploreHandles:
    """Components other tabs update (the model list)."""

    model: gr.Dropdown


def build_explore_tab(registry: ModelRegistry) -> ExploreHandles:
    """Build the Explore tab inside the current ``gr.Tab`` and wire its endpoints.

    Laid out for the first screen (1400×1000): image, Explain and the model's world on the left; the
    prediction and the three maps on the right. Details (raw grid, contributions, descriptions, peers) follow.
    """
    session = gr.State(None, time_to_live=SESSION_TTL_S)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            image = image_input(
                label="Image", sources=["upload", "webcam", "clipboard"], height=230, elem_id="explore-image"
            )
            run = gr.Button("Explain", variant="primary", elem_id="explain-button")
            world = gr.Markdown(_world_note(registry, registry.default_name), elem_id="explore-world")
            examples = example_images()
            if examples:
                gallery = examples_gallery(examples, "explore-examples")
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model", elem_id="explore-model")
            ratio = gr.Slider(
                0.0,
                1.0,
                value=DEFAULT_FUSION_RATIO,
                step=0.05,
                label="Fusion ratio ρ",
                info="Weight of [CLS] in the fused logits; moving it re-fuses without a forward pass",
            )
            with gr.Accordion("Your own classes (optional)", open=False):
                classes = gr.Textbox(
                    label="Class names",
                    lines=3,
                    placeholder="Blank: the model's own classes. Or type your own, one per line or comma-separated.",
                )
                descriptions = gr.File(label="Descriptions JSON ({class: [sentences]})", file_types=[".json"])
        with gr.Column(scale=2):
            summary = gr.Markdown("Pick an image and press **Explain**.", label="summary", elem_id="explore-summary")
            maps = gr.HTML("", css_template=html_maps.MAPS_CSS, js_on_load=html_maps.MAPS_JS, elem_id="explore-maps")
            with gr.Row():
                gr.Markdown(NOTES["soap"])
                gr.Markdown(NOTES["ncut"])
                gr.Markdown(NOTES["cls"])
            with gr.Row():
                labels = [gr.Label(num_top_classes=TOP_K, label=BRANCH_TITLES[b]) for b in BRANCHES]
            build_erase_row(registry, image, model, classes, "explore_erase_part", ratio)
            display = _display_controls()
            contributions = gr.HTML("", elem_id="contributions")
            with gr.Row():
                with gr.Column():
                    raw = gr.HTML("", css_template=html_maps.MAPS_CSS, js_on_load=html_maps.MAPS_JS, elem_id="raw-map")
                    gr.Markdown(NOTES["raw"])
                with gr.Column():
                    patch_md = gr.Markdown(
                        "Click a patch on any map to read its numbers.", label="patch", elem_id="patch-info"
                    )
                    with gr.Row():
                        row = gr.Number(value=0, precision=0, label="Patch row", minimum=0)
                        col = gr.Number(value=0, precision=0, label="Patch col", minimum=0)
                    show_patch = gr.Button("Show patch")
            descriptions_md = gr.Markdown(label="descriptions")
            build_explainers_view(registry, image, model)

    opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers = display
    views = [maps, raw]
    predictions = [summary, *labels, contributions, descriptions_md]

    _explore = partial(explore, registry)
    _check = partial(check_explore, registry)
    explore_inputs = [image, model, classes, descriptions, ratio, *display]
    explore_outputs = [session, *predictions, *views, patch_md]
    gr.on(
        [run.click, image.upload],
        _explore,
        explore_inputs,
        explore_outputs,
        api_name="explore",
        concurrency_limit=INFERENCE_CONCURRENCY,
        concurrency_id=INFERENCE_ID,
        validator=_check,
    )
    if examples:
        gallery.select(example_picker(examples), None, [image], api_visibility="private", show_progress="hidden").then(
            _explore,
            explore_inputs,
            explore_outputs,
            api_visibility="private",
            concurrency_limit=INFERENCE_CONCURRENCY,
            concurrency_id=INFERENCE_ID,
            validator=_check,
        )
    gr.on(
        [c.release for c in (opacity, threshold, clip_lo, clip_hi)] + [c.change for c in (cmap, raw_map, numbers)],
        rerender,
        [session, *display],
        views,
        api_name="rerender",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    ratio.release(
        fusion,
        [session, ratio, *display],
        [session, *predictions, *views],
        api_name="fusion",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    show_patch.click(
        patch_info,
        [session, row, col, *display],
        [session, patch_md, *views],
        api_name="patch_info",
        show_progress="hidden",
    )
    for target in views:
        target.click(select_patch, [session], [row, col], api_visibility="private", show_progress="hidden").then(
            patch_info,
            [session, row, col, *display],
            [session, patch_md, *views],
            api_visibility="private",
            show_progress="hidden",
        )
    model.change(
        partial(model_classes, registry), [model], [classes, world], api_name="model_classes", show_progress="hidden"
    )
    return ExploreHandles(model=model)


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
