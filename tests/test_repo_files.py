"""The repository can be pushed to a HuggingFace Space: every tracked binary file is covered by an LFS rule
in .gitattributes (the Hub refuses binaries pushed as plain git objects).

Binary is decided by content, not by name: a NUL byte, or bytes that are not UTF-8.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LFS = {"filter": "lfs", "diff": "lfs", "merge": "lfs", "text": "unset"}

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(),
    reason="not a git checkout (or no git): nothing tracked to check",
)


def git(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], input=stdin, capture_output=True, check=True).stdout


def is_binary(data: bytes) -> bool:
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def attributes(paths: list[str]) -> dict[str, dict[str, str]]:
    """``git check-attr`` of filter/diff/merge/text for each path (NUL-separated both ways)."""
    out = git("check-attr", "-z", "--stdin", "filter", "diff", "merge", "text", stdin="\0".join(paths).encode())
    fields = out.decode().split("\0")
    found: dict[str, dict[str, str]] = {}
    for path, attribute, value in zip(fields[0::3], fields[1::3], fields[2::3]):
        found.setdefault(path, {})[attribute] = value
    return found


def tracked_binaries() -> list[str]:
    paths = [p for p in git("ls-files", "-z").decode().split("\0") if p]
    return [
        p for p in paths if (ROOT / p).is_file() and not (ROOT / p).is_symlink() and is_binary((ROOT / p).read_bytes())
    ]


def test_every_tracked_binary_file_goes_through_lfs():
    binaries = tracked_binaries()
    assert binaries, "expected the bundled checkpoints and example pictures to be tracked"
    found = attributes(binaries)
    missing = [p for p in binaries if found.get(p) != LFS]
    assert not missing, f"binary files without an LFS rule in .gitattributes: {missing}"


def test_the_check_tells_binary_from_text_by_content_and_sees_unmatched_names(tmp_path):
    assert is_binary(b"\x89PNG\r\n\x1a\n\0\0") and is_binary(b"caf\xe9") and not is_binary("café ✓".encode())
    found = attributes(["assets/new-picture.png", "weights/model.safetensors", "notes/unknown.bin2", "README.md"])
    assert found["assets/new-picture.png"] == LFS and found["weights/model.safetensors"] == LFS
    assert found["notes/unknown.bin2"] != LFS and found["README.md"]["filter"] == "unspecified"


def test_text_files_are_not_sent_to_lfs():
    texts = ["README.md", "app.py", "requirements.txt", "assets/toybirds/classes.json"]
    found = attributes(texts)
    assert all(found[p]["filter"] == "unspecified" for p in texts)
