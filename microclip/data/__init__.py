"""Images, transforms, data sets, class names, templates and descriptions.

Modules: `images` (safe decoding), `transforms` (weak / strong / crops / test views),
`seeded` (per-item seeded augmentation), `datasets` (benchmarks, folders, CSV lists),
`catalog` (where benchmarks live, how the reference split them), `splits` (the reference's splits
from the archives' own files), `download` (torchvision fetch + export), `names` (class-name
cleaning, matching and order checks), `shipped` (the reference's class strings and templates),
`descriptions`, `errors`.
"""

from microclip.data.datasets import (
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    build_dataset,
)
from microclip.data.descriptions import DescriptionsError, load_descriptions
from microclip.data.images import ImageError, load_image
from microclip.data.names import ClassOrderError, clean_class_name, read_classnames
from microclip.data.seeded import SeededDataset
from microclip.data.shipped import shipped_classnames, shipped_templates
from microclip.data.transforms import (
    TrainViews,
    crop_views,
    strong_transform,
    test_transform,
    weak_transform,
)

__all__ = [
    "ClassOrderError",
    "DatasetError",
    "DatasetNotFoundError",
    "DescriptionsError",
    "ImageDataset",
    "ImageError",
    "SeededDataset",
    "TrainViews",
    "build_dataset",
    "clean_class_name",
    "crop_views",
    "load_descriptions",
    "load_image",
    "read_classnames",
    "shipped_classnames",
    "shipped_templates",
    "strong_transform",
    "test_transform",
    "weak_transform",
]
