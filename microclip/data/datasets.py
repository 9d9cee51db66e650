"""Data sets: the 13 benchmarks and the toy birds by name, or any image folder or CSV list by path.

Label order is the one thing that must never be wrong. For the 13 benchmarks the labels index the
reference's class strings (`shipped.py`): each class folder is paired with its string by name, and
a folder that names no class, or a class without a folder, stops the run. The reference instead
took labels from the sorted folders (torchvision's ImageFolder) and assumed that order equals its
class list; for FGVC-Aircraft it does not (its folders "BAE-125", "BAE-146-200", "BAE-146-300"
sort differently from "BAE 146-200", "BAE 146-300", "BAE-125"), so three of its labels are
permuted. For other folders labels come from the sorted folders, and a user's name list is checked
against them.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from microclip.data.catalog import BENCHMARKS, Benchmark, get_benchmark, how_to_get
from microclip.data.errors import DatasetError, DatasetNotFoundError
from microclip.data.images import DEFAULT_MAX_PIXELS, load_image
from microclip.data.layouts import Layout, detect_layout, expected_layouts, read_cub, read_file_list
from microclip.data.names import ClassOrderError, check_class_order, clean_class_name, match_key, normalise_class_name
from microclip.data.shipped import shipped_classnames
from microclip.data.splits import CALTECH101_RENAMES, class_index, folder_aliases, read_coop_split

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".jfif",
)
UNLABELLED = -1


class ImageDataset(Dataset):
    """(image, label) pairs: RGB PIL images decoded by `load_image`; label -1 when unlabelled.

    `classes` are prompt-ready class names in label order, `samples` the (path, label) pairs.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        name: str = "",
        root: str | Path | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.name = name
        self.root = Path(root) if root is not None else None
        self.max_pixels = max_pixels
        self.has_labels = bool(samples) and all(label != UNLABELLED for _, label in samples)
        self.layout = ""  # for the named benchmarks: which of the known layouts was read (one phrase)

    @property
    def targets(self) -> list[int]:
        """The labels of all samples, in order (-1 when unlabelled)."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_image(path, max_pixels=self.max_pixels), label

    def __repr__(self) -> str:
        kind = "labelled" if self.has_labels else "unlabelled"
        return f"ImageDataset({self.name!r}, {len(self)} {kind} images, {len(self.classes)} classes, root={self.root})"


# ---------------------------------------------------------------------------------------------
# Scanning folders


def is_image_file(path: str | Path) -> bool:
    """A visible file with an image extension (any case)."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_class_folders(directory: str | Path) -> list[str]:
    """Visible sub-folders, sorted case-sensitively exactly like torchvision's `find_classes`.

    Hidden folders (".ipynb_checkpoints", ".git", ...) are skipped; torchvision would count
    them as classes and shift every label after them.
    """
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _walk_images(directory: Path) -> list[str]:
    """Image files under `directory`, recursively, in torchvision's make_dataset order."""
    found = []
    for root, _, files in sorted(os.walk(directory, followlinks=True)):
        if any(part.startswith(".") for part in Path(root).relative_to(directory).parts):
            continue
        found += [os.path.join(root, f) for f in sorted(files) if is_image_file(f)]
    return found


