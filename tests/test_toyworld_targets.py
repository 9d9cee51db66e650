"""Issue 14's targets read off a bench report, the ship rule, and the bench's table of several worlds."""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_bench

from microclip.toyworld.targets import pretraining_met, recipe_verdict, ship_choice, targets

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _report(**accuracy) -> dict:
    """A bench/toyworld.py --json report (only the keys the targets read), every target met by a clear margin."""
    return {
        "accuracy": {
            "zero_shot_names": 50.0,
            "zero_shot_descriptions": 60.0,
            "cls_baseline": 70.0,
            "adapted_fused": 80.0,
            "adapted_fg": 60.0,
            "linear_probe": 99.0,
            **accuracy,
        },
        "names_by_frequency": {"spearman": 0.9},
        "ncut_on_bird": {"pixel_precision": 10.0, "iou": 10.0, "base": {"pixel_precision": 60.0, "iou": 60.0}},
        "part_probe": 75.0,
        "pointing": {"soap": 90.0, "legrad": 80.0},
        "within_bird_chance": 50.0,
        "deletion": {
            "soap": {"fg": 70.0},
            "soap_keys_ncut": {"fg": 95.0},
            "soap_contribution": {"fg": 96.0},
            "ncut": {"fg": 69.0},
            "random": {"fg": 20.0},
        },
        "part_removal": {"fg": 20.0, "cls": 10.0},
    }


def _met(report: dict) -> dict[str, bool | None]:
    return {t.key: t.met for t in targets(report)}


def test_every_target_is_met_on_a_report_that_clears_them_all():
    met = _met(_report())
    assert len(met) == 14
    assert all(met.values()), met
    assert pretraining_met(_report()) == 7


@pytest.mark.parametrize(
    ("accuracy", "key", "expected"),
    [
        ({"zero_shot_names": 35.0, "zero_shot_descriptions": 38.0}, "names", True),
        ({"zero_shot_names": 65.0, "zero_shot_descriptions": 68.0, "adapted_fused": 90.0}, "names", True),
        ({"zero_shot_names": 65.1}, "names", False),
        ({"zero_shot_names": 34.9}, "names", False),
        ({"zero_shot_names": 50.0, "zero_shot_descriptions": 53.0}, "descriptions", True),
        ({"zero_shot_names": 50.0, "zero_shot_descriptions": 52.9}, "descriptions", False),
        # max(names, descriptions) + 15: descriptions 60 -> 75
        ({"adapted_fused": 75.0, "cls_baseline": 60.0}, "fused_vs_zero_shot", True),
        ({"adapted_fused": 74.9, "cls_baseline": 60.0}, "fused_vs_zero_shot", False),
        # names above descriptions: the max is names
        ({"zero_shot_names": 64.0, "zero_shot_descriptions": 30.0, "adapted_fused": 78.0}, "fused_vs_zero_shot", False),
        ({"adapted_fused": 80.0, "cls_baseline": 75.0}, "fused_vs_baseline", True),
        ({"adapted_fused": 80.0, "cls_baseline": 75.1}, "fused_vs_baseline", False),
        ({"adapted_fg": 54.9}, "fg_only", False),
        ({"linear_probe": 94.9}, "linear_probe", False),
    ],
)
def test_each_threshold_is_where_the_issue_puts_it(accuracy, key, expected):
    assert _met(_report(**accuracy))[key] is expected


def test_fg_only_is_decided_as_evaluated_with_the_unshifted_number_beside_it():
    rows = {t.key: t for t in targets(_report(adapted_fg=50.0, adapted_fg_unshifted=74.4))}
    assert rows["fg_only"].met is False  # the issue's row reads [FG] as the model answers
    assert rows["fg_only"].shown == "50.0 (74.4 without its shift)"
    assert {t.key: t.shown for t in targets(_report(adapted_fg=50.0))}["fg_only"] == "50.0"


