"""`--download`: fetch a benchmark with torchvision into `<root>/<name>/raw`, export the folder layout.

Splits, compared with the reference (method.md section 7):
- dtd (partition 1: train+val / test), fgvc (trainval / test, variants), food101, pets
  (trainval / test) and cars (train / test): the same splits as the reference.
- eurosat: the first 1,000 (train) and next 500 (val) images of each class in sorted file-name
  order, as the reference's script does.
- flowers: train = official train + val (2,040), test = official test (6,149). The reference uses
  CoOp's split_zhou_OxfordFlowers.json (4,093 / 2,463), which torchvision does not provide, so
  numbers on this split are not comparable with the reference's.
- caltech101: BACKGROUND_Google and Faces_easy dropped (100 classes), 30 random training images per
  class (seed 0), the rest test. The same protocol, but not the same random draw as the reference.
- sun397: a random 70% / 20% train / test split (seed 0, the remaining 10% unused). The same
  proportions, not the same draw.
Class folders are written as "NNN.<class name>" (label order) so that their sorted order is the
label order; `clean_class_name` and the order check strip the number again.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from microclip.data.catalog import Benchmark
from microclip.data.shipped import shipped_classnames

log = logging.getLogger(__name__)

Items = list[tuple[Path, int]]  # (source image file, label)
Splits = tuple[list[str], dict[str, Items]]  # class names, {"train"/"test": items}


class DatasetDownloadError(RuntimeError):
    """torchvision could not fetch or read the raw data."""


def _tv(benchmark: Benchmark, raw: Path, **kwargs):
    """Instantiate the torchvision dataset, downloading only when the raw files are not there yet."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, benchmark.torchvision)
    try:
        return cls(str(raw), **kwargs)
    except (RuntimeError, FileNotFoundError):
        return cls(str(raw), download=True, **kwargs)


def _pairs(files, labels) -> Items:
    return [(Path(f), int(y)) for f, y in zip(files, labels)]


def _by_split(benchmark: Benchmark, raw: Path, splits: dict[str, list[str]], **kwargs) -> Splits:
    """Torchvision datasets with their own split argument: {ours: [theirs, ...]}."""
    out: dict[str, Items] = {}
    classes: list[str] = []
    for ours, theirs in splits.items():
        out[ours] = []
        for split in theirs:
            ds = _tv(benchmark, raw, split=split, **kwargs)
            classes = list(ds.classes)
            if hasattr(ds, "_samples"):  # StanfordCars
                out[ours] += _pairs(*zip(*ds._samples))
            else:
                files = ds._image_files if hasattr(ds, "_image_files") else ds._images  # pets: _images
                out[ours] += _pairs(files, ds._labels)
    return classes, out


def _per_class_split(items: Items, pick: Callable[[list[Path]], tuple[list[Path], list[Path]]]) -> dict[str, Items]:
    by_class: dict[int, list[Path]] = defaultdict(list)
    for path, label in items:
        by_class[label].append(path)
    out: dict[str, Items] = {"train": [], "test": []}
    for label in sorted(by_class):
        train, test = pick(sorted(by_class[label]))
        out["train"] += [(p, label) for p in train]
        out["test"] += [(p, label) for p in test]
    return out


def _eurosat(benchmark: Benchmark, raw: Path) -> Splits:
    ds = _tv(benchmark, raw)
    return list(ds.classes), _per_class_split(_pairs(*zip(*ds.samples)), lambda files: (files[:1000], files[1000:1500]))


def _caltech101(benchmark: Benchmark, raw: Path) -> Splits:
    ds = _tv(benchmark, raw)
    base = Path(ds.root) / "101_ObjectCategories"
    kept = [c for c in ds.categories if c != "Faces_easy"]  # BACKGROUND_Google is already dropped
    new_label = {ds.categories.index(c): i for i, c in enumerate(kept)}
    items = [
        (base / ds.categories[y] / f"image_{index:04d}.jpg", new_label[y])
        for index, y in zip(ds.index, ds.y)
        if y in new_label
    ]
    rng = random.Random(0)

    def pick(files: list[Path]) -> tuple[list[Path], list[Path]]:
        train = set(rng.sample(files, min(30, len(files))))
        return sorted(train), [f for f in files if f not in train]

    return kept, _per_class_split(items, pick)


