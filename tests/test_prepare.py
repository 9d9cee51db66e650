"""One preparation of user input (microclip.prepare), one number format (microclip.formats), and the one batch run
(microclip.batch.run) that the command line and the Batch tab share: its predictions.csv writes the null weight in
scientific notation, never a rounded 0."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from conftest import draw_sample, tiny_base_registry

from microclip import batch
from microclip.formats import number, small_number
from microclip.prepare import cap_evenly, parse_class_names, readable


def test_class_names_are_split_on_commas_and_lines_with_blanks_and_repeats_dropped():
    assert parse_class_names("wren, tit\n\n finch ,wren,") == ["wren", "tit", "finch"]
    assert parse_class_names(["a", " ", "b", "a"]) == ["a", "b"]
    assert parse_class_names(None) == [] and parse_class_names("  ,\n") == []


def test_the_cap_keeps_an_evenly_spaced_sample_with_both_ends():
    kept, note = cap_evenly(list(range(100)), 5)
    assert kept == [0, 25, 50, 74, 99] and "95 images over the cap of 5" in note  # linspace, rounded half to even
    assert cap_evenly([1, 2], 5) == ([1, 2], "")


def test_readable_keeps_decodable_images_and_names_the_others(tmp_path):
    draw_sample(0, np.random.default_rng(0)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    seen = []
    good, skipped = readable(
        [(str(tmp_path / "good.png"), 0), (str(tmp_path / "bad.png"), 1)], None, tmp_path, seen.append
    )
    assert good == [(str(tmp_path / "good.png"), 0)] and seen == [0, 1]
    assert [name for name, _ in skipped] == ["bad.png"]


def test_small_numbers_never_read_as_zero():
    assert small_number(2.4567e-05) == "2.46e-05" and small_number(0.0) == "0.00e+00"
    assert number(2.4567e-05) == "2.46e-05" and number(0.25) == "0.2500" and number(None) == "–"


def test_one_batch_run_writes_the_bundle_with_scientific_null_weights(tiny_model_dir, tmp_path):
    model = tiny_base_registry(tiny_model_dir).get("tiny").model
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        draw_sample(index, rng).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"nope")
    result = batch.run(model, folder, tmp_path / "out.zip", work=tmp_path / "work", note_for_test="kept")
    assert [item.name for item in result.items] == ["0.png", "1.png", "2.png"] and result.overlays is None
    assert [name for name, _ in result.skipped] == ["broken.png"] and result.bundle == tmp_path / "out.zip"
    with zipfile.ZipFile(result.bundle) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("predictions.csv").decode())))
        settings = json.loads(zf.read("settings.json"))
    assert settings["note_for_test"] == "kept" and settings["n_explained"] == 3 and settings["n_skipped"] == 1
    for row, item in zip(rows, result.items):
        assert row["null weight"] == small_number(item.explanation.null_weight)
        assert float(row["null weight"]) == pytest.approx(item.explanation.null_weight, rel=1e-2)
    with pytest.raises(ValueError, match="ending in .zip"):
        batch.run(model, folder, tmp_path / "out.tar", work=tmp_path / "work2")
    with pytest.raises(ValueError, match="turned off"):
        batch.run(model, folder, work=tmp_path / "work3", allow_local_paths=False)
