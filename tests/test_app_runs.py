"""The runs folder: models saved in Adapt survive a restart. A saved run is listed again on start with the date
it was saved; a file there that is not a readable microCLIP checkpoint is skipped with one log line and hides
nothing else. Where the folder is by default (./runs; a Space's persistent /data when it has one)."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CLASSES

from microclip.checkpoint import CheckpointMeta, save_adapted
from microclip.model import MicroCLIP
from studio import jobs
from studio.jobs import default_runs_dir, usable_runs_dir
from studio.registry import SAVED_AT_KEY, SAVED_NAME_KEY, ModelRegistry, saved_date


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_model_dir) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    model, _, _ = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, CLASSES)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.add_(0.05 * torch.randn_like(param))
    return model.adapted_state(), CheckpointMeta(model.base, CLASSES, method=model.config.to_dict())


def save_run(folder: Path, adapted, name: str, saved_at: str | None) -> Path:
    state, meta = adapted
    training = {SAVED_NAME_KEY: name} | ({SAVED_AT_KEY: saved_at} if saved_at else {})
    return save_adapted(
        folder / f"{name.replace(' ', '-')}.safetensors",
        state,
        CheckpointMeta(meta.base, meta.classes, method=meta.method, training=training),
    )


def test_saved_runs_are_listed_with_their_date_and_bad_files_are_skipped_with_one_line(tmp_path, adapted, caplog):
    runs = tmp_path / "runs"
    good = save_run(runs, adapted, "my shapes", "2026-03-04T05:06:07+00:00")
    undated = save_run(runs, adapted, "older run", None)  # no date in the file: its modification time is used
    (runs / "truncated.safetensors").write_bytes(good.read_bytes()[:200])
    (runs / "cut-short.safetensors").write_bytes(good.read_bytes()[:-8])  # the header whole, a tensor cut short
    (runs / "pickled.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (runs / "notes.safetensors").write_text("not a checkpoint")
    shutil.copyfile(good, runs / "not-a-checkpoint.txt")  # other files are not looked at

    registry = ModelRegistry("cpu")
    with caplog.at_level(logging.INFO, logger="studio.registry"):
        names = registry.add_saved_runs(runs)

    stored = CheckpointMeta(adapted[1].base, CLASSES, training={SAVED_AT_KEY: "2026-03-04T05:06:07+00:00"})
    expected_good = f"my shapes · saved {saved_date(good, stored)}"
    assert expected_good in names and len(names) == 2, names
    assert expected_good.startswith("my shapes · saved 2026-03-0")  # the stored date, in local time
    assert any(name.startswith("older run · saved ") for name in names)
    skipped = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(r.getMessage().split()[3] for r in skipped) == [
        "cut-short.safetensors",
        "notes.safetensors",
        "pickled.safetensors",
        "truncated.safetensors",
    ]
    assert all("\n" not in r.getMessage() for r in skipped)  # one line each
    assert "pickle" in next(r.getMessage() for r in skipped if "pickled" in r.getMessage())

    # The listed models load, with the saved weights.
    loaded = registry.get(expected_good)
    assert list(loaded.classes) == CLASSES
    assert torch.equal(loaded.model.heads.w_star.detach().cpu(), adapted[0]["heads.w_star"])
    assert undated.exists()


def test_a_missing_runs_folder_lists_nothing(tmp_path):
    assert ModelRegistry("cpu").add_saved_runs(tmp_path / "nope") == []


def test_default_runs_folder_is_local_or_the_spaces_persistent_storage(tmp_path, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert default_runs_dir() == Path("runs")
    monkeypatch.setenv("SPACE_ID", "someone/microclip-studio")
    monkeypatch.setattr(jobs, "SPACE_STORAGE", tmp_path / "absent")
    assert default_runs_dir() == Path("runs")  # a Space without persistent storage
    monkeypatch.setattr(jobs, "SPACE_STORAGE", tmp_path)
    assert default_runs_dir() == tmp_path / "microclip-runs"


def test_an_unwritable_runs_folder_is_reported_not_fatal(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="studio.jobs"):
        assert usable_runs_dir(blocker / "runs") is None
    assert "will not survive a restart" in caplog.text
    assert usable_runs_dir(tmp_path / "new" / "runs") == tmp_path / "new" / "runs"
    assert (tmp_path / "new" / "runs").is_dir()
