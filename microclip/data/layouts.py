"""Where a benchmark's images are on disk: this project's folders and the reference's own, detected.

The reference (`configs/dataset_catalog.json`, `utils/build_dataset.py`) reads

- class folders `<root>/<dir>/<train>/<class>/<image>` and `<root>/<dir>/<test>/...`, with its own
  folder names (`aircrafts` for fgvc, `oxford_pets` for pets) and split folders (`trainval` for DTD,
  whose script writes `train` = train1 only; `val` as eurosat's and ucf101's test);
- flowers from CoOp's `split_zhou_OxfordFlowers.json` and `jpg/`;
- SUN397 as file lists `<root>/sun397/{train,test}_{images,labels}.npy` (written by its
  `create_sun397_data_files.py`, with absolute paths of the machine that wrote them);
- CUB as the archive ships it: `images/<class>/<image>`, `images.txt` and `train_test_split.txt`.

:func:`detect_layout` finds which one is there; :func:`read_split` reads a split of it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from microclip.data.catalog import Benchmark
from microclip.data.errors import DatasetError, DatasetNotFoundError
from microclip.data.splits import Items, check_exist

LayoutKind = Literal["folders", "split_file", "file_list", "cub"]
SUN397_LISTS = ("train", "test")  # the reference's catalog: train_images.npy / test_images.npy


@dataclass(frozen=True)
class Layout:
    """One benchmark's files: the kind, its folder, and the names of its train and test parts."""

    kind: LayoutKind
    base: Path
    train: str | None = "train"
    test: str | None = "test"
    image_dir: Path | None = None  # split_file: the images the file lists

    def describe(self) -> str:
        """One phrase naming what was read, for the log line and check-data's table."""
        if self.kind == "split_file":
            return f"CoOp split file {self.base / self.train} + {self.image_dir}"
        if self.kind == "file_list":
            return f"the reference's file lists {self.base}/{{{self.train},{self.test}}}_{{images,labels}}.npy"
        if self.kind == "cub":
            return f"the CUB archive {self.base}/images + train_test_split.txt"
        return f"class folders {self.base}/{{{','.join(p for p in (self.train, self.test) if p)}}}"

    def part(self, split: str) -> str | None:
        """The folder / list name of `split` ("train" or "test"); None when the layout lacks that part."""
        return self.train if split == "train" else self.test


def candidate_dirs(benchmark: Benchmark, root: str | Path) -> list[Path]:
    """`<root>/<name>` and the reference's folder names for it, in that order."""
    return [Path(root) / name for name in (benchmark.name, *benchmark.reference_dirs)]


def _first_dir(base: Path, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if (base / name).is_dir()), None)


def detect_layout(benchmark: Benchmark, root: str | Path) -> Layout | None:
    """The layout of the reference's split of `benchmark` under `root`, or None when none is there."""
    for base in candidate_dirs(benchmark, root):
        if benchmark.split_file:
            image_dir = next((d for d in (base / "jpg", base / "raw" / "flowers-102" / "jpg") if d.is_dir()), None)
            if (base / benchmark.split_file).is_file() and image_dir is not None:
                return Layout("split_file", base, benchmark.split_file, benchmark.split_file, image_dir)
            continue
        if benchmark.name == "sun397" and (base / f"{SUN397_LISTS[0]}_images.npy").is_file():
            test = SUN397_LISTS[1] if (base / f"{SUN397_LISTS[1]}_images.npy").is_file() else None
            return Layout("file_list", base, SUN397_LISTS[0], test)
        if benchmark.name == "cub" and (base / "images").is_dir() and (base / "train_test_split.txt").is_file():
            return Layout("cub", base)
        train = _first_dir(base, benchmark.folder_candidates("train"))
        test = _first_dir(base, benchmark.folder_candidates("test"))
        if train is not None or test is not None:
            return Layout("folders", base, train, test)
    return None


