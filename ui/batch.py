"""The Batch tab: a zip or a folder of images → SOAP overlays, a per-branch prediction table, a bundle.

Bad files never stop a batch: each one is listed as skipped, with the reason. The bundle (a zip)
holds the overlay PNGs, ``predictions.csv``, ``explanations.json`` (logits per branch, SOAP
weights, NCut masks) and ``settings.json`` (the model and settings used), so a run can be
re-read without the app. The run itself is ``studio.batch``; this module lays out and wires the tab.

Named API endpoint: ``batch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from microclip.batch import MAX_IMAGES, BatchResult
from studio.batch import BatchWorkspace, run_batch
from studio.images import image_file
from studio.sharing import ServerPathGuard, ServerPaths
from ui.common import DOWNLOAD_CLASS, gpu, user_errors
from ui.layout import refresh_on_focus
from viz.runs import batch_caption, skipped_markdown

INTRO = """\
**Batch**: explain every image of a zip (or a folder on the server) with the selected model. The
gallery shows each image's SOAP map (where `[FG]` pools); the table gives the top-1 class and
probability of the fused prediction and of the `[CLS]`-only and `[FG]`-only branches, and marks
images where they disagree. The bundle holds everything to re-read the run without the app.
"""
SKIPPED_REST = " (all in the bundle's skipped.csv)"


@dataclass(frozen=True)
class _BatchPanel:
    model: gr.Dropdown
    archive: gr.File
    folder: gr.Textbox
    cap: gr.Slider
    opacity: gr.Slider
    run: gr.Button
    bundle: gr.File
    notes: gr.Markdown
    gallery: gr.Gallery
    table: gr.Dataframe


def _layout(registry, folders: ServerPaths) -> _BatchPanel:
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model")
            archive = gr.File(label="Zip of images", file_types=[".zip"], type="filepath")
            folder = gr.Textbox(
                label="…or a folder on the server",
                info=folders.reason,
                elem_id="batch-folder",
                placeholder="/path/to/images" if folders.allowed else "off: upload a zip instead",
                interactive=folders.allowed,
            )
            cap = gr.Slider(1, MAX_IMAGES, value=50, step=1, label="At most this many images")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
            run = gr.Button("Explain all", variant="primary")
            bundle = gr.File(
                label="Bundle (overlays, CSV, JSON, settings)", interactive=False, elem_classes=DOWNLOAD_CLASS
            )
        with gr.Column(scale=2):
            notes = gr.Markdown()
            gallery = gr.Gallery(label="SOAP overlays", columns=5, height="auto")
            table = gr.Dataframe(label="Predictions per branch", interactive=False, wrap=True)
    return _BatchPanel(model, archive, folder, cap, opacity, run, bundle, notes, gallery, table)


def build_batch_tab(
    registry,
    allow_local_paths: bool | None = None,
    workspace: BatchWorkspace | None = None,
    server_paths: ServerPathGuard | None = None,
) -> None:
    """Build the Batch tab inside the current ``gr.Tab`` context and wire the ``batch`` endpoint.

    The folder field is drawn disabled, with the reason, when server folders are off
    (``studio.sharing``); each request is checked again. ``allow_local_paths`` False turns them off outright.
    """
    guard = server_paths or ServerPathGuard()

    def folders_now(request: bool = False) -> ServerPaths:
        return guard.now(request, turned_off=allow_local_paths is False)

    space = workspace or BatchWorkspace()
    gr.Markdown(INTRO)
    panel = _layout(registry, folders_now())
    refresh_on_focus(panel.model, registry)
    _wire_run(panel, registry, space, folders_now)


def _wire_run(panel: _BatchPanel, registry, space: BatchWorkspace, folders_now: Callable[..., ServerPaths]) -> None:
    """The ``batch`` endpoint: one batch at a time, each in a new folder of ``space``."""

    @gpu
    def compute(
        model_name: str | None,
        archive_path: str | None,
        folder_path: str | None,
        limit: int,
        alpha: float,
        progress: Callable[[int, int], None],
    ) -> BatchResult:
        loaded = registry.get(model_name or None)
        now = folders_now(request=True)  # from the address the app was really launched on
        if folder_path and folder_path.strip() and not archive_path and not now.allowed:
            raise ValueError(now.reason)
        return run_batch(
            loaded,
            archive_path,
            folder_path,
            space.new(),
            cap=limit,
            allow_local_paths=now.allowed,
            opacity=alpha,
            progress=progress,
        )

    @user_errors
    def batch(
        model_name: str | None,
        archive_path: str | None,
        folder_path: str | None,
        limit: float,
        alpha: float,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        """Explain every image; returns the gallery, the table, the skipped-files note and the bundle zip."""
        result = compute(
            model_name,
            archive_path,
            folder_path,
            int(limit),
            float(alpha),
            lambda done, total: progress((done, total), desc="explaining", unit="images"),
        )
        gallery = [
            (image_file(overlay), batch_caption(item.name, item.explanation, item.outside))
            for item, overlay in zip(result.items, result.overlays)
        ]
        return gallery, result.table, skipped_markdown(result.skipped, result.note, SKIPPED_REST), str(result.bundle)

    panel.run.click(
        batch,
        [panel.model, panel.archive, panel.folder, panel.cap, panel.opacity],
        [panel.gallery, panel.table, panel.notes, panel.bundle],
        api_name="batch",
        concurrency_limit=1,
        concurrency_id="batch",
    )


__all__ = ["BatchWorkspace", "build_batch_tab"]  # BatchWorkspace: where the tests point a workspace
