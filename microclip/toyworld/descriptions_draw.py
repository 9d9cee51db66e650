"""Another toy LLM's descriptions: the same rule as the shipped ones (two of each species' five parts, present parts
first, drawn by a seed), with another seed, written as a CuPL-format JSON that ``train.py --text_descriptions_path``
and the Adapt tab read. How much the draw decides is in docs/toyworld.md, round 28.

    python -m microclip.toyworld.descriptions_draw --seed 22 --out descriptions-22.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from microclip.files import atomic_write_text
from microclip.toyworld.text import (
    DESCRIBED_PARTS_PER_CLASS,
    DESCRIPTION_SEED,
    described_parts,
    description_oracle_accuracy,
    descriptions,
)
from microclip.toyworld.world import PARTS


def write_draw(seed: int, out: str | Path, named: bool = False, n_parts: int = DESCRIBED_PARTS_PER_CLASS) -> float:
    """Write the descriptions of draw ``seed`` (``n_parts`` parts a class) to ``out``; returns their oracle accuracy
    (a perfect part reader's)."""
    parts = described_parts(seed, n_parts)
    atomic_write_text(Path(out), json.dumps(descriptions(named=named, parts=parts), indent=2) + "\n")
    return description_oracle_accuracy(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seed", type=int, default=DESCRIPTION_SEED, help="the draw (the shipped world's: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--named", action="store_true", help="word every line around the class name, as CuPL's are")
    parser.add_argument(
        "--parts",
        type=int,
        default=DESCRIBED_PARTS_PER_CLASS,
        choices=range(1, len(PARTS) + 1),
        metavar="N",
        help="how many of a species' %(choices)s parts its lines name (the shipped world's: %(default)s; 5: all)",
    )
    args = parser.parse_args(argv)
    oracle = write_draw(args.seed, args.out, args.named, args.parts)
    print(
        f"wrote {args.out}: descriptions seed {args.seed}, {args.parts} parts a species, "
        f"a perfect part reader using them scores {oracle:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
