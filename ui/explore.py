"""The Explore tab: one image, one forward pass, and everything the model did with it.

The last ``Explanation`` and the crop it was computed on live in a ``gr.State``; display controls,
the fusion slider and patch clicks re-render from it without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import gradio as gr
import numpy as np

from microclip.constants import DEFAULT_FUSION_RATIO
from microclip.explain import Explanation, explain_image
from ui.common import (
    DISPLAY_SIZE,
    INFERENCE_CONCURRENCY,
    INFERENCE_ID,
    example_images,
    gpu,
    image_input,
    open_image,
    parse_class_names,
    read_descriptions,
    user_errors,
)
from ui.explainers import build_explainers_view
from ui.registry import ModelRegistry
from viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from viz.grid import cell_size, patch_at
from viz.overlay import display_crop
from viz.panels import RAW_MAPS, RenderSettings, render_panels
from viz.plots import contribution_figure

TOP_K = 5
SESSION_TTL_S = 2 * 3600  # a session's last explanation (≈1 MB with its picture) is dropped after 2 h idle
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
    picture: np.ndarray  # (S, S, 3) uint8: the model's centre crop at display size
    model_name: str
    descriptions: dict[str, list[str]]  # behind the classes used (may be empty)
    selected: tuple[int, int] | None = None  # last clicked patch (row, col)


run_explain = gpu(explain_image)  # on ZeroGPU Spaces the forward pass gets a GPU; elsewhere a no-op


# ------------------------------------------------------------------ callbacks (one per endpoint)

def settings_from(opacity: float, cmap: str, clip_lo: float, clip_hi: float, threshold: float, raw_map: str,
                  numbers: bool) -> RenderSettings:
    """The display controls as a ``RenderSettings`` (percentiles kept in order)."""
    lo, hi = sorted((float(clip_lo), float(clip_hi)))
    if hi - lo < 1.0:
        hi = min(100.0, lo + 1.0)
        lo = hi - 1.0
    return RenderSettings(float(opacity), cmap if cmap in COLORMAPS else DEFAULT_COLORMAP, lo, hi, float(threshold),
                          RAW_MAPS.get(raw_map, raw_map), bool(numbers))


def _panels(session: ExploreSession, settings: RenderSettings) -> list[np.ndarray]:
    panels = render_panels(session.explanation, session.picture, replace(settings, selected=session.selected))
    return [panels.soap, panels.ncut, panels.cls_similarity, panels.raw]


@user_errors
def explore(registry: ModelRegistry, image: str | None, model_name: str, class_names: str,
            descriptions_json: str | None, ratio: float, opacity: float, cmap: str, clip_lo: float, clip_hi: float,
            threshold: float, raw_map: str, numbers: bool) -> list:
    """Run the model once on an image and show everything (the ``explore`` endpoint)."""
    picture = open_image(image)
    loaded = registry.get(model_name)
    typed = parse_class_names(class_names)
    classes = typed or list(loaded.classes)
    descriptions, note = read_descriptions(descriptions_json, classes)
    model = registry.with_classes(model_name, classes, descriptions) if (typed or descriptions) else loaded.model
    explanation = run_explain(model, picture, float(ratio))
    session = ExploreSession(explanation, display_crop(picture, DISPLAY_SIZE), loaded.name,
                             descriptions if descriptions is not None else loaded.descriptions)
    settings = settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers)
    return [session, *_prediction_outputs(session, note), *_panels(session, settings),
            "Click a patch on any map to read its numbers."]


@user_errors
def rerender(session: ExploreSession | None, opacity: float, cmap: str, clip_lo: float, clip_hi: float,
             threshold: float, raw_map: str, numbers: bool) -> list[np.ndarray]:
    """Redraw the maps with new display settings; no forward pass (the ``rerender`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first; the display settings apply to its maps.")
    return _panels(session, settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers))


@user_errors
def fusion(session: ExploreSession | None, ratio: float, opacity: float, cmap: str, clip_lo: float,
           clip_hi: float, threshold: float, raw_map: str, numbers: bool) -> list:
    """Re-fuse the two branches at another ρ; no forward pass (the ``fusion`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first; the fusion ratio re-weights its two branches.")
    session = replace(session, explanation=session.explanation.with_ratio(float(ratio)))
    settings = settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers)
    return [session, *_prediction_outputs(session), *_panels(session, settings)]


@user_errors
def patch_info(session: ExploreSession | None, row: float, col: float, opacity: float, cmap: str, clip_lo: float,
               clip_hi: float, threshold: float, raw_map: str, numbers: bool) -> list:
    """The numbers of one patch, and the maps with it framed (the ``patch_info`` endpoint)."""
    if session is None:
        raise gr.Error("Explain an image first, then click a patch.")
    h, w = session.explanation.grid
    row, col = int(row), int(col)
    if not (0 <= row < h and 0 <= col < w):
        raise gr.Error(f"Patch ({row}, {col}) is outside the {h}×{w} patch grid.")
    session = replace(session, selected=(row, col))
    settings = settings_from(opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers)
    return [session, patch_markdown(session.explanation, row, col), *_panels(session, settings)]