def scan_image_folder(directory: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class folder names in label order, (path, label) samples) of an ImageFolder tree."""
    directory = Path(directory)
    folders = list_class_folders(directory)
    samples: list[tuple[str, int]] = []
    empty = []
    for label, folder in enumerate(folders):
        files = _walk_images(directory / folder)
        if not files:
            empty.append(folder)
        samples += [(path, label) for path in files]
    if not samples:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {directory}")
    if empty:
        log.warning("%s: %d class folder(s) have no images: %s", directory, len(empty), empty[:5])
    return folders, samples


def list_images(directory: str | Path) -> list[str]:
    """Image files directly in `directory` (not in sub-folders), sorted."""
    with os.scandir(directory) as entries:
        return sorted(e.path for e in entries if e.is_file() and is_image_file(e.name))


# ---------------------------------------------------------------------------------------------
# Class names for a folder tree


def names_for_folders(folders: list[str], classnames: list[str], source: str, where: str) -> list[str]:
    """Pair user-given `classnames` with class `folders` (label order) and return the names.

    The counts must match, and a name that matches another position's folder is an error (the
    labels would be silently permuted). Names that match no folder are accepted as renamings, in
    folder order, with a warning.
    """
    try:
        check_class_order(folders, classnames, source, where)
    except ClassOrderError:
        folder_keys = [normalise_class_name(f) for f in folders]
        misplaced = any(
            key != folder_key and key in folder_keys
            for key, folder_key in zip(map(normalise_class_name, classnames), folder_keys)
        )
        if len(folders) != len(classnames) or misplaced:
            raise
        pairs = ", ".join(f"{f!r} -> {n!r}" for f, n in list(zip(folders, classnames))[:3])
        log.warning(
            "%s: class names from %s differ from the folder names; using them in folder (label) order: %s, ...",
            where,
            source,
            pairs,
        )
    return list(classnames)


def map_benchmark_folders(benchmark: Benchmark, folders: list[str], directory: Path) -> tuple[list[str], list[int]]:
    """(the reference's class strings, the label of each folder): folders are paired with the strings by name.

    Every folder must name exactly one class and every class must have a folder; otherwise a
    `ClassOrderError` names the missing classes and the folders that match none.
    """
    classes = shipped_classnames(benchmark.name) or []
    index = class_index(classes, folder_aliases(benchmark, classes))
    labels = [index.get(match_key(folder)) for folder in folders]
    unmapped = [f for f, label in zip(folders, labels) if label is None]
    found = [label for label in labels if label is not None]
    missing = [name for i, name in enumerate(classes) if i not in set(found)]
    doubled = sorted({classes[i] for i in found if found.count(i) > 1})
    if unmapped or missing or doubled:
        problems = []
        if missing:
            problems.append(f"{len(missing)} classes have no folder ({', '.join(map(repr, missing[:4]))}"
                            f"{', ...' if len(missing) > 4 else ''})")
        if unmapped:
            problems.append(f"{len(unmapped)} folders match no class ({', '.join(map(repr, unmapped[:4]))}"
                            f"{', ...' if len(unmapped) > 4 else ''})")
        if doubled:
            problems.append(f"several folders name {', '.join(map(repr, doubled[:4]))}")
        raise ClassOrderError(
            f"{directory}: the class folders do not map onto the reference's {len(classes)} {benchmark.name} "
            f"classes: {'; '.join(problems)}. Folders are matched to the class strings by name (case, spaces, "
            "'_', '-', '/' and punctuation ignored); `python -m microclip classes "
            f"{benchmark.name}` lists them, and --download builds the layout where torchvision can"
        )
    return classes, [int(label) for label in labels]  # type: ignore[arg-type]


def _benchmark_folder_dataset(
    benchmark: Benchmark, directory: Path, classnames: list[str] | None
) -> tuple[list[str], list[tuple[str, int]]]:
    folders, samples = scan_image_folder(directory)
    shipped = shipped_classnames(benchmark.name)
    if classnames is not None and list(classnames) != shipped:  # the user's names: paired with the sorted folders
        return names_for_folders(folders, classnames, "the given class names", str(directory)), samples
    if shipped is None:
        if benchmark.name == "toybirds":
            return list(folders), samples  # generated with clean names already
        return [clean_class_name(f) for f in folders], samples
    classes, folder_labels = map_benchmark_folders(benchmark, folders, directory)
    return classes, [(path, folder_labels[label]) for path, label in samples]


# ---------------------------------------------------------------------------------------------
# Benchmarks


def _missing_message(benchmark: Benchmark, missing: Path, root: str | Path, split: str, protocol: str) -> str:
    layout = expected_layouts(benchmark, root) if protocol == "reference" else benchmark.layout(root, protocol)
    return (
        f"{benchmark.title} ({benchmark.name}) {split} split not found: expected {missing}. "
        f"Layout: {layout}. To get it: {how_to_get(benchmark, protocol)}"
    )


def split_file_paths(benchmark: Benchmark, root: str | Path) -> tuple[Path, Path | None]:
    """(the split file, the image folder or None when neither candidate exists) of a split-file benchmark.

    Images are looked for in `<root>/<name>/jpg` (the reference's layout) and then where --download
    leaves them (`<root>/<name>/raw/flowers-102/jpg`).
    """
    base = Path(root) / benchmark.name
    candidates = [base / "jpg", base / "raw" / "flowers-102" / "jpg"]
    return base / str(benchmark.split_file), next((c for c in candidates if c.is_dir()), None)


def _expected_path(benchmark: Benchmark, root: str | Path, split: str) -> Path:
    base = Path(root) / benchmark.name
    if benchmark.split_file:
        return base / benchmark.split_file if not (base / benchmark.split_file).is_file() else base / "jpg"
    return base / benchmark.folder_candidates(split)[0]


def find_layout(benchmark: Benchmark, root: str | Path, split: str, download: bool = False) -> Layout:
    """The detected layout of the reference's split (downloading it first when asked and possible)."""
    layout = detect_layout(benchmark, root)
    if layout is None and download and benchmark.torchvision:
        from microclip.data.download import download_benchmark

        download_benchmark(benchmark, root, "reference")
        layout = detect_layout(benchmark, root)
    if layout is None:
        raise DatasetNotFoundError(_missing_message(benchmark, _expected_path(benchmark, root, split), root, split,
                                                    "reference"))
    if layout.part(split) is None:
        missing = layout.base / benchmark.folder_candidates(split)[0]
        if layout.kind == "file_list":
            missing = layout.base / f"{split}_images.npy"
        raise DatasetNotFoundError(_missing_message(benchmark, missing, root, split, "reference"))
    return layout


def _read_layout(benchmark: Benchmark, layout: Layout, split: str, classnames: list[str] | None) -> ImageDataset:
    part = str(layout.part(split))
    if layout.kind == "folders":
        classes, samples = _benchmark_folder_dataset(benchmark, layout.base / part, classnames)
        return ImageDataset(samples, classes, name=benchmark.name, root=layout.base / part)
    classes = shipped_classnames(benchmark.name) or []
    if layout.kind == "split_file":
        items = read_coop_split(layout.base / part, layout.image_dir, split, classes)
    elif layout.kind == "file_list":
        items = read_file_list(layout.base, part, len(classes))
    else:  # cub: the archive's class folders, paired with the class strings by name
        folders = list_class_folders(layout.base / "images")
        classes, labels = map_benchmark_folders(benchmark, folders, layout.base / "images")
        items = read_cub(layout.base, split, dict(zip(folders, labels)))
    if classnames is not None and list(classnames) != classes:
        classes = names_for_folders(classes, list(classnames), "the given class names", str(layout.base))
    return ImageDataset([(str(path), label) for path, label in items], classes, name=benchmark.name,
                        root=layout.base)


def _build_benchmark(
    benchmark: Benchmark,
    split: str,
    root: str | Path,
    download: bool,
    classnames: list[str] | None,
    n_per_class: int | None,
    seed: int,
    protocol: str = "reference",
) -> ImageDataset:
    benchmark.check_protocol(protocol)
    if benchmark.name == "toybirds":
        from microclip.toyworld.dataset import ensure_split  # lazy: the toy world pulls in OpenCV

        directory = Path(ensure_split(Path(root), split, n_per_class=n_per_class, seed=seed))
    elif protocol == "reference":
        layout = find_layout(benchmark, root, split, download)
        dataset = _read_layout(benchmark, layout, split, classnames)
        dataset.layout = layout.describe()
        return dataset
    else:
        directory = benchmark.split_dir(root, split, protocol)
        if not directory.is_dir() and download:
            if not benchmark.torchvision:
                raise DatasetNotFoundError(_missing_message(benchmark, directory, root, split, protocol))
            from microclip.data.download import download_benchmark

            download_benchmark(benchmark, root, protocol)
        if not directory.is_dir():
            raise DatasetNotFoundError(_missing_message(benchmark, directory, root, split, protocol))
    classes, samples = _benchmark_folder_dataset(benchmark, directory, classnames)
    dataset = ImageDataset(samples, classes, name=benchmark.name, root=directory)
    dataset.layout = f"class folders {directory.parent}/{{{directory.name}}}"
    return dataset


# ---------------------------------------------------------------------------------------------
# Paths: folders and CSV lists


def _split_subfolder(directory: Path, split: str) -> Path | None:
    """`directory/train` or `directory/test` (or `val`) when `directory` holds splits, not classes."""
    if not (directory / "train").is_dir():
        return None
    for name in ["train"] if split == "train" else ["test", "val"]:
        if (directory / name).is_dir():
            return directory / name
    raise DatasetNotFoundError(f"{directory} has a train/ folder but no {split} split (test/ or val/)")


def _build_folder(directory: Path, split: str, classnames: list[str] | None) -> ImageDataset:
    directory = _split_subfolder(directory, split) or directory
    folders = list_class_folders(directory)
    top_level = list_images(directory)
    has_class_images = any(_walk_images(directory / f) for f in folders)
    if has_class_images:
        if top_level:
            log.warning(
                "%s: %d images directly in the folder are ignored (they belong to no class folder)",
                directory,
                len(top_level),
            )
        folders, samples = scan_image_folder(directory)
        if classnames is not None:
            classes = names_for_folders(folders, classnames, "the given class names", str(directory))
        else:
            classes = [clean_class_name(f) for f in folders]
        return ImageDataset(samples, classes, name=directory.name, root=directory)
    if not top_level:
        raise DatasetError(
            f"no images found in {directory}: expected class sub-folders of images "
            f"(labelled) or image files (unlabelled) with extensions {', '.join(IMAGE_EXTENSIONS)}"
        )
    if classnames is None:
        raise DatasetError(
            f"{directory} holds images but no class sub-folders, so it is unlabelled and the "
            "class names must be given (classnames=[...], or --classnames FILE.txt)"
        )
    return ImageDataset([(p, UNLABELLED) for p in top_level], list(classnames), name=directory.name, root=directory)


def _label_index(value: str, classnames: list[str], lookup: dict[str, int]) -> int | None:
    if value in lookup:
        return lookup[value]
    key = normalise_class_name(value)
    for i, name in enumerate(classnames):
        if normalise_class_name(name) == key:
            return i
    if value.isdigit() and int(value) < len(classnames):
        return int(value)
    return None


def read_csv_samples(path: str | Path, classnames: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples) from a CSV with a `path` column and an optional `label` column (name or index).

    Relative paths are relative to the CSV's folder. Class order: `classnames` when given, else the
    sorted unique labels. Without labels every sample gets -1 and `classnames` is required.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        # Cells beyond the header land under the key None as a list; they are ignored.
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if "path" not in header:
        raise DatasetError(f"{path}: the CSV header must have a 'path' column (and optionally 'label'); got {header}")
    if not rows:
        raise DatasetError(f"{path}: no rows")
    files = [Path(r["path"]) if Path(r["path"]).is_absolute() else path.parent / r["path"] for r in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{path}: {len(missing)} of {len(files)} listed images do not exist, "
            f"e.g. {missing[:3]} (relative paths are relative to the CSV's folder)"
        )
    labels = [r.get("label", "") for r in rows]
    empty_rows = [i + 2 for i, v in enumerate(labels) if not v]  # +2: 1-based and the header line
    if len(empty_rows) == len(rows):  # no labels at all: unlabelled
        if classnames is None:
            raise DatasetError(
                f"{path} has no labels, so the class names must be given (classnames=[...], or --classnames FILE.txt)"
            )
        return list(classnames), [(str(f), UNLABELLED) for f in files]
    if empty_rows:
        raise DatasetError(
            f"{path}: {len(empty_rows)} rows have no label (lines {empty_rows[:5]}); label every row or none"
        )
    if classnames is None:
        if all(v.isdigit() for v in labels):
            raise DatasetError(
                f"{path}: labels are class indices, so the class names must be given "
                "(classnames=[...], or --classnames FILE.txt)"
            )
        classnames = sorted(set(labels))
    lookup = {name: i for i, name in enumerate(classnames)}
    indices = [_label_index(v, classnames, lookup) for v in labels]
    unknown = sorted({v for v, i in zip(labels, indices) if i is None})
    if unknown:
        raise DatasetError(
            f"{path}: {len(unknown)} labels are not among the {len(classnames)} class names: {unknown[:5]}"
        )
    return list(classnames), [(str(f), int(i)) for f, i in zip(files, indices)]


# ---------------------------------------------------------------------------------------------
# Entry point


def build_dataset(
    name_or_path: str | Path,
    split: str = "train",
    root: str | Path = "./data",
    download: bool = False,
    classnames: list[str] | None = None,
    *,
    n_per_class: int | None = None,
    seed: int = 0,
    protocol: str = "reference",
) -> ImageDataset:
    """A data set by benchmark name or by path.

    - a benchmark name (see `BENCHMARKS`): `<root>/<name>/<split folder>` in ImageFolder layout, labelled
      with the reference's class strings (folders paired by name); flowers reads CoOp's split file.
      `protocol` "official" picks the official split where it differs (flowers, fgvc). `download=True`
      fetches it with torchvision where possible. "toybirds" is generated on first use
      (`n_per_class`, `seed`: toybirds only).
    - a folder of class folders: labelled; a folder with train/ and test/ (or val/) is split first.
    - a flat folder of images: unlabelled, needs `classnames`.
    - a .csv file with `path` and optional `label` columns.
    `classnames` (label order) replaces names derived from folders or shipped lists.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    name = str(name_or_path)
    benchmark = get_benchmark(name)
    if benchmark is not None:  # a folder that happens to share the name is reachable as "./<name>"
        return _build_benchmark(benchmark, split, root, download, classnames, n_per_class, seed, protocol)
    if protocol != "reference":
        raise ValueError(f"the {protocol!r} split applies to the named benchmarks only, not to {name!r}")
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        classes, samples = read_csv_samples(path, classnames)
        return ImageDataset(samples, classes, name=path.stem, root=path.parent)
    if path.is_dir():
        return _build_folder(path, split, classnames)
    if path.exists():
        raise DatasetError(f"{path} is neither a folder nor a .csv file")
    raise DatasetNotFoundError(
        f"{name!r} is not a benchmark name ({', '.join(sorted(BENCHMARKS))}) and no file or folder of that name exists"
    )
