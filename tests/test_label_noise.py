"""bench/label_noise.py: the supervised mode on labels made wrong on purpose (docs/toyworld.md, round 45)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_bench

from microclip.checkpoint import read_adapted

ROOT = Path(__file__).resolve().parent.parent
noise = load_bench("label_noise")


def test_truth_keeps_every_label():
    targets = np.arange(30) % 3
    assert np.array_equal(noise.noisy_labels(targets, "truth", np.eye(3), seed=0), targets)


def test_uniform_noise_keeps_the_runs_right_share_and_moves_the_rest_evenly_to_other_classes():
    counts = np.array([[6.0, 3, 1], [2, 7, 1], [1, 1, 8]])  # 21 of 30 right: 0.7
    targets = np.arange(60_000) % 3
    labels = noise.noisy_labels(targets, "uniform", counts, seed=1)
    kept = labels == targets
    assert abs(kept.mean() - 0.7) < 0.01  # binomial sd ≈ 0.002
    moved = labels[~kept] - targets[~kept]
    assert set(np.unique(moved % 3)) == {1, 2}  # never the true class when it moves
    assert abs((moved % 3 == 1).mean() - 0.5) < 0.02  # the other classes alike, whatever the run's confusion
    assert np.array_equal(labels, noise.noisy_labels(targets, "uniform", counts, seed=1))  # one seed, one draw
    assert not np.array_equal(labels, noise.noisy_labels(targets, "uniform", counts, seed=2))
    asked = noise.noisy_labels(targets, "uniform", counts, seed=1, right=0.9)  # another share than the run's
    assert abs((asked == targets).mean() - 0.9) < 0.01


def test_confusion_noise_follows_each_class_s_row_of_the_runs_label_counts():
    counts = np.array([[6.0, 3, 1], [0, 10, 0], [1, 1, 8]])
    targets = np.arange(60_000) % 3
    labels = noise.noisy_labels(targets, "confusion", counts, seed=0)
    for c in range(3):
        shares = np.bincount(labels[targets == c], minlength=3) / (targets == c).sum()
        np.testing.assert_allclose(shares, counts[c] / counts[c].sum(), atol=0.015)
    assert (labels[targets == 1] == 1).all()  # a class the run never mislabelled keeps its labels


def test_unknown_labels_and_a_run_without_label_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown labels 'random'"):
        noise.noisy_labels(np.zeros(3, dtype=int), "random", np.eye(3), seed=0)
    from safetensors.torch import save_file

    save_file({"step": torch.zeros(1)}, tmp_path / "train_state.safetensors")
    with pytest.raises(ValueError, match="has no labels_given"):
        noise.last_epoch_counts(tmp_path)


def test_the_truth_reproduces_train_py_fully_supervised_to_the_tensor(tmp_path, image_dataset_root, tiny_model_dir):
    flags = [
        "--dataset",
        str(image_dataset_root / "shapes"),
        "--train_config",
        "ours_vit_b_32_cupl_proto",
        "--clip_model",
        f"local-dir:{tiny_model_dir}",
        "--epochs",
        "1",
        "--batch_size",
        "8",
        "--n_crops",
        "2",
        "--seed",
        "3",
        "--no_descriptions",
        "--no_progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "train.py", *flags, "--fully_supervised", "--output_dir", str(tmp_path / "sup")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the supervised run's own label counts: every label right
    counts = noise.last_epoch_counts(tmp_path / "sup")
    assert counts.sum() > 0 and np.trace(counts) == counts.sum()
    for kind in ("truth", "uniform"):  # uniform at the share of a run whose labels were all right: the truth again
        out = tmp_path / kind
        # a process of its own, as train.py's: the thread count another test left behind would move the last bits
        script = ["bench/label_noise.py", "--labels", kind, "--labels_from", str(tmp_path / "sup"), "--out", str(out)]
        done = subprocess.run(
            [sys.executable, *script, *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        expected, got = (
            read_adapted(tmp_path / "sup" / "checkpoint.safetensors")[0],
            read_adapted(out / "checkpoint.safetensors")[0],
        )
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected), kind
        report = json.loads((out / "labels.json").read_text())
        assert report["labels_right_share"] == 1.0 and report["dka_right_share"] == 1.0
        metrics = json.loads((tmp_path / "sup" / "metrics.json").read_text())
        assert report["test"]["fused"] == pytest.approx(metrics["acc_fused"])