def select_patch(session: ExploreSession | None, evt: gr.SelectData) -> tuple[int, int]:
    """A click on an overlay (display-size pixels) → the patch (row, col) under it."""
    if session is None:
        raise gr.Error("Explain an image first, then click a patch.")
    x, y = evt.index
    size = session.picture.shape[1], session.picture.shape[0]
    return patch_at(x, y, size, session.explanation.grid)


def select_raw_patch(session: ExploreSession | None, evt: gr.SelectData) -> tuple[int, int]:
    """A click on the raw grid view (blocks of ``cell_size`` pixels) → the patch under it."""
    if session is None:
        raise gr.Error("Explain an image first, then click a patch.")
    h, w = session.explanation.grid
    cell = cell_size((h, w), session.picture.shape[0])
    x, y = evt.index
    return patch_at(x, y, (w * cell, h * cell), (h, w))


@user_errors
def model_classes(registry: ModelRegistry, model_name: str) -> gr.Textbox:
    """Show which classes a model knows in the class-name box's placeholder (``model_classes``)."""
    classes = registry.get(model_name).classes
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    return gr.Textbox(placeholder=f"Blank: the model's own {len(classes)} classes ({shown}). "
                                  "Or type your own, one per line or comma-separated.")


# ------------------------------------------------------------------ text built from an explanation

def _prediction_outputs(session: ExploreSession, note: str = "") -> list:
    """Summary, the three top-k labels, the contribution bars and the descriptions."""
    explanation = session.explanation
    shown, marks = classes_to_show(explanation)
    labels = []
    for branch in ("fused", "cls", "fg"):
        disagrees = branch != "fused" and explanation.prediction(branch) != explanation.prediction("fused")
        labels.append(gr.Label(value=dict(explanation.top_k(branch, TOP_K)),
                               label=BRANCH_TITLES[branch] + ("  ⚠ disagrees with fused" if disagrees else "")))
    return [summary_markdown(explanation, note), *labels, contribution_figure(explanation, shown, marks),
            descriptions_markdown(explanation, session.descriptions)]


def classes_to_show(explanation: Explanation) -> tuple[list[int], dict[int, str]]:
    """Classes for the contribution bars: the prediction, the runner-up, each branch's own pick, top 5."""
    fused_order = [explanation.classes.index(name) for name, _ in explanation.top_k("fused", len(explanation.classes))]
    marks = {fused_order[0]: "predicted"}
    if len(fused_order) > 1:
        marks[fused_order[1]] = "runner-up"
    for branch, tag in (("cls", "[CLS] pick"), ("fg", "[FG] pick")):
        marks.setdefault(explanation.prediction(branch), tag)
    shown = list(dict.fromkeys([*marks, *fused_order]))[:max(TOP_K, len(marks))]
    return shown, marks


def summary_markdown(explanation: Explanation, note: str = "") -> str:
    """Each branch's prediction (disagreements marked) and the null token's share."""
    fused = explanation.prediction("fused")
    lines = [f"**Prediction: {explanation.classes[fused]}** (fused at ρ = {explanation.ratio:.2f})", "",
             "| branch | predicts | probability |", "|---|---|---|"]
    for branch in ("fused", "cls", "fg"):
        index = explanation.prediction(branch)
        flag = " ⚠ disagrees" if index != fused else ""
        lines.append(f"| {BRANCH_TITLES[branch]} | {explanation.classes[index]}{flag} | "
                     f"{explanation.probabilities(branch)[index]:.1%} |")
    lines += ["", f"**Null token:** SOAP gave {explanation.null_weight:.1%} of its attention to the null token "
                  "(\"nothing here is worth pooling\"); the SOAP map shows the rest, spread over the patches."]
    if note:
        lines += ["", f"_{note}_"]
    return "\n".join(lines)


