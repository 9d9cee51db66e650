"""bench/cut_links.py: the cut records found wherever they sit in a report, each base once, and the rank
correlations on hand-checked cases; and on the recorded bases the repository ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_bench

links_bench = load_bench("cut_links")
ROOT = Path(__file__).resolve().parent.parent


def cut(iou: float, bird: float, across: float, patches: float | None = 12.0) -> dict:
    record = {"iou": iou, "pixel_precision": iou + 5, "links": {"bird": bird, "background": 0.9, "across": across}}
    if patches is not None:
        record["foreground_patches"] = patches
    return record


def test_records_are_found_nested_and_a_base_recorded_twice_counts_once(tmp_path):
    (tmp_path / "a.json").write_text(
        json.dumps({"runs": {"x": {"cut": cut(60, 0.6, 0.3)}}, "list": [cut(50, 0.5, 0.4, patches=None)]})
    )
    # the same base's record copied into another report, a dict with iou but no links, and a third base
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(
        json.dumps({"merged": cut(60, 0.6, 0.3), "other": {"iou": 1.0, "pixel_precision": 2.0}, "z": cut(40, 0.7, 0.5)})
    )
    records = links_bench.find_records([tmp_path])
    assert [(r.iou, r.across, r.where.split(str(tmp_path))[1]) for r in records] == [
        (60.0, 0.3, "/a.json/runs/x/cut"),
        (50.0, 0.4, "/a.json/list/0"),
        (40.0, 0.5, "/sub/b.json/z"),
    ]
    assert records[1].foreground_patches is None


def test_correlations_by_hand():
    records = [
        links_bench.CutRecord("a", 60, 65, 14, bird=0.6, background=0.9, across=0.3),
        links_bench.CutRecord("b", 50, 55, 12, bird=0.5, background=0.8, across=0.4),
        links_bench.CutRecord("c", 40, 45, 13, bird=0.7, background=0.7, across=0.5),
        links_bench.CutRecord("d", 30, 35, None, bird=0.8, background=0.6, across=0.6),
    ]
    got = links_bench.correlations(records)
    # IoU falls as across rises: ranks reversed exactly
    assert got["across"]["rho"] == pytest.approx(-1.0)
    assert got["background"]["rho"] == pytest.approx(1.0)
    # bird ranks (2, 1, 3, 4) against IoU's (4, 3, 2, 1): 1 - 6 * sum(d^2) / (n(n^2 - 1)) = 1 - 6 * 18 / 60
    assert got["bird"]["rho"] == pytest.approx(1 - 6 * 18 / 60)
    # the record without a foreground size is left out of that one: three bases, IoU ranks (3, 2, 1), sizes (3, 1, 2)
    assert got["foreground_patches"]["bases"] == 3
    assert got["foreground_patches"]["rho"] == pytest.approx(1 - 6 * 2 / 24)


def test_a_file_that_is_not_json_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json: not a JSON file"):
        links_bench.find_records([bad])


def test_on_the_shipped_records_the_cut_follows_the_bird_background_links(tmp_path):
    out = tmp_path / "links.json"
    links_bench.main([str(ROOT / "bench" / "results"), "--json", str(out)])
    report = json.loads(out.read_text())
    assert len(report["records"]) >= 50
    seventh = [r for r in report["records"] if "seventh world" in r["where"]]
    assert len(seventh) == 1 and seventh[0]["iou"] == pytest.approx(67.2, abs=0.05)
    assert report["spearman"]["across"]["rho"] < -0.8
    assert abs(report["spearman"]["bird"]["rho"]) < 0.3
