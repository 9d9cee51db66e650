"""The benchmark catalog: where each data set lives on disk and how to get it.

Layout (the reference's `configs/dataset_catalog.json`):
`<root>/<name>/<split folder>/<class folder>/<image>`, with split folders `train` and `test`
(`val` for eurosat and ucf101, whose test set is the val split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its folders, where it comes from, and how the reference split it."""

    name: str
    title: str
    test_folder: str = "test"
    torchvision: str | None = None  # torchvision.datasets class that can --download it
    manual: str | None = None  # how to build the folders by hand when torchvision cannot
    folder_names: tuple[str, ...] | None = None  # expected class folders when they differ from the names
    download_note: str = ""  # a known problem with the download

    def split_folder(self, split: str) -> str:
        """The folder name of `split` ("train" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return "train" if split == "train" else self.test_folder

    def split_dir(self, root: str | Path, split: str) -> Path:
        """`<root>/<name>/<split folder>`."""
        return Path(root) / self.name / self.split_folder(split)

    def layout(self, root: str | Path) -> str:
        """The expected layout, for error messages."""
        return (
            f"{Path(root) / self.name}/{{train,{self.test_folder}}}/<class folder>/<image>, "
            "one folder per class, sorted folder names = label order"
        )


_EUROSAT_FOLDERS = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "birdsnap",
            "Birdsnap",
            manual=(
                "Birdsnap v1.1 is distributed as a list of image URLs (thomasberg.org, 'Birdsnap "
                "dataset'); fetch the images with its get_birdsnap.py script, then put "
                "test_images.txt's images in test/ and the rest in train/, one folder per species"
            ),
        ),
        Benchmark("caltech101", "Caltech-101", torchvision="Caltech101"),
        Benchmark(
            "cars",
            "Stanford Cars",
            torchvision="StanfordCars",
            download_note=(
                "the original Stanford Cars download links are dead upstream (pytorch/vision#7545), so "
                "torchvision refuses to download it; put the images and devkit from a mirror (e.g. "
                "Kaggle) into <root>/cars/raw/stanford_cars and run with --download again to export them"
            ),
        ),
        Benchmark(
            "cub",
            "CUB-200-2011",
            manual=(
                "download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
                "and split images/ with train_test_split.txt (1 = train, 0 = test), keeping the class "
                "folder names (001.Black_footed_Albatross, ...)"
            ),
        ),
        Benchmark("dtd", "Describable Textures", torchvision="DTD"),
        Benchmark("eurosat", "EuroSAT", test_folder="val", torchvision="EuroSAT", folder_names=_EUROSAT_FOLDERS),
        Benchmark("fgvc", "FGVC-Aircraft", torchvision="FGVCAircraft"),
        Benchmark("flowers", "Oxford Flowers-102", torchvision="Flowers102"),
        Benchmark("food101", "Food-101", torchvision="Food101"),
        Benchmark("pets", "Oxford-IIIT Pets", torchvision="OxfordIIITPet"),
        Benchmark(
            "resisc45",
            "NWPU-RESISC45",
            manual=(
                "download NWPU-RESISC45 (Cheng et al. 2017; the authors' link, or the archive that "
                "TensorFlow Datasets documents as a manual download) and split each of the 45 class "
                "folders into train/ and test/"
            ),
        ),
        Benchmark("sun397", "SUN397", torchvision="SUN397"),
        Benchmark(
            "ucf101",
            "UCF101 (middle frames)",
            test_folder="val",
            manual=(
                "download UCF101 and its train/test lists from https://www.crcv.ucf.edu/data/UCF101.php, "
                "save the middle frame of each video as a JPEG, and put split 1's trainlist01 videos in "
                "train/ and testlist01 in val/, one folder per action class"
            ),
        ),
        Benchmark("toybirds", "Toy birds (procedural, generated on first use)"),
    ]
}


def get_benchmark(name: str) -> Benchmark | None:
    """The catalog entry of `name`, or None when `name` is not a benchmark."""
    return BENCHMARKS.get(name)


def how_to_get(benchmark: Benchmark) -> str:
    """One sentence on how to obtain the data, for the missing-folder error."""
    if benchmark.torchvision:
        text = (
            f"run with --download (build_dataset(..., download=True)) to fetch it with "
            f"torchvision.datasets.{benchmark.torchvision} and export this layout"
        )
        return text + (f"; note: {benchmark.download_note}" if benchmark.download_note else "")
    return benchmark.manual or "it is generated automatically"
