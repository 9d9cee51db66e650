from __future__ import annotations

import json

import pytest
from conftest import load_bench

drift_bench = load_bench("branch_drift")


def _write_log(folder, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


ROWS = [
    {"epoch": 0, "test_acc_fused": 70.0, "test_acc_cls": 65.0, "test_acc_fg": 60.0},
    {
        "epoch": 1,
        "train_agree_cls": 40.0,
        "train_agree_fg": 30.0,
        "train_shared_cls": 0.4,
        "train_shared_fg": 0.5,
        "test_acc_fused": 75.0,
        "test_acc_cls": 64.0,
        "test_acc_fg": 72.0,
    },
    {
        "epoch": 2,
        "train_agree_cls": 42.0,
        "train_agree_fg": 20.0,
        "train_shared_cls": 0.4,
        "train_shared_fg": 0.7,
        "test_acc_fused": 75.0,
        "test_acc_cls": 66.0,
        "test_acc_fg": 50.0,
    },
]


def test_start_peak_and_end_of_each_branch_and_the_agreement(tmp_path):
    _write_log(tmp_path / "run", ROWS)
    report = drift_bench.drift(drift_bench.read_log(tmp_path / "run"))
    # a tie at the peak keeps the earlier epoch
    assert report["fused"] == {"start": 70.0, "peak": 75.0, "peak_epoch": 1, "end": 75.0}
    assert report["cls"] == {
        "start": 65.0,
        "peak": 66.0,
        "peak_epoch": 2,
        "end": 66.0,
        "agree_first": 40.0,
        "agree_last": 42.0,
        "shared_first": 0.4,
        "shared_last": 0.4,
    }
    assert report["fg"] == {
        "start": 60.0,
        "peak": 72.0,
        "peak_epoch": 1,
        "end": 50.0,
        "agree_first": 30.0,
        "agree_last": 20.0,
        "shared_first": 0.5,
        "shared_last": 0.7,
    }


def test_the_table_and_json(tmp_path, capsys):
    _write_log(tmp_path / "run", ROWS)
    out = tmp_path / "drift.json"
    assert drift_bench.main([f"mine={tmp_path / 'run'}", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert (
        "| mine | 70.0 → 75.0 (e1) → 75.0 |" in table
        and "60.0 → 72.0 (e1) → 50.0; agrees 30.0 → 20.0; shared 0.50 → 0.70" in table
    )
    assert json.loads(out.read_text())["mine"]["fg"]["end"] == 50.0


@pytest.mark.parametrize(
    ("rows", "message"),
    [(None, "no training log"), ([{"epoch": 0, "test_acc": 70.0, "test_acc_cls": 70.0}], "no per-branch")],
)
def test_a_folder_without_a_branch_log_is_a_clear_error(tmp_path, capsys, rows, message):
    if rows is not None:
        _write_log(tmp_path / "run", rows)
    assert drift_bench.main([str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_two_runs_of_one_name_are_refused(tmp_path):
    _write_log(tmp_path / "a" / "run", ROWS)
    _write_log(tmp_path / "b" / "run", ROWS)
    with pytest.raises(SystemExit):
        drift_bench.main([str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")])
