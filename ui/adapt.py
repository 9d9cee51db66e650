"""The Adapt tab: a short label-free adaptation on the user's images, watched live.

Every callback here returns at once: Start queues a job on the `AdaptationRunner` (its own
thread), a `gr.Timer` polls the runner's snapshot while the job is live, Stop and Save act on the
job by id. So Explore keeps answering while a run goes.

Named API endpoints (for ``gradio_client``): ``adapt_start``, ``adapt_status``, ``adapt_stop``,
``adapt_save``; the job id returned by ``adapt_start`` is the handle for the other three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from html import escape
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from microclip.explain import Explanation
from studio.jobs import (
    AdaptationRunner,
    AdaptRequest,
    JobSnapshot,
    Probes,
    QueueFullError,
    parse_classnames,
    snapshot_summary,
)
from studio.sharing import ServerPathGuard, ServerPaths
from ui.common import model_dropdown_update, user_errors
from viz.colormaps import DEFAULT_COLORMAP
from viz.html import jpeg_uri
from viz.overlay import overlay_map

log = logging.getLogger(__name__)

SOURCES = {"toy world": "toybirds", "upload a zip": "zip", "folder on the server": "folder"}
PROBE_SIZE = 224  # pixels of each probe map (the browser scales it to its card)
DEFAULT_STEPS = 150  # the toy run's default: long enough to watch the curves move and to press Stop
DEFAULT_TOY_PER_CLASS = 8
POLL_SECONDS = 1.0
CURVE_TYPES = {"step": "int64", "value": "float64", "series": "object"}

INTRO = """\
**Adapt** a model to your images without labels (docs/method.md §1.2): each image is pseudo-labelled from its weak
view and K crops, then the visual LayerNorms, SOAP and W* train on a strong view. Runs are short on purpose.
"""

CURVES_NOTE = """\
*Loss* = cross-entropy on the pseudo-labels + fairness regulariser, per step (raw, noisy: each step sees another
batch) and smoothed (an exponential moving average, weight 0.9 on the past, debiased). *Confidence* = mean top
score of the pseudo-labels. *Pseudo-label accuracy* (%) needs class folders: how often the pseudo-labels match the
folder names (combined, crops·W_LLM, fused·W*); training never sees those labels.
"""

PROBES_NOTE = """\
SOAP maps of pinned probe images: where the `[FG]` token pools, before training and at the latest point (end of
run, or *Refresh maps* during it). Caption: true class (folder) → fused prediction, and the map's range: each map
is coloured on its own scale, from its lowest patch to its highest (the app's default colormap, as in Explore).
"""
SMOOTHING = 0.9  # weight of the past in the loss curve's moving average


@dataclass(frozen=True)
class AdaptHandles:
    """Components another tab may listen to (e.g. switch Explore to ``saved_name`` when it changes)."""

    saved_name: gr.Textbox
    use_saved: gr.Button  # "Use it in Explore": the only way a saved model replaces the one Explore shows


# ------------------------------------------------------------------ pure helpers (no Gradio state)


def curves(snapshot: JobSnapshot | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Long-format frames (step, value, series) for the loss (raw and smoothed), confidence and accuracy plots."""
    metrics = snapshot.metrics if snapshot else []

    def frame(keys: dict[str, str], rows_in: list[dict] = metrics) -> pd.DataFrame:
        rows = [
            {"step": row["step"], "value": row[key], "series": label}
            for row in rows_in
            for key, label in keys.items()
            if key in row
        ]
        # Typed even when empty: an empty frame's columns are `object`, and Gradio's LinePlot then declares
        # step and value nominal (categorical axes, one label per loss value) for the rest of the run.
        return pd.DataFrame(rows, columns=["step", "value", "series"]).astype(CURVE_TYPES)

    losses = [row["loss"] for row in metrics if "loss" in row]
    smoothed = [
        {"step": row["step"], "smooth": value}
        for row, value in zip([r for r in metrics if "loss" in r], smooth(losses))
    ]
    loss = pd.concat([frame({"loss": "loss"}), frame({"smooth": "smoothed"}, smoothed)], ignore_index=True)
    return (
        loss.astype(CURVE_TYPES),
        frame({"pl_conf": "confidence"}),
        frame({"pl_acc": "combined", "pl_acc_static": "crops · W_LLM", "pl_acc_dynamic": "fused · W*"}),
    )


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, debiased (divided by 1 − weight^t) so the first points are not pulled to 0."""
    out, average = [], 0.0
    for t, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**t))
    return out


def probe_gallery(
    images: list[np.ndarray], labels: list[str], probes: Probes | None, when: str
) -> list[tuple[np.ndarray, str]]:
    """(SOAP overlay, caption) for each probe image."""
    if probes is None:
        return []
    return [
        (_overlay(picture, explanation), _caption(label, explanation, when))
        for picture, label, explanation in zip(images, labels, probes.explanations)
    ]


def probes_html(snapshot: JobSnapshot | None) -> str:
    """One card per probe: its SOAP map before training and at the latest point, with full captions (HTML,
    so captions wrap instead of being cut and every card stays whole at any width)."""
    if snapshot is None or snapshot.probes_before is None:
        return "<div class='ad-probes-empty'>Probe maps appear here when a run has started.</div>"
    latest = snapshot.probes_latest
    cards = []
    for index, (picture, label) in enumerate(zip(snapshot.probe_images, snapshot.probe_labels)):
        figures = []
        for when, probes in (("before", snapshot.probes_before), (f"step {_probe_step(latest)}", latest)):
            if probes is None or index >= len(probes.explanations):
                figures.append(
                    f"<figure class='ad-fig ad-wait'><div class='ad-none'>{escape(when_pending(snapshot))}"
                    "</div></figure>"
                )
                continue
            explanation = probes.explanations[index]
            figures.append(
                f"<figure class='ad-fig'><img src='{jpeg_uri(_overlay(picture, explanation))}' "
                f"alt='SOAP map {escape(when)}'><figcaption>{escape(_caption(label, explanation, when))}"
                "</figcaption></figure>"
            )
        cards.append(f"<div class='ad-probe'><b>{escape(label)}</b><div class='ad-pair'>{''.join(figures)}</div></div>")
    return f"{PROBES_CSS}<div class='ad-probes'>{''.join(cards)}</div>"


def when_pending(snapshot: JobSnapshot) -> str:
    return "latest: at the end of the run, or press Refresh maps" if not snapshot.status.finished else "no maps"


PROBES_CSS = """<style>
.ad-probes { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px; }
.ad-probe { border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; padding: 6px 8px; }
.ad-probe > b { display: block; font-size: 13px; margin-bottom: 4px; overflow-wrap: anywhere; }
.ad-pair { display: flex; gap: 8px; }
.ad-fig { margin: 0; flex: 1 1 0; min-width: 0; }
.ad-fig img { width: 100%; height: auto; display: block; border-radius: 4px; image-rendering: auto; }
.ad-fig figcaption { font-size: 12px; line-height: 1.3; margin-top: 3px; overflow-wrap: anywhere; }
.ad-none { aspect-ratio: 1; display: flex; align-items: center; justify-content: center; text-align: center;
  font-size: 12px; opacity: .7; border: 1px dashed var(--border-color-primary, #ccc); border-radius: 4px; }
</style>"""


def _caption(label: str, explanation: Explanation, when: str) -> str:
    index = explanation.prediction("fused")
    probability = explanation.probabilities("fused")[index]
    weights = explanation.soap_weights
    return (
        f"{when}: {label} → {explanation.classes[index]} ({probability:.0%}) · SOAP "
        f"{weights.min():.2e} (lowest) – {weights.max():.2e} (highest)"
    )


def _overlay(picture: np.ndarray, explanation: Explanation) -> np.ndarray:
    large = np.asarray(Image.fromarray(picture).resize((PROBE_SIZE, PROBE_SIZE), Image.BICUBIC))
    return overlay_map(large, explanation.soap_weights, opacity=0.5, cmap=DEFAULT_COLORMAP)


def progress_html(snapshot: JobSnapshot | None) -> str:
    """A plain HTML progress bar (gr.Progress only lives inside the event that started it)."""
    if snapshot is None:
        return "<div>no run yet</div>"
    total = max(snapshot.total_steps, 1)
    return (
        f"<div><progress value='{snapshot.step}' max='{total}' style='width:100%'></progress>"
        f"<div>step {snapshot.step} / {snapshot.total_steps or '?'} · {snapshot.elapsed_s:.0f} s</div></div>"
    )


def skipped_markdown(snapshot: JobSnapshot | None) -> str:
    if not snapshot or not snapshot.skipped:
        return ""
    lines = [f"- `{name}`: {reason}" for name, reason in snapshot.skipped[:50]]
    more = f"\n- ... and {len(snapshot.skipped) - 50} more" if len(snapshot.skipped) > 50 else ""
    return f"**Skipped {len(snapshot.skipped)} file(s):**\n" + "\n".join(lines) + more


def status_markdown(snapshot: JobSnapshot | None) -> str:
    if snapshot is None:
        return "No run yet: choose the data and press **Start**."
    text = f"**{snapshot_summary(snapshot)}**"
    if snapshot.classes:
        kind = "labelled by folders" if snapshot.labelled else "unlabelled"
        text += f"  \n{snapshot.n_images} images, {len(snapshot.classes)} classes ({kind})"
    if snapshot.saved_name:
        text += (
            f"  \nsaved as **{snapshot.saved_name}** (in the runs folder, listed again after a restart). "
            "Explore and the Walkthrough keep the model they show until you press **Use it in Explore** "
            "or pick it in their Model list."
        )
    return text


# ------------------------------------------------------------------ the tab


def build_adapt_tab(registry, runner: AdaptationRunner, server_paths: ServerPathGuard | None = None) -> AdaptHandles:
    """Build the Adapt tab inside the current ``gr.Tab`` context and wire its endpoints.

    The folder source is drawn disabled, with the reason, when server folders are off (``studio.sharing``
    or the runner's own setting); each request is checked again.
    """
    limits = runner.limits
    guard = server_paths or ServerPathGuard()

    def folders_now(request: bool = False) -> ServerPaths:
        return guard.now(request, turned_off=not runner.allow_local_paths)

    folders = folders_now()
    sources = list(SOURCES)
    gr.Markdown(INTRO)
    # Laid out for a projector (1400×1000): what to choose, Start and Stop on the left; the status, the progress
    # and the curves beside them, so a run is watched without scrolling. Less used settings and Save below.
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            names = registry.names()
            model = gr.Dropdown(
                names,
                value=registry.default_name,
                label="Start from the base model of",
                info="A fresh copy of this entry's base model is adapted (never the entry itself).",
            )
            source = gr.Radio(sources, value=sources[0], label="Data")
            archive = gr.File(
                label="Zip of images (class folders give labels)",
                file_types=[".zip"],
                type="filepath",
                visible=False,
                height=110,
            )
            folder = gr.Textbox(
                label="Folder on the server",
                visible=False,
                info=folders.reason,
                placeholder="/path/to/images" if folders.allowed else "off: upload a zip instead",
                interactive=folders.allowed,
                elem_id="adapt-folder",
            )
            toy_per_class = gr.Slider(
                2,
                limits.max_toy_per_class,
                value=min(DEFAULT_TOY_PER_CLASS, limits.max_toy_per_class),
                step=1,
                label="Toy world: images per class",
            )
            steps = gr.Slider(
                1,
                limits.max_steps,
                value=min(DEFAULT_STEPS, limits.max_steps),
                step=1,
                label="Steps",
                info="Stop ends a run early; what it learned so far is kept.",
            )
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="adapt-start")
                stop = gr.Button("Stop", variant="stop", elem_id="adapt-stop")
        with gr.Column(scale=3, min_width=600):
            status = gr.Markdown(status_markdown(None), elem_id="adapt-status")
            progress = gr.HTML(progress_html(None), elem_id="adapt-progress")
            with gr.Row():
                loss_plot = gr.LinePlot(
                    x="step",
                    y="value",
                    color="series",
                    title="Loss (raw and smoothed)",
                    height=230,
                    scale=4,
                    elem_id="adapt-loss",
                )
                conf_plot = gr.LinePlot(
                    x="step",
                    y="value",
                    title="Pseudo-label confidence",
                    height=230,
                    scale=3,
                    elem_id="adapt-confidence",
                )
                acc_plot = gr.LinePlot(
                    x="step",
                    y="value",
                    color="series",
                    title="Pseudo-label accuracy (%)",
                    height=230,
                    scale=4,
                    elem_id="adapt-accuracy",
                )
            gr.Markdown(CURVES_NOTE)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            with gr.Accordion("More settings", open=False):
                classnames = gr.Textbox(
                    label="Class names (optional)",
                    lines=2,
                    placeholder="one per line or comma-separated; default: the folder names",
                )
                descriptions = gr.File(
                    label="Descriptions JSON (optional, {class: [sentence, ...]})",
                    file_types=[".json"],
                    type="filepath",
                    height=110,
                )
                allow_missing = gr.Checkbox(label="Allow missing descriptions (those classes use templates)")
                batch = gr.Slider(
                    1, limits.max_batch_size, value=min(16, limits.max_batch_size), step=1, label="Batch size"
                )
                lr = gr.Slider(1e-5, min(1e-3, limits.max_lr), value=1e-4, step=1e-5, label="Learning rate")
                n_crops = gr.Slider(
                    1, limits.max_crops, value=min(4, limits.max_crops), step=1, label="Crops per image (K)"
                )
                n_probes = gr.Slider(
                    0, limits.max_probes, value=min(4, limits.max_probes), step=1, label="Probe images"
                )
            save_name = gr.Textbox(label="Checkpoint name (optional)", placeholder="adapted · <data> · job <id>")
            save = gr.Button("Save checkpoint", elem_id="adapt-save")
            use_saved = gr.Button("Use it in Explore", elem_id="adapt-use-saved")
            checkpoint = gr.File(label="Saved checkpoint (.safetensors)", interactive=False, height=110)
        with gr.Column(scale=3, min_width=600):
            gr.Markdown(PROBES_NOTE)
            probes = gr.HTML(probes_html(None), elem_id="adapt-probes")
            refresh_maps = gr.Button("Refresh maps now", size="sm")
            skipped = gr.Markdown()
            with gr.Accordion("Run details", open=False):
                job_id = gr.Textbox(label="Job id (the API handle)", interactive=False)
                saved_name = gr.Textbox(label="Registered model name", interactive=False)
                refresh = gr.Button("Refresh status", size="sm")
    timer = gr.Timer(POLL_SECONDS, active=False)
    shown = gr.State(None)  # which probe maps are shown, so polls resend images only on change

    def choose_source(choice: str) -> tuple[Any, Any, Any]:
        value = SOURCES[choice]
        return (
            gr.File(visible=value == "zip"),
            gr.Textbox(visible=value == "folder"),
            gr.Slider(visible=value == "toybirds"),
        )

    source.change(choose_source, source, [archive, folder, toy_per_class], api_visibility="private")
    model.focus(
        lambda value: model_dropdown_update(registry.names(), value),
        model,
        model,
        api_visibility="private",
        queue=False,
    )

    @user_errors
    def start_run(
        model_name: str | None,
        source_choice: str,
        archive_path: str | None,
        folder_path: str,
        per_class: float,
        class_text: str,
        descriptions_path: str | None,
        allow: bool,
        n_steps: float,
        batch_size: float,
        learning_rate: float,
        crops: float,
        probes: float,
    ) -> tuple[Any, ...]:
        """Queue an adaptation; returns the job id and the first status."""
        source_value = SOURCES.get(source_choice, source_choice)  # API clients may pass 'toybirds' etc.
        if source_value == "folder" and not (now := folders_now(request=True)).allowed:
            raise gr.Error(now.reason)
        request = AdaptRequest(
            source=source_value,
            path=archive_path if source_value == "zip" else (folder_path or "").strip() or None,
            model_name=model_name or None,
            classnames=parse_classnames(class_text),
            descriptions_path=descriptions_path or None,
            allow_missing_descriptions=bool(allow),
            steps=int(n_steps),
            batch_size=int(batch_size),
            lr=float(learning_rate),
            n_crops=int(crops),
            n_probes=int(probes),
            toy_per_class=int(per_class),
        )
        try:
            new_id = runner.submit(request)
        except QueueFullError as error:
            raise gr.Error(str(error)) from None
        snapshot = runner.status(new_id)
        return new_id, status_markdown(snapshot), progress_html(snapshot), None, "", gr.Timer(active=True)

    start.click(
        start_run,
        [
            model,
            source,
            archive,
            folder,
            toy_per_class,
            classnames,
            descriptions,
            allow_missing,
            steps,
            batch,
            lr,
            n_crops,
            n_probes,
        ],
        [job_id, status, progress, checkpoint, saved_name, timer],
        api_name="adapt_start",
        concurrency_limit=None,
    )

    def render(current: str | None, already: tuple | None) -> tuple[Any, ...]:
        """Everything the panel shows; the probe maps are skipped when they did not change."""
        if not current:
            return (
                status_markdown(None),
                progress_html(None),
                *curves(None),
                probes_html(None),
                "",
                already,
                gr.Timer(active=False),
            )
        try:
            snapshot = runner.status(current)
        except KeyError as error:
            return (
                str(error.args[0]),
                progress_html(None),
                *curves(None),
                probes_html(None),
                "",
                None,
                gr.Timer(active=False),
            )
        key = (
            current,
            _probe_step(snapshot.probes_before),
            _probe_step(snapshot.probes_latest),
            snapshot.status.finished,
        )
        maps = gr.skip() if key == already else probes_html(snapshot)
        live = not snapshot.status.finished
        return (
            status_markdown(snapshot),
            progress_html(snapshot),
            *curves(snapshot),
            maps,
            skipped_markdown(snapshot),
            key,
            gr.Timer(active=live),
        )

    outputs = [status, progress, loss_plot, conf_plot, acc_plot, probes, skipped, shown, timer]
    timer.tick(
        render, [job_id, shown], outputs, api_visibility="private", show_progress="hidden", concurrency_limit=None
    )

    def status_api(current: str) -> tuple[Any, ...]:
        """The run's full state (status text, progress, curves, probe maps as HTML, skipped files)."""
        return render(current, None)[:7]

    refresh.click(status_api, job_id, outputs[:7], api_name="adapt_status", concurrency_limit=None)

    @user_errors
    def stop_run(current: str) -> tuple[str, str]:
        """Stop the run after its current step (its state is kept and can be saved); cancels a waiting job."""
        if not current:
            raise gr.Error("No run to stop: press Start first.")
        snapshot = runner.stop(current)
        return status_markdown(snapshot), progress_html(snapshot)

    stop.click(stop_run, job_id, [status, progress], api_name="adapt_stop", concurrency_limit=None)

    @user_errors
    def save_run(current: str, name: str) -> tuple[str, str, str]:
        """Write the checkpoint, register it for Explore/Compare; returns the file, the status and its name."""
        if not current:
            raise gr.Error("No run to save: press Start first.")
        path = runner.save(current, name or None)
        snapshot = runner.status(current)
        return str(path), status_markdown(snapshot), snapshot.saved_name or ""

    save.click(
        save_run, [job_id, save_name], [checkpoint, status, saved_name], api_name="adapt_save", concurrency_limit=None
    )

    @user_errors
    def ask_for_maps(current: str) -> None:
        if current:
            runner.request_probes(current)

    refresh_maps.click(ask_for_maps, job_id, None, api_visibility="private", concurrency_limit=None)
    return AdaptHandles(saved_name=saved_name, use_saved=use_saved)


def _probe_step(probes: Probes | None) -> int | None:
    return None if probes is None else probes.step


__all__ = ["AdaptHandles", "build_adapt_tab", "curves", "probe_gallery", "probes_html", "progress_html", "smooth"]
