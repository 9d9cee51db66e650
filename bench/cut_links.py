"""What the normalised cut's success follows, over every toy base whose cut was ever recorded.

    python bench/cut_links.py [FILE_OR_FOLDER ...] [--json FILE]

Reads every cut record in the given JSON files (default: all of ``bench/results``): a record is any object holding
``iou`` and ``pixel_precision`` of the cut's foreground on the bird and ``links`` (``bench/toyworld_cut.py``'s
shares of raw-token pairs the cut's graph links: bird–bird, background–background and ``across``, bird–background).
The same base recorded twice (a report merged into another file) is counted once: records with the same numbers are
one. Prints each base and the rank correlation (Spearman) of the cut's IoU with each link share and with the
foreground's size. Round 33 (docs/toyworld.md) reads it: the IoU follows the bird–background share, not how tightly
the bird's own patches are linked.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy.stats import spearmanr

from microclip.files import atomic_write_text

LINKS = ("bird", "background", "across")


@dataclass(frozen=True)
class CutRecord:
    where: str  # file and the keys leading to the record
    iou: float
    pixel_precision: float
    foreground_patches: float | None
    bird: float
    background: float
    across: float

    def key(self) -> tuple[float, ...]:
        return tuple(round(v, 6) for v in (self.iou, self.pixel_precision, self.bird, self.background, self.across))


def _is_cut(node: object) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("iou"), (int, float))
        and isinstance(node.get("pixel_precision"), (int, float))
        and isinstance(node.get("links"), dict)
        and all(isinstance(node["links"].get(k), (int, float)) for k in LINKS)
    )


def _walk(node: object, path: str) -> Iterator[tuple[str, dict]]:
    if _is_cut(node):
        yield path, node
        return  # a cut record does not nest another
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def find_records(paths: list[Path]) -> list[CutRecord]:
    """Every distinct cut record under ``paths`` (JSON files, or folders searched for them), in file order."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    seen: set[tuple[float, ...]] = set()
    records = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SystemExit(f"{f}: not a JSON file ({e})") from e
        for where, node in _walk(data, str(f)):
            patches = node.get("foreground_patches")
            record = CutRecord(
                where=where,
                iou=float(node["iou"]),
                pixel_precision=float(node["pixel_precision"]),
                foreground_patches=float(patches) if isinstance(patches, (int, float)) else None,
                **{k: float(node["links"][k]) for k in LINKS},
            )
            if record.key() not in seen:
                seen.add(record.key())
                records.append(record)
    return records


def correlations(records: list[CutRecord]) -> dict[str, dict[str, float]]:
    """Spearman's rho (and its p-value) of the cut's IoU with each link share and the foreground's size."""
    out = {}
    for name in (*LINKS, "foreground_patches"):
        pairs = [(r.iou, getattr(r, name)) for r in records if getattr(r, name) is not None]
        if len(pairs) < 3:
            continue
        rho, p = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
        out[name] = {"rho": float(rho), "p": float(p), "bases": len(pairs)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("bench/results")])
    parser.add_argument("--json", type=Path, default=None, help="also write the records and correlations here")
    args = parser.parse_args(argv)
    records = find_records(args.paths)
    if not records:
        raise SystemExit(
            "no cut records (objects with iou, pixel_precision and links) in " + ", ".join(map(str, args.paths))
        )
    print(f"{'IoU':>6} {'prec':>6} {'patches':>7} {'bird':>5} {'bg':>5} {'across':>6}  where")
    for r in sorted(records, key=lambda r: r.across):
        n = "" if r.foreground_patches is None else f"{r.foreground_patches:.1f}"
        print(
            f"{r.iou:6.1f} {r.pixel_precision:6.1f} {n:>7} {r.bird:5.2f} {r.background:5.2f} {r.across:6.2f}  {r.where}"
        )
    corr = correlations(records)
    print(f"\n{len(records)} bases; Spearman's rho of the cut's IoU with:")
    for name, c in corr.items():
        print(f"  {name:<18} {c['rho']:+.2f} (p {c['p']:.1g}, {c['bases']} bases)")
    if args.json:
        atomic_write_text(args.json, json.dumps({"records": [asdict(r) for r in records], "spearman": corr}, indent=1))


if __name__ == "__main__":
    main()
