"""Where bundled things live: the package's own data (configs) and, in a checkout, the project files.

Configs are package data, read through ``importlib.resources``, so an installed ``microclip`` finds
``--train_config ours_vit_b_32_cupl_proto`` from any directory. Checkpoints, assets and the toy
world's examples are too large for the package; they are found in the checkout the package was
imported from (``PROJECT_ROOT``) when there is one.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = PROJECT_ROOT / "assets" / "examples"  # the app's example pictures (toy birds, scenes, photos)
ConfigKind = Literal["train_configs", "dataset_configs"]


def config_dir(kind: ConfigKind) -> Traversable:
    return files("microclip") / "configs" / kind


def config_names(kind: ConfigKind) -> list[str]:
    return sorted(entry.name[:-5] for entry in config_dir(kind).iterdir() if entry.name.endswith(".json"))


def config_file(kind: ConfigKind, name: str) -> Traversable | None:
    entry = config_dir(kind) / f"{name}.json"
    return entry if entry.is_file() else None


def locate(value: str) -> str:
    """A path written relative to the project (in a config or a checkpoint) resolved from any cwd.

    As given when it exists from the working directory or is absolute; else under the project.
    ``local-dir:`` (open_clip's folder scheme) keeps its prefix.
    """
    if value.startswith("local-dir:"):
        return f"local-dir:{locate(value.split(':', 1)[1])}"
    path = Path(value)
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return str(PROJECT_ROOT / path)
    return value


def portable_path(folder: Path) -> str:
    """A folder inside the project is recorded relative to it, so checkpoints work from any clone."""
    try:
        return str(folder.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(folder)
