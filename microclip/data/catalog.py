"""The benchmark catalog: where each data set lives on disk, how the reference split it, how to get it.

Layout (the reference's `configs/dataset_catalog.json`):
`<root>/<name>/<split folder>/<class folder>/<image>`, with split folders `train` and `test`
(`val` for eurosat and ucf101, whose test set is the val split). Class folders are paired with the
reference's class strings by name (`names.match_key`), so their sort order does not matter.

Flowers is the exception, as in the reference: `<root>/flowers/split_zhou_OxfordFlowers.json`
(CoOp's split file) lists the images of `<root>/flowers/jpg/`. Benchmarks whose official split
differs from the reference's (flowers, fgvc) also offer it as the protocol "official", in
`<root>/<name>/official/<split folder>/`.

The entries themselves are data: `resources/benchmarks.json` (package data; provenance in resources/README.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

SPLITS = ("train", "test")
PROTOCOLS = ("reference", "official")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its folders, where it comes from, and how the reference split it."""

    name: str
    title: str
    test_folder: str = "test"
    torchvision: str | None = None  # torchvision.datasets class that can --download it
    manual: str | None = None  # how to build the folders by hand when torchvision cannot
    folder_names: tuple[str, ...] | None = None  # the archive's class folders, in label order, when not the names
    download_note: str = ""  # a known problem with the download
    reference_split: str = ""  # how the reference split it (docs/method.md §7)
    official_split: str = ""  # the official split, when it differs from the reference's ("official" protocol)
    split_file: str | None = None  # a split file read in place of class folders (flowers)
    reference_dirs: tuple[str, ...] = ()  # the reference's folder names under the root, when not `name`
    train_folders: tuple[str, ...] = ("train",)  # split folders that hold the reference's train split, preferred first
    reference_counts: tuple[int | None, int | None] = (None, None)  # (train, test) images in the reference's split

    @property
    def protocols(self) -> tuple[str, ...]:
        """The split protocols offered: "reference", and "official" where it differs."""
        return PROTOCOLS if self.official_split else PROTOCOLS[:1]

    def check_protocol(self, protocol: str) -> None:
        """Raise ValueError unless `protocol` is offered for this benchmark."""
        if protocol not in self.protocols:
            raise ValueError(
                f"{self.name} has no {protocol!r} split; its splits: {', '.join(self.protocols)} "
                f"(reference: {self.reference_split or 'as the archive ships it'})"
            )

    def folder_candidates(self, split: str) -> tuple[str, ...]:
        """The split folders that may hold `split`, preferred first (the reference's names included)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split == "train":
            return self.train_folders
        return (self.test_folder, *(f for f in ("test", "val") if f != self.test_folder))

    def split_folder(self, split: str) -> str:
        """The folder name of `split` ("train" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return "train" if split == "train" else self.test_folder

    def protocol_root(self, root: str | Path, protocol: str = "reference") -> Path:
        """`<root>/<name>` for the reference's split, `<root>/<name>/official` for the official one."""
        self.check_protocol(protocol)
        base = Path(root) / self.name
        return base if protocol == "reference" else base / "official"

    def split_dir(self, root: str | Path, split: str, protocol: str = "reference") -> Path:
        """`<root>/<name>/<split folder>` (reference) or `<root>/<name>/official/<split folder>`."""
        return self.protocol_root(root, protocol) / self.split_folder(split)

    def layout(self, root: str | Path, protocol: str = "reference") -> str:
        """The expected layout, for error messages."""
        if self.split_file and protocol == "reference":
            return f"{Path(root) / self.name}/{self.split_file} listing the images of {Path(root) / self.name}/jpg/"
        return (
            f"{self.protocol_root(root, protocol)}/{{train,{self.test_folder}}}/<class folder>/<image>, "
            "one folder per class, named after the class"
        )


CATALOG_FILE = "benchmarks.json"  # one object per benchmark, the fields of Benchmark that differ from its defaults


def _load_catalog() -> dict[str, Benchmark]:
    """The entries of ``resources/benchmarks.json`` (package data), keyed by name; JSON lists become tuples."""
    rows = json.loads((files("microclip.data") / "resources" / CATALOG_FILE).read_text(encoding="utf-8"))
    entries = [Benchmark(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}) for row in rows]
    return {b.name: b for b in entries}


BENCHMARKS: dict[str, Benchmark] = _load_catalog()


def get_benchmark(name: str) -> Benchmark | None:
    """The catalog entry of `name`, or None when `name` is not a benchmark."""
    return BENCHMARKS.get(name)


FLOWERS_SPLIT_ID = "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"  # CoOp's DATA.md: split_zhou_OxfordFlowers.json
FLOWERS_SPLIT_URL = f"https://drive.google.com/file/d/{FLOWERS_SPLIT_ID}/view"


def how_to_get(benchmark: Benchmark, protocol: str = "reference") -> str:
    """One sentence on how to obtain the data, for the missing-folder error."""
    if benchmark.split_file and protocol == "reference":
        return (
            f"run with --download to fetch the images with torchvision.datasets.{benchmark.torchvision} and "
            f"{benchmark.split_file} from CoOp's Google Drive ({FLOWERS_SPLIT_URL}), or put both there by hand "
            "(the images as jpg/image_NNNNN.jpg); --data_split official uses the official split instead"
        )
    if benchmark.torchvision:
        text = (
            f"run with --download (build_dataset(..., download=True)) to fetch it with "
            f"torchvision.datasets.{benchmark.torchvision} and export this layout"
        )
        return text + (f"; note: {benchmark.download_note}" if benchmark.download_note else "")
    return benchmark.manual or "it is generated automatically"
