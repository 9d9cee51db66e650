"""Words about the toy birds: CuPL-style class descriptions, templates, and pretraining captions.

The captions are the lever that decides what the tiny CLIP learns: every caption carries species
information (a name, or at least two part phrases), so part words get grounded; the species names follow
a long tail, as on the web, so the model knows a name about as well as its captions show it (look-alike
mix-ups are an option the shipped world leaves off; docs/toyworld.md).

The descriptions play the LLM's part and, like an LLM's, are incomplete: each class mentions only
two of its five parts (all true). With complete descriptions the tiny CLIP classified 95% of test
images zero-shot, leaving no headroom for adaptation; with two parts a perfect part recogniser
would still identify only ~69% (`description_oracle_accuracy`), and the rest is left to the
image side -- the headroom microCLIP is meant to recover.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microclip.files import atomic_write_text
from microclip.resources import PROJECT_ROOT
from microclip.toyworld.world import (
    CLASS_NAMES,
    PART_VALUES,
    PARTS,
    SPECIES,
    SPECIES_BY_NAME,
    SPECIES_TABLE,
    Species,
    attribute_distance,
)

TEMPLATES: list[str] = [
    "a photo of a {}.",
    "a photo of a {}, a type of bird.",
    "a picture of a {}.",
    "a small {} on a branch.",
]
"""Prompt templates for the "toybirds" template set."""

# How often a pretraining caption names the species. Names follow a long tail, as on the web: CLIP knows
# a concept about as well as its pretraining captions show it (Udandarao et al. 2024; Parashar et al.
# 2024), so the species of frequency rank r (0 = commonest) is named in P_NAME / (r + 1) ** NAME_ZIPF of its
# captions: the commonest in half, the rarest in about one in 33,000 (the fourth to seventh worlds; the third
# had exponent 2.5, one in 2,000).
P_NAME = 0.5
NAME_ZIPF = 3.5
# Web captions are noisy: a named caption may name a look-alike instead, this often (LOOKALIKE_RULES). The
# fourth world has none: every rule tried broke the rise of accuracy with frequency (docs/toyworld.md);
# the third world had 0.25 with the "closest" rule.
P_LOOKALIKE = 0.0
# Which way the noise goes. "closest" (the third world): a named caption carries the closest look-alike's
# name, however rare that name is, so the commonest species lends most captions to a rare name.
# "commoner": people who do not know a bird's name use the name of a commoner bird it resembles (the
# neglected tail: rare species are confused with common ones), never a rarer one.
# "per_name": a share p_lookalike of the captions carrying each name are of that name's look-alike (the
# species it is most often mistaken for), so every name is equally reliable and a rare name is never
# drowned by a common bird's captions; a common name lent to a rare look-alike can drown the rare one's own.
LOOKALIKE_RULES = ("closest", "commoner", "per_name")
# The frequency ranks: a fixed shuffle, so that rank is unrelated to the label order and to the parts.
NAME_RANK_SEED = 3
P_PARTS_WITH_NAME = 0.6  # captions that name the species also list parts this often

DESCRIBED_PARTS_PER_CLASS = 2
# Seed of the (fixed) choice of described parts: 7 keeps all 16 description sets distinct and gives
# an oracle accuracy of 0.69 (distinct-set seeds range 0.68-0.89). The round-30 "colour" species table
# (world.py) takes the first seed by the same rule, distinct sets at an oracle of 0.69 (its seed 7: 0.75).
DESCRIPTION_SEEDS = {"distance": 7, "colour": 2}
DESCRIPTION_SEED = DESCRIPTION_SEEDS[SPECIES_TABLE]
# Each table's bundled classes, templates and descriptions (write_assets wrote them), and this process's.
ASSETS_DIRS = {"distance": PROJECT_ROOT / "assets" / "toybirds", "colour": PROJECT_ROOT / "assets" / "toybirds-colour"}
ASSETS_DIR = ASSETS_DIRS[SPECIES_TABLE]

_PART_NOUN = {
    "beak": "beak",
    "crest": "crest",
    "wing_bands": "wing bands",
    "eye_ring": "eye ring",
    "tail_tip": "tail tip",
}
# Sentences that fit every species, as LLM descriptions contain; they dilute the informative ones.
GENERIC_LINES = ["a small songbird.", "a bird perched on a branch.", "a small bird with a round body."]
_CONTEXT = ["", "", " on a branch", " perched on a twig", " in the wild"]
_PREFIX = ["a photo of", "a picture of", "an image of", "a close-up of", ""]


def _name_ranks() -> dict[str, int]:
    order = np.random.default_rng(NAME_RANK_SEED).permutation(len(SPECIES))
    return {SPECIES[int(i)].name: rank for rank, i in enumerate(order)}


NAME_RANK: dict[str, int] = _name_ranks()
"""Species name -> its frequency rank in the pretraining captions (0 = named most often)."""


def name_rate(name: str, p_name: float = P_NAME, zipf: float = NAME_ZIPF) -> float:
    """The share of a species' pretraining captions that carry a species name (its own or a look-alike's)."""
    return p_name / (NAME_RANK[name] + 1) ** zipf


def _lookalikes() -> dict[str, str]:
    """Each species' closest look-alike: fewest differing parts, the commoner name on ties."""
    out = {}
    for sp in SPECIES:
        others = [o for o in SPECIES if o is not sp]
        out[sp.name] = min(others, key=lambda o: (attribute_distance(sp, o), NAME_RANK[o.name])).name
    return out


