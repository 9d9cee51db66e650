"""Class names: cleaning folder names into prompt names, comparing names, reading name lists."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# "001.Black_footed_Albatross", "001_name", "12 name": a numeric index in front of the name.
# Requires a separator, so aircraft names such as "707-320" or "A300B4" are left alone.
_NUMERIC_PREFIX = re.compile(r"^\d+[._ ]+(?=\S)")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])")


class ClassOrderError(ValueError):
    """The class folders and the class-name list disagree, so labels would index the wrong names."""


def clean_class_name(folder: str) -> str:
    """A prompt-ready class name from a folder name.

    - a numeric prefix goes: "001.Black_footed_Albatross" -> "Black_footed_Albatross";
    - in capitalised names (CUB style) an underscore before a lower-case word is a hyphen:
      "Black_footed_Albatross" -> "Black-footed Albatross",
      "Black_and_white_Warbler" -> "Black-and-white Warbler";
    - every other underscore is a space: "apple_pie" -> "apple pie",
      "British_Shorthair" -> "British Shorthair";
    - a single CamelCase word is split: "ApplyEyeMakeup" -> "Apply Eye Makeup", "AnnualCrop" -> "Annual Crop".
    Names with spaces already ("AM General Hummer SUV 2000") are kept as they are.
    """
    name = _NUMERIC_PREFIX.sub("", folder.strip())
    if "_" in name:
        words = [w for w in name.split("_") if w]
        capitalised = bool(words) and words[0][:1].isupper()
        out = words[0] if words else ""
        for word in words[1:]:
            # CUB writes "Black-footed" as "Black_footed"; lower-case words after a capital are
            # part of a hyphenated compound. All-lower-case names (food101, pets) use _ for spaces.
            joiner = "-" if capitalised and word[:1].islower() else " "
            out += joiner + word
        name = out
    elif " " not in name and name[:1].isupper() and _CAMEL_BOUNDARY.search(name):
        name = _CAMEL_BOUNDARY.sub(" ", name)
    return re.sub(r"\s+", " ", name).strip()


def normalise_class_name(name: str) -> str:
    """A comparison key: lower case, no numeric prefix, _ and - as spaces, no punctuation, single spaces."""
    key = _NUMERIC_PREFIX.sub("", name.strip()).lower()
    key = re.sub(r"[_\-/]", " ", key)
    key = re.sub(r"[^\w\s]", "", key)
    return re.sub(r"\s+", " ", key).strip()


def match_key(name: str) -> str:
    """`normalise_class_name` without any spaces: the key that pairs a folder with a class string.

    Dropping the spaces makes CamelCase folders ("ApplyEyeMakeup"), underscored ones
    ("apple_pie", "000_AM_General_Hummer_SUV_2000"), hyphen-for-slash ones ("F-16A-B") and
    path-like ones ("apse/indoor") meet the reference's strings ("Apply Eye Makeup", "apple_pie",
    "AM General Hummer SUV 2000", "F-16A/B", "apse (indoor)"). The keys of each reference list are
    unique (tested).
    """
    return normalise_class_name(name).replace(" ", "")


def check_class_order(folders: Sequence[str], names: Sequence[str], source: str, where: str) -> None:
    """Raise `ClassOrderError` unless `folders` (label order) and `names` agree one to one, in order.

    Names are compared after `normalise_class_name`. `source` says where `names` came from and
    `where` which folder was scanned; both go into the message.
    """
    if len(folders) != len(names):
        raise ClassOrderError(
            f"{where} has {len(folders)} class folders but {source} lists {len(names)} classes; "
            "the folders must be exactly the listed classes"
        )
    keys_f = [normalise_class_name(f) for f in folders]
    keys_n = [normalise_class_name(n) for n in names]
    if keys_f == keys_n:
        return
    diffs = [(i, f, n) for i, (f, n, kf, kn) in enumerate(zip(folders, names, keys_f, keys_n)) if kf != kn]
    shown = "; ".join(f"label {i}: folder {f!r} vs listed {n!r}" for i, f, n in diffs[:3])
    if sorted(keys_f) == sorted(keys_n):
        hint = (
            "the same classes in a different order: labels come from the folders sorted "
            "case-sensitively (like torchvision ImageFolder); rename the folders (e.g. with a "
            "'001.' prefix in the listed order) so that they sort in the listed order"
        )
    else:
        hint = "the folder names do not match the listed class names"
    raise ClassOrderError(
        f"class order mismatch between {where} and {source} ({len(diffs)} of {len(names)} differ; "
        f"first: {shown}): {hint}"
    )


def read_classnames(path: str | Path, dataset: str | None = None) -> list[str]:
    """Class names in label order from a .txt (one per line) or .json (a list, or {dataset: list})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: invalid JSON ({err})") from err
        if isinstance(data, dict):
            if dataset is None and len(data) == 1:
                dataset = next(iter(data))
            if dataset not in data:
                raise ValueError(
                    f"{path}: holds class lists for {sorted(data)}; choose one (dataset={dataset!r} is not among them)"
                )
            data = data[dataset]
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise ValueError(f"{path}: expected a list of class-name strings (or {{dataset: list}})")
        names = [n.strip() for n in data]
    else:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names found")
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"{path}: duplicate class names {duplicates[:5]}")
    return names
