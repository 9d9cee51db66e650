"""Writing files: atomically, and readable by the user's group; reading JSON with a one-line error.

A reader (or a killed process) sees the old file or the new one, whole: the temporary file lives in
the target's folder because ``os.replace`` is atomic only within one file system. Files and folders
get the mode a plain ``open()`` / ``mkdir()`` would give under the user's umask (0644 / 0755 under
the usual 022), never the private 0600 / 0700 of ``tempfile.mkstemp`` / ``mkdtemp``: checkpoints,
caches, bundles and descriptions are meant to be read by the user's group, e.g. a server's other
processes. A user whose umask is 077 still gets private files.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets from ``open()``: 0o666 without the umask's bits."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir()``: 0o777 without the umask's bits."""
    return 0o777 & ~current_umask()


def make_shareable(path: str | Path) -> Path:
    """Give ``path`` the mode ``open()`` / ``mkdir()`` would have (for files made by mkstemp / mkdtemp)."""
    path = Path(path)
    os.chmod(path, dir_mode() if path.is_dir() else file_mode())
    return path


def shareable_tempdir(prefix: str, dir: str | Path | None = None) -> Path:
    """``tempfile.mkdtemp`` with the usual folder mode instead of 0700 (the name stays unguessable)."""
    return make_shareable(tempfile.mkdtemp(prefix=prefix, dir=dir))


def atomic_write(path: str | Path, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it onto ``path``.

    ``mode`` defaults to what ``open()`` would give (:func:`file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as written:  # durable before the rename, so a crash cannot leave an empty file
            os.fsync(written.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def slug(text: str, empty: str, limit: int = 80) -> str:
    """``text`` as part of a file name every file system keeps: runs of other characters than A–Z, a–z, 0–9, ".",
    "_" and "-" become one "-", none at either end, at most ``limit`` characters; ``empty`` where nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or empty


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: object, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def parse_json(text: str, what: str, error: type[Exception] = ValueError) -> Any:
    """``json.loads(text)``; text that is not JSON raises ``error("<what> is not valid JSON (<why>)")``.

    ``error`` is the caller's user error (a ConfigError, a CheckpointError, ...), so a front end shows
    the message in one line instead of the decoder's traceback.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as why:
        raise error(f"{what} is not valid JSON ({why})") from None
