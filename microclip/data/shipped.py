"""Class names and zero-shot templates shipped with the package (from clip-benchmark, MIT).

See resources/LICENSE-clip-benchmark.txt for provenance. Benchmarks without a shipped class list
take their names from the class folders at load time; without templates they use the plain
"a photo of a {}." template.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@cache
def _load(filename: str) -> dict[str, list[str]]:
    with open(RESOURCES / filename, encoding="utf-8") as f:
        return json.load(f)


def shipped_classnames(dataset: str) -> list[str] | None:
    """The shipped class names of `dataset` in label order, or None when none are shipped."""
    names = _load("classnames.json").get(dataset)
    return list(names) if names is not None else None


def normalise_template(template: str) -> str:
    """Write the class placeholder as "{}" ("{c}" is clip-benchmark's spelling)."""
    template = template.replace("{c}", "{}")
    if template.count("{}") != 1:
        raise ValueError(f"template {template!r} must contain the class placeholder '{{}}' exactly once")
    return template


def shipped_templates(dataset: str | None) -> list[str]:
    """The shipped zero-shot templates of `dataset` ("{}" marks the class name), else ["a photo of a {}."]."""
    templates = _load("templates.json").get(dataset or "")
    return [normalise_template(t) for t in (templates or DEFAULT_TEMPLATES)]
