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
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from microclip.explain import Explanation
from ui.common import image_file, model_dropdown_update, user_errors
from ui.jobs import (
    AdaptationRunner,
    AdaptRequest,
    JobSnapshot,
    Probes,
    QueueFullError,
    parse_classnames,
    snapshot_summary,
)
from ui.sharing import ServerPathGuard, ServerPaths
from viz.overlay import overlay_map

log = logging.getLogger(__name__)

SOURCES = {"toy world": "toybirds", "upload a zip": "zip", "folder on the server": "folder"}
PROBE_SIZE = 224  # display pixels of each probe map
POLL_SECONDS = 1.0
CURVE_TYPES = {"step": "int64", "value": "float64", "series": "object"}

INTRO = """\
**Adapt** a model to your own images without labels: microCLIP pseudo-labels each image from its
weak view and K crops (Dynamic Knowledge Aggregation), then trains the visual LayerNorms, SOAP and
the classifier W* on a strong view (docs/method.md §1.2). Runs are short on purpose (caps on steps,
batch and images). Class folders in a zip give the class names, and let the app show
*pseudo-label accuracy*; training itself never sees the labels.
"""

CURVES_NOTE = """\
*Loss* = cross-entropy on pseudo-labels + fairness regulariser. *Pseudo-label confidence* = mean
top score of the aggregated pseudo-labels. *Pseudo-label accuracy* (%) needs class folders: how
often the pseudo-labels match the folder names (combined, crops·W_LLM, fused·W*).
"""

PROBES_NOTE = """\
SOAP maps of pinned probe images: where the `[FG]` token pools, before training and at the
latest point (end of run, or *Refresh maps* during it). Caption: true class (folder) → fused
prediction, and the map's range: each map is coloured from its lowest patch (blue) to its highest (red).
"""


@dataclass(frozen=True)
class AdaptHandles:
    """Components another tab may listen to (e.g. switch Explore to ``saved_name`` when it changes)."""

    saved_name: gr.Textbox


# ------------------------------------------------------------------ pure helpers (no Gradio state)