LOOKALIKE: dict[str, str] = _lookalikes()
"""Species name -> the name a noisy caption gives it instead."""


def _commoner_lookalikes() -> dict[str, str]:
    """Each species' closest look-alike among the species with a commoner name (none for the commonest)."""
    out = {}
    for sp in SPECIES:
        commoner = [o for o in SPECIES if NAME_RANK[o.name] < NAME_RANK[sp.name]]
        if commoner:
            out[sp.name] = min(commoner, key=lambda o: (attribute_distance(sp, o), NAME_RANK[o.name])).name
    return out


COMMONER_LOOKALIKE: dict[str, str] = _commoner_lookalikes()
"""Species name -> the commoner name a caption that does not know the right one gives it ("commoner" rule)."""


@functools.cache  # asked once per caption while pretraining; LOOKALIKE is fixed
def borrowed_names(species: str) -> tuple[str, ...]:
    """The names whose look-alike is `species` ("per_name" rule): a caption of it may carry one of them."""
    return tuple(name for name in CLASS_NAMES if name != species and LOOKALIKE[name] == species)


def part_phrase(species: Species, part: str) -> str | None:
    """Noun phrase for one part, e.g. "a red beak" or "white wing bands"; None when the part is absent."""
    value = getattr(species, part)
    if value == "none":
        return None
    noun = _PART_NOUN[part]
    if part == "wing_bands":
        return f"{value} {noun}"
    article = "an" if value[0] in "aeiou" else "a"
    return f"{article} {value} {noun}"


def absent_phrase(part: str) -> str:
    """How captions and descriptions say that a part is absent, e.g. "no crest" (every bird has a beak)."""
    return {
        "crest": "no crest",
        "wing_bands": "plain wings",
        "eye_ring": "no eye ring",
        "tail_tip": "a plain tail",
        "beak": "a beak",
    }[part]


def described_parts(seed: int = DESCRIPTION_SEED, n_parts: int = DESCRIBED_PARTS_PER_CLASS) -> dict[str, list[str]]:
    """Which parts each class's description mentions: present parts first (an LLM describes what is there), in an
    order drawn from a fixed rng, then absent ones if fewer than needed are present. ``seed`` draws another toy LLM's
    choice by the same rule (the shipped world's is ``DESCRIPTION_SEED``; docs/toyworld.md, round 28); ``n_parts``
    (1 to 5) is how many parts it names, so a better LLM is the same rule with more parts (round 29)."""
    if not 1 <= n_parts <= len(PARTS):
        raise ValueError(f"a description names 1 to {len(PARTS)} parts, not {n_parts}")
    rng = np.random.default_rng(seed)
    chosen = {}
    for sp in SPECIES:
        present = [p for p in PARTS if getattr(sp, p) != "none"]
        absent = [p for p in PARTS if getattr(sp, p) == "none"]
        order = list(rng.permutation(present)) + list(rng.permutation(absent))
        chosen[sp.name] = sorted(order[:n_parts], key=PARTS.index)
    return chosen


DESCRIBED_PARTS: dict[str, list[str]] = described_parts()
"""Class name -> the parts its description mentions (in PARTS order)."""


