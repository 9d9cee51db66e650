"""`--download`: fetch a benchmark with torchvision into `<root>/<name>/raw`, export the reference's split.

Splits, as the reference's `extra_scripts/` and loaders make them (docs/method.md §7; the
procedures for fgvc, flowers, sun397 and caltech101 are in `splits.py`):
- dtd (partition 1: train+val / test), food101, pets (trainval / test), cars (train / test) and
  eurosat (the first 1,000 / next 500 images of each class in sorted file order): as the reference.
- fgvc: `train` (3,334) / `test`, as the reference; the "official" protocol exports trainval
  (6,667) / test to `<root>/fgvc/official/`.
- flowers: nothing is exported; the images stay in `raw/flowers-102/jpg` and CoOp's
  `split_zhou_OxfordFlowers.json` is fetched from Google Drive into `<root>/flowers/` and read in
  place (4,093 / 2,463). The "official" protocol exports train+val / test (2,040 / 6,149) to
  `<root>/flowers/official/`.
- caltech101 and sun397: the reference's procedure, seed and sizes, but not its exact random draw
  (it depends on the `os.listdir` order of the machine that ran it; see `splits.py`).
Class folders are written as "NNN.<class string>" (label order; EuroSAT keeps its own folder
names, as the reference); `datasets.map_benchmark_folders` pairs them with the strings by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from microclip.data.catalog import FLOWERS_SPLIT_ID, FLOWERS_SPLIT_URL, Benchmark
from microclip.data.names import match_key
from microclip.data.shipped import shipped_classnames
from microclip.data.splits import caltech101_splits, class_index, fgvc_split, folder_aliases, sun397_splits
from microclip.files import shareable_tempdir

log = logging.getLogger(__name__)

Items = list[tuple[Path, int]]  # (source image file, label of the reference's class strings)


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


def _relabel(benchmark: Benchmark, items: Items, source_classes: list[str]) -> Items:
    """Re-index torchvision's labels onto the reference's class strings (paired by name)."""
    reference = shipped_classnames(benchmark.name) or []
    index = class_index(reference, folder_aliases(benchmark, reference))
    unknown = sorted({c for c in source_classes if match_key(c) not in index})
    if unknown:
        raise DatasetDownloadError(
            f"torchvision's {benchmark.title} classes {unknown[:4]} match none of the reference's class strings"
        )
    mapping = [index[match_key(c)] for c in source_classes]
    return [(path, mapping[label]) for path, label in items]


def _by_split(benchmark: Benchmark, raw: Path, splits: dict[str, list[str]], **kwargs) -> dict[str, Items]:
    """Torchvision datasets with their own split argument: {ours: [theirs, ...]}."""
    out: dict[str, Items] = {}
    for ours, theirs in splits.items():
        out[ours] = []
        for split in theirs:
            ds = _tv(benchmark, raw, split=split, **kwargs)
            if hasattr(ds, "_samples"):  # StanfordCars
                items = _pairs(*zip(*ds._samples))
            else:
                files = ds._image_files if hasattr(ds, "_image_files") else ds._images  # pets: _images
                items = _pairs(files, ds._labels)
            # Flowers102's labels are the official 0-based labels, the reference's order; it has no names.
            out[ours] += items if benchmark.name == "flowers" else _relabel(benchmark, items, list(ds.classes))
    return out


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


def _eurosat(benchmark: Benchmark, raw: Path) -> dict[str, Items]:
    ds = _tv(benchmark, raw)
    items = _relabel(benchmark, _pairs(*zip(*ds.samples)), list(ds.classes))
    return _per_class_split(items, lambda files: (files[:1000], files[1000:1500]))


def _caltech101(benchmark: Benchmark, raw: Path) -> dict[str, Items]:
    ds = _tv(benchmark, raw)
    return caltech101_splits(Path(ds.root) / "101_ObjectCategories", shipped_classnames(benchmark.name) or [])


def _sun397(benchmark: Benchmark, raw: Path) -> dict[str, Items]:
    _tv(benchmark, raw)
    splits = sun397_splits(raw / "SUN397", shipped_classnames(benchmark.name) or [])
    return {"train": splits["train"], "test": splits["test"]}  # the reference's val part is unused


def _fgvc(split: str) -> Callable[[Benchmark, Path], dict[str, Items]]:
    def splitter(benchmark: Benchmark, raw: Path) -> dict[str, Items]:
        _tv(benchmark, raw, split=split, annotation_level="variant")
        data = raw / "fgvc-aircraft-2013b" / "data"
        classes = shipped_classnames(benchmark.name) or []
        return {"train": fgvc_split(data, split, classes), "test": fgvc_split(data, "test", classes)}

    return splitter


_SPLITTERS: dict[tuple[str, str], Callable[[Benchmark, Path], dict[str, Items]]] = {
    ("flowers", "official"): lambda b, raw: _by_split(b, raw, {"train": ["train", "val"], "test": ["test"]}),
    ("dtd", "reference"): lambda b, raw: _by_split(b, raw, {"train": ["train", "val"], "test": ["test"]}, partition=1),
    ("fgvc", "reference"): _fgvc("train"),
    ("fgvc", "official"): _fgvc("trainval"),
    ("food101", "reference"): lambda b, raw: _by_split(b, raw, {"train": ["train"], "test": ["test"]}),
    ("pets", "reference"): lambda b, raw: _by_split(b, raw, {"train": ["trainval"], "test": ["test"]}),
    ("cars", "reference"): lambda b, raw: _by_split(b, raw, {"train": ["train"], "test": ["test"]}),
    ("eurosat", "reference"): _eurosat,
    ("caltech101", "reference"): _caltech101,
    ("sun397", "reference"): _sun397,
}


def check_complete(benchmark: Benchmark, splits: dict[str, Items]) -> None:
    """Every class of the reference has images in every split (else nothing is exported)."""
    classes = shipped_classnames(benchmark.name) or []
    for split, items in splits.items():
        empty = [classes[i] for i in sorted(set(range(len(classes))) - {label for _, label in items})]
        if empty:
            raise DatasetDownloadError(
                f"{benchmark.title}: the {split} split has no images of {len(empty)} classes ({empty[:4]}); "
                "the raw download looks incomplete; delete its raw/ folder and download again"
            )


def class_folder_names(benchmark: Benchmark, classes: list[str] | None = None) -> list[str]:
    """Folder names in label order: EuroSAT keeps its own (as the reference), others get "NNN.<class string>"."""
    if benchmark.folder_names is not None:
        return list(benchmark.folder_names)
    classes = classes if classes is not None else shipped_classnames(benchmark.name) or []
    return [f"{i + 1:03d}.{name.replace('/', ' ').replace(os.sep, ' ').strip()}" for i, name in enumerate(classes)]


def export_splits(dest: Path, folders: list[str], splits: dict[str, Items], split_folder: Callable[[str], str]) -> None:
    """Copy the images into `dest/<split folder>/<class folder>/`; each split appears only when complete."""
    dest.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        target = dest / split_folder(split)
        if target.exists():
            log.info("%s exists; not exporting it again", target)
            continue
        tmp = shareable_tempdir(f".{split}-", dest)  # renamed into place: it must not stay 0700
        try:
            for folder in folders:
                (tmp / folder).mkdir()
            for path, label in items:
                out = tmp / folders[label] / path.name
                if out.exists():  # same file name in two source folders of one class
                    out = out.with_name(f"{path.parent.name}_{path.name}")
                shutil.copyfile(path, out)
            os.rename(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():
                raise
            # another process preparing the same data set exported this split meanwhile (rename never replaces a
            # folder that has files): its copy is the same images, and a run may be reading it already
            log.info("%s was exported meanwhile by another process; keeping it", target)
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("exported %d images to %s", len(items), target)


def fetch_flowers_split(benchmark: Benchmark, root: str | Path) -> Path:
    """CoOp's split_zhou_OxfordFlowers.json into `<root>/flowers/` (from Google Drive); the file only appears whole."""
    from torchvision.datasets.utils import download_file_from_google_drive

    target = Path(root) / benchmark.name / str(benchmark.split_file)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".split-", dir=target.parent))
    try:
        download_file_from_google_drive(FLOWERS_SPLIT_ID, tmp, target.name)
        data = json.loads((tmp / target.name).read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and isinstance(data.get("train"), list) and isinstance(data.get("test"), list)):
            raise ValueError("the fetched file is not a CoOp split file (no 'train' and 'test' lists)")
        os.replace(tmp / target.name, target)
    except Exception as err:  # network, Google Drive's quota pages, bad content
        raise DatasetDownloadError(
            f"could not fetch {target.name} ({type(err).__name__}: {err}); download it from {FLOWERS_SPLIT_URL} "
            f"(CoOp's DATA.md) into {target.parent}, or use --data_split official for the official split"
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_benchmark(benchmark: Benchmark, root: str | Path, protocol: str = "reference") -> None:
    """Fetch `benchmark` into `<root>/<name>/raw` with torchvision and export the split of `protocol`.

    The reference's split goes to `<root>/<name>/{train,test}`, the official one (flowers, fgvc) to
    `<root>/<name>/official/{train,test}`; flowers' reference split is read in place (no export).
    """
    benchmark.check_protocol(protocol)
    flowers_reference = bool(benchmark.split_file) and protocol == "reference"
    splitter = _SPLITTERS.get((benchmark.name, protocol))
    if splitter is None and not flowers_reference:
        raise DatasetDownloadError(f"{benchmark.title} cannot be downloaded automatically: {benchmark.manual}")
    raw = Path(root) / benchmark.name / "raw"
    if flowers_reference:
        from microclip.data.datasets import split_file_paths

        if split_file_paths(benchmark, root)[1] is not None:  # the images are there already: only the split file
            fetch_flowers_split(benchmark, root)
            return
    raw.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s with torchvision.datasets.%s into %s", benchmark.title, benchmark.torchvision, raw)
    try:
        if flowers_reference:
            _tv(benchmark, raw, split="test")  # the images (raw/flowers-102/jpg)
        else:
            splits = splitter(benchmark, raw)  # type: ignore[misc]
    except Exception as err:  # network, checksum, archive and torchvision errors all end here
        note = f" ({benchmark.download_note})" if benchmark.download_note else ""
        raise DatasetDownloadError(
            f"could not download {benchmark.title} into {raw} (no network?){note}: {type(err).__name__}: {err}"
        ) from err
    if flowers_reference:
        fetch_flowers_split(benchmark, root)
        return
    check_complete(benchmark, splits)
    dest = benchmark.protocol_root(root, protocol)
    export_splits(dest, class_folder_names(benchmark), splits, benchmark.split_folder)
