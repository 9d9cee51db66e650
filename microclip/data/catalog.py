"""The benchmark catalog: where each data set lives on disk, how the reference split it, how to get it.

Layout (the reference's `configs/dataset_catalog.json`):
`<root>/<name>/<split folder>/<class folder>/<image>`, with split folders `train` and `test`
(`val` for eurosat and ucf101, whose test set is the val split). Class folders are paired with the
reference's class strings by name (`names.match_key`), so their sort order does not matter.

Flowers is the exception, as in the reference: `<root>/flowers/split_zhou_OxfordFlowers.json`
(CoOp's split file) lists the images of `<root>/flowers/jpg/`. Benchmarks whose official split
differs from the reference's (flowers, fgvc) also offer it as the protocol "official", in
`<root>/<name>/official/<split folder>/`.
"""

from __future__ import annotations

from dataclasses import dataclass
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
            reference_split="not in the reference's code; the dataset's test_images.txt as test, the rest train",
        ),
        Benchmark(
            "caltech101",
            "Caltech-101",
            torchvision="Caltech101",
            reference_split=(
                "BACKGROUND_Google and Faces_easy dropped, 30 training images per class drawn with "
                "np.random.seed(0), the rest test (extra_scripts/create_caltech101_data_files.py)"
            ),
            reference_counts=(3000, None),  # 30 per class; the test count depends on the archive
        ),
        Benchmark(
            "cars",
            "Stanford Cars",
            torchvision="StanfordCars",
            download_note=(
                "the original Stanford Cars download links are dead upstream (pytorch/vision#7545), so "
                "torchvision refuses to download it; put the images and devkit from a mirror (e.g. "
                "Kaggle) into <root>/cars/raw/stanford_cars and run with --download again to export them"
            ),
            reference_split="official train / test (8,144 / 8,041)",
            reference_counts=(8144, 8041),
        ),
        Benchmark(
            "cub",
            "CUB-200-2011",
            manual=(
                "download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
                "and split images/ with train_test_split.txt (1 = train, 0 = test), keeping the class "
                "folder names (001.Black_footed_Albatross, ...)"
            ),
            reference_split="official train_test_split.txt (5,994 / 5,794)",
            reference_dirs=("CUB_200_2011",),
            reference_counts=(5994, 5794),
        ),
        Benchmark(
            "dtd",
            "Describable Textures",
            torchvision="DTD",
            reference_split="partition 1: train1 + val1 / test1 (3,760 / 1,880)",
            train_folders=("trainval", "train"),  # the reference's script writes train (1,880) and trainval
            reference_counts=(3760, 1880),
        ),
        Benchmark(
            "eurosat",
            "EuroSAT",
            test_folder="val",
            torchvision="EuroSAT",
            folder_names=_EUROSAT_FOLDERS,
            reference_split="the first 1,000 / next 500 images of each class in sorted file order (10,000 / 5,000)",
            reference_counts=(10000, 5000),
        ),
        Benchmark(
            "fgvc",
            "FGVC-Aircraft",
            torchvision="FGVCAircraft",
            reference_split="images_variant_train.txt / images_variant_test.txt (3,334 / 3,333)",
            reference_dirs=("aircrafts",),
            reference_counts=(3334, 3333),
            official_split="images_variant_trainval.txt / images_variant_test.txt (6,667 / 3,333)",
        ),
        Benchmark(
            "flowers",
            "Oxford Flowers-102",
            torchvision="Flowers102",
            reference_split="CoOp's split_zhou_OxfordFlowers.json: train / test (4,093 / 2,463)",
            official_split="setid.mat: trnid + valid / tstid (2,040 / 6,149)",
            split_file="split_zhou_OxfordFlowers.json",
            reference_counts=(4093, 2463),
        ),
        Benchmark(
            "food101",
            "Food-101",
            torchvision="Food101",
            reference_split="official meta/train.txt / meta/test.txt (75,750 / 25,250)",
            reference_counts=(75750, 25250),
        ),
        Benchmark(
            "pets",
            "Oxford-IIIT Pets",
            torchvision="OxfordIIITPet",
            reference_split="official trainval.txt / test.txt (3,680 / 3,669)",
            reference_dirs=("oxford_pets",),
            reference_counts=(3680, 3669),
        ),
        Benchmark(
            "resisc45",
            "NWPU-RESISC45",
            manual=(
                "download NWPU-RESISC45 (Cheng et al. 2017; the authors' link, or the archive that "
                "TensorFlow Datasets documents as a manual download) and split each of the 45 class "
                "folders into train/ and test/"
            ),
            reference_split="not in the reference's code (it ships no split script for RESISC45)",
        ),
        Benchmark(
            "sun397",
            "SUN397",
            torchvision="SUN397",
            reference_split=(
                "per class in ClassName.txt order: random.seed(0), shuffle, train = round(0.7 n), "
                "val = round(0.1 n), test = the rest (extra_scripts/create_sun397_data_files.py)"
            ),
        ),
        Benchmark(
            "ucf101",
            "UCF101 (middle frames)",
            test_folder="val",
            manual=(
                "download UCF101 and its train/test lists from https://www.crcv.ucf.edu/data/UCF101.php, "
                "save the middle frame of each video as a JPEG, and put split 1's trainlist01 videos in "
                "train/ and testlist01 in val/, one folder per action class"
            ),
            reference_split=(
                "the middle frame of each video, official split 1: trainlist01 / testlist01 (9,537 / 3,783)"
            ),
            reference_counts=(9537, 3783),
        ),
        Benchmark("toybirds", "Toy birds (procedural, generated on first use)"),
    ]
}


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
