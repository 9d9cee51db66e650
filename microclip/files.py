"""Atomic file writes: a reader (or a killed process) sees the old file or the new one, whole.

The temporary file lives in the target's folder because ``os.replace`` is atomic only within one
file system. Files end up mode 0644 (``mkstemp`` makes them 0600): checkpoints, caches and
descriptions are meant to be read by the user's group, e.g. a server's other processes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o644


def atomic_write(path: str | Path, write: Callable[[Path], None], mode: int = FILE_MODE) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as written:  # durable before the rename, so a crash cannot leave an empty file
            os.fsync(written.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: object, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
