"""bench/description_ties.py: the lost classes against the ties the descriptions leave, by hand and on the shipped
toy model's record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_bench

from microclip.checkpoint import read_adapted
from microclip.toyworld.text import description_ties

ties_bench = load_bench("description_ties")
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "toybirds-microclip.safetensors"


def test_lost_classes_against_ties_by_hand():
    accuracy = {"a": 90.0, "b": 10.0, "c": 40.0, "d": 49.9}
    confused = {"a": None, "b": ["a", 80.0], "c": ["d", 50.0], "d": ["b", 30.0]}
    ties = {"a": [], "b": ["a"], "c": ["a", "b"], "d": []}
    got = ties_bench.lost_against_ties(accuracy, confused, ties)
    assert got == {
        "classes": 4,
        "lost": ["b", "c", "d"],
        "tied": ["b", "c"],
        "lost_tied": ["b", "c"],
        "lost_to_a_tie": ["b"],  # c is mistaken most often for d, to which it is not tied
    }
    assert ties_bench.lost_against_ties(accuracy, confused, ties, under=20.0)["lost"] == ["b"]
    # descriptions that tie nobody (every species told apart): no share for the tied
    untied = ties_bench.summarise({"r": ties_bench.lost_against_ties(accuracy, confused, {})})
    assert untied["p_lost_if_tied"] is None and untied["p_lost_if_untied"] == 75.0
    other = ties_bench.lost_against_ties({"a": 0.0, "b": 100.0}, {}, {"a": [], "b": ["a"]})
    summary = ties_bench.summarise({"one": got, "two": other})
    # 6 classes, 3 tied (b, c; b); lost: b, c, d; a — tied and lost 2 of 3, untied and lost 2 of 3 (d; a)
    assert summary == {
        "runs": 2,
        "lost": 4,
        "lost_tied": 2,
        "lost_to_a_tie": 1,
        "tied": 3,
        "p_lost_if_tied": pytest.approx(200 / 3),
        "p_lost_if_untied": pytest.approx(200 / 3),
    }


def test_the_shipped_model_s_two_lost_species_are_tied_and_lost_to_a_tie(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "description_ties.py"), str(SHIPPED), "--json", str(tmp_path / "t.json")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report = json.loads((tmp_path / "t.json").read_text())
    run = report["runs"][str(SHIPPED)]
    # independently: the record's last row and the ties of the descriptions the checkpoint carries
    row = json.loads(SHIPPED.with_suffix(".json").read_text())["log"][-1]
    lost = sorted(c for c, acc in row["test_per_class"].items() if acc < 50)
    meta = read_adapted(SHIPPED)[1]
    ties = description_ties(meta.descriptions)
    assert run["lost"] == lost and run["tied"] == sorted(c for c, t in ties.items() if t)
    assert run["lost_to_a_tie"] == sorted(c for c in lost if row["test_confused_with"][c][0] in ties[c])
    assert report["species_table"] == "distance" and run["epoch"] == row["epoch"] == meta.training["config"]["epochs"]
    assert f"{len(lost)} lost, {len(run['lost_tied'])} of them tied" in out.stdout


def test_a_run_whose_descriptions_are_not_the_toy_llm_s_is_refused(tmp_path: Path):
    tensors, meta = read_adapted(SHIPPED)
    meta.descriptions = {c: ["a bird."] for c in meta.classes}
    from microclip.checkpoint import save_adapted

    run = tmp_path / "run"
    run.mkdir()
    save_adapted(run / "checkpoint.safetensors", tensors, meta)
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1, "test_per_class": {"a": 1.0}}) + "\n")
    with pytest.raises(ValueError, match="not the toy LLM's"):
        ties_bench.measure(run, 50.0)
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    with pytest.raises(ValueError, match="no epoch with per-class test accuracy"):
        ties_bench.last_epoch(run / "log.jsonl")
