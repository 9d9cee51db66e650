"""``check-data``: what a run would find on disk for each benchmark, and why it would fail.

:func:`check_benchmark` reads one benchmark the way training does (the layout, each split, the
class folders, the description file, the split file) and collects every failure as one line.
``quick=True`` stops at what can be seen without walking the images (the layout, the class folders,
the split file), so ``train`` runs it before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from microclip.data.catalog import Benchmark, get_benchmark, how_to_get
from microclip.data.datasets import build_dataset, list_class_folders
from microclip.data.splits import folder_aliases
from microclip.data.descriptions import DescriptionsError, load_descriptions
from microclip.data.errors import DatasetError, DatasetNotFoundError
from microclip.data.layouts import Layout, detect_layout, expected_layouts
from microclip.data.names import ClassOrderError, match_key
from microclip.data.shipped import reference_benchmarks, shipped_classnames
from microclip.data.splits import class_index, coop_entries, coop_name_differences

SPLIT_NAMES = ("train", "test")


@dataclass
class DataCheck:
    """One benchmark's row of the table, and the lines that explain its failures."""

    name: str
    layout: str = "not found"
    counts: dict[str, int | None] = field(default_factory=dict)  # images per split as read (None: not read)
    reference_counts: tuple[int | None, int | None] = (None, None)
    missing_classes: list[str] = field(default_factory=list)
    extra_folders: list[str] = field(default_factory=list)
    descriptions: str = "-"
    split_file: str = "-"
    problems: list[str] = field(default_factory=list)  # each one line; any one means a run would fail
    notes: list[str] = field(default_factory=list)  # worth knowing, not fatal

    @property
    def ok(self) -> bool:
        return not self.problems


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _folder_mismatch(benchmark: Benchmark, directory: Path) -> tuple[list[str], list[str]]:
    """(classes without a folder, folders that name no class) of one split folder."""
    classes = shipped_classnames(benchmark.name) or []
    index = class_index(classes, folder_aliases(benchmark, classes))
    folders = list_class_folders(directory)
    found = {index.get(match_key(folder)) for folder in folders}
    missing = [name for i, name in enumerate(classes) if i not in found]
    extra = [folder for folder in folders if index.get(match_key(folder)) is None]
    return missing, extra


def _check_folders(benchmark: Benchmark, layout: Layout, report: DataCheck) -> None:
    directories = {split: layout.base / part for split in SPLIT_NAMES if (part := layout.part(split))}
    if layout.kind == "cub":
        directories = {"images": layout.base / "images"}
    for directory in directories.values():
        missing, extra = _folder_mismatch(benchmark, directory)
        report.missing_classes += [m for m in missing if m not in report.missing_classes]
        report.extra_folders += [e for e in extra if e not in report.extra_folders]
        if missing or extra:
            report.problems.append(
                f"{directory}: {len(missing)} classes have no folder ({', '.join(map(repr, missing[:3]))}"
                f"{', ...' if len(missing) > 3 else ''}), {len(extra)} folders name no class "
                f"({', '.join(map(repr, extra[:3]))}{', ...' if len(extra) > 3 else ''}); "
                f"`python -m microclip classes {benchmark.name}` lists the class strings")


def _check_split_file(benchmark: Benchmark, layout: Layout, report: DataCheck) -> None:
    classes = shipped_classnames(benchmark.name) or []
    differences: dict[int, str] = {}
    for split in SPLIT_NAMES:
        try:
            differences |= coop_name_differences(coop_entries(layout.base / layout.train, split, len(classes)),
                                                 classes)
        except (DatasetError, DatasetNotFoundError) as error:
            report.problems.append(_one_line(error))
            report.split_file = "unreadable"
            return
    report.split_file = "ok" if not differences else f"ok; {len(differences)} names differ (paired by label)"


def _check_descriptions(name: str, source: str | Path | None, report: DataCheck) -> None:
    if source is None:
        return
    classes = shipped_classnames(name) or []
    try:
        loaded = load_descriptions(source, classes, dataset=name, allow_missing=True)
    except (DescriptionsError, FileNotFoundError) as error:
        report.descriptions = "not found"
        report.problems.append(_one_line(error))
        return
    lacking = [c for c in classes if not loaded.get(c)]
    report.descriptions = "ok" if not lacking else f"lacks {len(lacking)}"
    if lacking:
        report.problems.append(
            f"descriptions for {name} lack {len(lacking)} classes ({', '.join(map(repr, lacking[:3]))}"
            f"{', ...' if len(lacking) > 3 else ''}); add them (`python -m microclip describe`) or train with "
            "--allow_missing_descriptions")


def check_benchmark(name: str, root: str | Path = "./data", descriptions: str | Path | None = None,
                    quick: bool = False) -> DataCheck:
    """What a run on benchmark `name` under `root` would find; ``quick`` skips walking the images."""
    benchmark = get_benchmark(name)
    if benchmark is None or name == "toybirds":
        raise ValueError(f"{name!r} is not one of the benchmarks ({', '.join(reference_benchmarks())})")
    report = DataCheck(name, reference_counts=benchmark.reference_counts)
    layout = detect_layout(benchmark, root)
    if layout is None:
        report.problems.append(f"no data under {Path(root)}: expected {expected_layouts(benchmark, root)}. "
                               f"To get it: {how_to_get(benchmark)}")
        _check_descriptions(name, descriptions, report)
        return report
    report.layout = layout.describe()
    if layout.kind in ("folders", "cub"):
        _check_folders(benchmark, layout, report)
    elif layout.kind == "split_file":
        _check_split_file(benchmark, layout, report)
    if layout.part("test") is None:
        report.notes.append(f"no test split in {layout.base}: a run trains without test evaluation")
    if not quick and not report.problems:
        _count(name, root, layout, report)
    _check_descriptions(name, descriptions, report)
    return report


def _count(name: str, root: str | Path, layout: Layout, report: DataCheck) -> None:
    for split, expected in zip(SPLIT_NAMES, report.reference_counts):
        if layout.part(split) is None:
            report.counts[split] = None
            continue
        try:
            report.counts[split] = count = len(build_dataset(name, split, root=root))
        except (DatasetError, DatasetNotFoundError, ClassOrderError) as error:
            report.counts[split] = None
            report.problems.append(_one_line(error))
            continue
        if expected is not None and count != expected:
            report.notes.append(f"{split}: {count:,} images where the reference's split has {expected:,}")


def format_table(reports: list[DataCheck]) -> str:
    """One table, then one line per failure (and per note)."""
    def count(report: DataCheck, split: int) -> str:
        got = report.counts.get(SPLIT_NAMES[split])
        expected = report.reference_counts[split]
        return f"{'-' if got is None else f'{got:,}'} / {'?' if expected is None else f'{expected:,}'}"

    header = ("set", "status", "train / ref", "test / ref", "classes", "descriptions", "split file", "layout")
    rows = [header] + [
        (r.name, "ok" if r.ok else "FAIL", count(r, 0), count(r, 1),
         "-" if r.layout == "not found" else "ok" if not (r.missing_classes or r.extra_folders)
         else f"{len(r.missing_classes)} missing, {len(r.extra_folders)} extra", r.descriptions, r.split_file,
         r.layout)
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    for report in reports:
        lines += [f"{report.name}: {problem}" for problem in report.problems]
        lines += [f"{report.name} (note): {note}" for note in report.notes]
    return "\n".join(lines)
