"""Data sets by benchmark name, folder and CSV; class names, their order check, shipped lists."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from microclip.data.catalog import BENCHMARKS
from microclip.data.datasets import DatasetError, DatasetNotFoundError, ImageDataset, build_dataset
from microclip.data.download import DatasetDownloadError, class_folder_names, download_benchmark, export_splits
from microclip.data.names import ClassOrderError, check_class_order, clean_class_name, read_classnames
from microclip.data.shipped import shipped_classnames, shipped_templates


def _image(path: Path, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)
    return path


def _tree(directory: Path, folders: list[str], per_class: int = 1) -> None:
    for folder in folders:
        for i in range(per_class):
            _image(directory / folder / f"{i}.png")


# --- class names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder, name",
    [
        ("001.Black_footed_Albatross", "Black-footed Albatross"),
        ("031.Black_and_white_Warbler", "Black-and-white Warbler"),
        ("Nelson_Sharp_tailed_Sparrow", "Nelson Sharp-tailed Sparrow"),
        ("Brewer_Blackbird", "Brewer Blackbird"),
        ("apple_pie", "apple pie"),
        ("american_pit_bull_terrier", "american pit bull terrier"),
        ("British_Shorthair", "British Shorthair"),
        ("ApplyEyeMakeup", "Apply Eye Makeup"),
        ("AnnualCrop", "Annual Crop"),
        ("707-320", "707-320"),
        ("A300B4", "A300B4"),
        ("AM General Hummer SUV 2000", "AM General Hummer SUV 2000"),
        ("banded", "banded"),
        ("042.pink primrose", "pink primrose"),
    ],
)
def test_clean_class_name(folder, name):
    assert clean_class_name(folder) == name


def test_order_check_accepts_matching_names_after_normalising():
    check_class_order(
        ["001.Black_footed_Albatross", "002.Laysan_Albatross"],
        ["Black-footed Albatross", "laysan albatross"],
        "list",
        "folder",
    )


def test_order_check_names_the_first_differing_pairs():
    with pytest.raises(ClassOrderError, match=r"label 1: folder 'b_cat' vs listed 'c dog'.*different order"):
        check_class_order(["a_bird", "b_cat", "c_dog"], ["a bird", "c dog", "b cat"], "list", "folder")


def test_order_check_reports_a_count_mismatch():
    with pytest.raises(ClassOrderError, match="2 class folders but list lists 3"):
        check_class_order(["a", "b"], ["a", "b", "c"], "list", "folder")


def test_read_classnames_txt_and_json(tmp_path):
    (tmp_path / "names.txt").write_text("sparrow\n\n  robin \n")
    assert read_classnames(tmp_path / "names.txt") == ["sparrow", "robin"]
    (tmp_path / "names.json").write_text(json.dumps({"birds": ["a", "b"], "cars": ["c"]}))
    assert read_classnames(tmp_path / "names.json", "cars") == ["c"]
    with pytest.raises(ValueError, match="birds"):
        read_classnames(tmp_path / "names.json")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="duplicate"):
        read_classnames(tmp_path / "dup.txt")


# --- shipped names and templates ----------------------------------------------------------------


def test_shipped_lists():
    assert len(shipped_classnames("flowers")) == 102
    assert len(shipped_classnames("pets")) == 37
    assert len(shipped_classnames("eurosat")) == 10
    assert shipped_classnames("toybirds") is None and shipped_classnames("imagenet") is None
    for name in BENCHMARKS:
        templates = shipped_templates(name)
        assert templates and all(t.count("{}") == 1 and "{c}" not in t for t in templates)
    assert len(shipped_templates("caltech101")) == 34
    assert shipped_templates("toybirds") == ["a photo of a {}."]


# --- folders ------------------------------------------------------------------------------------


def test_labelled_folder(tmp_path):
    _tree(tmp_path, ["b_robin", "A_Sparrow", "c_wren"], per_class=2)
    _image(tmp_path / "c_wren" / "UPPER.JPG")
    (tmp_path / "c_wren" / "notes.txt").write_text("x")
    _image(tmp_path / "c_wren" / ".hidden.png")
    _tree(tmp_path, [".ipynb_checkpoints"])
    dataset = build_dataset(str(tmp_path))
    assert isinstance(dataset, ImageDataset) and dataset.has_labels
    assert dataset.classes == ["A Sparrow", "b robin", "c wren"]  # case-sensitive sort, like ImageFolder
    assert len(dataset) == 7 and dataset.targets == [0, 0, 1, 1, 2, 2, 2]
    image, label = dataset[6]
    assert image.mode == "RGB" and label == 2


def test_folder_with_split_subfolders(tmp_path):
    _tree(tmp_path / "train", ["a", "b"], per_class=2)
    _tree(tmp_path / "val", ["a", "b"], per_class=1)
    assert len(build_dataset(tmp_path, "train")) == 4
    assert len(build_dataset(tmp_path, "test")) == 2


def test_classnames_in_another_order_than_the_folders_is_an_error(tmp_path):
    _tree(tmp_path, ["robin", "sparrow"])
    with pytest.raises(ClassOrderError, match="different order"):
        build_dataset(tmp_path, classnames=["sparrow", "robin"])
    with pytest.raises(ClassOrderError, match="label 0: folder 'robin' vs listed 'sparrow'"):
        build_dataset(tmp_path, classnames=["sparrow", "European robin"])  # partly renamed, partly swapped
    renamed = build_dataset(tmp_path, classnames=["European robin", "House sparrow"])
    assert renamed.classes == ["European robin", "House sparrow"]


def test_flat_folder_is_unlabelled_and_needs_classnames(tmp_path):
    for i in range(3):
        _image(tmp_path / f"{i}.jpg")
    with pytest.raises(DatasetError, match="unlabelled.*class names must be given"):
        build_dataset(tmp_path)
    dataset = build_dataset(tmp_path, classnames=["a", "b"])
    assert not dataset.has_labels and dataset.targets == [-1, -1, -1] and dataset.classes == ["a", "b"]


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no images found"):
        build_dataset(tmp_path)


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_with_names_and_relative_paths(tmp_path):
    _image(tmp_path / "img" / "1.png")
    _image(tmp_path / "img" / "2.png")
    absolute = _image(tmp_path / "elsewhere" / "3.png")
    (tmp_path / "list.csv").write_text(f"path,label\nimg/1.png,wren\nimg/2.png,robin\n{absolute},wren\n")
    dataset = build_dataset(tmp_path / "list.csv")
    assert dataset.classes == ["robin", "wren"] and dataset.targets == [1, 0, 1] and dataset.has_labels
    assert dataset[0][0].size == (8, 6)
    ordered = build_dataset(tmp_path / "list.csv", classnames=["Wren", "Robin", "Owl"])
    assert ordered.targets == [0, 1, 0]


def test_csv_with_indices_and_without_labels(tmp_path):
    _image(tmp_path / "1.png")
    (tmp_path / "idx.csv").write_text("path,label\n1.png,1\n")
    with pytest.raises(DatasetError, match="indices"):
        build_dataset(tmp_path / "idx.csv")
    assert build_dataset(tmp_path / "idx.csv", classnames=["a", "b"]).targets == [1]
    (tmp_path / "bare.csv").write_text("path\n1.png\n")
    with pytest.raises(DatasetError, match="no labels"):
        build_dataset(tmp_path / "bare.csv")
    assert not build_dataset(tmp_path / "bare.csv", classnames=["a"]).has_labels


def test_csv_errors(tmp_path):
    _image(tmp_path / "1.png")
    (tmp_path / "nopath.csv").write_text("file,label\n1.png,a\n")
    with pytest.raises(DatasetError, match="'path' column"):
        build_dataset(tmp_path / "nopath.csv")
    (tmp_path / "missing.csv").write_text("path,label\n1.png,a\n2.png,a\n")
    with pytest.raises(DatasetNotFoundError, match=r"1 of 2 listed images do not exist.*2\.png"):
        build_dataset(tmp_path / "missing.csv")
    (tmp_path / "unknown.csv").write_text("path,label\n1.png,zebra\n")
    with pytest.raises(DatasetError, match="zebra"):
        build_dataset(tmp_path / "unknown.csv", classnames=["horse"])


# --- benchmarks ---------------------------------------------------------------------------------


def test_benchmark_folders_are_labelled_by_name_not_by_their_sort_order(tmp_path):
    dtd = shipped_classnames("dtd")
    folders = [f"{i + 1:03d}.{n}" for i, n in enumerate(dtd)]
    folders[3], folders[4] = f"004.{dtd[4]}", f"005.{dtd[3]}"  # numbered in the wrong order
    _tree(tmp_path / "dtd" / "train", folders)
    dataset = build_dataset("dtd", root=tmp_path)
    assert dataset.classes == dtd
    by_folder = {Path(path).parent.name: label for path, label in dataset.samples}
    assert by_folder["004.bumpy"] == dtd.index("bumpy") == 4 and by_folder["005.bubbly"] == 3


def test_eurosat_folders_map_to_the_shipped_prompt_names(tmp_path, caplog):
    _tree(tmp_path / "eurosat" / "val", list(BENCHMARKS["eurosat"].folder_names))
    dataset = build_dataset("eurosat", "test", root=tmp_path)
    assert dataset.classes[0] == "Annual Crop Land" and dataset.classes[2] == "Herbaceous Vegetation Land"
    assert len(dataset.classes) == 10 and dataset.targets == list(range(10))
    with caplog.at_level(logging.WARNING):  # passing the shipped names back (train -> test) is not a renaming
        assert build_dataset("eurosat", "test", root=tmp_path, classnames=dataset.classes).classes == dataset.classes
    assert not caplog.records
    _tree(tmp_path / "eurosat" / "train", list(BENCHMARKS["eurosat"].folder_names)[:-1] + ["Sea"])
    with pytest.raises(ClassOrderError, match=r"1 classes have no folder \('Sea or Lake'\); 1 folders match no class"):
        build_dataset("eurosat", "train", root=tmp_path)


def test_missing_benchmark_folder_explains_layout_and_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("dtd", "test", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "dtd" / "test") in message and "Layout:" in message and "--download" in message


def test_missing_manual_benchmark_says_how_to_build_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("ucf101", "test", root=tmp_path, download=True)
    message = str(info.value)
    assert str(tmp_path / "ucf101" / "val") in message and "middle frame" in message and "{train,val}" in message


def test_unknown_name_lists_the_benchmarks(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="birdsnap, caltech101"):
        build_dataset(str(tmp_path / "nothing_here"))


def test_toybirds_are_generated_with_clean_names(tmp_path):
    from microclip.toyworld.world import CLASS_NAMES

    dataset = build_dataset("toybirds", "test", root=tmp_path, n_per_class=1)
    assert dataset.classes == CLASS_NAMES and len(dataset) == len(CLASS_NAMES)
    image, label = dataset[0]
    assert image.mode == "RGB" and label == 0


# --- download plumbing (offline parts) ----------------------------------------------------------


def test_a_split_another_process_exported_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two runs preparing the same data set at once: the second to finish keeps the first one's split instead of
    failing on a folder that already has files."""
    import microclip.data.download as download

    sources = [_image(tmp_path / "raw" / f"{i}.jpg") for i in range(2)]
    folders = class_folder_names(BENCHMARKS["dtd"])
    splits = {"train": [(sources[0], 0), (sources[1], 46)]}
    real_copy = download.shutil.copyfile
    first: list[Path] = []

    def copy_while_another_process_exports(source, out):
        if not first:  # the other process exports the same split, whole, before this one ends
            first.append(tmp_path / "dtd" / "train")
            monkeypatch.setattr(download.shutil, "copyfile", real_copy)
            export_splits(tmp_path / "dtd", folders, splits, BENCHMARKS["dtd"].split_folder)
            monkeypatch.setattr(download.shutil, "copyfile", copy_while_another_process_exports)
        return real_copy(source, out)

    monkeypatch.setattr(download.shutil, "copyfile", copy_while_another_process_exports)
    export_splits(tmp_path / "dtd", folders, splits, BENCHMARKS["dtd"].split_folder)
    assert sorted(build_dataset("dtd", "train", root=tmp_path).targets) == [0, 46]
    assert not [p for p in (tmp_path / "dtd").iterdir() if p.name.startswith(".")]  # no temp folders left


