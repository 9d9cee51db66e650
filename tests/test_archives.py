"""Safe zip extraction: each unsafe archive is built with ``zipfile`` and must be refused cleanly."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from microclip.data.archives import ArchiveError, extract_archive, find_data_root


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=9 if compression else None) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(archive folder, dest) with dest nested two levels deep so that '../' escapes would be visible."""
    dest = tmp_path / "jail" / "dest"
    (tmp_path / "jail").mkdir()
    return tmp_path, dest


def test_extracts_images_keeps_class_folders_and_skips_junk(sandbox):
    tmp, dest = sandbox
    archive = write_zip(
        tmp / "ok.zip",
        {
            "birds/robin/a.png": png_bytes(),
            "birds/robin/b.PNG": png_bytes(),
            "birds/wren/c.png": png_bytes(),
            "birds/notes.txt": b"hello",
            "__MACOSX/birds/robin/._a.png": b"junk",
            "birds/.hidden/d.png": png_bytes(),
            "birds/robin/.e.png": png_bytes(),
        },
    )
    result = extract_archive(archive, dest)
    names = sorted(p.relative_to(dest).as_posix() for p in result.files)
    assert names == ["birds/robin/a.png", "birds/robin/b.PNG", "birds/wren/c.png"]
    assert sorted(p.relative_to(dest).as_posix() for p in files_under(dest)) == names
    assert result.skipped == [("birds/notes.txt", "not an image file (by its extension)")]
    assert find_data_root(dest) == dest / "birds"
    assert extract_archive(archive, tmp / "again").files == [tmp / "again" / n for n in names]


@pytest.mark.parametrize("name", ["../evil.png", "ok/../../evil.png", "/tmp/evil.png", "..\\evil.png", "C:/evil.png"])
def test_path_traversal_is_refused_and_nothing_escapes(sandbox, name):
    tmp, dest = sandbox
    archive = write_zip(tmp / "bad.zip", {"good.png": png_bytes(), name: png_bytes()})
    with pytest.raises(ArchiveError, match="path traversal"):
        extract_archive(archive, dest)
    assert files_under(tmp / "jail") == []
    assert not (tmp / "evil.png").exists()


def test_symlink_member_is_refused(sandbox):
    tmp, dest = sandbox
    info = zipfile.ZipInfo("link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp / "link.zip", "w") as zf:
        zf.writestr("a.png", png_bytes())
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        extract_archive(tmp / "link.zip", dest)
    assert files_under(tmp / "jail") == []


def _patch_headers(data: bytes, local_offset: int, central_offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one field in the (single) member's local header and central-directory entry."""
    raw = bytearray(data)
    local = raw.find(b"PK\x03\x04")
    central = raw.rfind(b"PK\x01\x02")
    struct.pack_into(fmt, raw, local + local_offset, value)
    struct.pack_into(fmt, raw, central + central_offset, value)
    return bytes(raw)


def test_encrypted_member_is_refused(sandbox):
    tmp, dest = sandbox
    data = write_zip(tmp / "plain.zip", {"a.png": png_bytes()}, zipfile.ZIP_STORED).read_bytes()
    (tmp / "enc.zip").write_bytes(_patch_headers(data, 6, 8, "<H", 0x1))  # general-purpose flag bit 0
    with pytest.raises(ArchiveError, match="encrypted"):
        extract_archive(tmp / "enc.zip", dest)
    assert files_under(tmp / "jail") == []


def test_too_many_files_is_refused(sandbox):
    tmp, dest = sandbox
    archive = write_zip(tmp / "many.zip", {f"c/{i}.png": png_bytes() for i in range(4)})
    with pytest.raises(ArchiveError, match="4 images, more than the limit of 3"):
        extract_archive(archive, dest, max_files=3)
    assert files_under(tmp / "jail") == []


def test_total_size_over_limit_is_refused(sandbox):
    tmp, dest = sandbox
    archive = write_zip(tmp / "big.zip", {f"c/{i}.png": png_bytes() for i in range(3)})
    with pytest.raises(ArchiveError, match="more than the limit"):
        extract_archive(archive, dest, max_total_bytes=100)
    assert files_under(tmp / "jail") == []


def test_zip_bomb_is_refused_by_its_ratio(sandbox):
    tmp, dest = sandbox
    zeros = bytes(8 * 1024 * 1024)  # 8 MB of zeros deflate to a few KB
    archive = write_zip(tmp / "bomb.zip", {"a.png": png_bytes(), "bomb/b.png": zeros, "bomb/c.png": zeros})
    assert archive.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_archive(archive, dest, max_total_bytes=4 * 1024 * 1024)
    assert files_under(tmp / "jail") == []


def test_zip_bomb_is_refused_by_total_even_with_a_lax_ratio(sandbox):
    tmp, dest = sandbox
    zeros = bytes(3 * 1024 * 1024)
    archive = write_zip(tmp / "bomb.zip", {f"bomb/{i}.png": zeros for i in range(3)})
    with pytest.raises(ArchiveError, match="limit of 4.2 MB"):
        extract_archive(archive, dest, max_total_bytes=4 * 1024 * 1024, max_ratio=10_000)
    assert files_under(tmp / "jail") == []


def test_member_whose_header_lies_about_its_size_is_refused(sandbox):
    tmp, dest = sandbox
    zeros = bytes(3 * 1024 * 1024)
    data = write_zip(tmp / "honest.zip", {"a.png": zeros}).read_bytes()
    # Declare 1,000 bytes uncompressed: the declared checks pass, the inflated bytes do not match.
    (tmp / "liar.zip").write_bytes(_patch_headers(data, 22, 24, "<I", 1000))
    with zipfile.ZipFile(tmp / "liar.zip") as zf:
        assert zf.infolist()[0].file_size == 1000
    with pytest.raises(ArchiveError, match="header lies"):
        extract_archive(tmp / "liar.zip", dest, max_total_bytes=1024 * 1024)
    assert files_under(tmp / "jail") == []


def test_not_a_zip_empty_zip_and_no_images(sandbox):
    tmp, dest = sandbox
    (tmp / "text.zip").write_text("not a zip at all")
    with pytest.raises(ArchiveError, match="not a zip file"):
        extract_archive(tmp / "text.zip", dest)
    write_zip(tmp / "empty.zip", {})
    with pytest.raises(ArchiveError, match="empty zip"):
        extract_archive(tmp / "empty.zip", dest)
    write_zip(tmp / "docs.zip", {"readme.txt": b"x", "__MACOSX/._a.png": b"y"})
    with pytest.raises(ArchiveError, match="no image files.*readme.txt"):
        extract_archive(tmp / "docs.zip", dest)
    assert files_under(tmp / "jail") == []


def test_refuses_a_non_empty_destination(sandbox):
    tmp, dest = sandbox
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    archive = write_zip(tmp / "ok.zip", {"a.png": png_bytes()})
    with pytest.raises(ArchiveError, match="not empty"):
        extract_archive(archive, dest)
    assert (dest / "mine.txt").read_text() == "keep me"
