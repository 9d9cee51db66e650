"""The Batch tab: a zip or a folder of images → SOAP overlays, a per-branch prediction table, a bundle.

Bad files never stop a batch: each one is listed as skipped, with the reason. The bundle (a zip)
holds the overlay PNGs, ``predictions.csv``, ``explanations.json`` (logits per branch, SOAP
weights, NCut masks) and ``settings.json`` (the model and settings used), so a run can be
re-read without the app.

Named API endpoint: ``batch``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from microclip.data.archives import extract_archive
from microclip.data.datasets import is_image_file
from microclip.data.images import ImageError, load_image
from microclip.data.transforms import test_transform
from microclip.explain import Explanation, explain_batch
from microclip.filemode import shareable_tempdir
from microclip.model import MicroCLIP
from ui.common import gpu, model_dropdown_update, user_errors
from ui.sharing import ServerPathGuard, ServerPaths
from viz.overlay import display_crop, overlay_map

log = logging.getLogger(__name__)

MAX_IMAGES = 200  # per batch: a batch is a look at a sample, not a benchmark run
OVERLAY_SIZE = 224
CHUNK = 16  # images per forward pass
BRANCHES = ("fused", "cls", "fg")

INTRO = """\
**Batch**: explain every image of a zip (or a folder on the server) with the selected model. The
gallery shows each image's SOAP map (where `[FG]` pools); the table gives the top-1 class and
probability of the fused prediction and of the `[CLS]`-only and `[FG]`-only branches, and marks
images where they disagree. The bundle holds everything to re-read the run without the app.
"""


@dataclass(frozen=True)
class BatchItem:
    """One explained image."""

    name: str  # path inside the zip or folder
    explanation: Explanation
    picture: np.ndarray  # (S, S, 3) uint8, the centre crop the maps are aligned with


@dataclass(frozen=True)
class BatchResult:
    items: list[BatchItem]
    overlays: list[np.ndarray]  # SOAP overlay of each item, as drawn in the bundle
    skipped: list[tuple[str, str]]  # (file, reason)
    table: pd.DataFrame
    bundle: Path
    note: str


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
            for old in calls[:max(0, len(calls) - self.keep)]:
                shutil.rmtree(old, ignore_errors=True)
            return folder


# ------------------------------------------------------------------ the work (no Gradio)

def collect_images(archive: str | None, folder: str | None, work: Path, allow_local_paths: bool,
                   cap: int) -> tuple[list[tuple[str, Path]], list[tuple[str, str]], str]:
    """(name, path) of the images to explain (at most ``cap``), files skipped, and a note on the cap."""
    skipped: list[tuple[str, str]] = []
    if archive:
        extracted = extract_archive(archive, work / "images")
        skipped += extracted.skipped
        files = [(p.relative_to(work / "images").as_posix(), p) for p in extracted.files]
    elif folder and folder.strip():
        if not allow_local_paths:
            raise ValueError("reading folders on the server is turned off here; upload a zip of images instead")
        root = Path(folder.strip()).expanduser()
        if not root.is_dir():
            raise ValueError(f"no folder {root} on the server")
        files = []
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            files += [(Path(directory, n).relative_to(root).as_posix(), Path(directory, n))
                      for n in sorted(names) if is_image_file(n)]
        if not files:
            raise ValueError(f"no image files in {root} or its sub-folders")
    else:
        raise ValueError("upload a zip of images, or type a folder path")
    files.sort(key=lambda item: item[0])
    note = f"took the first {cap} of {len(files)} image files (sorted by name)" if len(files) > cap else ""
    return files[:cap], skipped, note


def explain_files(model: MicroCLIP, files: list[tuple[str, Path]],
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[BatchItem], list[tuple[str, str]]]:
    """Explain each readable image (CHUNK at a time); unreadable ones are returned as skipped."""
    transform = test_transform(model.backbone.image_size)
    items: list[BatchItem] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(files), CHUNK):
        if progress:
            progress(start, len(files))
        names, pictures, tensors = [], [], []
        for name, path in files[start:start + CHUNK]:
            try:
                image = load_image(path)
            except ImageError as error:
                skipped.append((name, str(error).replace(str(path), name)))
                continue
            names.append(name)
            pictures.append(display_crop(image, OVERLAY_SIZE))
            tensors.append(transform(image))
        if tensors:
            with torch.inference_mode():
                explanations = explain_batch(model, torch.stack(tensors))
            items += [BatchItem(n, e, p) for n, e, p in zip(names, explanations, pictures)]
    return items, skipped


def predictions_table(items: list[BatchItem]) -> pd.DataFrame:
    """One row per image: top-1 and probability of each branch, whether they agree, the null weight."""
    rows = []
    for item in items:
        row: dict[str, Any] = {"file": item.name}
        for branch in BRANCHES:
            name, probability = item.explanation.top_k(branch, 1)[0]
            row[f"{branch} top-1"] = name
            row[f"{branch} p"] = round(probability, 4)
        row["branches agree"] = len({row[f"{b} top-1"] for b in BRANCHES}) == 1
        row["null weight"] = round(item.explanation.null_weight, 4)
        rows.append(row)
    columns = ["file", *[f"{b} {k}" for b in BRANCHES for k in ("top-1", "p")], "branches agree", "null weight"]
    return pd.DataFrame(rows, columns=columns)


def explanation_record(item: BatchItem) -> dict:
    """What the bundle's JSON keeps per image (the per-patch class cosines are left out: C times larger)."""
    e = item.explanation
    return {
        "file": item.name,
        "logits": {"fused": e.logits_fused.tolist(), "cls": e.logits_cls.tolist(), "fg": e.logits_fg.tolist()},
        "probabilities": {b: e.probabilities(b).tolist() for b in BRANCHES},
        "prediction": {b: e.classes[e.prediction(b)] for b in BRANCHES},
        "soap_weights": e.soap_weights.tolist(),
        "null_weight": e.null_weight,
        "ncut_mask": e.ncut_mask.astype(int).tolist(),
        "cls_similarity": e.cls_similarity.tolist(),
    }


