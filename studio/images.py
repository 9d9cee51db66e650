"""Pictures handed to Gradio as files of their own (never rewritten in place while a client downloads one)."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from microclip.files import atomic_write
from viz.html import png_bytes

IMAGE_FILE_TTL_S = 15 * 60  # picture files handed to Gradio are deleted after this (Gradio keeps its own copy)
_image_files: dict[str, Any] = {"folder": None, "written": 0}
_image_files_lock = threading.Lock()


def image_file(pixels: np.ndarray) -> str:
    """Write an (H, W, 3) RGB or (H, W, 4) RGBA uint8 picture to a PNG of its own, atomically; return its path.

    Handing Gradio numpy arrays makes it write each to a path named by the content's hash, in place: two
    identical requests at once rewrite the same file while a client downloads it, and the download comes
    back truncated. A uniquely named file, complete before it appears, is copied by Gradio atomically."""
    encoded = png_bytes(pixels)
    with _image_files_lock:
        if _image_files["folder"] is None:
            _image_files["folder"] = Path(tempfile.mkdtemp(prefix="microclip-images-"))
        folder: Path = _image_files["folder"]
        _image_files["written"] += 1
        prune = _image_files["written"] % 200 == 0
    if prune:
        cutoff = time.time() - IMAGE_FILE_TTL_S
        for old in folder.glob("*.png"):
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < cutoff:
                    old.unlink()
    target = folder / f"{uuid.uuid4().hex}.png"
    atomic_write(target, lambda tmp: tmp.write_bytes(encoded))
    return str(target)