def descriptions(named: bool = False, parts: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """CuPL-format descriptions {class name: [sentences]}: one sentence per described part plus
    generic lines (the uninformative sentences an LLM adds). Absent parts read "a bird with no crest.".

    `named=True` words every line around the class name, as real CuPL answers do ("the zorsaik wren has a
    red beak.", "the zorsaik wren is a small songbird."): same parts, same generic lines. The shipped world
    uses the unnamed wording; docs/toyworld.md says what the named one measured. ``parts`` (default
    ``DESCRIBED_PARTS``): which parts each class's lines name, e.g. another draw's ``described_parts(seed)``."""
    parts = DESCRIBED_PARTS if parts is None else parts
    out: dict[str, list[str]] = {}
    for name in CLASS_NAMES:
        sp = SPECIES_BY_NAME[name]
        phrases = [part_phrase(sp, p) or absent_phrase(p) for p in parts[name]]
        out[name] = [_part_line(name, ph, named) for ph in phrases] + _generic_lines(name, named)
    return out


def _part_line(name: str, phrase: str, named: bool) -> str:
    """One informative line of the toy LLM's, in either wording."""
    return f"the {name} has {phrase}." if named else f"a bird with {phrase}."


def _generic_lines(name: str, named: bool) -> list[str]:
    """The toy LLM's uninformative lines about one class, in either wording."""
    return [f"the {name} is {g}" for g in GENERIC_LINES] if named else list(GENERIC_LINES)


@functools.cache  # constants of the world; asked on every explained toy image
def _claims() -> dict[str, tuple[str, str]]:
    """Every phrase the toy LLM can use for one part's value -> (part, value)."""
    claims = {}
    for part in PARTS:
        for value in PART_VALUES[part]:
            bird = dataclasses.replace(SPECIES[0], **{part: value})
            claims[part_phrase(bird, part) or absent_phrase(part)] = (part, value)
    return claims


def description_ties(descriptions: Mapping[str, Sequence[str]]) -> dict[str, list[str]] | None:
    """Which classes the descriptions cannot tell a toy species from: class c -> the other classes d whose every
    informative line is true of c as well, so a perfect reader of the lines gives c's images d's score in full (a tie).
    Self-training loses such a class to such a rival far more often than any other (docs/toyworld.md, round 30).

    Reads the toy LLM's wording, plain ("a bird with a red beak.") or named ("the zorsaik wren has a red beak."),
    and its generic lines; ``None`` when a class is not a toy species or a line is not the toy LLM's (nothing is
    guessed)."""
    if not descriptions or any(name not in SPECIES_BY_NAME for name in descriptions):
        return None
    says: dict[str, list[tuple[str, str]]] = {}
    for name, lines in descriptions.items():
        generic = {*_generic_lines(name, named=False), *_generic_lines(name, named=True)}
        claims = {
            _part_line(name, phrase, named): claim for phrase, claim in _claims().items() for named in (False, True)
        }
        said = []
        for line in (line for line in lines if line not in generic):
            if line not in claims:
                return None
            said.append(claims[line])
        says[name] = said
    return {
        c: [
            d
            for d in descriptions
            if d != c and says[d] and all(getattr(SPECIES_BY_NAME[c], part) == value for part, value in says[d])
        ]
        for c in descriptions
    }


def tie_sentence(true_class: str, ties: Mapping[str, Sequence[str]]) -> str:
    """What the descriptions can say about a bird of ``true_class``, given :func:`description_ties`' answer: which
    other classes' lines are all true of it (no reader of the lines alone can tell it from them), or that only its
    own are."""
    tied = list(ties.get(true_class) or [])
    if not tied:
        return f"of the {len(ties)} classes' descriptions only its own are all true of it."
    owners = " and ".join(f"{d}'s" for d in tied)
    return (
        f"every line of {owners} descriptions is true of it as well as its own, so no reader of the lines alone can "
        f"tell it from {'that species' if len(tied) == 1 else 'those species'}."
    )


def description_oracle_accuracy(parts: dict[str, list[str]] | None = None) -> float:
    """Expected accuracy of a perfect part recogniser that only knows the descriptions (of ``parts``, by default
    ``DESCRIBED_PARTS``).

    An image of class c scores each class d by the fraction of d's described parts it matches;
    ties are split evenly. An upper bound, roughly, on zero-shot accuracy by descriptions.
    """
    parts = DESCRIBED_PARTS if parts is None else parts
    total = 0.0
    for c in CLASS_NAMES:
        scores = np.array(
            [
                np.mean([getattr(SPECIES_BY_NAME[c], p) == getattr(SPECIES_BY_NAME[d], p) for p in parts[d]])
                for d in CLASS_NAMES
            ]
        )
        best = np.flatnonzero(scores == scores.max())
        total += (CLASS_NAMES.index(c) in best) / len(best)
    return total / len(CLASS_NAMES)


# What the dense stage's captions may also say: the bird's colour and the background (render.py's order).
BODY_COLOUR_NAMES = ("brown", "grey", "olive", "tan", "slate", "dark green", "plum", "teal")
BACKGROUND_PHRASES = ("a forest", "the sky", "sand dunes", "water", "city buildings")
P_SCENE_WORDS = 0.5


@dataclass(frozen=True)
class Scene:
    """The species-independent look of one image that a caption may mention (indices as in render.py)."""

    background: int
    body_colour: int


@dataclass(frozen=True)
class Caption:
    """A pretraining caption and the phrases in it that name a visible part (what a dense loss can ground)."""

    text: str
    phrases: tuple[str, ...]  # e.g. ("a red beak", "white wing bands"); absent parts ("no crest") excluded
    regions: tuple[str, ...] = ()  # those of `phrases` that name a whole region: the bird's colour, the scene


def _choose_name(
    species: str, rng: np.random.Generator, p_name: float, zipf: float, p_lookalike: float, lookalike_rule: str
) -> tuple[bool, str]:
    """Whether a caption of `species` names a bird, and which name (make_caption's rules)."""
    rate = name_rate(species, p_name, zipf)
    use_name = rng.random() < rate
    named = species
    if lookalike_rule == "closest":
        named = LOOKALIKE[species] if rng.random() < p_lookalike else species
    elif lookalike_rule == "per_name":
        # Name B is on its own images at rate(B) and, so that a share p_lookalike of its captions are wrong,
        # on its look-alike's at rate(B) * p / (1 - p). One draw past the own name picks which (if any).
        if not use_name and p_lookalike > 0:
            u = rng.random() * (1 - rate)
            for other in borrowed_names(species):
                u -= name_rate(other, p_name, zipf) * p_lookalike / (1 - p_lookalike)
                if u < 0:
                    return True, other
    elif lookalike_rule == "commoner":
        commoner = COMMONER_LOOKALIKE.get(species)
        if not use_name and commoner is not None and rng.random() < p_lookalike * (p_name - rate) / (1 - rate):
            return True, commoner
    else:
        raise ValueError(f"lookalike_rule must be one of {LOOKALIKE_RULES}, not {lookalike_rule!r}")
    return use_name, named


def make_caption(
    species: Species,
    rng: np.random.Generator,
    p_name: float = P_NAME,
    zipf: float = NAME_ZIPF,
    p_lookalike: float = P_LOOKALIKE,
    scene: Scene | None = None,
    lookalike_rule: str = "closest",
) -> Caption:
    """One web-like caption for an image of `species`; always carries species information (for one of the web's
    other birds, ``world.OTHER_SPECIES``, its parts alone).

    Mix: a name with probability `name_rate(species)` (the look-alike's name with `p_lookalike`; then parts
    with P_PARTS_WITH_NAME), otherwise two to five part phrases (present parts by colour, absent ones as
    "no crest"). With `lookalike_rule="commoner"` the own name is never swapped; instead, of the `p_name`
    share of captions that would name a bird, those that do not know its name (all but `name_rate`) carry
    its commoner look-alike's name with `p_lookalike`: a share `p_lookalike * (p_name - name_rate)`.
    With `lookalike_rule="per_name"` the own name is never swapped either; a caption that does not name the
    bird carries the name of a species whose look-alike it is (`borrowed_names`) at that name's own rate times
    `p_lookalike / (1 - p_lookalike)`, so that a share `p_lookalike` of every name's captions are wrong.
    With `scene` (the dense stage's captions), the bird's colour ("a teal bird") and the background ("city
    buildings") are each named with P_SCENE_WORDS, and become grounded phrases too.
    """
    # All five parts are candidates, absent ones as "no crest" etc., so that every sentence of
    # descriptions() (which also names absent parts) is grounded during pretraining.
    present = [part_phrase(species, p) for p in PARTS]
    pool = [phrase or absent_phrase(p) for phrase, p in zip(present, PARTS)]
    if species.name in NAME_RANK:
        use_name, named = _choose_name(species.name, rng, p_name, zipf, p_lookalike, lookalike_rule)
    else:  # one of the web's other birds (world.OTHER_SPECIES): its name is none of the 16, so it is not given
        use_name, named = False, ""
    use_parts = (not use_name) or rng.random() < P_PARTS_WITH_NAME
    prefix = _PREFIX[int(rng.integers(len(_PREFIX)))]
    context = _CONTEXT[int(rng.integers(len(_CONTEXT)))]
    idx: list[int] = []
    if use_parts:
        k = int(rng.integers(2, len(pool) + 1))
        idx = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
    chosen = [pool[i] for i in idx]
    phrases = [present[i] for i in idx if present[i] is not None]
    parts_text = ""
    if chosen:
        parts_text = chosen[0] if len(chosen) == 1 else ", ".join(chosen[:-1]) + " and " + chosen[-1]
    bird = "a bird"
    where = ""
    if scene is not None:
        if rng.random() < P_SCENE_WORDS:
            colour = BODY_COLOUR_NAMES[scene.body_colour]
            bird = f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} bird"
            phrases.append(bird)
        if rng.random() < P_SCENE_WORDS:
            place = BACKGROUND_PHRASES[scene.background]
            where = f" in front of {place}"
            phrases.append(place)
    subject = f"{'an' if named[0] in 'aeiou' else 'a'} {named}" if use_name else bird
    body = f"{subject}{context}" + (f" with {parts_text}" if parts_text else "") + where
    text = (f"{prefix} {body}." if prefix else f"{body}.").strip()
    regions = tuple(p for p in phrases if p.endswith(" bird") or p in BACKGROUND_PHRASES)
    return Caption(text=text, phrases=tuple(phrases), regions=regions)