def _file_stem(index: int, name: str) -> str:
    return f"{index:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(name).with_suffix('').as_posix())[:80]}"


def write_bundle(items: list[BatchItem], skipped: list[tuple[str, str]], settings: dict, folder: Path,
                 overlays: list[np.ndarray]) -> Path:
    """Write the bundle's files into ``folder/bundle`` and zip them into ``folder/<name>.zip``."""
    bundle = folder / "bundle"
    (bundle / "overlays").mkdir(parents=True)
    for index, (item, overlay) in enumerate(zip(items, overlays)):
        Image.fromarray(overlay).save(bundle / "overlays" / f"{_file_stem(index, item.name)}.png")
    predictions_table(items).to_csv(bundle / "predictions.csv", index=False)
    first = items[0].explanation if items else None
    (bundle / "explanations.json").write_text(json.dumps({
        "classes": first.classes if first else [], "ratio": first.ratio if first else None,
        "grid": list(first.grid) if first else None, "image_size": first.image_size if first else None,
        "images": [explanation_record(item) for item in items],
    }))
    pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(bundle / "skipped.csv", index=False)
    (bundle / "settings.json").write_text(json.dumps(settings, indent=2, default=str))
    archive = folder / f"microclip-batch-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(bundle).as_posix())
    shutil.rmtree(bundle)  # the zip holds it all
    return archive


