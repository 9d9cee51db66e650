"""Modes for the files and folders the app and the library write: what ``open()`` / ``mkdir()`` would
give under the user's umask (0644 / 0755 under the usual 022), never the private 0600 / 0700 that
``tempfile.mkstemp`` / ``mkdtemp`` use, so a checkpoint or a bundle can be read by the user's group."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _LOCK:  # elsewhere the only way to read it is to set it and put it back
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
