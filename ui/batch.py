"""The Batch tab: a zip or a folder of images → SOAP overlays, a per-branch prediction table, a bundle.

Bad files never stop a batch: each one is listed as skipped, with the reason. The bundle (a zip)
holds the overlay PNGs, ``predictions.csv``, ``explanations.json`` (logits per branch, SOAP
weights, NCut masks) and ``settings.json`` (the model and settings used), so a run can be
re-read without the app.

Named API endpoint: ``batch``.
"""

from __future__ import annotations

import atexit
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from microclip.batch import BRANCHES, MAX_IMAGES, BatchItem, BatchResult
from microclip.batch import run as run_and_bundle
from microclip.files import shareable_tempdir
from microclip.formats import small_number
from studio.sharing import ServerPathGuard, ServerPaths
from ui.common import gpu, image_file, model_dropdown_update, user_errors
from viz.overlay import display_crop, overlay_map

OVERLAY_SIZE = 224

INTRO = """\
**Batch**: explain every image of a zip (or a folder on the server) with the selected model. The
gallery shows each image's SOAP map (where `[FG]` pools); the table gives the top-1 class and
probability of the fused prediction and of the `[CLS]`-only and `[FG]`-only branches, and marks
images where they disagree. The bundle holds everything to re-read the run without the app.
"""


class BatchWorkspace:
    """Per-call temporary folders under one root; only the newest ``keep`` survive (their bundles).

    Gradio copies a returned file into its own cache, but the copy happens after we return, so a
    call's folder is kept until later calls push it out; the root goes when the process exits.
    """

    def __init__(self, root: Path | None = None, keep: int = 8) -> None:
        self.root = Path(root) if root else shareable_tempdir("microclip-batch-")
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()
        if root is None:
            atexit.register(shutil.rmtree, self.root, True)

    def new(self) -> Path:
        with self._lock:
            folder = shareable_tempdir(f"{time.time_ns()}-", self.root)
            calls = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.name)
            for old in calls[: max(0, len(calls) - self.keep)]:
                shutil.rmtree(old, ignore_errors=True)
            return folder


def run_batch(
    loaded,
    archive: str | None,
    folder: str | None,
    work: Path,
    cap: int = MAX_IMAGES,
    allow_local_paths: bool = True,
    opacity: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """The whole batch for one registry entry (``loaded``: a ``studio.registry.LoadedModel``)."""
    source = archive or (folder or "").strip()
    if not source:
        raise ValueError("upload a zip of images, or type a folder path")
    if not archive and not allow_local_paths:
        raise ValueError("reading folders on the server is turned off here; upload a zip of images instead")
    if not archive and not Path(source).expanduser().is_dir():
        raise ValueError(f"no folder {source} on the server")
    meta = getattr(loaded, "meta", None)
    return run_and_bundle(
        loaded.model,
        Path(source).expanduser(),
        work=work,
        cap=max(1, min(int(cap), MAX_IMAGES)),
        allow_local_paths=allow_local_paths,
        progress=progress,
        picture=lambda image: display_crop(image, OVERLAY_SIZE),
        draw_overlay=lambda picture, weights: overlay_map(picture, weights, opacity=opacity),
        model=loaded.name,
        model_source=loaded.source,
        checkpoint={"training": meta.training, "metrics": meta.metrics} if meta else None,
        overlay={"map": "SOAP weights", "opacity": opacity, "size": OVERLAY_SIZE},
    )


def _caption(item: BatchItem) -> str:
    e = item.explanation
    name, probability = e.top_k("fused", 1)[0]
    disagree = len({e.prediction(b) for b in BRANCHES}) > 1
    weights = e.soap_weights
    return (
        f"{item.name}: {name} ({probability:.0%}){'  ⚠ branches disagree' if disagree else ''} · "
        f"SOAP {small_number(weights.min())} (blue) – {small_number(weights.max())} (red)"
    )


def skipped_markdown(skipped: list[tuple[str, str]], note: str) -> str:
    lines = [note] if note else []
    if skipped:
        lines.append(f"**Skipped {len(skipped)} file(s):**")
        lines += [f"- `{name}`: {reason}" for name, reason in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"- ... and {len(skipped) - 50} more (all in the bundle's skipped.csv)")
    return "\n".join(lines)


# ------------------------------------------------------------------ the tab


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

    decision = folders_now()
    space = workspace or BatchWorkspace()
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model")
            archive = gr.File(label="Zip of images", file_types=[".zip"], type="filepath")
            folder = gr.Textbox(
                label="…or a folder on the server",
                info=decision.reason,
                elem_id="batch-folder",
                placeholder="/path/to/images" if decision.allowed else "off: upload a zip instead",
                interactive=decision.allowed,
            )
            cap = gr.Slider(1, MAX_IMAGES, value=50, step=1, label="At most this many images")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
            run = gr.Button("Explain all", variant="primary")
            bundle = gr.File(label="Bundle (overlays, CSV, JSON, settings)", interactive=False)
        with gr.Column(scale=2):
            notes = gr.Markdown()
            gallery = gr.Gallery(label="SOAP overlays", columns=5, height="auto")
            table = gr.Dataframe(label="Predictions per branch", interactive=False, wrap=True)

    model.focus(
        lambda value: model_dropdown_update(registry.names(), value),
        model,
        model,
        api_visibility="private",
        queue=False,
    )

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
        gallery_value = [(image_file(overlay), _caption(item)) for item, overlay in zip(result.items, result.overlays)]
        return gallery_value, result.table, skipped_markdown(result.skipped, result.note), str(result.bundle)

    run.click(
        batch,
        [model, archive, folder, cap, opacity],
        [gallery, table, notes, bundle],
        api_name="batch",
        concurrency_limit=1,
        concurrency_id="batch",
    )
