"""The bundled example pictures: which there are, in which order, and their captions."""

from __future__ import annotations

from pathlib import Path

from microclip.data.datasets import is_image_file
from microclip.resources import EXAMPLES_DIR

EXAMPLE_ORDER = ("toybird", "scene", "photo")  # the model's own world first, then further and further outside


def example_order(path: str | Path) -> tuple[int, str]:
    """Sort key of an example picture: toy birds first, then the procedural scenes, then real photos, by name."""
    name = Path(path).name
    kind = name.partition("-")[0]
    return (EXAMPLE_ORDER.index(kind) if kind in EXAMPLE_ORDER else len(EXAMPLE_ORDER), name)


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    """Paths of the bundled example pictures in ``example_order`` (empty when there are none)."""
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir(), key=example_order) if is_image_file(p)]


def example_label(path: str) -> str:
    """A caption for an example thumbnail: the toy species, or what the picture is, marked as outside the world."""
    kind, _, rest = Path(path).stem.partition("-")
    if kind == "toybird":
        return rest.replace("-", " ")
    return f"⚠ {rest.replace('-', ' ')}"


def ordered_examples(paths: list[str]) -> tuple[list[str], list[str]]:
    """Toy birds first (the bundled model's world), other pictures after; each with its label."""
    ordered = sorted(paths, key=example_order)
    return ordered, [example_label(path) for path in ordered]