def expected_layouts(benchmark: Benchmark, root: str | Path) -> str:
    """The layouts :func:`detect_layout` accepts, for the missing-data message."""
    text = benchmark.layout(root)
    also = [f"{Path(root) / name}/ (the reference's folder name)" for name in benchmark.reference_dirs]
    if len(benchmark.train_folders) > 1:
        also.append(f"the train split from {' or '.join(f + '/' for f in benchmark.train_folders)}")
    if benchmark.name == "sun397":
        also.append(f"the reference's file lists {Path(root) / 'sun397'}/{{train,test}}_{{images,labels}}.npy")
    if benchmark.name == "cub":
        also.append(f"the archive's {Path(root) / 'cub'}/images/ with images.txt and train_test_split.txt")
    return text + (f"; also read: {'; '.join(also)}" if also else "")


# ------------------------------------------------------------------ SUN397 file lists


def _load_list(path: Path) -> np.ndarray:
    """A .npy array of strings or integers; object arrays (pickles) are refused, never unpickled."""
    if not path.is_file():
        raise DatasetNotFoundError(f"file list not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path}: not a plain .npy array of paths or labels ({error}); object arrays are "
                           "refused because loading them would unpickle") from None


def _relocate(paths: list[str], base: Path) -> list[Path]:
    """The listed images, moved under `base` when they were written with another machine's absolute paths.

    The prefix to drop is found once, from the first path: the shortest that leaves a file under `base`
    (e.g. `/old/data/sun397/SUN397/a/abbey/x.jpg` -> `<base>/SUN397/a/abbey/x.jpg`).
    """
    if not paths or Path(paths[0]).is_file():
        return [Path(p) for p in paths]
    parts = Path(paths[0]).parts
    for drop in range(1, len(parts)):
        if (base.joinpath(*parts[drop:])).is_file():
            return [base.joinpath(*Path(p).parts[drop:]) for p in paths]
    return [Path(p) for p in paths]  # check_exist names the first missing one


def read_file_list(base: Path, name: str, n_classes: int) -> Items:
    """`<base>/<name>_images.npy` and `<name>_labels.npy` (labels index the class strings)."""
    images, labels = _load_list(base / f"{name}_images.npy"), _load_list(base / f"{name}_labels.npy")
    kinds_fit = images.dtype.kind in "US" and labels.dtype.kind in "iu"
    if images.ndim != 1 or labels.shape != images.shape or not kinds_fit:
        raise DatasetError(f"{base}: {name}_images.npy / {name}_labels.npy are not matching lists of paths and "
                           f"integer labels (shapes {images.shape} / {labels.shape}, dtypes {images.dtype} / "
                           f"{labels.dtype})")
    if len(labels) and not (0 <= labels.min() and labels.max() < n_classes):
        raise DatasetError(f"{base}/{name}_labels.npy: labels {labels.min()}..{labels.max()} are outside the "
                           f"reference's {n_classes} classes")
    paths = _relocate([str(p) for p in images.tolist()], base)
    return check_exist(list(zip(paths, (int(x) for x in labels.tolist()))), f"{base}/{name}_images.npy")


# ------------------------------------------------------------------ CUB as the archive ships it


def _numbered_lines(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"CUB: {path} not found (the archive ships it next to images/)")
    rows = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            index, _, value = line.strip().partition(" ")
            if not index.isdigit() or not value:
                raise DatasetError(f"{path}: line {n} is {line!r}, not '<image id> <value>'")
            rows[int(index)] = value.strip()
    return rows


def read_cub(base: Path, split: str, folder_labels: dict[str, int]) -> Items:
    """The `split` of `<base>/images` by `train_test_split.txt` (1 = train) and `images.txt` (id -> path).

    `folder_labels` maps each class folder under images/ to its label.
    """
    paths, is_train = _numbered_lines(base / "images.txt"), _numbered_lines(base / "train_test_split.txt")
    wanted = "1" if split == "train" else "0"
    items = []
    for index, flag in sorted(is_train.items()):
        if flag != wanted:
            continue
        if index not in paths:
            raise DatasetError(f"{base}/train_test_split.txt: image {index} is not in images.txt")
        folder = paths[index].split("/", 1)[0]
        if folder not in folder_labels:
            raise DatasetError(f"{base}/images.txt: image {index} is in {folder!r}, not one of the class folders")
        items.append((base / "images" / paths[index], folder_labels[folder]))
    return check_exist(items, f"{base}/train_test_split.txt ({split})")