def run_batch(loaded, archive: str | None, folder: str | None, work: Path, cap: int = MAX_IMAGES,
              allow_local_paths: bool = True, opacity: float = 0.5,
              progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """The whole batch for one registry entry (``loaded``: a ``ui.registry.LoadedModel``)."""
    cap = max(1, min(int(cap), MAX_IMAGES))
    try:
        files, skipped, note = collect_images(archive, folder, work, allow_local_paths, cap)
        items, unreadable = explain_files(loaded.model, files, progress)
    finally:
        shutil.rmtree(work / "images", ignore_errors=True)  # the extracted copy is not needed any more
    skipped += unreadable
    overlays = [overlay_map(item.picture, item.explanation.soap_weights, opacity=opacity) for item in items]
    meta = getattr(loaded, "meta", None)
    model = loaded.model
    settings = {
        "model": loaded.name, "model_source": loaded.source, "base": model.base.to_dict() if model.base else None,
        "method": model.config.to_dict(), "classes": list(model.classes),
        "checkpoint": {"training": meta.training, "metrics": meta.metrics} if meta else None,
        "input": Path(archive).name if archive else folder, "image_cap": cap, "n_explained": len(items),
        "n_skipped": len(skipped), "overlay": {"map": "SOAP weights", "opacity": opacity, "size": OVERLAY_SIZE},
        "transform": "resize short side + centre crop (test transform)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    bundle = write_bundle(items, skipped, settings, work, overlays)
    return BatchResult(items=items, overlays=overlays, skipped=skipped, table=predictions_table(items), bundle=bundle,
                       note=note)


def _caption(item: BatchItem) -> str:
    e = item.explanation
    name, probability = e.top_k("fused", 1)[0]
    disagree = len({e.prediction(b) for b in BRANCHES}) > 1
    return f"{item.name}: {name} ({probability:.0%}){'  ⚠ branches disagree' if disagree else ''}"


def skipped_markdown(skipped: list[tuple[str, str]], note: str) -> str:
    lines = [note] if note else []
    if skipped:
        lines.append(f"**Skipped {len(skipped)} file(s):**")
        lines += [f"- `{name}`: {reason}" for name, reason in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"- ... and {len(skipped) - 50} more (all in the bundle's skipped.csv)")
    return "\n".join(lines)


# ------------------------------------------------------------------ the tab

def build_batch_tab(registry, allow_local_paths: bool | None = None, workspace: BatchWorkspace | None = None,
                    server_paths: ServerPathGuard | None = None) -> None:
    """Build the Batch tab inside the current ``gr.Tab`` context and wire the ``batch`` endpoint.

    The folder field is drawn disabled, with the reason, when server folders are off
    (``ui.sharing``); each request is checked again. ``allow_local_paths`` False turns them off outright.
    """
    guard = server_paths or ServerPathGuard()

    def folders_now(request: bool = False) -> ServerPaths:
        decision = guard.now(request)
        if decision.allowed and allow_local_paths is False:
            return ServerPaths(False, "Server folders are turned off here: upload a zip of images.")
        return decision

    decision = folders_now()
    space = workspace or BatchWorkspace()
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model = gr.Dropdown(registry.names(), value=registry.default_name, label="Model")
            archive = gr.File(label="Zip of images", file_types=[".zip"], type="filepath")
            folder = gr.Textbox(label="…or a folder on the server", info=decision.reason, elem_id="batch-folder",
                                placeholder="/path/to/images" if decision.allowed else "off: upload a zip instead",
                                interactive=decision.allowed)
            cap = gr.Slider(1, MAX_IMAGES, value=50, step=1, label="At most this many images")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
            run = gr.Button("Explain all", variant="primary")
            bundle = gr.File(label="Bundle (overlays, CSV, JSON, settings)", interactive=False)
        with gr.Column(scale=2):
            notes = gr.Markdown()
            gallery = gr.Gallery(label="SOAP overlays", columns=5, height="auto")
            table = gr.Dataframe(label="Predictions per branch", interactive=False, wrap=True)

    model.focus(lambda value: model_dropdown_update(registry.names(), value), model, model,
                api_visibility="private", queue=False)

    @gpu
    def compute(model_name: str | None, archive_path: str | None, folder_path: str | None, limit: int,
                alpha: float, progress: Callable[[int, int], None]) -> BatchResult:
        loaded = registry.get(model_name or None)
        now = folders_now(request=True)  # from the address the app was really launched on
        if folder_path and folder_path.strip() and not archive_path and not now.allowed:
            raise ValueError(now.reason)
        return run_batch(loaded, archive_path, folder_path, space.new(), cap=limit, allow_local_paths=now.allowed,
                         opacity=alpha, progress=progress)

    @user_errors
    def batch(model_name: str | None, archive_path: str | None, folder_path: str | None, limit: float,
              alpha: float, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Explain every image; returns the gallery, the table, the skipped-files note and the bundle zip."""
        result = compute(model_name, archive_path, folder_path, int(limit), float(alpha),
                         lambda done, total: progress((done, total), desc="explaining", unit="images"))
        gallery_value = [(overlay, _caption(item)) for item, overlay in zip(result.items, result.overlays)]
        return gallery_value, result.table, skipped_markdown(result.skipped, result.note), str(result.bundle)

    run.click(batch, [model, archive, folder, cap, opacity], [gallery, table, notes, bundle], api_name="batch",
              concurrency_limit=1, concurrency_id="batch")