def test_the_cut_rows_read_the_base_tower_and_the_rest_their_own_keys():
    report = _report()
    report["ncut_on_bird"]["base"]["iou"] = 54.9  # the adapted tower's 10.0 is not read
    report["names_by_frequency"]["spearman"] = 0.69
    report["part_probe"] = 69.9
    report["pointing"] = {"soap": 69.9, "legrad": 70.0}  # also under within-bird chance 50 + 20
    report["part_removal"] = {"fg": 10.0, "cls": 10.0}
    met = _met(report)
    assert [k for k, v in met.items() if not v] == [
        "spearman",
        "cut_iou",
        "part_probe",
        "soap_vs_legrad",
        "soap_vs_chance",
        "part_removal",
    ]
    assert pretraining_met(report) == 4


def test_soap_deletion_must_beat_every_peer_but_its_own_variant():
    report = _report()
    assert _met(report)["soap_deletion"]  # soap_keys_ncut's 95 and soap_contribution's 96 are SOAP, not peers
    report["deletion"]["random"]["fg"] = 70.0  # a tie is not "better"
    row = next(t for t in targets(report) if t.key == "soap_deletion")
    assert row.met is False and row.shown == "70.0 vs random 70.0"


def test_a_report_without_a_section_leaves_its_rows_unmeasured_and_uncounted():
    report = _report()
    for key in ("deletion", "part_removal", "pointing", "names_by_frequency"):
        del report[key]
    report["accuracy"]["cls_baseline"] = None  # the bench's row when no baseline was run
    met = _met(report)
    unmeasured = {k for k, v in met.items() if v is None}
    assert unmeasured == {
        "spearman",
        "soap_vs_legrad",
        "soap_vs_chance",
        "fused_vs_baseline",
        "soap_deletion",
        "part_removal",
    }
    assert pretraining_met(report) == 6


def test_the_rule_ships_the_most_pretraining_targets_and_a_tie_keeps_the_incumbent():
    good, worse = _report(), _report(zero_shot_names=70.0)  # names out of range (and descriptions fall short)
    assert pretraining_met(worse) == 5
    # Adaptation's rows never choose: the incumbent's failed adaptation rows do not cost it the tie.
    failed_adaptation = _report(adapted_fused=10.0, adapted_fg=1.0)
    assert ship_choice({"seed0": failed_adaptation, "seed1": good}, incumbent="seed0") == "seed0"
    assert ship_choice({"seed0": worse, "seed1": failed_adaptation, "seed2": good}, incumbent="seed0") == "seed1"
    assert ship_choice({"seed0": good, "seed1": worse}, incumbent="seed1") == "seed0"
    with pytest.raises(ValueError, match="seed9"):
        ship_choice({"seed0": good}, incumbent="seed9")


