"""Links that open the app on one view, for a teacher to write on the board or put in a slide.

``/?example=dastrel-wren&step=soap`` opens the Walkthrough on the bundled dastrel wren at its SOAP step;
``/?tab=explore&example=opsiva-wren&model=zero-shot`` opens Explore on that bird under the zero-shot model;
``/?tab=compare&example=opsiva-wren`` opens Compare on it (a link's model is then model A);
``&classes=dastrel wren,lumbrel tit`` asks among those class names (typed, as in the tab's class box), and
``&rho=0.7`` sets Explore's fusion ratio.
Every part is optional and read leniently (case, spaces or dashes, an example's file name or its caption); a value
that names nothing is reported in one sentence and the rest of the link still opens. The step is applied in the
browser (``viz/static/walkthrough.js`` reads the same parameter); here it is only checked, so that a wrong one is
reported.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from microclip.prepare import parse_class_names
from microclip.walkthrough import STEP_IDS
from studio.cache import file_digest
from studio.examples import example_images, example_label

TABS = ("walkthrough", "explore", "compare", "adapt", "batch", "models")
EXAMPLE_TABS = ("walkthrough", "explore", "compare")  # the tabs a link's example opens in
ALL_STEPS = "all"
MAX_LINK_CLASSES = 64  # a link is clicked by someone else: it may not ask their app to encode any number of names


def link_key(text: str) -> str:
    """How a link's value is compared with a name: lower case, every run of other characters than a–z and 0–9
    one "-" ("Dastrel Wren", "dastrel_wren" and "dastrel-wren" are one key)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def example_keys(path: str) -> set[str]:
    """The keys one example answers to: its file's stem, the stem without its kind ("toybird-"), and its caption."""
    stem = Path(path).stem
    return {link_key(stem), link_key(stem.partition("-")[2]), link_key(example_label(path))} - {""}


def example_name(path: str) -> str:
    """The name a link gives an example: its file's stem without its kind ("dastrel-wren" for
    toybird-dastrel-wren.png; the whole stem when it has no kind)."""
    stem = Path(path).stem
    return link_key(stem.partition("-")[2] or stem)


@dataclass(frozen=True)
class Link:
    """What a link asks for, resolved against the app's examples and models; ``problems`` says, one sentence each,
    what it asked for that does not exist (the rest of the link still applies)."""

    tab: str | None = None
    example: str | None = None  # the example's path
    model: str | None = None  # the registry's name
    step: str | None = None  # a step id of microclip.walkthrough.STEP_IDS, or "all"
    classes: tuple[str, ...] = ()  # names to ask among, typed in the class box of the tab it opens (or the first)
    rho: float | None = None  # Explore's fusion ratio
    problems: tuple[str, ...] = ()

    @property
    def opens(self) -> str | None:
        """The tab the link opens: the one it names, else the Walkthrough when it names an example or a step."""
        if self.tab is not None:
            return self.tab
        return "walkthrough" if self.example is not None or self.step is not None else None


def parse_link(query: str, examples: Sequence[str], models: Sequence[str]) -> Link:
    """Resolve the query string of the page's address (``example``, ``tab``, ``model``, ``step``, ``classes``,
    ``rho``; others, such as Gradio's own ``__theme``, are left alone). The last value of a repeated parameter
    counts."""
    pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    given = {name.strip().lower(): value.strip() for name, value in pairs}
    problems: list[str] = []
    tab = _one(given.get("tab"), {t: t for t in TABS}, "tab", problems, f"one of {', '.join(TABS)}")
    example = _one(
        given.get("example"),
        {key: path for path in examples for key in example_keys(path)},
        "example",
        problems,
        "one of " + ", ".join(example_name(p) for p in examples) if examples else "none: this app has no examples",
    )
    model = _one(
        given.get("model"),
        {link_key(name): name for name in models},
        "model",
        problems,
        "one of " + ", ".join(link_key(name) for name in models),
    )
    step = _step(given.get("step"), problems)
    classes = _classes(given.get("classes"), problems)
    rho = _rho(given.get("rho"), problems)
    if example is not None and tab is not None and tab not in EXAMPLE_TABS:
        problems.append(f"An example opens in the Walkthrough, Explore or Compare, not in {tab}: it was not opened.")
        example = None
    if step is not None and tab not in (None, "walkthrough"):
        unused = _said(given["step"])
        problems.append(f"A step belongs to the Walkthrough; the link opens {tab}, so step={unused} is unused.")
        step = None
    opens = Link(tab=tab, example=example, step=step).opens
    if classes and opens not in (None, *EXAMPLE_TABS):
        problems.append(f"Class names belong to the Walkthrough, Explore or Compare; the link opens {opens}: unused.")
        classes = ()
    if rho is not None and opens not in (None, "explore"):
        problems.append(
            f"A fusion ratio belongs to Explore; the link opens {opens}, so rho={_said(given['rho'])} is unused."
        )
        rho = None
    return Link(tab, example, model, step, classes, rho, tuple(problems))


