"""LLM class descriptions in the reference's (CuPL) format: {class name: [sentence, ...]}."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
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
    return descriptions_for(_read(file), classes, file.name, allow_missing)


def descriptions_for(
    data: Mapping[str, Sequence[str]], classes: Sequence[str], source: str, allow_missing: bool = False
) -> dict[str, list[str]]:
    """:func:`load_descriptions` on descriptions already read (``source`` names them in the messages): each of
    ``classes`` with its sentences, a class without any an error unless ``allow_missing``."""
    result, unused = match_descriptions(data, classes)
    missing = [name for name, sentences in result.items() if not sentences]
    if missing:
        listed = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        if not allow_missing:
            raise DescriptionsError(
                f"{source} has no entry for class {missing[0]!r} ({len(missing)} of {len(classes)} "
                f"classes missing: {listed}); pass --allow_missing_descriptions to fall back to "
                "templates for them"
            )
        log.warning(
            "%s: %d of %d classes have no descriptions (%s); they fall back to templates",
            source,
            len(missing),
            len(classes),
            listed,
        )
    if unused:
        log.debug("%s: %d entries match no class and are ignored: %s", source, len(unused), unused[:5])
    return result


def match_descriptions(
    data: Mapping[str, Sequence[str]], classes: Sequence[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Each of ``classes`` with its sentences in ``data`` (stripped, blanks dropped; [] when it has none), and the keys
    of ``data`` that match no class. A key matches a class exactly, else after normalisation (case, "_" vs " ", "-");
    of two spellings of one class the first wins."""
    by_key: dict[str, str] = {}
    for key in data:
        by_key.setdefault(normalise_class_name(key), key)
    result: dict[str, list[str]] = {}
    used: set[str] = set()
    for name in classes:
        key = name if name in data else by_key.get(normalise_class_name(name))
        if key is not None:
            used.add(key)
        result[name] = [s.strip() for s in (data[key] if key is not None else []) if s.strip()]
    return result, [key for key in data if key not in used]


def refuse_unknown(typed: Mapping[str, Sequence[str]], classes: Sequence[str], owner: str = "the classes") -> None:
    """Raise ``DescriptionsError`` when typed descriptions name something that is none of ``classes``: typed, such a
    name is a typo, where a file's extra entry is another data set's class and is ignored."""
    unknown = match_descriptions(typed, classes)[1]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
        raise DescriptionsError(f"the typed descriptions name {listed}, none of {owner} ({shown})")


MAX_DESCRIPTION_LINES = 2000  # typed in a box: a few sentences for each of a few hundred classes
MAX_DESCRIPTION_CHARS = 200_000  # about 100 characters a line; a pasted book is refused before it is split


def parse_description_lines(text: str, max_lines: int = MAX_DESCRIPTION_LINES) -> dict[str, list[str]]:
    """Descriptions typed one per line as ``class name: sentence`` (the class is what comes before the first colon);
    blank lines and lines starting with "#" are skipped. Classes in the order they first appear."""
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise DescriptionsError(f"{len(text):,} characters; at most {MAX_DESCRIPTION_CHARS:,} can be typed at once")
    parsed: dict[str, list[str]] = {}
    lines = text.splitlines()
    if len(lines) > max_lines:
        raise DescriptionsError(f"{len(lines)} lines; at most {max_lines} descriptions can be typed at once")
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, sentence = line.partition(":")
        if not colon or not name.strip() or not sentence.strip():
            shown = line if len(line) <= 60 else line[:59] + "…"
            raise DescriptionsError(f"line {number}: expected 'class name: sentence', got {shown!r}")
        parsed.setdefault(name.strip(), []).append(sentence.strip())
    return parsed


def description_lines(descriptions: Mapping[str, Sequence[str]]) -> str:
    """``descriptions`` as :func:`parse_description_lines` reads them: one ``class name: sentence`` line each."""
    return "\n".join(f"{name}: {sentence}" for name, sentences in descriptions.items() for sentence in sentences)
