"""The reference's class strings and zero-shot templates of the 13 benchmarks, shipped as package data.

`resources/reference_classes.json` and `resources/reference_templates.json` hold, for each of the 13
benchmarks, the lists of the reference implementation's `configs/classes.json` and
`configs/templates.json` unchanged (provenance: resources/README.md). The class strings are the
prompt names in label order; every change to one changes the text heads and the pseudo-labels, so
they are kept byte for byte. Other data sets take their names from their class folders and the
plain "a photo of a {}." template.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

RESOURCES = files("microclip.data") / "resources"  # package data: found from an installed package too
CLASSES_FILE = "reference_classes.json"
TEMPLATES_FILE = "reference_templates.json"
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@cache
def _load(name: str) -> dict[str, list[str]]:
    return json.loads((RESOURCES / name).read_text(encoding="utf-8"))


def reference_benchmarks() -> list[str]:
    """The names of the benchmarks with shipped reference lists, in file order (alphabetical)."""
    return list(_load(CLASSES_FILE))


def shipped_classnames(dataset: str) -> list[str] | None:
    """The reference's class strings of `dataset` in label order, or None for other data sets."""
    names = _load(CLASSES_FILE).get(dataset)
    return list(names) if names is not None else None


def normalise_template(template: str) -> str:
    """Write the class placeholder as "{}" ("{c}" is clip-benchmark's spelling)."""
    template = template.replace("{c}", "{}")
    if template.count("{}") != 1:
        raise ValueError(f"template {template!r} must contain the class placeholder '{{}}' exactly once")
    return template


def shipped_templates(dataset: str | None) -> list[str]:
    """The reference's zero-shot templates of `dataset` ("{}" marks the class name), else ["a photo of a {}."]."""
    templates = _load(TEMPLATES_FILE).get(dataset or "")
    return [normalise_template(t) for t in (templates or DEFAULT_TEMPLATES)]
