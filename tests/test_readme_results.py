"""The README's toy-world tables say what the shipped bench report says: every accuracy, every target row and
the names-by-frequency table are read off `bench/results/toyworld.json` (and the reports of the same world adapted
with the recipes shipped before it: rounds 34-54's and the 8-epoch one), so a re-ship that forgets the README, or a
hand edit that rounds a number its own way, fails here."""

from __future__ import annotations

import json
from pathlib import Path

from microclip.toyworld.targets import targets

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
REPORT = json.loads((ROOT / "bench" / "results" / "toyworld.json").read_text())
ROUND34 = json.loads((ROOT / "bench" / "results" / "toyworld-round34-recipe.json").read_text())
PREVIOUS = json.loads((ROOT / "bench" / "results" / "toyworld-seventh-world-8-epochs.json").read_text())


def _table(header: str) -> list[list[str]]:
    """The cells of the README table whose header row starts with `header` (separator row dropped)."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _one(value: float) -> str:
    return f"{value:.1f}"


def test_the_accuracy_table_is_the_shipped_report_beside_the_previous_recipes():
    keys = {
        "zero-shot by names": ("zero_shot_names",),
        "zero-shot by descriptions": ("zero_shot_descriptions",),
        "same start, TokenFusion": ("start_fused",),
        "CLS-only self-training baseline": ("cls_baseline",),
        "**microCLIP adapted, TokenFusion**": ("adapted_fused",),
        "microCLIP adapted, `[CLS]` only / `[FG]` only": ("adapted_cls", "adapted_fg"),
        "linear probe": ("linear_probe",),
    }
    rows = _table("| method | top-1 % |")
    assert len(rows) == len(keys)
    for (label, shipped, round34, previous), (prefix, names) in zip(rows, keys.items(), strict=True):
        assert label.startswith(prefix), label
        for column, report in ((shipped, REPORT), (round34, ROUND34), (previous, PREVIOUS)):
            expected = " / ".join(_one(report["accuracy"][k]) for k in names)
            assert column.strip("*") == expected, (label, column, expected)


def test_every_target_row_shows_what_targets_py_reads_off_the_reports():
    rows = _table("| target (issue 14) |")
    shipped, previous = targets(REPORT), targets(ROUND34)
    assert len(rows) == len(shipped) + 1  # + the record's reproduction, a test rather than a bench row
    words = {True: "yes", False: "no"}
    for row, mine, theirs in zip(rows, shipped, previous, strict=False):
        assert row[1] == mine.shown and row[2] == words[mine.met], (row, mine)
        assert row[3] == f"{theirs.shown} ({words[theirs.met]})", (row, theirs)
    count = sum(t.met for t in shipped) + 1
    spelled = {10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen"}[count]
    assert f"**{spelled.capitalize()} of fifteen rows are met**" in README


def test_the_names_table_is_the_report_s_per_species_accuracy_in_frequency_order():
    rows = _table("| species (commonest name first) |")
    per_species = REPORT["names_by_frequency"]["per_species"]
    assert [r[0] for r in rows] == list(per_species)
    for species, frequency, accuracy in rows:
        assert frequency == f"{per_species[species]['name_frequency']:.3f}"
        assert accuracy == _one(per_species[species]["accuracy"])
    assert f"Spearman {REPORT['names_by_frequency']['spearman']:.2f}" in README


def test_the_pointing_and_deletion_tables_are_the_report_s():
    point = REPORT["pointing"]
    chance = REPORT["within_bird_chance"]
    rows = _table("| map | pointing % |")
    order = [
        "soap",
        "soap_keys_ncut",
        "soap_contribution",
        "ncut",
        "cls_similarity",
        "cls_attention",
        "rollout",
        "soap_rollout",
        "legrad",
        "gradcam",
    ]
    for row, name in zip(rows, order, strict=False):
        assert row[1:5] == [
            _one(point[name]),
            f"{point[name] - chance:+.1f}",
            _one(REPORT["mass_inside"][name]),
            _one(REPORT["cost_ms"][name]),
        ], (name, row)
    assert rows[-1][1] == _one(point["random"])
    deletion = _table("| map | fused | `[CLS]` | `[FG]` |")
    assert [r[0] for r in deletion] == list(REPORT["deletion"])
    for name, *cells in deletion:
        assert cells == [_one(REPORT["deletion"][name][b]) for b in ("fused", "cls", "fg")], name