def test_manual_benchmarks_cannot_be_downloaded(tmp_path):
    with pytest.raises(DatasetDownloadError, match="train_test_split"):
        download_benchmark(BENCHMARKS["cub"], tmp_path)


def test_export_writes_numbered_class_folders_that_load_back(tmp_path):
    sources = [_image(tmp_path / "raw" / f"{i}.jpg") for i in range(4)]
    folders = class_folder_names(BENCHMARKS["dtd"])
    assert len(folders) == 47 and folders[0] == "001.banded" and folders[-1] == "047.zigzagged"
    assert class_folder_names(BENCHMARKS["fgvc"])[72:74] == ["073.F-16A B", "074.F A-18"]  # no "/" in a folder
    splits = {"train": [(sources[0], 46), (sources[1], 0)], "test": [(sources[2], 0), (sources[3], 46)]}
    export_splits(tmp_path / "dtd", folders, splits, BENCHMARKS["dtd"].split_folder)
    dataset = build_dataset("dtd", "train", root=tmp_path)
    assert dataset.classes == shipped_classnames("dtd") and sorted(dataset.targets) == [0, 46]
    assert {Path(p).parent.name for p, _ in dataset.samples} == {"001.banded", "047.zigzagged"}
    assert not [p for p in (tmp_path / "dtd").iterdir() if p.name.startswith(".")]  # no temp folders left
