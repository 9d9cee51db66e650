"""The bundled toy-world checkpoints load through the normal loaders and reproduce their record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "checkpoints" / "toybirds-microclip.json"
pytestmark = pytest.mark.skipif(not RECORD.is_file(), reason="the toy-world checkpoints are not built yet")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("toydata"))


def test_shipped_checkpoints_reproduce_their_recorded_accuracy(data_root):
    sys.path.insert(0, str(ROOT / "bench"))
    from toyworld import subset_accuracies

    recorded = json.loads(RECORD.read_text())["subset200"]
    measured = subset_accuracies(data_root)
    assert measured["zero_shot_cls"] == pytest.approx(recorded["zero_shot_cls"], abs=1.0)
    assert measured["adapted_fused"] == pytest.approx(recorded["adapted_fused"], abs=1.0)
    assert measured["adapted_fused"] > measured["zero_shot_cls"]


def test_shipped_files_are_small():
    base = sum(p.stat().st_size for p in (ROOT / "checkpoints" / "toybirds-base").iterdir())
    adapted = (ROOT / "checkpoints" / "toybirds-microclip.safetensors").stat().st_size
    assert base + adapted <= 30 * 2**20


def test_train_py_on_toybirds_end_to_end(data_root, tmp_path):
    done = subprocess.run(
        [sys.executable, "train.py", "--dataset", "toybirds", "--train_config", "toybirds", "--data_root", data_root,
         "--max_steps", "2", "--epochs", "1", "--batch_size", "16", "--n_crops", "2", "--output_dir", str(tmp_path),
         "--no_progress"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["num_test"] == 800
    evaluated = subprocess.run(
        [sys.executable, "evaluate.py", "--dataset", "toybirds", "--data_root", data_root, "--ckpt-path",
         str(ROOT / "checkpoints" / "toybirds-microclip.safetensors")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0 and "TokenFusion" in evaluated.stdout, evaluated.stderr[-2000:]
