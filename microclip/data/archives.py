"""Safe extraction of the image files of an uploaded zip.

An uploaded zip is untrusted input: its member names can point outside the target folder
(``../../etc/x``, ``/abs/path``), it can hold symlinks, it can be a "zip bomb" (a few MB that
inflate to many GB), and its headers can lie about sizes. Every one of these is refused with an
`ArchiveError` that names the member and the limit, before anything is written where possible
(declared sizes are checked first) and while streaming otherwise (bytes are counted as they are
inflated, because declared sizes can lie).

Only image files are extracted; the folder structure is kept, so class sub-folders become labels.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from microclip.data.datasets import IMAGE_EXTENSIONS

MAX_FILES = 2000
MAX_TOTAL_BYTES = 500 * 1024 * 1024
MAX_RATIO = 100
_CHUNK = 64 * 1024
# Below this size a member cannot bomb anything, and a plain-colour BMP legitimately deflates >100:1.
RATIO_FLOOR = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(ValueError):
    """A zip that cannot be used, or that is refused as unsafe; the message says which member and why."""


@dataclass(frozen=True)
class ExtractResult:
    """The extracted image files and the members left out, with the reason for each."""

    files: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)


def _member_parts(name: str) -> list[str]:
    """The path components of a member name, with Windows separators normalised.

    Raises ArchiveError for absolute paths and ``..`` components (path traversal).
    """
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise ArchiveError(f"refused: member {name!r} has an absolute path (path traversal); "
                           "zip the images with relative paths")
    parts = [part for part in PurePosixPath(posix).parts if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"refused: member {name!r} contains '..' (path traversal); "
                           "zip the images with paths inside the archive's folder")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix zips keep st_mode in the high 16 bits of external_attr.
    return stat.S_ISLNK(info.external_attr >> 16)


def _plan(archive: Path, infos: list[zipfile.ZipInfo], max_files: int, max_total_bytes: int,
          max_ratio: float) -> tuple[list[tuple[zipfile.ZipInfo, list[str]]], list[tuple[str, str]]]:
    """First pass over the central directory: refuse unsafe archives, choose the image members."""
    chosen: list[tuple[zipfile.ZipInfo, list[str]]] = []
    skipped: list[tuple[str, str]] = []
    declared_total = 0
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        parts = _member_parts(info.filename)  # checked for every member: a traversal name is never benign
        if _is_symlink(info):
            raise ArchiveError(f"refused: member {info.filename!r} is a symbolic link; zip the files themselves")
        if info.is_dir() or not parts:
            continue
        if parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts):
            continue  # macOS resource forks and hidden files: never data, not worth a "skipped" line
        if info.flag_bits & 0x1:
            raise ArchiveError(f"refused: member {info.filename!r} is encrypted; upload an unencrypted zip")
        if not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            skipped.append((info.filename, "not an image file (by its extension)"))
            continue
        key = tuple(parts)
        if key in seen:
            skipped.append((info.filename, "duplicate name in the archive"))
            continue
        seen.add(key)
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > max_ratio and info.file_size > RATIO_FLOOR:
            raise ArchiveError(f"refused: member {info.filename!r} declares a compression ratio of {ratio:.0f}:1 "
                               f"(limit {max_ratio:.0f}:1); this looks like a zip bomb")
        declared_total += info.file_size
        chosen.append((info, parts))
    if len(chosen) > max_files:
        raise ArchiveError(f"refused: {archive.name} holds {len(chosen)} images, more than the limit of {max_files}; "
                           "upload a smaller sample")
    if declared_total > max_total_bytes:
        raise ArchiveError(f"refused: {archive.name} declares {declared_total / 1e6:.1f} MB of images, more than "
                           f"the limit of {max_total_bytes / 1e6:.1f} MB")
    return chosen, skipped


def _stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, already: int, max_total_bytes: int,
            max_ratio: float) -> int:
    """Inflate one member into ``target``, counting bytes; returns the bytes written.

    ``already`` bytes were written for earlier members. The declared size, the total limit and the
    ratio to the compressed size are all enforced on the bytes actually produced.
    """
    limit_ratio = max(int(max(info.compress_size, 1) * max_ratio), RATIO_FLOOR)
    written = 0
    try:
        with zf.open(info) as source, open(target, "xb") as sink:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise ArchiveError(f"refused: member {info.filename!r} inflates past its declared size of "
                                       f"{info.file_size} bytes (its header lies)")
                if already + written > max_total_bytes:
                    raise ArchiveError(f"refused: the images inflate past the total limit of "
                                       f"{max_total_bytes / 1e6:.1f} MB")
                if written > limit_ratio:
                    raise ArchiveError(f"refused: member {info.filename!r} inflates more than {max_ratio:.0f}:1; "
                                       "this looks like a zip bomb")
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        # A CRC mismatch is what a header that under-declares its size produces in zipfile.
        raise ArchiveError(f"refused: member {info.filename!r} is corrupt or its header lies ({error})") from None
    except NotImplementedError as error:
        raise ArchiveError(f"member {info.filename!r} uses an unsupported compression ({error}); "
                           "re-zip with the standard 'deflate' method") from None
    return written


def extract_archive(
    archive: str | Path,
    dest: str | Path,
    max_files: int = MAX_FILES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
) -> ExtractResult:
    """Extract the image members of ``archive`` into ``dest`` (created; must be empty if it exists).

    Refuses (ArchiveError) absolute or ``..`` member names, symlinks, encrypted members, more than
    ``max_files`` images, more than ``max_total_bytes`` inflated, and any member inflating more
    than ``max_ratio`` times its compressed size. On any error, everything written is removed.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file")
    if not zipfile.is_zipfile(archive):
        raise ArchiveError(f"{archive.name} is not a zip file; upload a .zip of images (class folders give labels)")
    if dest.exists() and any(dest.iterdir()):
        raise ArchiveError(f"{dest} is not empty; extract into a new folder")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{archive.name} is not a readable zip file ({error})") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise ArchiveError(f"{archive.name} is an empty zip")
        chosen, skipped = _plan(archive, infos, max_files, max_total_bytes, max_ratio)
        if not chosen:
            listed = ", ".join(name for name, _ in skipped[:3]) or "only folders or hidden files"
            raise ArchiveError(f"{archive.name} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); found: {listed}")
        created_dest = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        files: list[Path] = []
        total = 0
        try:
            for info, parts in chosen:
                target = root.joinpath(*parts)
                if not target.resolve().is_relative_to(root):  # belt and braces after _member_parts
                    raise ArchiveError(f"refused: member {info.filename!r} resolves outside the target folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                total += _stream(zf, info, target, total, max_total_bytes, max_ratio)
                files.append(target)
        except BaseException:
            _remove_contents(dest, remove_self=created_dest)
            raise
    return ExtractResult(files=files, skipped=skipped)


def find_data_root(folder: str | Path) -> Path:
    """Descend through wrapper folders: a zip of ``birds/<class>/*.jpg`` has its classes under ``birds``.

    Stops at the first level that holds image files or more than one visible sub-folder.
    """
    folder = Path(folder)
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
        has_images = any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)
        subfolders = [e for e in entries if e.is_dir()]
        if has_images or len(subfolders) != 1:
            return folder
        folder = subfolders[0]


def _remove_contents(dest: Path, remove_self: bool) -> None:
    if remove_self:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for entry in dest.iterdir():  # dest was empty before: everything in it is ours
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
