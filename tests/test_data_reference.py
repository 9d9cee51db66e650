"""The reference's data: class strings, templates, folder mapping and splits of the 13 benchmarks.

The expected counts and strings below were read by hand from the reference's `configs/classes.json`
and `configs/templates.json` (GitHub sathiiii/microCLIP @977ad31) and the data sets' papers; they
are an independent check of the shipped files, not a copy of them. Split fixtures mimic each
archive's layout with a handful of tiny images.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import command_here
from PIL import Image

from microclip.__main__ import main as microclip_main
from microclip.data.catalog import BENCHMARKS
from microclip.data.datasets import DatasetError, DatasetNotFoundError, build_dataset
from microclip.data.descriptions import DescriptionsError, load_descriptions
from microclip.data.download import DatasetDownloadError, download_benchmark
from microclip.data.names import ClassOrderError, match_key
from microclip.data.shipped import reference_benchmarks, shipped_classnames, shipped_templates
from microclip.data.splits import caltech101_splits, fgvc_split, sun397_split_sizes, sun397_splits

ROOT = Path(__file__).resolve().parent.parent

# name: (classes, templates), counted by hand in the reference's configs/classes.json and templates.json
COUNTS = {
    "birdsnap": (500, 1),
    "caltech101": (100, 34),
    "cars": (196, 8),
    "cub": (200, 1),
    "dtd": (47, 8),
    "eurosat": (10, 3),
    "fgvc": (100, 2),
    "flowers": (102, 1),
    "food101": (101, 1),
    "pets": (37, 1),
    "resisc45": (45, 18),
    "sun397": (397, 2),
    "ucf101": (101, 48),
}

# (set, label, string): spot checks, including the strings the issue found changed by the old cleaning
SPOT = [
    ("birdsnap", 3, "Allens Hummingbird"),
    ("caltech101", 1, "airplane"),
    ("caltech101", 15, "car_side"),
    ("caltech101", 36, "face"),
    ("caltech101", 55, "leopard"),
    ("caltech101", 64, "motorbike"),
    ("cars", 0, "AM General Hummer SUV 2000"),
    ("cars", 5, "Acura Integra Type R 2001"),
    ("cub", 0, "Black-footed Albatross"),
    ("cub", 3, "Groove-billed Ani"),
    ("dtd", 30, "polka-dotted"),
    ("eurosat", 0, "Annual Crop Land"),
    ("eurosat", 2, "Herbaceous Vegetation Land"),
    ("eurosat", 9, "Sea or Lake"),
    ("fgvc", 37, "BAE 146-200"),
    ("fgvc", 39, "BAE-125"),
    ("fgvc", 72, "F-16A/B"),
    ("fgvc", 73, "F/A-18"),
    ("flowers", 0, "pink primrose"),
    ("flowers", 1, "hard-leaved pocket orchid"),
    ("food101", 0, "apple_pie"),
    ("pets", 4, "British Shorthair"),
    ("pets", 12, "american bulldog"),
    ("resisc45", 2, "baseball diamond"),
    ("sun397", 0, "abbey"),
    ("ucf101", 0, "Apply Eye Makeup"),
    ("ucf101", 100, "Yo Yo"),
]
TEMPLATE_SPOT = {
    "cub": "a photo of a {}, a type of bird.",
    "birdsnap": "a photo of a {}, a type of bird.",
    "ucf101": "a photo of a person {}.",
    "resisc45": "satellite imagery of {}.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
}


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (120, 30, 200)).save(path)
    return path


# --- class strings and templates -----------------------------------------------------------------


def test_the_thirteen_benchmarks_are_shipped():
    assert reference_benchmarks() == sorted(COUNTS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_class_strings_and_templates_match_the_reference(name):
    classes, templates = shipped_classnames(name), shipped_templates(name)
    assert (len(classes), len(templates)) == COUNTS[name]
    assert len(set(classes)) == len(classes)
    assert len({match_key(c) for c in classes}) == len(classes)  # folders can be paired by name unambiguously
    assert all(t.count("{}") == 1 for t in templates)
    for set_name, label, string in SPOT:
        if set_name == name:
            assert classes[label] == string
    if name in TEMPLATE_SPOT:
        assert templates[0] == TEMPLATE_SPOT[name]


def test_sun397_keeps_its_qualifiers_and_caltech_drops_the_background():
    sun = shipped_classnames("sun397")
    assert "apse (indoor)" in sun and "car interior (backseat)" in sun
    assert sum("(" in name for name in sun) == 126
    caltech = shipped_classnames("caltech101")
    assert not {"background", "BACKGROUND_Google", "Faces_easy", "Faces", "airplanes"} & set(caltech)


def test_classes_command_prints_strings_and_templates(capsys):
    assert microclip_main(["classes", "fgvc"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 and lines[37:40] == ["BAE 146-200", "BAE 146-300", "BAE-125"]
    assert microclip_main(["classes", "ucf101", "--templates"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 48
    assert microclip_main(["classes", "flowers", "--split"]) == 0
    assert "4,093 / 2,463" in capsys.readouterr().out


def test_classes_command_refuses_an_unknown_name(capsys):
    assert microclip_main(["classes", "imagenet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "'imagenet'" in captured.err and "birdsnap, caltech101" in captured.err and "ucf101" in captured.err


# --- descriptions in the reference's format --------------------------------------------------------

# Hand-written in the reference's format (all_prompts/train_prompts/eurosat.json's keys).
EUROSAT_DESCRIPTIONS = {
    "Annual Crop Land": ["Rows of crops seen from above."],
    "Forest": ["Dense tree canopy."],
    "Herbaceous Vegetation Land": ["Low green vegetation."],
    "Highway or Road": ["A grey strip across the land."],
    "Industrial Buildings": ["Large flat roofs."],
    "Pasture Land": ["Open grass fields."],
    "Permanent Crop Land": ["Orchards in regular rows."],
    "Residential Buildings": ["Houses and gardens."],
    "River": ["A winding band of water."],
    "Sea or Lake": ["A wide area of water."],
}


def test_reference_descriptions_resolve_for_folder_data(tmp_path):
    for folder in BENCHMARKS["eurosat"].folder_names:
        _image(tmp_path / "data" / "eurosat" / "train" / folder / "0.png")
    dataset = build_dataset("eurosat", "train", root=tmp_path / "data")
    (tmp_path / "eurosat.json").write_text(json.dumps(EUROSAT_DESCRIPTIONS))
    loaded = load_descriptions(tmp_path, dataset.classes, dataset="eurosat")  # no allow_missing needed
    assert list(loaded) == list(EUROSAT_DESCRIPTIONS)
    assert loaded["Highway or Road"] == ["A grey strip across the land."]


def test_caltech_descriptions_with_the_extra_background_key_load(tmp_path):
    caltech = shipped_classnames("caltech101")
    data = {"background": ["Clutter."], **{name: [f"A photo of a {name}."] for name in caltech}}
    (tmp_path / "caltech101.json").write_text(json.dumps(data))
    loaded = load_descriptions(tmp_path, caltech, dataset="caltech101")
    assert "background" not in loaded and len(loaded) == 100 and loaded["car_side"] == ["A photo of a car_side."]
    del data["airplane"]
    (tmp_path / "caltech101.json").write_text(json.dumps(data))
    with pytest.raises(DescriptionsError, match=r"no entry for class 'airplane' \(1 of 100 classes missing"):
        load_descriptions(tmp_path, caltech, dataset="caltech101")


# --- folders onto class strings ------------------------------------------------------------------


# (set, a folder as the archive or the reference's script names it, the reference's string): hand-picked
@pytest.mark.parametrize(
    "name, folder, string",
    [
        ("cub", "022.Chuck_will_Widow", "Chuck-will Widow"),
        ("cub", "124.Le_Conte_Sparrow", "Le-Conte Sparrow"),
        ("cub", "126.Nelson_Sharp_tailed_Sparrow", "Nelson-Sharp-tailed Sparrow"),
        ("cub", "159.Black_and_white_Warbler", "Black-and-white Warbler"),
        ("ucf101", "HandstandPushups", "Handstand Pushups"),
        ("ucf101", "YoYo", "Yo Yo"),
        ("sun397", "apse/indoor", "apse (indoor)"),
        ("sun397", "car_interior_backseat", "car interior (backseat)"),
        ("fgvc", "F-A-18", "F/A-18"),
        ("cars", "171_Ram_C_V_Cargo_Van_Minivan_2012", "Ram C/V Cargo Van Minivan 2012"),
        ("birdsnap", "Allen's_Hummingbird", "Allens Hummingbird"),
        ("resisc45", "ground_track_field", "ground track field"),
        ("pets", "american_pit_bull_terrier", "american pit bull terrier"),
    ],
)
def test_archive_folder_names_meet_the_reference_strings(name, folder, string):
    classes = shipped_classnames(name)
    assert string in classes
    matches = [c for c in classes if match_key(c) == match_key(folder)]
    assert matches == [string]


def test_caltech_folders_as_the_archive_names_them_map(tmp_path):
    renamed = {"airplane": "airplanes", "face": "Faces", "leopard": "Leopards", "motorbike": "Motorbikes"}
    for name in shipped_classnames("caltech101"):
        _image(tmp_path / "caltech101" / "test" / renamed.get(name, name) / "image_0001.jpg")
    dataset = build_dataset("caltech101", "test", root=tmp_path)
    by_folder = {Path(path).parent.name: label for path, label in dataset.samples}
    assert dataset.classes[by_folder["Faces"]] == "face" and dataset.classes[by_folder["airplanes"]] == "airplane"
    assert sorted(by_folder.values()) == list(range(100))


def test_fgvc_folders_are_labelled_by_name_where_the_reference_permuted_three(tmp_path):
    # The reference's script names folders with "/" and " " as "-"; its ImageFolder then sorts "BAE-125"
    # before "BAE-146-200", so its labels 37-39 disagree with classes.json. Here they follow the names.
    for name in shipped_classnames("fgvc"):
        _image(tmp_path / "fgvc" / "test" / name.replace("/", "-").replace(" ", "-") / "1.jpg")
    dataset = build_dataset("fgvc", "test", root=tmp_path)
    by_folder = {Path(path).parent.name: label for path, label in dataset.samples}
    assert sorted(by_folder)[37:40] == ["BAE-125", "BAE-146-200", "BAE-146-300"]
    assert (by_folder["BAE-125"], by_folder["BAE-146-200"], by_folder["BAE-146-300"]) == (39, 37, 38)
    assert by_folder["F-16A-B"] == 72 and by_folder["F-A-18"] == 73


def test_folders_that_do_not_map_are_one_clear_error(tmp_path):
    pets = shipped_classnames("pets")
    folders = [name.replace(" ", "_") for name in pets[:-1]] + ["yorkshire", "labrador"]
    for folder in folders:
        _image(tmp_path / "pets" / "train" / folder / "1.jpg")
    with pytest.raises(ClassOrderError) as info:
        build_dataset("pets", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "37 pets classes" in message
    assert "1 classes have no folder ('yorkshire terrier')" in message
    assert "2 folders match no class ('labrador', 'yorkshire')" in message and "microclip classes pets" in message


# --- splits --------------------------------------------------------------------------------------


def _fgvc_archive(raw: Path) -> dict[str, int]:
    """fgvc-aircraft-2013b/data with variants.txt and the images_variant_*.txt lists; returns line counts."""
    data = raw / "fgvc-aircraft-2013b" / "data"
    variants = shipped_classnames("fgvc")
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("".join(v + "\n" for v in variants))
    lists = {
        "train": [("1000001", "707-320"), ("1000002", "BAE-125"), ("1000003", "F/A-18")],
        "val": [("1000004", "707-320"), ("1000005", "A380"), ("1000006", "Yak-42"), ("1000007", "DC-3")],
        "test": [("1000008", "BAE 146-200"), ("1000009", "A380")],
    }
    lists["trainval"] = lists["train"] + lists["val"]
    for split, rows in lists.items():
        (data / f"images_variant_{split}.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
        for image_id, _ in rows:
            if not (data / "images" / f"{image_id}.jpg").exists():
                _image(data / "images" / f"{image_id}.jpg")
    return {split: len(rows) for split, rows in lists.items()}


def test_fgvc_reference_split_is_train_not_trainval(tmp_path):
    counts = _fgvc_archive(tmp_path / "fgvc" / "raw")
    data = tmp_path / "fgvc" / "raw" / "fgvc-aircraft-2013b" / "data"
    items = fgvc_split(data, "train", shipped_classnames("fgvc"))
    assert [label for _, label in items] == [0, 39, 73]
    # The export needs every class in every split; the fixture has 7, so it must stop before writing.
    with pytest.raises(DatasetDownloadError, match="no images of 9[0-9] classes"):
        download_benchmark(BENCHMARKS["fgvc"], tmp_path)
    assert not (tmp_path / "fgvc" / "train").exists() and not (tmp_path / "fgvc" / "test").exists()
    assert counts["train"] == 3 and counts["trainval"] == 7


def test_fgvc_download_exports_train_and_official_trainval(tmp_path, monkeypatch):
    counts = _fgvc_archive(tmp_path / "fgvc" / "raw")
    monkeypatch.setattr("microclip.data.download.check_complete", lambda benchmark, splits: None)
    download_benchmark(BENCHMARKS["fgvc"], tmp_path)  # torchvision finds the archive: no network
    assert len(build_dataset("fgvc", "train", root=tmp_path)) == counts["train"]
    assert len(build_dataset("fgvc", "test", root=tmp_path)) == counts["test"]
    download_benchmark(BENCHMARKS["fgvc"], tmp_path, "official")
    official = build_dataset("fgvc", "train", root=tmp_path, protocol="official")
    assert len(official) == counts["trainval"] and official.root == tmp_path / "fgvc" / "official" / "train"
    with pytest.raises(ValueError, match="dtd has no 'official' split"):
        build_dataset("dtd", "train", root=tmp_path, protocol="official")


def _flowers_root(root: Path, with_split_file: bool = True) -> dict[str, int]:
    """<root>/flowers/jpg/image_NNNNN.jpg and CoOp's split file format: {split: [[image, label, name], ...]}."""
    flowers = shipped_classnames("flowers")
    split = {
        name: [[f"image_{i:05d}.jpg", label, flowers[label]] for i, label in rows]
        for name, rows in [
            ("train", [(1, 0), (2, 0), (3, 1), (4, 101), (5, 7)]),
            ("val", [(6, 0), (7, 1)]),
            ("test", [(8, 1), (9, 101), (10, 3)]),
        ]
    }
    for i in range(1, 11):
        _image(root / "flowers" / "jpg" / f"image_{i:05d}.jpg")
    if with_split_file:
        (root / "flowers" / "split_zhou_OxfordFlowers.json").write_text(json.dumps(split))
    return {name: len(rows) for name, rows in split.items()}


