"""The toy bird world: 16 species that differ only in five small parts.

Each species is a tuple of part attributes. The species are chosen deterministically so that any two
differ in at least two (here: three) attributes and every attribute value is used by several species,
which keeps every part word grounded in many images during pretraining.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass

# Attribute values per part, in a fixed order (index 0 is "absent" where a part can be absent).
BEAKS = ("red", "yellow", "black", "blue")
CRESTS = ("none", "red pointed", "black round", "yellow fan")
WING_BANDS = ("none", "white", "black", "yellow")
EYE_RINGS = ("none", "white", "red")
TAIL_TIPS = ("none", "white", "black", "red")

PARTS = ("beak", "crest", "wing_bands", "eye_ring", "tail_tip")
PART_VALUES: dict[str, tuple[str, ...]] = {
    "beak": BEAKS,
    "crest": CRESTS,
    "wing_bands": WING_BANDS,
    "eye_ring": EYE_RINGS,
    "tail_tip": TAIL_TIPS,
}

# Made-up first words and real bird kinds; the kind is shared by four species each so it carries no
# species information on its own (the invented word does).
_FIRST_WORDS = (
    "zorsaik",
    "velmun",
    "quibbet",
    "tharnel",
    "opsiva",
    "brennic",
    "kaluth",
    "mirrow",
    "dastrel",
    "fenwhit",
    "gorrasc",
    "lumbrel",
    "pexori",
    "sarnith",
    "yovanel",
    "wickstel",
)
_KINDS = ("wren", "finch", "warbler", "tit")

MIN_ATTRIBUTE_DISTANCE = 3  # design asks for >= 2; 3 is achievable and makes species better separated

# Which rule picks the species. "distance" (the shipped world): pairwise distance alone, so two species may
# differ only in parts one of them lacks (brennic and fenwhit finch: no colour tells them apart, only an
# absence). "colour" (round 30): every two species also differ in the colour of a part both have. Read once at
# import, so every module, split and asset of one process shares one world; cached data records the table.
SPECIES_TABLES = ("distance", "colour")
SPECIES_TABLE_ENV = "MICROCLIP_TOYWORLD_SPECIES"
SPECIES_TABLE = os.environ.get(SPECIES_TABLE_ENV, "distance") or "distance"
if SPECIES_TABLE not in SPECIES_TABLES:
    raise ValueError(f"{SPECIES_TABLE_ENV}={SPECIES_TABLE!r}: expected one of {', '.join(SPECIES_TABLES)}")


def recorded_table(record: Mapping) -> str:
    """The species table a pretraining record (`pretrain.json`, or a run state's scalars) names; records made
    before tables were recorded name none and were all drawn from the shipped one."""
    return str(record.get("species_table", SPECIES_TABLES[0]))


def check_drawn_table(recorded: str, source: str) -> None:
    """Refuse a model pretrained on another species table than this process draws: every toy-world truth (its
    descriptions' ties, masks, parts, the data split) would be read against the wrong birds, silently."""
    if recorded != SPECIES_TABLE:
        raise ValueError(
            f"{source} was pretrained on the toy world's {recorded!r} species table, but this process draws the "
            f"{SPECIES_TABLE!r} one: run it with {SPECIES_TABLE_ENV}={recorded}"
        )


@dataclass(frozen=True)
class Species:
    """One species: a name and the value of each of the five discriminative parts."""

    name: str
    beak: str
    crest: str
    wing_bands: str
    eye_ring: str
    tail_tip: str

    @property
    def attributes(self) -> tuple[str, str, str, str, str]:
        """The part values in PARTS order."""
        return (self.beak, self.crest, self.wing_bands, self.eye_ring, self.tail_tip)

    def attribute_index(self, part: str) -> int:
        """Index of this species' value for `part` within PART_VALUES[part]."""
        return PART_VALUES[part].index(getattr(self, part))


def attribute_distance(a: Species, b: Species) -> int:
    """Number of parts in which two species differ."""
    return sum(x != y for x, y in zip(a.attributes, b.attributes))


def colour_differences(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many parts two attribute index tuples both have (index 0 is "absent", except for the beak, which
    every bird has) in different colours."""
    return sum(x != y and (k == 0 or (x != 0 and y != 0)) for k, (x, y) in enumerate(zip(a, b)))


def _choose_codes(n: int = 16, table: str = "distance") -> list[tuple[int, ...]]:
    """Pick `n` attribute index tuples with pairwise Hamming distance >= MIN_ATTRIBUTE_DISTANCE (and, for the
    "colour" table, at least one part both have in different colours).

    A greedy scan over all 768 combinations in a fixed interleaved order; among candidates that keep the
    distance, take the one that keeps value usage most balanced. Pure function of constants, so the
    species list never changes between runs or machines.
    """
    sizes = [len(PART_VALUES[p]) for p in PARTS]
    all_codes = list(itertools.product(*[range(s) for s in sizes]))
    chosen: list[tuple[int, ...]] = []
    usage = [[0] * s for s in sizes]
    while len(chosen) < n:
        best, best_score = None, None
        for code in all_codes:
            if any(sum(x != y for x, y in zip(code, c)) < MIN_ATTRIBUTE_DISTANCE for c in chosen):
                continue
            if table == "colour" and any(colour_differences(code, c) < 1 for c in chosen):
                continue
            if code in chosen:
                continue
            # Prefer rarely used values (balance), tie-break by the code itself (determinism).
            score = (sum(usage[k][v] for k, v in enumerate(code)), code)
            if best_score is None or score < best_score:
                best, best_score = code, score
        if best is None:
            raise RuntimeError(
                f"could only place {len(chosen)} of {n} species at distance "
                f"{MIN_ATTRIBUTE_DISTANCE}; lower MIN_ATTRIBUTE_DISTANCE"
            )
        chosen.append(best)
        for k, v in enumerate(best):
            usage[k][v] += 1
    return chosen


def build_species(table: str = "distance") -> list[Species]:
    """The 16 species one table's rule picks, in generation order."""
    species = []
    for i, code in enumerate(_choose_codes(len(_FIRST_WORDS), table)):
        values = [PART_VALUES[p][v] for p, v in zip(PARTS, code)]
        name = f"{_FIRST_WORDS[i]} {_KINDS[i % len(_KINDS)]}"
        species.append(Species(name, *values))
    return species


SPECIES: list[Species] = build_species(SPECIES_TABLE)
"""The 16 species in generation order (index used by the renderer)."""

CLASS_NAMES: list[str] = sorted(s.name for s in SPECIES)
"""Class names in label order: alphabetical, which is also ImageFolder's folder order."""

SPECIES_BY_NAME: dict[str, Species] = {s.name: s for s in SPECIES}


def _other_species() -> tuple[Species, ...]:
    taken = {sp.attributes for sp in SPECIES}
    combos = itertools.product(*(PART_VALUES[p] for p in PARTS))
    return tuple(Species("", *combo) for combo in combos if combo not in taken)


OTHER_SPECIES: tuple[Species, ...] = _other_species()
"""Every other combination of the five parts (752 birds), unnamed: the web's other species. A pretraining corpus
may show them beside the 16 (``--n_other_birds``), so that a part's words go with the part itself and not with the
species that wears it (on the 16 alone the colour of one part tells the colour of the others)."""


def bird(index: int) -> Species:
    """The bird a render index draws: ``SPECIES[index]`` below 16, ``OTHER_SPECIES[index - 16]`` from 16 on."""
    if not 0 <= index < len(SPECIES) + len(OTHER_SPECIES):
        raise ValueError(f"species_index {index} out of range 0..{len(SPECIES) + len(OTHER_SPECIES) - 1}")
    return SPECIES[index] if index < len(SPECIES) else OTHER_SPECIES[index - len(SPECIES)]