def patch_markdown(explanation: Explanation, row: int, col: int) -> str:
    """One patch's SOAP weight, NCut membership and cosines."""
    fused = explanation.prediction("fused")
    order = [explanation.classes.index(name) for name, _ in explanation.top_k("fused", 2)]
    lines = [f"**Patch (row {row}, col {col})** of the {explanation.grid[0]}×{explanation.grid[1]} grid", "",
             f"- SOAP weight: **{explanation.soap_weights[row, col]:.4f}** "
             f"(uniform would be {(1 - explanation.null_weight) / explanation.soap_weights.size:.4f})",
             f"- NCut foreground: **{'yes' if explanation.ncut_mask[row, col] else 'no'}**",
             f"- cosine to `[CLS]`: **{explanation.cls_similarity[row, col]:+.3f}**",
             f"- cosine to predicted class *{explanation.classes[fused]}*: "
             f"**{explanation.patch_class_cosine[row, col, fused]:+.3f}**"]
    if len(order) > 1:
        runner = order[1]
        lines.append(f"- cosine to runner-up *{explanation.classes[runner]}*: "
                     f"**{explanation.patch_class_cosine[row, col, runner]:+.3f}**")
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
    """Build the Explore tab inside the current ``gr.Tab`` and wire its endpoints."""
    session = gr.State(None, time_to_live=SESSION_TTL_S)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            image = image_input(label="Image", sources=["upload", "webcam", "clipboard"], height=300,
                                elem_id="explore-image")
            examples = example_images()
            if examples:
                gallery = gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Examples",
                                      examples_per_page=12)
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model", elem_id="explore-model")
            classes = gr.Textbox(label="Class names (optional)", lines=3,
                                 placeholder="Blank: the model's own classes. Or type your own, one per line or "
                                             "comma-separated.")
            descriptions = gr.File(label="Descriptions JSON (optional: {class: [sentences]})", file_types=[".json"])
            ratio = gr.Slider(0.0, 1.0, value=DEFAULT_FUSION_RATIO, step=0.05, label="Fusion ratio ρ",
                              info="Weight of [CLS] in the fused logits; moving it re-fuses without a forward pass")
            run = gr.Button("Explain", variant="primary", elem_id="explain-button")
        with gr.Column(scale=2):
            summary = gr.Markdown("Pick an image and press **Explain**.", label="summary", elem_id="explore-summary")
            with gr.Row():
                labels = [gr.Label(num_top_classes=TOP_K, label=BRANCH_TITLES[b]) for b in ("fused", "cls", "fg")]
            with gr.Row():
                soap_image = gr.Image(label="SOAP attention", format="png", interactive=False, elem_id="soap-map")
                ncut_image = gr.Image(label="NCut foreground", format="png", interactive=False, elem_id="ncut-map")
                cls_image = gr.Image(label="Similarity to [CLS]", format="png", interactive=False,
                                     elem_id="cls-map")
            with gr.Row():
                gr.Markdown(NOTES["soap"])
                gr.Markdown(NOTES["ncut"])
                gr.Markdown(NOTES["cls"])
            with gr.Accordion("Display (no forward pass)", open=True):
                with gr.Row():
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                    cmap = gr.Dropdown(list(COLORMAPS), value=DEFAULT_COLORMAP, label="Colormap")
                    threshold = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Threshold",
                                          info="On the clipped 0–1 scale; lower values become transparent")
                with gr.Row():
                    clip_lo = gr.Slider(0, 99, value=0, step=1, label="Clip low percentile")
                    clip_hi = gr.Slider(1, 100, value=100, step=1, label="Clip high percentile")
                    raw_map = gr.Dropdown(list(RAW_MAPS), value="SOAP weight", label="Raw grid shows")
                    numbers = gr.Checkbox(value=False, label="Numbers on the raw grid")
            with gr.Row():
                with gr.Column():
                    raw_image = gr.Image(label="Raw patch grid", format="png", interactive=False, elem_id="raw-map")
                    gr.Markdown(NOTES["raw"])
                with gr.Column():
                    patch_md = gr.Markdown("Click a patch on any map to read its numbers.", label="patch",
                                           elem_id="patch-info")
                    with gr.Row():
                        row = gr.Number(value=0, precision=0, label="Patch row", minimum=0)
                        col = gr.Number(value=0, precision=0, label="Patch col", minimum=0)
                    show_patch = gr.Button("Show patch")
            contributions = gr.Plot(label="[CLS] and [FG] contributions", elem_id="contributions")
            descriptions_md = gr.Markdown(label="descriptions")
            build_explainers_view(registry, image, model)

    display = [opacity, cmap, clip_lo, clip_hi, threshold, raw_map, numbers]
    maps = [soap_image, ncut_image, cls_image, raw_image]
    predictions = [summary, *labels, contributions, descriptions_md]

    _explore = partial(explore, registry)
    explore_inputs = [image, model, classes, descriptions, ratio, *display]
    explore_outputs = [session, *predictions, *maps, patch_md]
    gr.on([run.click, image.upload], _explore, explore_inputs, explore_outputs, api_name="explore",
          concurrency_limit=INFERENCE_CONCURRENCY, concurrency_id=INFERENCE_ID)
    if examples:
        gallery.load_input_event.then(_explore, explore_inputs, explore_outputs, api_visibility="private",
                                      concurrency_limit=INFERENCE_CONCURRENCY, concurrency_id=INFERENCE_ID)
    gr.on([c.release for c in (opacity, threshold, clip_lo, clip_hi)] + [c.change for c in (cmap, raw_map, numbers)],
          rerender, [session, *display], maps, api_name="rerender", trigger_mode="always_last",
          show_progress="hidden")
    ratio.release(fusion, [session, ratio, *display], [session, *predictions, *maps], api_name="fusion",
                  trigger_mode="always_last", show_progress="hidden")
    show_patch.click(patch_info, [session, row, col, *display], [session, patch_md, *maps], api_name="patch_info",
                     show_progress="hidden")
    for target, handler in ((soap_image, select_patch), (ncut_image, select_patch), (cls_image, select_patch),
                            (raw_image, select_raw_patch)):
        target.select(handler, [session], [row, col], api_visibility="private", show_progress="hidden").then(
            patch_info, [session, row, col, *display], [session, patch_md, *maps], api_visibility="private",
            show_progress="hidden")
    model.change(partial(model_classes, registry), [model], [classes], api_name="model_classes",
                 show_progress="hidden")
    return ExploreHandles(model=model)