def test_flowers_reads_coops_split_file(tmp_path):
    counts = _flowers_root(tmp_path)
    train = build_dataset("flowers", "train", root=tmp_path)
    test = build_dataset("flowers", "test", root=tmp_path)
    assert (len(train), len(test)) == (counts["train"], counts["test"]) == (5, 3)
    assert train.targets == [0, 0, 1, 101, 7] and train.classes == shipped_classnames("flowers")
    assert Path(test.samples[1][0]).name == "image_00009.jpg"


def test_flowers_pairs_coops_own_names_by_label_and_notes_them_once(tmp_path, caplog):
    # CoOp's real split_zhou_OxfordFlowers.json: label 59 "pink-yellow dahlia", 92 "ball moss", where the
    # reference's strings are "pink and yellow dahlia" and "air plant"; the reference reads the label.
    _flowers_root(tmp_path)
    path = tmp_path / "flowers" / "split_zhou_OxfordFlowers.json"
    data = json.loads(path.read_text())
    data["train"] += [
        ["image_00006.jpg", 59, "pink-yellow dahlia"],
        ["image_00007.jpg", 92, "ball moss"],
        ["image_00001.jpg", 92, "ball moss"],
    ]
    path.write_text(json.dumps(data))
    with caplog.at_level("INFO", logger="microclip"):
        train = build_dataset("flowers", "train", root=tmp_path)
    assert train.targets[-3:] == [59, 92, 92] and train.classes[59] == "pink and yellow dahlia"
    noted = [r for r in caplog.records if "differ from the reference's strings" in r.getMessage()]
    assert len(noted) == 1 and noted[0].levelname == "INFO" and "known aliases" in noted[0].getMessage()
    assert "'ball moss' = 'air plant'" in noted[0].getMessage()


