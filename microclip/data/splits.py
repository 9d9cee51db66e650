"""The reference's train/test splits, computed from each archive's own files.

Each function reads an archive in the layout its publisher ships (the layout torchvision's download
leaves too) and returns (image file, label) pairs, labels indexing the reference's class strings.
The reference's split scripts are in its `extra_scripts/` and `utils/data_handler.py`:

- FGVC-Aircraft: `images_variant_train.txt` (3,334) / `images_variant_test.txt` (3,333); the
  reference trains on `train`, not `trainval` (6,667), which is the "official" protocol here.
- Flowers102: CoOp's `split_zhou_OxfordFlowers.json`, train (4,093) / test (2,463); the val part
  (1,633) is unused, as in the reference.
- SUN397: per class, in ClassName.txt order, one `random.seed(0)` stream shuffles the class's files;
  train = round(0.7 n), val = round(0.1 n), test = the rest (Python's round: halves to even).
  NOT bit-reproducible: the reference shuffles `os.listdir` order, which depends on the file system;
  here the files are sorted first. Same seed, sizes and procedure, a different draw.
- Caltech101: BACKGROUND_Google and Faces_easy dropped; per class `np.random.choice(n, 30,
  replace=False)` from one `np.random.seed(0)` stream over the sorted file names; the rest is test.
  NOT bit-reproducible: the reference visits the classes in `os.listdir` order (file-system
  dependent), which decides which part of the stream each class gets; here they are visited sorted.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from microclip.data.errors import DatasetError, DatasetNotFoundError
from microclip.data.names import match_key

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    from microclip.data.catalog import Benchmark

Items = list[tuple[Path, int]]

SUN397_TRAIN, SUN397_VAL = 0.7, 0.1
CALTECH101_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH101_TRAIN_PER_CLASS = 30


def folder_aliases(benchmark: Benchmark, classes: list[str]) -> dict[str, str]:
    """Class folder names other than the class strings that the reference's own layouts use."""
    aliases: dict[str, str] = {}
    if benchmark.folder_names:  # eurosat: "AnnualCrop" is "Annual Crop Land"
        aliases.update(zip(benchmark.folder_names, classes))
    if benchmark.name == "caltech101":  # folders as 101_ObjectCategories names them, before the reference's renames
        aliases.update(CALTECH101_RENAMES)
    if benchmark.name == "flowers":  # the reference's extra script writes folders "1" .. "102"
        aliases.update({str(i + 1): name for i, name in enumerate(classes)})
    return aliases


def class_index(classes: Sequence[str], aliases: dict[str, str] | None = None) -> dict[str, int]:
    """{match key: label} for the class strings and for any alias (folder name -> class string)."""
    index = {match_key(name): i for i, name in enumerate(classes)}
    for alias, name in (aliases or {}).items():
        index[match_key(alias)] = index[match_key(name)]
    return index