def test_the_bench_table_prints_every_world_and_the_rules_choice(tmp_path):
    shipped, other = _report(), copy.deepcopy(_report(zero_shot_names=70.0))
    (tmp_path / "a.json").write_text(json.dumps(other))
    (tmp_path / "b.json").write_text(json.dumps(shipped))
    run = subprocess.run(
        [sys.executable, "bench/toyworld_targets.py", f"seed0={tmp_path / 'a.json'}", f"{tmp_path / 'b.json'}"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.splitlines()
    assert lines[0] == "| target | stage | seed0 | b |"
    assert "| zero-shot by names 35-65% | pretraining | 70.0 · | 50.0 ✓ |" in lines
    assert "| **targets met** | | 11 | 14 |" in lines  # names, descriptions, fused vs 70 + 15
    assert lines[-1] == "ships by the rule (incumbent seed0): b"

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    run = subprocess.run(
        [sys.executable, "bench/toyworld_targets.py", str(tmp_path / "a.json"), str(bad)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "bad.json: not a readable" in run.stderr


def test_the_toyworld_bench_reads_a_given_baseline_run(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"acc_cls": 68.0}))
    args = argparse.Namespace(run_baseline=False, baseline_dir=str(tmp_path))
    assert load_bench("toyworld")._baseline_accuracy(args) == 68.0


def test_the_recipe_rule_counts_every_row_but_the_draw_margins_and_forbids_a_loss():
    incumbent = _report(adapted_fg=50.0, linear_probe=90.0)  # two rows missed: [FG]-only, linear probe
    better = _report(adapted_fg=50.0)  # one row more than the incumbent
    better["build"] = {"wall_time_min": 59.9, "invocations": 1}
    verdict = recipe_verdict(better, incumbent)
    assert verdict.replaces is True
    assert verdict.reasons[1].startswith("11 rows met against 10")
    # Fused accuracy's margins do not count either way: winning them does not make a candidate better ...
    margins_only = _report(adapted_fg=50.0, linear_probe=90.0)
    margins_only["build"] = better["build"]
    incumbent_without_margins = _report(adapted_fg=50.0, linear_probe=90.0, adapted_fused=61.0)
    assert recipe_verdict(margins_only, incumbent_without_margins).replaces is False
    # ... and losing them costs nothing.
    assert recipe_verdict({**better, "accuracy": {**better["accuracy"], "adapted_fused": 61.0}}, incumbent).replaces
    # More rows met, but one the incumbent meets is lost: no.
    trade = _report(linear_probe=90.0, adapted_fg=60.0)
    trade["part_probe"] = 10.0
    trade["build"] = better["build"]
    lost = recipe_verdict(trade, _report(adapted_fg=50.0, linear_probe=90.0, zero_shot_names=70.0))
    assert lost.replaces is False and lost.reasons[2] == "loses part_probe"


def test_the_recipe_rule_needs_the_build_time_and_an_hour_at_most():
    incumbent, candidate = _report(linear_probe=90.0), _report()
    assert recipe_verdict(candidate, incumbent).replaces is None  # better, but how long it took is unknown
    candidate["build"] = {"wall_time_min": 60.1, "invocations": 1}
    slow = recipe_verdict(candidate, incumbent)
    assert slow.replaces is False and slow.reasons[0] == "built in 60.1 min (at most 60)"
    # A worse candidate is refused whatever its build time.
    assert recipe_verdict(_report(linear_probe=90.0, adapted_fg=50.0), incumbent).replaces is False


def test_the_bench_table_gives_the_recipe_rule_s_verdict(tmp_path):
    shipped, candidate = _report(linear_probe=90.0), _report()
    candidate["build"] = {"wall_time_min": 55.0, "invocations": 1}
    (tmp_path / "a.json").write_text(json.dumps(shipped))
    (tmp_path / "b.json").write_text(json.dumps(candidate))
    run = subprocess.run(
        [sys.executable, "bench/toyworld_targets.py", f"old={tmp_path / 'a.json'}", f"new={tmp_path / 'b.json'}"]
        + ["--rule", "recipe"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.splitlines()[-1] == (
        "new replaces old by the recipe rule: yes (built in 55.0 min (at most 60); 12 rows met against 11 "
        "(fused accuracy's margins not counted); loses no row the incumbent meets)"
    )


def test_the_toyworld_bench_reads_the_base_s_build_time_from_its_record(tmp_path):
    bench = load_bench("toyworld")
    assert bench.build_row(str(tmp_path)) is None  # no pretrain.json
    record = {"command": "python -m microclip.toyworld.pretrain --out X", "wall_time_s": 600.0}
    (tmp_path / "pretrain.json").write_text(json.dumps(record))
    assert bench.build_row(str(tmp_path)) == {"wall_time_min": 10.0, "invocations": 1}
    # A fine-tune counts the runs it started from.
    record |= {"commands": ["a", "b", "c"], "total_wall_time_s": 3900.0}
    (tmp_path / "pretrain.json").write_text(json.dumps(record))
    assert bench.build_row(str(tmp_path)) == {"wall_time_min": 65.0, "invocations": 3}


def test_the_comparison_rows_say_the_paired_gap_and_its_interval_when_the_report_has_them():
    """Reports from round 31 on carry, for the two rows compared item by item, the per-item gap's interval."""
    report = _report()
    report["deletion_vs_soap"] = {"ncut": {"fg": {"gap": 1.04, "low": -0.32, "high": 2.41, "items": 160}}}
    report["part_removal_gap"] = {"gap": 10.0, "low": 8.2, "high": 11.9, "items": 630}
    rows = {t.key: t for t in targets(report)}
    assert rows["soap_deletion"].shown == "70.0 vs ncut 69.0; gap +1.0 (95% interval -0.3 to +2.4, 160 items)"
    assert rows["part_removal"].shown == "20.0 vs 10.0; gap +10.0 (95% interval +8.2 to +11.9, 630 items)"
    assert rows["soap_deletion"].met and rows["part_removal"].met  # the interval informs; the means decide
    assert _met(_report()) == _met(report)