def curves(snapshot: JobSnapshot | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Long-format frames (step, value, series) for the loss, confidence and accuracy plots."""
    metrics = snapshot.metrics if snapshot else []

    def frame(keys: dict[str, str]) -> pd.DataFrame:
        rows = [{"step": row["step"], "value": row[key], "series": label}
                for row in metrics for key, label in keys.items() if key in row]
        # Typed even when empty: an empty frame's columns are `object`, and Gradio's LinePlot then declares
        # step and value nominal (categorical axes, one label per loss value) for the rest of the run.
        return pd.DataFrame(rows, columns=["step", "value", "series"]).astype(CURVE_TYPES)

    return (frame({"loss": "loss", "ce": "cross-entropy", "fair": "fairness"}),
            frame({"pl_conf": "confidence"}),
            frame({"pl_acc": "combined", "pl_acc_static": "crops · W_LLM", "pl_acc_dynamic": "fused · W*"}))


def probe_gallery(images: list[np.ndarray], labels: list[str], probes: Probes | None,
                  when: str) -> list[tuple[np.ndarray, str]]:
    """(SOAP overlay, caption) for each probe image."""
    if probes is None:
        return []
    gallery = []
    for picture, label, explanation in zip(images, labels, probes.explanations):
        large = np.asarray(Image.fromarray(picture).resize((PROBE_SIZE, PROBE_SIZE), Image.BICUBIC))
        gallery.append((image_file(overlay_map(large, explanation.soap_weights, opacity=0.5)),
                        _caption(label, explanation, when)))
    return gallery


def _caption(label: str, explanation: Explanation, when: str) -> str:
    index = explanation.prediction("fused")
    probability = explanation.probabilities("fused")[index]
    weights = explanation.soap_weights
    return (f"{when}: {label} → {explanation.classes[index]} ({probability:.0%}) · SOAP "
            f"{weights.min():.2e} (blue) – {weights.max():.2e} (red)")


def progress_html(snapshot: JobSnapshot | None) -> str:
    """A plain HTML progress bar (gr.Progress only lives inside the event that started it)."""
    if snapshot is None:
        return "<div>no run yet</div>"
    total = max(snapshot.total_steps, 1)
    return (f"<div><progress value='{snapshot.step}' max='{total}' style='width:100%'></progress>"
            f"<div>step {snapshot.step} / {snapshot.total_steps or '?'} · {snapshot.elapsed_s:.0f} s</div></div>")


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
        text += f"  \nsaved as **{snapshot.saved_name}**: pick it in Explore or Compare"
    return text


# ------------------------------------------------------------------ the tab

def build_adapt_tab(registry, runner: AdaptationRunner, server_paths: ServerPathGuard | None = None) -> AdaptHandles:
    """Build the Adapt tab inside the current ``gr.Tab`` context and wire its endpoints.

    The folder source is drawn disabled, with the reason, when server folders are off (``ui.sharing``
    or the runner's own setting); each request is checked again.
    """
    limits = runner.limits
    guard = server_paths or ServerPathGuard()

    def folders_now(request: bool = False) -> ServerPaths:
        return guard.now(request, turned_off=not runner.allow_local_paths)

    folders = folders_now()
    sources = list(SOURCES)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            names = registry.names()
            model = gr.Dropdown(names, value=registry.default_name, label="Start from the base model of",
                                info="A fresh copy of this entry's base model is adapted (never the entry itself).")
            source = gr.Radio(sources, value=sources[0], label="Data")
            archive = gr.File(label="Zip of images (class folders give labels)", file_types=[".zip"],
                              type="filepath", visible=False)
            folder = gr.Textbox(label="Folder on the server", visible=False, info=folders.reason,
                                placeholder="/path/to/images" if folders.allowed else "off: upload a zip instead",
                                interactive=folders.allowed, elem_id="adapt-folder")
            toy_per_class = gr.Slider(2, limits.max_toy_per_class, value=8, step=1,
                                      label="Toy world: images per class")
            classnames = gr.Textbox(label="Class names (optional)", lines=2,
                                    placeholder="one per line or comma-separated; default: the folder names")
            descriptions = gr.File(label="Descriptions JSON (optional, {class: [sentence, ...]})",
                                   file_types=[".json"], type="filepath")
            allow_missing = gr.Checkbox(label="Allow missing descriptions (those classes use templates)")
            with gr.Accordion("Run settings", open=True):
                steps = gr.Slider(1, limits.max_steps, value=min(30, limits.max_steps), step=1, label="Steps")
                batch = gr.Slider(1, limits.max_batch_size, value=min(16, limits.max_batch_size), step=1,
                                  label="Batch size")
                lr = gr.Slider(1e-5, min(1e-3, limits.max_lr), value=1e-4, step=1e-5, label="Learning rate")
                n_crops = gr.Slider(1, limits.max_crops, value=min(4, limits.max_crops), step=1,
                                    label="Crops per image (K)")
                n_probes = gr.Slider(0, limits.max_probes, value=min(4, limits.max_probes), step=1,
                                     label="Probe images")
            with gr.Row():
                start = gr.Button("Start", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            save_name = gr.Textbox(label="Checkpoint name (optional)", placeholder="adapted · <data> · job <id>")
            save = gr.Button("Save checkpoint")
            checkpoint = gr.File(label="Saved checkpoint (.safetensors)", interactive=False)
        with gr.Column(scale=2):
            status = gr.Markdown(status_markdown(None))
            progress = gr.HTML(progress_html(None))
            with gr.Row():
                loss_plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=220)
                conf_plot = gr.LinePlot(x="step", y="value", title="Pseudo-label confidence", height=220)
                acc_plot = gr.LinePlot(x="step", y="value", color="series", title="Pseudo-label accuracy (%)",
                                       height=220)
            gr.Markdown(CURVES_NOTE)
            gr.Markdown(PROBES_NOTE)
            with gr.Row():
                before = gr.Gallery(label="Before training", columns=4, height="auto")
                after = gr.Gallery(label="Latest", columns=4, height="auto")
            refresh_maps = gr.Button("Refresh maps now", size="sm")
            skipped = gr.Markdown()
            with gr.Accordion("Run details", open=False):
                job_id = gr.Textbox(label="Job id (the API handle)", interactive=False)
                saved_name = gr.Textbox(label="Registered model name", interactive=False)
                refresh = gr.Button("Refresh status", size="sm")
    timer = gr.Timer(POLL_SECONDS, active=False)
    shown = gr.State(None)  # which probe maps the galleries show, so polls resend images only on change

    def choose_source(choice: str) -> tuple[Any, Any, Any]:
        value = SOURCES[choice]
        return (gr.File(visible=value == "zip"), gr.Textbox(visible=value == "folder"),
                gr.Slider(visible=value == "toybirds"))

    source.change(choose_source, source, [archive, folder, toy_per_class], api_visibility="private")
    model.focus(lambda value: model_dropdown_update(registry.names(), value), model, model,
                api_visibility="private", queue=False)

    @user_errors
    def start_run(model_name: str | None, source_choice: str, archive_path: str | None, folder_path: str,
                  per_class: float, class_text: str, descriptions_path: str | None, allow: bool, n_steps: float,
                  batch_size: float, learning_rate: float, crops: float, probes: float) -> tuple[Any, ...]:
        """Queue an adaptation; returns the job id and the first status."""
        source_value = SOURCES.get(source_choice, source_choice)  # API clients may pass 'toybirds' etc.
        if source_value == "folder" and not (now := folders_now(request=True)).allowed:
            raise gr.Error(now.reason)
        request = AdaptRequest(
            source=source_value, path=archive_path if source_value == "zip" else (folder_path or "").strip() or None,
            model_name=model_name or None, classnames=parse_classnames(class_text),
            descriptions_path=descriptions_path or None, allow_missing_descriptions=bool(allow),
            steps=int(n_steps), batch_size=int(batch_size), lr=float(learning_rate), n_crops=int(crops),
            n_probes=int(probes), toy_per_class=int(per_class))
        try:
            new_id = runner.submit(request)
        except QueueFullError as error:
            raise gr.Error(str(error)) from None
        snapshot = runner.status(new_id)
        return new_id, status_markdown(snapshot), progress_html(snapshot), None, "", gr.Timer(active=True)

    start.click(start_run, [model, source, archive, folder, toy_per_class, classnames, descriptions, allow_missing,
                            steps, batch, lr, n_crops, n_probes],
                [job_id, status, progress, checkpoint, saved_name, timer], api_name="adapt_start",
                concurrency_limit=None)

    def render(current: str | None, already: tuple | None) -> tuple[Any, ...]:
        """Everything the panel shows; galleries are skipped when their maps did not change."""
        if not current:
            return (status_markdown(None), progress_html(None), *curves(None), [], [], "", already,
                    gr.Timer(active=False))
        try:
            snapshot = runner.status(current)
        except KeyError as error:
            return (str(error.args[0]), progress_html(None), *curves(None), [], [], "", None, gr.Timer(active=False))
        key = (current, _probe_step(snapshot.probes_before), _probe_step(snapshot.probes_latest))
        if key == already:
            galleries: tuple[Any, Any] = (gr.skip(), gr.skip())
        else:
            latest_when = f"step {_probe_step(snapshot.probes_latest)}"
            galleries = (probe_gallery(snapshot.probe_images, snapshot.probe_labels, snapshot.probes_before,
                                       "before"),
                         probe_gallery(snapshot.probe_images, snapshot.probe_labels, snapshot.probes_latest,
                                       latest_when))
        live = not snapshot.status.finished
        return (status_markdown(snapshot), progress_html(snapshot), *curves(snapshot), *galleries,
                skipped_markdown(snapshot), key, gr.Timer(active=live))

    outputs = [status, progress, loss_plot, conf_plot, acc_plot, before, after, skipped, shown, timer]
    timer.tick(render, [job_id, shown], outputs, api_visibility="private", show_progress="hidden",
               concurrency_limit=None)

    def status_api(current: str) -> tuple[Any, ...]:
        """The run's full state (status text, progress, curves, galleries, skipped files)."""
        return render(current, None)[:8]

    refresh.click(status_api, job_id, outputs[:8], api_name="adapt_status", concurrency_limit=None)

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

    save.click(save_run, [job_id, save_name], [checkpoint, status, saved_name], api_name="adapt_save",
               concurrency_limit=None)

    @user_errors
    def ask_for_maps(current: str) -> None:
        if current:
            runner.request_probes(current)

    refresh_maps.click(ask_for_maps, job_id, None, api_visibility="private", concurrency_limit=None)
    return AdaptHandles(saved_name=saved_name)


def _probe_step(probes: Probes | None) -> int | None:
    return None if probes is None else probes.step


__all__ = ["AdaptHandles", "build_adapt_tab", "curves", "probe_gallery", "progress_html"]
