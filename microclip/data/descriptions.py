"""LLM class descriptions in the reference's (CuPL) format: {class name: [sentence, ...]}."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from microclip.data.names import normalise_class_name

log = logging.getLogger(__name__)


class DescriptionsError(ValueError):
    """A descriptions file that is missing, malformed, or lacks classes."""


def resolve_descriptions_path(path: str | Path, dataset: str | None = None) -> Path:
    """`path` itself when it is a file, else `<path>/<dataset>.json`."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not dataset:
            raise DescriptionsError(f"{path} is a folder; the data set name is needed to pick <dataset>.json in it")
        path = path / f"{dataset}.json"
    if not path.is_file():
        raise DescriptionsError(f"descriptions file not found: {path}")
    return path


def _read(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DescriptionsError(f"{path.name}: not UTF-8 text ({err})") from err
    except ValueError as err:
        raise DescriptionsError(f"{path.name}: invalid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DescriptionsError(
            f"{path.name}: expected an object {{class name: [sentence, ...]}}, got {type(data).__name__}"
        )
    for key, value in data.items():
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise DescriptionsError(
                f"{path.name}: the entry for {key!r} must be a list of strings, got {type(value).__name__}"
            )
    return data


def load_descriptions(
    path: str | Path, classes: list[str], dataset: str | None = None, allow_missing: bool = False
) -> dict[str, list[str]]:
    """Descriptions for each of `classes`, in class order.

    `path` is a JSON file or a folder holding `<dataset>.json`. Keys match class names exactly,
    else after normalisation (case, "_" vs " ", "-"). A class without an entry raises
    `DescriptionsError`, or with `allow_missing` maps to [] (the caller falls back to templates).
    """
    file = resolve_descriptions_path(path, dataset)
    data = _read(file)
    by_key: dict[str, str] = {}
    for key in data:
        by_key.setdefault(normalise_class_name(key), key)  # first spelling wins on a clash
    result: dict[str, list[str]] = {}
    used: set[str] = set()
    missing: list[str] = []
    for name in classes:
        key = name if name in data else by_key.get(normalise_class_name(name))
        if key is None:
            missing.append(name)
            result[name] = []
            continue
        used.add(key)
        sentences = [s.strip() for s in data[key] if s.strip()]
        if not sentences:
            missing.append(name)
        result[name] = sentences
    if missing:
        listed = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        if not allow_missing:
            raise DescriptionsError(
                f"{file.name} has no entry for class {missing[0]!r} ({len(missing)} of {len(classes)} "
                f"classes missing: {listed}); pass --allow_missing_descriptions to fall back to "
                "templates for them"
            )
        log.warning(
            "%s: %d of %d classes have no descriptions (%s); they fall back to templates",
            file.name,
            len(missing),
            len(classes),
            listed,
        )
    extra = [k for k in data if k not in used]
    if extra:
        log.debug("%s: %d entries match no class and are ignored: %s", file.name, len(extra), extra[:5])
    return result
