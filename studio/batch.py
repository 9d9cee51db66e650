"""The Batch tab's service: one registry entry's batch run (``microclip.batch.run``) drawn with the app's
overlays, each call in its own folder of a workspace that keeps only the newest bundles."""

from __future__ import annotations

import atexit
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from microclip.batch import MAX_IMAGES, BatchResult
from microclip.batch import run as run_and_bundle
from microclip.files import shareable_tempdir
from viz.overlay import display_crop, overlay_map

OVERLAY_SIZE = 224


class BatchWorkspace:
    """Per-call temporary folders under one root; only the newest ``keep`` survive (their bundles). The Batch
    tab's, and Explore's and the Walkthrough's downloads, each under its own ``prefix``.

    Gradio copies a returned file into its own cache, but the copy happens after we return, so a
    call's folder is kept until later calls push it out; the root goes when the process exits.
    """

    def __init__(self, root: Path | None = None, keep: int = 8, prefix: str = "microclip-batch-") -> None:
        self.root = Path(root) if root else shareable_tempdir(prefix)
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


__all__ = ["OVERLAY_SIZE", "BatchWorkspace", "run_batch"]
