"""The reference's own data layouts load as they are, and `train.py --eval` runs on each of them.

Each fixture writes a handful of tiny images in the layout the reference's `configs/dataset_catalog.json`
and its `extra_scripts/` produce (folder names `aircrafts`, `oxford_pets`; split folders `trainval`, `val`;
SUN397 file lists with another machine's absolute paths; CUB's `images/` + `train_test_split.txt`;
flowers with CoOp's own class names in the split file).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from microclip.cli import train
from microclip.data.catalog import BENCHMARKS
from microclip.data.datasets import DatasetError, DatasetNotFoundError, build_dataset
from microclip.data.shipped import shipped_classnames

_BUFFER = io.BytesIO()
Image.new("RGB", (12, 10), (120, 30, 200)).save(_BUFFER, format="JPEG")
JPEG = _BUFFER.getvalue()


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)
    return path


def _folders(split_dir: Path, folders: list[str], per_class: int = 1, filled: int = 3) -> int:
    """Every class folder (the mapping needs them all); only the first `filled` hold images (fast tests)."""
    for n, folder in enumerate(folders):
        (split_dir / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class if n < filled else 0):
            _image(split_dir / folder / f"{i}.jpg")
    return min(filled, len(folders)) * per_class


def _flowers(root: Path) -> tuple[int, int]:
    classes = shipped_classnames("flowers")
    coop_names = {59: "pink-yellow dahlia", 92: "ball moss"}  # CoOp's own strings for these labels
    rows = {"train": [(1, 0), (2, 59), (3, 92)], "val": [(4, 1)], "test": [(5, 59), (6, 92)]}
    split = {
        part: [[f"image_{i:05d}.jpg", label, coop_names.get(label, classes[label])] for i, label in items]
        for part, items in rows.items()
    }
    for i in range(1, 7):
        _image(root / "flowers" / "jpg" / f"image_{i:05d}.jpg")
    (root / "flowers" / "split_zhou_OxfordFlowers.json").write_text(json.dumps(split))
    return 3, 2


def _pets(root: Path) -> tuple[int, int]:
    # create_oxford_pets_data_files.py: folders named like the image files ("Abyssinian", "american_bulldog")
    folders = [name.replace(" ", "_") for name in shipped_classnames("pets")]
    return _folders(root / "oxford_pets" / "train", folders, 2), _folders(root / "oxford_pets" / "test", folders)


def _fgvc(root: Path) -> tuple[int, int]:
    # create_fgvc_aircraft_data_files.py: variant names with "/" and " " replaced by "-"
    folders = [name.replace("/", "-").replace(" ", "-") for name in shipped_classnames("fgvc")]
    return _folders(root / "aircrafts" / "train", folders, filled=100), _folders(root / "aircrafts" / "test", folders)


def _dtd(root: Path) -> tuple[int, int]:
    # create_dtd_data_files.py writes train (train1), val, test and trainval (train1 + val1)
    folders = shipped_classnames("dtd")
    _folders(root / "dtd" / "train", folders)
    _folders(root / "dtd" / "val", folders)
    return _folders(root / "dtd" / "trainval", folders, 2), _folders(root / "dtd" / "test", folders)


def _eurosat(root: Path) -> tuple[int, int]:
    folders = list(BENCHMARKS["eurosat"].folder_names)
    return _folders(root / "eurosat" / "train", folders, 2), _folders(root / "eurosat" / "val", folders)


def _ucf101(root: Path) -> tuple[int, int]:
    # create_ucf101_data_files.py: the video's category folder ("ApplyEyeMakeup")
    folders = [name.replace(" ", "") for name in shipped_classnames("ucf101")]
    return _folders(root / "ucf101" / "train", folders), _folders(root / "ucf101" / "val", folders)


def _sun397(root: Path) -> tuple[int, int]:
    # create_sun397_data_files.py: np.save of absolute paths on the machine that ran it, labels in ClassName.txt order
    base = root / "sun397"
    old = "/home/someone/datasets/sun397/SUN397"
    counts = {}
    for part, labels in (("train", [0, 1, 396, 396]), ("test", [0, 5])):
        paths = []
        for n, label in enumerate(labels):
            name = shipped_classnames("sun397")[label].replace(" ", "_")
            relative = f"{name[0]}/{name}/sun_{part}_{n}.jpg"
            _image(base / "SUN397" / relative)
            paths.append(f"{old}/{relative}")
        np.save(base / f"{part}_images.npy", np.array(paths))
        np.save(base / f"{part}_labels.npy", np.array(labels))
        counts[part] = len(labels)
    return counts["train"], counts["test"]


def _cub(root: Path) -> tuple[int, int]:
    # the CUB_200_2011 archive: images/<NNN.Name>/<file>, images.txt, train_test_split.txt
    base = root / "cub"
    folders = [f"{i + 1:03d}.{name.replace(' ', '_')}" for i, name in enumerate(shipped_classnames("cub"))]
    lines, split = [], []
    for i, folder in enumerate(folders):
        for j, is_train in enumerate((1, 0) if i < 3 else (1,)):
            index = 2 * i + j + 1
            _image(base / "images" / folder / f"{folder}_{j}.jpg")
            lines.append(f"{index} {folder}/{folder}_{j}.jpg")
            split.append(f"{index} {is_train}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return len(folders), 3


LAYOUTS = {
    "flowers": _flowers,
    "pets": _pets,
    "fgvc": _fgvc,
    "dtd": _dtd,
    "eurosat": _eurosat,
    "ucf101": _ucf101,
    "sun397": _sun397,
    "cub": _cub,
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_reference_layout_loads_as_it_is(name, tmp_path):
    n_train, n_test = LAYOUTS[name](tmp_path)
    train = build_dataset(name, "train", root=tmp_path)
    test = build_dataset(name, "test", root=tmp_path)
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.classes == test.classes == shipped_classnames(name)
    assert train.layout and all(Path(path).is_file() for path, _ in train.samples + test.samples)


def test_each_image_gets_the_label_of_its_class(tmp_path):
    _fgvc(tmp_path)
    fgvc = build_dataset("fgvc", "train", root=tmp_path)
    by_folder = {Path(path).parent.name: label for path, label in fgvc.samples}
    assert by_folder["BAE-125"] == fgvc.classes.index("BAE-125") and by_folder["F-A-18"] == fgvc.classes.index("F/A-18")
    _sun397(tmp_path)
    sun = build_dataset("sun397", "train", root=tmp_path)
    assert sun.targets == [0, 1, 396, 396] and Path(sun.samples[2][0]).is_relative_to(tmp_path / "sun397" / "SUN397")
    _cub(tmp_path)
    cub = build_dataset("cub", "test", root=tmp_path)
    assert [Path(p).parent.name[:3] for p, _ in cub.samples[:3]] == ["001", "002", "003"]
    assert cub.targets == [0, 1, 2] and all(Path(p).stem.endswith("_1") for p, _ in cub.samples)


def test_dtd_trains_on_trainval_as_the_reference(tmp_path):
    n_train, _ = _dtd(tmp_path)
    train = build_dataset("dtd", "train", root=tmp_path)
    assert len(train) == n_train == 2 * 3 and "trainval" in train.layout


def test_a_pickled_file_list_is_refused_without_unpickling(tmp_path):
    _sun397(tmp_path)
    np.save(tmp_path / "sun397" / "train_images.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="object arrays are refused"):
        build_dataset("sun397", "train", root=tmp_path)


def test_cub_split_listing_a_missing_image_is_one_clear_error(tmp_path):
    _cub(tmp_path)
    next((tmp_path / "cub" / "images").glob("001.*/*_1.jpg")).unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 of 3 listed images are missing"):
        build_dataset("cub", "test", root=tmp_path)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_train_eval_runs_on_the_reference_layout(name, tmp_path, tiny_model_dir, capsys):
    _, n_test = LAYOUTS[name](tmp_path / "data")
    out = tmp_path / "out"
    (tmp_path / "templates.json").write_text(json.dumps(["a photo of a {}."]))  # one prompt per class: fast
    code = train(
        [
            "--dataset",
            name,
            "--data_root",
            str(tmp_path / "data"),
            "--eval",
            "--no_descriptions",
            "--template",
            str(tmp_path / "templates.json"),
            "--clip_model",
            f"local-dir:{tiny_model_dir}",
            "--output_dir",
            str(out),
            "--no_progress",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == n_test and metrics["acc"] == metrics["acc_cls"]  # the reference's zero-shot acc: [CLS]
    err = capsys.readouterr().err.splitlines()
    [line] = [line for line in err if line.startswith(f"INFO microclip: {name}: read ")]
    assert f"{n_test} test images" in line
