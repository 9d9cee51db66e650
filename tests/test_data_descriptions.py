"""load_descriptions: matching keys to classes, missing classes, malformed files."""

from __future__ import annotations

import json
import logging

import pytest

from microclip.data.descriptions import DescriptionsError, load_descriptions

CLASSES = ["Black-footed Albatross", "Laysan Albatross", "Rufous Hummingbird"]


def _write(path, data) -> None:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_exact_and_normalised_keys_in_class_order(tmp_path):
    _write(
        tmp_path / "d.json",
        {
            "Rufous Hummingbird": ["a small orange bird."],
            "black_footed albatross": ["a dark seabird.", "  ", "long wings."],
            "Laysan Albatross": ["white head."],
            "Dodo": ["extinct."],
        },
    )
    result = load_descriptions(tmp_path / "d.json", CLASSES)
    assert list(result) == CLASSES
    assert result["Black-footed Albatross"] == ["a dark seabird.", "long wings."]  # blank sentences dropped
    assert result["Rufous Hummingbird"] == ["a small orange bird."]


def test_folder_with_dataset_file(tmp_path):
    _write(tmp_path / "cub.json", {c: [f"a {c}."] for c in CLASSES})
    assert load_descriptions(tmp_path, CLASSES, dataset="cub")["Laysan Albatross"] == ["a Laysan Albatross."]
    with pytest.raises(DescriptionsError, match=r"not found: .*flowers\.json"):
        load_descriptions(tmp_path, CLASSES, dataset="flowers")
    with pytest.raises(DescriptionsError, match="data set name"):
        load_descriptions(tmp_path, CLASSES)


def test_missing_classes_are_named_with_the_way_out(tmp_path):
    _write(tmp_path / "descriptions.json", {"Laysan Albatross": ["white head."]})
    with pytest.raises(DescriptionsError) as info:
        load_descriptions(tmp_path / "descriptions.json", CLASSES)
    message = str(info.value)
    assert "descriptions.json has no entry for class 'Black-footed Albatross'" in message
    assert "2 of 3 classes missing" in message and "'Rufous Hummingbird'" in message
    assert "--allow_missing_descriptions" in message


def test_allow_missing_maps_to_empty_lists_and_warns(tmp_path, caplog):
    _write(tmp_path / "d.json", {"Laysan Albatross": ["white head."], "Rufous Hummingbird": []})
    with caplog.at_level(logging.WARNING, logger="microclip.data.descriptions"):
        result = load_descriptions(tmp_path / "d.json", CLASSES, allow_missing=True)
    assert result == {"Black-footed Albatross": [], "Laysan Albatross": ["white head."], "Rufous Hummingbird": []}
    assert "2 of 3 classes have no descriptions" in caplog.text


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("{not json", "invalid JSON"),
        (["a list"], "expected an object"),
        ({"Laysan Albatross": "a string"}, "must be a list of strings"),
        ({"Laysan Albatross": [1, 2]}, "must be a list of strings"),
    ],
)
def test_malformed_files(tmp_path, content, pattern):
    _write(tmp_path / "bad.json", content)
    with pytest.raises(DescriptionsError, match=pattern):
        load_descriptions(tmp_path / "bad.json", CLASSES, allow_missing=True)