def _label(index: dict[str, int], name: str, where: str) -> int:
    label = index.get(match_key(name))
    if label is None:
        raise DatasetError(f"{where}: class {name!r} is not one of the reference's classes")
    return label


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"split file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _visible_files(folder: Path) -> list[str]:
    """The sorted names of the visible files in `folder` (hidden files are never images of the archive)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def check_exist(items: Items, what: str) -> Items:
    missing = [str(p) for p, _ in items if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{what}: {len(missing)} of {len(items)} listed images are missing, e.g. {missing[0]}"
        )
    return items


# ------------------------------------------------------------------ FGVC-Aircraft


def fgvc_split(data_dir: str | Path, split: str, classes: Sequence[str]) -> Items:
    """`images_variant_<split>.txt` of `fgvc-aircraft-2013b/data` ("<image id> <variant>" lines)."""
    data_dir = Path(data_dir)
    lines = _read_lines(data_dir / f"images_variant_{split}.txt")
    index = class_index(classes)
    items = []
    for line in lines:
        image_id, _, variant = line.partition(" ")
        items.append((data_dir / "images" / f"{image_id}.jpg", _label(index, variant, f"images_variant_{split}.txt")))
    return check_exist(items, f"{data_dir}/images_variant_{split}.txt")


# ------------------------------------------------------------------ Flowers102 (CoOp's split file)


# CoOp's split_zhou_OxfordFlowers.json names a few classes differently from the reference's strings
# (its names come from a community cat_to_name.json); the reference reads the label and ignores the name.
COOP_FLOWERS_ALIASES = {59: ("pink-yellow dahlia", "pink-yellow dahlia?"), 77: ("lotus lotus",), 92: ("ball moss",)}


def read_coop_split(split_file: str | Path, image_dir: str | Path, split: str, classes: Sequence[str]) -> Items:
    """The `split` ("train", "val", "test") of a CoOp split file: {split: [[image, label, class name], ...]}.

    Entries are paired with the reference's classes by label (0-based), as the reference does; a class
    name that differs from the reference's string is noted once (:func:`coop_name_differences`), never fatal.
    """
    split_file, image_dir = Path(split_file), Path(image_dir)
    entries = coop_entries(split_file, split, len(classes))
    differences = coop_name_differences(entries, classes)
    if differences:
        known = all(name in COOP_FLOWERS_ALIASES.get(label, ()) for label, name in differences.items())
        log.log(logging.INFO if known else logging.WARNING,
                "%s: %d class name(s) differ from the reference's strings (paired by label, as the reference "
                "does%s): %s", split_file.name, len(differences), "; CoOp's known aliases" if known else "",
                ", ".join(f"{label} {name!r} = {classes[label]!r}" for label, name in sorted(differences.items())))
    items = [(image_dir / image, label) for image, label, _ in entries]
    return check_exist(items, f"{split_file.name} ({split})")


def coop_entries(split_file: Path, split: str, n_classes: int) -> list[tuple[str, int, str]]:
    """The well-formed (image, label, name) entries of one split; anything else is a DatasetError."""
    try:
        data = json.loads(split_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetNotFoundError(f"split file not found: {split_file}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"{split_file.name}: not a JSON split file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get(split), list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{split_file.name}: expected {{{split!r}: [[image, label, class name], ...]}}, got {keys}")
    entries = []
    for n, entry in enumerate(data[split]):
        well_formed = isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
        if not (well_formed and isinstance(entry[1], int) and not isinstance(entry[1], bool)):
            raise DatasetError(f"{split_file.name}: {split} entry {n} is {entry!r}, not [image, label, class name]")
        if not 0 <= entry[1] < n_classes:
            raise DatasetError(f"{split_file.name}: {split} entry {n} has label {entry[1]}, outside the "
                               f"reference's {n_classes} classes (0 .. {n_classes - 1})")
        entries.append((entry[0], entry[1], str(entry[2])))
    return entries


def coop_name_differences(entries: Sequence[tuple[str, int, str]], classes: Sequence[str]) -> dict[int, str]:
    """{label: the file's name} for every label whose name is not the reference's string (case, spaces,
    punctuation ignored)."""
    return {label: name for _, label, name in entries if match_key(name) != match_key(classes[label])}


# ------------------------------------------------------------------ SUN397


def _round(x: float) -> int:
    return int(round(x))  # Python's round, as the reference: halves go to the even neighbour


def sun397_split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes of a class of `n` images in the reference's SUN397 split."""
    train = _round(n * SUN397_TRAIN)
    val = _round(n * SUN397_VAL)
    return train, val, n - train - val


def sun397_splits(sun_dir: str | Path, classes: Sequence[str], seed: int = 0) -> dict[str, Items]:
    """{"train", "val", "test"} of `SUN397/` (ClassName.txt lists "/a/abbey", "/a/apse/indoor", ...)."""
    sun_dir = Path(sun_dir)
    paths = [p.lstrip("/") for p in _read_lines(sun_dir / "ClassName.txt")]
    index = class_index(classes)
    rng = random.Random(seed)  # one stream for all classes, as random.seed(seed) once in the reference
    out: dict[str, Items] = {"train": [], "val": [], "test": []}
    for path in paths:
        label = _label(index, path.split("/", 1)[1], "ClassName.txt")
        folder = sun_dir / path
        if not folder.is_dir():
            raise DatasetNotFoundError(f"SUN397 class folder not found: {folder} (listed in ClassName.txt)")
        names = _visible_files(folder)
        rng.shuffle(names)
        n_train, n_val, _ = sun397_split_sizes(len(names))
        parts = {"train": names[:n_train], "val": names[n_train : n_train + n_val], "test": names[n_train + n_val :]}
        for split, chosen in parts.items():
            out[split] += [(folder / name, label) for name in chosen]
    return out


# ------------------------------------------------------------------ Caltech101


CALTECH101_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


def caltech101_splits(
    categories_dir: str | Path, classes: Sequence[str], seed: int = 0, n_train: int = CALTECH101_TRAIN_PER_CLASS
) -> dict[str, Items]:
    """{"train", "test"} of `101_ObjectCategories/`: `n_train` random images per class, the rest test."""
    categories_dir = Path(categories_dir)
    if not categories_dir.is_dir():
        raise DatasetNotFoundError(f"Caltech101 folder not found: {categories_dir}")
    index = class_index(classes, CALTECH101_RENAMES)
    folders = sorted(e.name for e in os.scandir(categories_dir) if e.is_dir() and not e.name.startswith("."))
    state = np.random.RandomState(seed)  # the legacy global generator of np.random.seed(seed)
    out: dict[str, Items] = {"train": [], "test": []}
    for folder in folders:
        if folder in CALTECH101_IGNORED:
            continue
        label = _label(index, folder, str(categories_dir))
        files = _visible_files(categories_dir / folder)
        if len(files) < n_train:
            raise DatasetError(f"{categories_dir / folder}: {len(files)} images, fewer than the {n_train} to train on")
        chosen = set(state.choice(len(files), size=n_train, replace=False).tolist())
        for i, name in enumerate(files):
            out["train" if i in chosen else "test"].append((categories_dir / folder / name, label))
    return out
