"""atomic_write: whole files or none, readable by the group, nothing left behind on failure; parse_json's one line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from microclip.checkpoint import CheckpointError, CheckpointMeta
from microclip.files import atomic_write, atomic_write_json, parse_json, slug
from microclip.recipe import ConfigError, Recipe


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    atomic_write_json(out, {"Pug": ["Old."]})

    with pytest.raises(TypeError):
        atomic_write_json(out, {"Pug": ["New."], "Boxer": [object()]})  # not JSON-serialisable midway

    assert json.loads(out.read_text()) == {"Pug": ["Old."]}
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]


def test_files_are_readable_by_the_group_and_folders_are_made(tmp_path: Path) -> None:
    import os

    out = tmp_path / "a" / "b" / "x.bin"
    old = os.umask(0o022)  # the usual umask; mkstemp alone would give 0600
    try:
        atomic_write(out, lambda tmp: tmp.write_bytes(b"\x00\x01"))
    finally:
        os.umask(old)
    assert out.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_an_interrupted_writer_leaves_the_target_untouched(tmp_path: Path) -> None:
    out = tmp_path / "state.bin"
    out.write_bytes(b"old")

    def half_then_killed(tmp: Path) -> None:
        tmp.write_bytes(b"new but only ha")
        raise KeyboardInterrupt  # BaseException, as a Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(out, half_then_killed)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_parse_json_reads_json_and_names_what_was_not_json() -> None:
    assert parse_json('{"a": [1, 2]}', "x") == {"a": [1, 2]}
    with pytest.raises(ValueError, match=r"^notes\.json is not valid JSON \(Expecting .*line 1 column 2") as caught:
        parse_json("{not json", "notes.json")
    assert "\n" not in str(caught.value) and caught.value.__cause__ is None


def test_each_reader_raises_its_own_user_error_for_text_that_is_not_json() -> None:
    with pytest.raises(ConfigError, match=r"^flowers\.json is not valid JSON \("):
        Recipe.from_json("{", "flowers.json")
    with pytest.raises(CheckpointError, match=r"^run\.safetensors: metadata is not valid JSON \("):
        CheckpointMeta.from_json("[", "run.safetensors")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("toybird-dastrel-wren", "toybird-dastrel-wren"),  # kept as it is
        ("class demo · saved 7 Dec", "class-demo-saved-7-Dec"),  # each run of other characters is one "-"
        ("../../etc/passwd", "etc-passwd"),  # no way out of the folder, no hidden file
        ("élan vital", "lan-vital"),
        ("···", "fallback"),  # nothing left
    ],
)
def test_slug_keeps_what_every_file_system_keeps(text: str, expected: str) -> None:
    assert slug(text, "fallback") == expected
    assert slug("a" * 200, "x", limit=80) == "a" * 80