def pretrain_caption(species: Species, rng: np.random.Generator, p_name: float = P_NAME) -> str:
    """The text of :func:`make_caption`."""
    return make_caption(species, rng, p_name).text


ALL_PART_PHRASES: tuple[str, ...] = tuple(
    sorted({phrase for sp in SPECIES for p in PARTS if (phrase := part_phrase(sp, p)) is not None})
)
"""Every phrase that names a visible part of some species ("a red beak", ...), in a fixed order."""


def write_assets(folder: str | Path) -> Path:
    """Write descriptions.json, classes.json (label order) and templates.json into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"descriptions.json": descriptions(), "classes.json": CLASS_NAMES, "templates.json": TEMPLATES}
    for fname, content in files.items():
        atomic_write_text(folder / fname, json.dumps(content, indent=2) + "\n")
    return folder


def this_worlds_asset(path: str | Path) -> Path:
    """``path``, or, for a file of the shipped table's bundled assets (as the toybirds train config names them) in a
    process drawing another table, the same file of that table's assets: its descriptions name its own parts."""
    path = Path(path)
    shipped = ASSETS_DIRS["distance"]
    if ASSETS_DIR != shipped and path.resolve().parent == shipped.resolve():
        return ASSETS_DIR / path.name
    return path


def read_assets(folder: str | Path) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(classes, templates, descriptions) as :func:`write_assets` wrote them into `folder`."""
    folder = Path(folder)
    return tuple(
        json.loads((folder / name).read_text()) for name in ("classes.json", "templates.json", "descriptions.json")
    )


def caption_vocabulary() -> frozenset[str]:
    """Every word a pretraining caption (:func:`make_caption`) can contain, lower-case: the words the toy CLIP's
    text tower saw in pretraining. A class name with other words is read by a tower that never learnt them."""
    pieces = [*_PREFIX, *_CONTEXT, "a an bird with and", *CLASS_NAMES, *(absent_phrase(p) for p in PARTS)]
    pieces += [part_phrase(sp, p) or "" for sp in SPECIES for p in PARTS]
    return frozenset(word for piece in pieces for word in re.findall(r"[a-z0-9']+", piece.lower()))