def _said(value: str, limit: int = 40) -> str:
    """A link's value as a warning quotes it: a long one cut (a pasted paragraph is not repeated back whole)."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _one(value: str | None, known: dict[str, str], what: str, problems: list[str], expected: str) -> str | None:
    """The name ``value`` stands for: the one whose key it is, else the one whose key holds its words in a row
    ("zero-shot" for "toybirds-base-zero-shot"); None (and a problem) when it names none or several."""
    if value is None or value == "":
        return None
    key = link_key(value)
    if key in known:
        return known[key]
    found = sorted({name for k, name in known.items() if key and f"-{key}-" in f"-{k}-"})
    if len(found) == 1:
        return found[0]
    if found:
        problems.append(f"The link's {what}={_said(value)} could be any of {len(found)}; expected {expected}.")
    else:
        problems.append(f"The link's {what}={_said(value)} names no {what} here; expected {expected}.")
    return None


def _step(value: str | None, problems: list[str]) -> str | None:
    """The step ``value`` names, read as the browser reads it (walkthrough.js): a number from 1, a step's id or
    "all", in any case."""
    if not value:
        return None
    wanted = value.strip().lower()
    if re.fullmatch("[0-9]+", wanted) and 1 <= int(wanted) <= len(STEP_IDS):
        return STEP_IDS[int(wanted) - 1]
    if wanted in STEP_IDS or wanted == ALL_STEPS:
        return wanted
    problems.append(
        f"The link's step={_said(value)} names no step; expected 1 to {len(STEP_IDS)}, a step's name "
        f"({', '.join(STEP_IDS)}) or {ALL_STEPS}."
    )
    return None


def _classes(value: str | None, problems: list[str]) -> tuple[str, ...]:
    """The class names ``value`` lists, read as the class box reads them (commas or new lines)."""
    names = parse_class_names(value)
    if len(names) > MAX_LINK_CLASSES:
        problems.append(
            f"The link names {len(names)} classes; a link carries at most {MAX_LINK_CLASSES}, so they are unused "
            "(type them in the class box instead)."
        )
        return ()
    return tuple(names)


def _rho(value: str | None, problems: list[str]) -> float | None:
    """The fusion ratio ``value`` gives: a number from 0 to 1 (the weight of ``[CLS]``)."""
    if not value:
        return None
    try:
        rho = float(value)
    except ValueError:
        rho = float("nan")
    if not 0.0 <= rho <= 1.0:  # also NaN
        problems.append(f"The link's rho={_said(value)} is not a fusion ratio; expected a number from 0 to 1.")
        return None
    return rho


def link_query(
    example: str | None = None,
    tab: str | None = None,
    model: str | None = None,
    step: str | int | None = None,
    classes: Sequence[str] = (),
    rho: float | None = None,
) -> str:
    """The query string (with its "?") of a link to a view: ``example`` an example's path, ``model`` a registry name,
    ``step`` a step id, "all" or its number from 1, ``classes`` names to ask among, ``rho`` Explore's fusion ratio.
    The inverse of :func:`parse_link` on the app's own names."""
    parts = {
        "tab": tab,
        "example": example_name(example) if example else None,
        "model": link_key(model) if model else None,
        "step": str(step) if step is not None else None,
        "classes": ",".join(classes),
        "rho": f"{rho:g}" if rho is not None else None,
    }
    kept = {name: value for name, value in parts.items() if value}
    return "?" + urlencode(kept, safe=",") if kept else ""


def _by_digest(examples: Sequence[str]) -> dict[str, str]:
    """Examples by the digest of their bytes (the first of any two alike)."""
    found: dict[str, str] = {}
    for example in examples:
        found.setdefault(file_digest(example), example)
    return found


@functools.cache
def _bundled_by_digest() -> dict[str, str]:
    """The bundled examples by their bytes, read once: every walkthrough a class asks for looks its picture up here,
    and the examples do not change while the app runs."""
    return _by_digest(example_images())


def example_of(path: str | None, examples: Sequence[str] | None = None) -> str | None:
    """The bundled example a picture file is, told by its bytes (every client gets its own copy of an example), or
    None: a picture of the user's own has no link."""
    if not path or not os.path.isfile(path):
        return None
    known = _bundled_by_digest() if examples is None else _by_digest(examples)
    return known.get(file_digest(path))


def example_link(
    path: str | None,
    model: str | None = None,
    examples: Sequence[str] | None = None,
    tab: str | None = None,
    classes: Sequence[str] = (),
) -> str | None:
    """The query of a link to ``path`` under ``model`` (a registry name) in ``tab`` (by default the walkthrough,
    without its step), among ``classes`` when typed; None when the picture is not one of the examples."""
    example = example_of(path, examples)
    return link_query(example, tab=tab, model=model, classes=classes) if example is not None else None


def with_rho(query: str, rho: float) -> str:
    """``query`` (from :func:`link_query`) with Explore's fusion ratio added."""
    return f"{query}&{urlencode({'rho': f'{rho:g}'})}" if query else link_query(rho=rho)