def test_flowers_unknown_name_is_a_warning_and_a_bad_label_an_error(tmp_path, caplog):
    _flowers_root(tmp_path)
    path = tmp_path / "flowers" / "split_zhou_OxfordFlowers.json"
    data = json.loads(path.read_text())
    data["test"][0][2] = "sunflower"
    path.write_text(json.dumps(data))
    with caplog.at_level("INFO", logger="microclip"):
        test = build_dataset("flowers", "test", root=tmp_path)
    assert test.targets[0] == 1
    [noted] = [r for r in caplog.records if "differ from the reference's strings" in r.getMessage()]
    assert noted.levelname == "WARNING" and "1 'sunflower' = 'hard-leaved pocket orchid'" in noted.getMessage()
    data["test"][0][1] = 102
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="test entry 0 has label 102, outside the reference's 102 classes"):
        build_dataset("flowers", "test", root=tmp_path)


def test_flowers_without_split_file_says_how_to_get_it(tmp_path, monkeypatch):
    _flowers_root(tmp_path, with_split_file=False)
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("flowers", "train", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "split_zhou_OxfordFlowers.json" in message
    assert "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT" in message and "--data_split official" in message

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("torchvision.datasets.utils.download_file_from_google_drive", offline)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DatasetDownloadError, match="could not fetch split_zhou_OxfordFlowers.json.*no network"):
        build_dataset("flowers", "train", root=tmp_path, download=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing half-written


def test_flowers_split_file_fetch_writes_the_file_whole(tmp_path, monkeypatch):
    counts = _flowers_root(tmp_path / "coop")
    source = tmp_path / "coop" / "flowers" / "split_zhou_OxfordFlowers.json"
    _flowers_root(tmp_path / "data", with_split_file=False)

    def fake_drive(file_id, root, filename=None, md5=None):  # Google Drive, offline
        assert file_id == "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"
        (Path(root) / filename).write_bytes(source.read_bytes())

    monkeypatch.setattr("torchvision.datasets.utils.download_file_from_google_drive", fake_drive)
    train = build_dataset("flowers", "train", root=tmp_path / "data", download=True)
    assert len(train) == counts["train"]
    assert [p.name for p in (tmp_path / "data" / "flowers").iterdir() if p.name.startswith(".")] == []


def test_sun397_per_class_split_rounds_like_python(tmp_path):
    # Hand-computed: round() sends halves to the even neighbour (3.5 -> 4, 10.5 -> 10, 0.5 -> 0, 1.5 -> 2).
    assert sun397_split_sizes(5) == (4, 0, 1)
    assert sun397_split_sizes(15) == (10, 2, 3)
    assert sun397_split_sizes(25) == (18, 2, 5)
    assert sun397_split_sizes(35) == (24, 4, 7)
    assert sun397_split_sizes(100) == (70, 10, 20)


def _sun397_archive(root: Path, sizes: dict[str, int]) -> Path:
    sun = root / "SUN397"
    sun.mkdir(parents=True)
    (sun / "ClassName.txt").write_text("".join(f"/{path[0]}/{path}\n" for path in sizes))
    for path, n in sizes.items():
        for i in range(n):
            _image(sun / path[0] / path / f"sun_{i:04d}.jpg")
    return sun


def test_sun397_split_follows_the_reference_script(tmp_path):
    sizes = {"abbey": 15, "apse/indoor": 5, "youth_hostel": 25}
    sun = _sun397_archive(tmp_path, sizes)
    classes = shipped_classnames("sun397")
    splits = sun397_splits(sun, classes)
    counts = {split: {} for split in splits}
    for split, items in splits.items():
        for _, label in items:
            counts[split][classes[label]] = counts[split].get(classes[label], 0) + 1
    assert counts["train"] == {"abbey": 10, "apse (indoor)": 4, "youth hostel": 18}
    assert counts["val"] == {"abbey": 2, "youth hostel": 2}
    assert counts["test"] == {"abbey": 3, "apse (indoor)": 1, "youth hostel": 5}
    # The reference's procedure, written as its script does it (global random, seeded once), on sorted names.
    random.seed(0)
    expected_train = []
    for path, n in sizes.items():
        names = sorted(f"sun_{i:04d}.jpg" for i in range(n))
        random.shuffle(names)
        expected_train += [f"{path}/{name}" for name in names[: int(round(n * 0.7))]]
    got = ["/".join(p.relative_to(sun).parts[1:]) for p, _ in splits["train"]]
    assert got == expected_train


def test_caltech101_split_follows_the_reference_script(tmp_path):
    categories = tmp_path / "101_ObjectCategories"
    sizes = {"BACKGROUND_Google": 4, "Faces": 33, "Faces_easy": 3, "accordion": 31, "water_lilly": 37}
    for folder, n in sizes.items():
        for i in range(1, n + 1):
            _image(categories / folder / f"image_{i:04d}.jpg")
    classes = shipped_classnames("caltech101")
    splits = caltech101_splits(categories, classes)
    train_labels = [label for _, label in splits["train"]]
    assert len(splits["train"]) == 90 and len(splits["test"]) == 3 + 1 + 7
    assert sorted({classes[label] for label in train_labels}) == ["accordion", "face", "water_lilly"]
    # The reference: np.random.seed(0) once, then per class np.random.choice(n, 30, replace=False).
    np.random.seed(0)
    expected = []
    for folder in ["Faces", "accordion", "water_lilly"]:
        files = sorted(f"image_{i:04d}.jpg" for i in range(1, sizes[folder] + 1))
        chosen = set(np.random.choice(len(files), size=30, replace=False))
        expected += [f"{folder}/{name}" for i, name in enumerate(files) if i in chosen]
    assert [f"{p.parent.name}/{p.name}" for p, _ in splits["train"]] == expected


# --- the command line on bad data: one line, nothing written -------------------------------------


def _train(*args: str) -> subprocess.CompletedProcess:
    return command_here("train.py", *args)  # a refusal: in this process (conftest.command_here)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR")]


def test_train_on_bad_data_says_what_is_missing_and_writes_nothing(tmp_path):
    _flowers_root(tmp_path / "data", with_split_file=False)
    done = _train("--dataset", "flowers", "--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    [line] = _error_lines(done.stderr)
    assert "split_zhou_OxfordFlowers.json" in line and "drive.google.com" in line

    for folder in BENCHMARKS["eurosat"].folder_names:
        _image(tmp_path / "data" / "eurosat" / "train" / folder / "0.png")
    partial = {k: v for k, v in EUROSAT_DESCRIPTIONS.items() if k != "Pasture Land"}
    (tmp_path / "eurosat.json").write_text(json.dumps(partial))
    done = _train(
        "--dataset",
        "eurosat",
        "--data_root",
        str(tmp_path / "data"),
        "--output_dir",
        str(tmp_path / "out"),
        "--text_descriptions_path",
        str(tmp_path / "eurosat.json"),
    )
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    [line] = _error_lines(done.stderr)
    assert "no entry for class 'Pasture Land'" in line and "--allow_missing_descriptions" in line
