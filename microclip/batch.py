"""Explain a folder or zip of images at once, and write the result as a self-contained bundle.

Bad files never stop a batch: each one is listed as skipped, with the reason. The bundle (a zip)
holds ``predictions.csv`` (top-1 and probability per branch, and whether the picture looks outside the model's
world: ``microclip.world_check``), ``explanations.json`` (logits per branch, SOAP weights, NCut masks, the
out-of-world verdict), ``skipped.csv``, ``settings.json`` (the model and settings used)
and, when the caller renders them, one overlay PNG per image. Used by the app's Batch tab and by
``python -m microclip explain DIR --out BUNDLE``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from microclip.data.archives import extract_archive
from microclip.data.datasets import is_image_file
from microclip.data.images import ImageError, load_image
from microclip.data.transforms import test_transform
from microclip.explain import Explanation, explain_batch
from microclip.files import atomic_write
from microclip.formats import small_number
from microclip.heads import BRANCHES
from microclip.model import MicroCLIP
from microclip.modes import eval_mode
from microclip.world_check import Verdict, token_summary, verdicts, world_for

MAX_IMAGES = 200  # per batch in the app: a batch is a look at a sample, not a benchmark run
OUTSIDE_COLUMN = "outside the model's world"  # predictions.csv: yes, no, or not measured (no world for the weights)
CHUNK = 16  # images per forward pass
Picture = Callable[[Image.Image], np.ndarray]


@dataclass(frozen=True)
class BatchItem:
    """One explained image."""

    name: str  # path inside the zip or folder
    explanation: Explanation
    picture: np.ndarray  # (S, S, 3) uint8, the crop the maps are aligned with
    world: Verdict | None = None  # whether it looks outside the model's world (None: no world measured for it)

    @property
    def outside(self) -> bool:
        return self.world is not None and self.world.outside


@dataclass(frozen=True)
class BatchResult:
    """One batch run: what was explained, drawn and skipped, and the bundle written."""

    items: list[BatchItem]
    overlays: list[np.ndarray] | None  # one picture per item, as in the bundle (None: not drawn)
    skipped: list[tuple[str, str]]  # (file, reason)
    note: str  # what the image cap left out, or ""
    bundle: Path

    @property
    def table(self) -> pd.DataFrame:
        return predictions_table(self.items)


def run(
    model: MicroCLIP,
    source: str | Path,
    out: str | Path | None = None,
    /,
    *,
    work: str | Path,
    cap: int | None = None,
    allow_local_paths: bool = True,
    picture: Picture | None = None,
    draw_overlay: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> BatchResult:
    """Explain every image of ``source`` (a zip or a folder) and write the bundle to ``out`` (a ``.zip``;
    default ``work/microclip-batch-<time>.zip``). The CLI (``explain DIR``) and the app's Batch tab both call it.

    ``work`` is an empty scratch folder (the zip is extracted there and removed afterwards).
    ``allow_local_paths`` False refuses a folder (a caller's own upload is a zip). ``picture`` draws the
    crop kept with each image, ``draw_overlay(picture, soap_weights)`` its overlay PNG (none without it);
    ``settings`` go into ``settings.json`` beside the model's own.
    """
    work, source = Path(work), Path(source)
    if out is not None and Path(out).suffix != ".zip":
        raise ValueError(f"{out}: the bundle is a zip; give a path ending in .zip")
    is_zip = source.is_file()
    try:
        files, skipped, note = collect_images(
            str(source) if is_zip else None, None if is_zip else str(source), work, allow_local_paths, cap or 10**9
        )
        items, unreadable = explain_files(model, files, progress, picture)
    finally:
        shutil.rmtree(work / "images", ignore_errors=True)  # the extracted copy is not needed any more
    skipped += unreadable
    overlays = [draw_overlay(item.picture, item.explanation.soap_weights) for item in items] if draw_overlay else None
    recorded = batch_settings(model, source.name if is_zip else str(source), cap, len(items), len(skipped), **settings)
    bundle = write_bundle(items, skipped, recorded, work, overlays, archive=Path(out) if out else None)
    return BatchResult(items, overlays, skipped, note, bundle)


def collect_images(
    archive: str | None, folder: str | None, work: Path, allow_local_paths: bool, cap: int
) -> tuple[list[tuple[str, Path]], list[tuple[str, str]], str]:
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
            files += [
                (Path(directory, n).relative_to(root).as_posix(), Path(directory, n))
                for n in sorted(names)
                if is_image_file(n)
            ]
        if not files:
            raise ValueError(f"no image files in {root} or its sub-folders")
    else:
        raise ValueError("upload a zip of images, or type a folder path")
    files.sort(key=lambda item: item[0])
    note = f"took the first {cap} of {len(files)} image files (sorted by name)" if len(files) > cap else ""
    return files[:cap], skipped, note


def explain_files(
    model: MicroCLIP,
    files: list[tuple[str, Path]],
    progress: Callable[[int, int], None] | None = None,
    picture: Picture | None = None,
) -> tuple[list[BatchItem], list[tuple[str, str]]]:
    """Explain each readable image (CHUNK at a time); unreadable ones are returned as skipped.

    ``picture`` draws the crop kept with each item (e.g. larger, for overlays); by default it is
    the model's own input crop.
    """
    transform = test_transform(model.backbone.image_size)
    world = world_for(model)
    items: list[BatchItem] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(files), CHUNK):
        if progress:
            progress(start, len(files))
        names, pictures, tensors = [], [], []
        for name, path in files[start : start + CHUNK]:
            try:
                image = load_image(path)
            except ImageError as error:
                skipped.append((name, str(error).replace(str(path), name)))
                continue
            tensor = transform(image)
            names.append(name)
            pictures.append(
                picture(image)
                if picture is not None
                else (tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            )
            tensors.append(tensor)
        if tensors:
            batch = torch.stack(tensors)
            with eval_mode(model), torch.inference_mode():
                # one backbone pass for the explanations and the out-of-world check (the app's Explore makes two)
                tokens = model.backbone(batch.to(next(model.parameters()).device))
                explanations = explain_batch(model, batch, tokens=tokens)
            found = verdicts(world, token_summary(tokens.patches)) if world is not None else [None] * len(names)
            items += [BatchItem(*item) for item in zip(names, explanations, pictures, found)]
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
        row["null weight"] = small_number(item.explanation.null_weight)  # 2.46e-05, never a rounded 0
        row[OUTSIDE_COLUMN] = "not measured" if item.world is None else ("yes" if item.outside else "no")
        rows.append(row)
    columns = [
        "file",
        *[f"{b} {k}" for b in BRANCHES for k in ("top-1", "p")],
        "branches agree",
        "null weight",
        OUTSIDE_COLUMN,
    ]
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
        "world": None
        if item.world is None
        else {"outside": item.world.outside, "reasons": list(item.world.reasons), "signals": item.world.signals},
    }


def _file_stem(index: int, name: str) -> str:
    return f"{index:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(name).with_suffix('').as_posix())[:80]}"


def write_bundle(
    items: list[BatchItem],
    skipped: list[tuple[str, str]],
    settings: dict,
    folder: Path,
    overlays: list[np.ndarray] | None = None,
    archive: Path | None = None,
) -> Path:
    """Write the bundle's files into ``folder/bundle`` and zip them into ``archive`` (atomically).

    ``archive`` defaults to ``folder/microclip-batch-<time>.zip``.
    """
    bundle = folder / "bundle"
    (bundle / "overlays").mkdir(parents=True)
    for index, (item, overlay) in enumerate(zip(items, overlays or [])):
        Image.fromarray(overlay).save(bundle / "overlays" / f"{_file_stem(index, item.name)}.png")
    predictions_table(items).to_csv(bundle / "predictions.csv", index=False)
    first = items[0].explanation if items else None
    (bundle / "explanations.json").write_text(
        json.dumps(
            {
                "classes": first.classes if first else [],
                "ratio": first.ratio if first else None,
                "grid": list(first.grid) if first else None,
                "image_size": first.image_size if first else None,
                "images": [explanation_record(item) for item in items],
            }
        )
    )
    pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(bundle / "skipped.csv", index=False)
    (bundle / "settings.json").write_text(json.dumps(settings, indent=2, default=str))
    archive = archive or folder / f"microclip-batch-{time.strftime('%Y%m%d-%H%M%S')}.zip"

    def write_zip(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(bundle.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(bundle).as_posix())

    try:
        atomic_write(archive, write_zip)
    finally:
        shutil.rmtree(bundle)  # the zip holds it all
    return archive


def batch_settings(
    model: MicroCLIP, source: str, cap: int | None, n_explained: int, n_skipped: int, /, **extra: Any
) -> dict:
    """What ``settings.json`` records: the model, where the images came from, what was done."""
    return {
        "base": model.base.to_dict() if model.base else None,
        "method": model.config.to_dict(),
        "classes": list(model.classes),
        "input": source,
        "image_cap": cap,
        "n_explained": n_explained,
        "n_skipped": n_skipped,
        "transform": "resize short side + centre crop (test transform)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