def _sun397(benchmark: Benchmark, raw: Path) -> Splits:
    ds = _tv(benchmark, raw)
    items = sorted(_pairs(ds._image_files, ds._labels))
    random.Random(0).shuffle(items)
    n_train, n_test = int(0.7 * len(items)), int(0.2 * len(items))
    return list(ds.classes), {"train": items[:n_train], "test": items[len(items) - n_test :]}


_SPLITTERS: dict[str, Callable[[Benchmark, Path], Splits]] = {
    "flowers": lambda b, raw: _by_split(b, raw, {"train": ["train", "val"], "test": ["test"]}),
    "dtd": lambda b, raw: _by_split(b, raw, {"train": ["train", "val"], "test": ["test"]}, partition=1),
    "fgvc": lambda b, raw: _by_split(b, raw, {"train": ["trainval"], "test": ["test"]}, annotation_level="variant"),
    "food101": lambda b, raw: _by_split(b, raw, {"train": ["train"], "test": ["test"]}),
    "pets": lambda b, raw: _by_split(b, raw, {"train": ["trainval"], "test": ["test"]}),
    "cars": lambda b, raw: _by_split(b, raw, {"train": ["train"], "test": ["test"]}),
    "eurosat": _eurosat,
    "caltech101": _caltech101,
    "sun397": _sun397,
}


def class_folder_names(benchmark: Benchmark, classes: list[str]) -> list[str]:
    """Folder names in label order: EuroSAT keeps its own (as the reference), others get "NNN.name"."""
    if benchmark.folder_names is not None:
        return list(benchmark.folder_names)
    shipped = shipped_classnames(benchmark.name)
    if shipped is not None and len(shipped) == len(classes):
        classes = shipped  # prompt names; torchvision's differ slightly for flowers
    return [f"{i + 1:03d}.{name.replace('/', ' ').replace(os.sep, ' ').strip()}" for i, name in enumerate(classes)]


def export_splits(dest: Path, folders: list[str], splits: dict[str, Items], split_folder: Callable[[str], str]) -> None:
    """Copy the images into `dest/<split folder>/<class folder>/`; each split appears only when complete."""
    dest.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        target = dest / split_folder(split)
        if target.exists():
            log.info("%s exists; not exporting it again", target)
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=dest))
        try:
            for folder in folders:
                (tmp / folder).mkdir()
            for path, label in items:
                out = tmp / folders[label] / path.name
                if out.exists():  # same file name in two source folders of one class
                    out = out.with_name(f"{path.parent.name}_{path.name}")
                shutil.copyfile(path, out)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("exported %d images to %s", len(items), target)


def download_benchmark(benchmark: Benchmark, root: str | Path) -> None:
    """Fetch `benchmark` into `<root>/<name>/raw` with torchvision and export `<root>/<name>/{train,test}`."""
    splitter = _SPLITTERS.get(benchmark.name)
    if splitter is None:
        raise DatasetDownloadError(f"{benchmark.title} cannot be downloaded automatically: {benchmark.manual}")
    dest = Path(root) / benchmark.name
    raw = dest / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s with torchvision.datasets.%s into %s", benchmark.title, benchmark.torchvision, raw)
    try:
        classes, splits = splitter(benchmark, raw)
    except Exception as err:  # network, checksum, archive and torchvision errors all end here
        note = f" ({benchmark.download_note})" if benchmark.download_note else ""
        raise DatasetDownloadError(
            f"could not download {benchmark.title} into {raw} (no network?){note}: {type(err).__name__}: {err}"
        ) from err
    export_splits(dest, class_folder_names(benchmark, classes), splits, benchmark.split_folder)
