"""The reference's command lines, end to end, on a generated image folder and a tiny random ViT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import command_here

from microclip.checkpoint import read_adapted, save_adapted

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python ARGS`` in a new interpreter: the command as a user types it (training, a kill, an error's last line)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def explain(source: Path, checkpoint: Path | str, *options: str) -> subprocess.CompletedProcess:
    """``python -m microclip explain SOURCE --ckpt-path CHECKPOINT [options]``, in this process."""
    return command_here("-m", "microclip", "explain", str(source), "--ckpt-path", str(checkpoint), *options)


def evaluate_on_shapes(dataset_root: Path, *args: str) -> subprocess.CompletedProcess:
    """``python evaluate.py --dataset <the generated shapes folder> ARGS``, in this process."""
    return command_here("evaluate.py", "--dataset", str(dataset_root / "shapes"), *args)


@pytest.fixture(scope="module")
def trained(image_dataset_root, tiny_model_dir, tmp_path_factory):
    descriptions = tmp_path_factory.mktemp("desc") / "shapes.json"
    descriptions.write_text(
        json.dumps(
            {
                "blue bar": ["a thin blue bar.", "a blue stripe on a dark background."],
                "green disc": ["a round green disc.", "a green circle."],
                "red square": ["a red square.", "a square red block."],
            }
        )
    )
    out = tmp_path_factory.mktemp("run")
    done = run(
        *two_epoch_run(image_dataset_root, tiny_model_dir, descriptions, out),
        "--val_dataset",
        str(image_dataset_root / "shapes" / "train"),  # labelled class folders that are not the test split
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, descriptions, done


def two_epoch_run(dataset_root: Path, model_dir: Path, descriptions: Path, out: Path) -> list[str]:
    """The ``trained`` run's command line, without its validation folder."""
    return [
        "train.py",
        "--dataset",
        str(dataset_root / "shapes"),
        "--train_config",
        "ours_vit_b_32_cupl_proto",
        "--clip_model",
        f"local-dir:{model_dir}",
        "--text_descriptions_path",
        str(descriptions),
        "--epochs",
        "2",
        "--batch_size",
        "8",
        "--n_crops",
        "2",
        "--output_dir",
        str(out),
        "--keep_epochs",
    ]


def test_train_writes_the_reference_outputs(trained):
    out, _, done = trained
    for name in ("log.jsonl", "accuracy.png", "pl_accuracy.png", "metrics.json", "checkpoint.safetensors"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2]  # epoch 0: zero-shot
    assert {"train_loss", "train_pl_acc", "test_acc", "test_acc_cls", "test_acc_fg"} <= set(lines[-1])
    # The fairness term alone is at least 2·ln C, so the loss sits above it (docs/method.md §5.3).
    assert lines[-1]["train_fair"] >= 2 * __import__("math").log(3) - 1e-4
    assert "adapting" in done.stderr  # the tqdm progress bar
    # The seed config evaluates with the reference's random test crop (seeded); fused is reported under its name.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_crop"] == "random" and json.loads((out / "args.json").read_text())["eval_crop"] == "random"
    assert metrics["acc_branch"] == "fused" and metrics["acc"] == metrics["acc_fused"]


def test_evaluate_reproduces_the_final_accuracy(trained, image_dataset_root):
    out, _, _ = trained
    done = evaluate_on_shapes(
        image_dataset_root,
        "--ckpt-path",
        str(out / "checkpoint.safetensors"),
        "--show_per_class",
        "--output_dir",
        str(out / "eval"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    evaluated = json.loads((out / "eval" / "metrics.json").read_text())
    assert evaluated["acc"] == pytest.approx(metrics["acc"])
    assert "TokenFusion" in done.stdout and "[FG] only" in done.stdout and "mean per-class" in done.stdout
    # the run recorded [FG]'s shift: evaluated without it too, as train.py's last evaluation did
    assert evaluated["acc_fg_unshifted"] == pytest.approx(metrics["acc_fg_unshifted"])
    assert evaluated["acc_fused_unshifted"] == pytest.approx(metrics["acc_fused_unshifted"])
    assert f"TokenFusion without the shift's part: top-1 {evaluated['acc_fused_unshifted']:.2f}" in done.stdout
    assert f"[FG] only without its shared shift: top-1 {evaluated['acc_fg_unshifted']:.2f}" in done.stdout
    per_class = json.loads((out / "eval" / "per_class.json").read_text())
    assert sum(per_class.values()) / 3 == pytest.approx(evaluated["mean_per_class"])
    # what each class is most often mistaken for: only where it is not always right, printed on its line
    confused = json.loads((out / "eval" / "confused_with.json").read_text())
    assert set(confused) == set(per_class)
    for name, other in confused.items():
        assert (other is None) == (per_class[name] == 100.0)
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(name))
        assert other is None or f"most often mistaken for {other[0]} ({other[1]:.0f}%)" in line
    # how far ahead of its best rival each class's images are: the final row the run logged, and on each class's line
    lead = json.loads((out / "eval" / "lead.json").read_text())
    logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])["test_lead_per_class"]
    assert lead == pytest.approx(logged, abs=1e-4)
    for name, value in lead.items():
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(name))
        assert f"lead {value:+.2f}" in line and (value > 0 or per_class[name] < 100.0)


def test_validation_scores_are_evaluate_on_the_validation_folder(trained, image_dataset_root):
    """--val_dataset: every logged epoch (the start's too) and metrics.json carry val_ accuracies, and evaluate.py on
    that folder with the run's checkpoint, or a kept epoch's, gives them again; the test fields are untouched."""
    out, _, done = trained
    folder = image_dataset_root / "shapes" / "train"
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all({"val_acc", "val_acc_fused", "val_acc_cls", "val_acc_fg", "val_n"} <= set(line) for line in lines)
    assert lines[0]["val_n"] == len(list(folder.rglob("*.png")))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] == lines[-1]["val_acc"] and metrics["acc"] == lines[-1]["test_acc"]
    assert f"validation top-1 {metrics['val_acc']:.2f}%" in done.stderr
    for checkpoint, row in (
        (out / "checkpoint.safetensors", lines[-1]),
        (out / "epochs" / "epoch-1.safetensors", lines[1]),
    ):
        evaluated_dir = out / f"val-{checkpoint.stem}"
        scored = command_here(
            "evaluate.py", "--dataset", str(folder), "--ckpt-path", str(checkpoint), "--output_dir", str(evaluated_dir)
        )
        assert scored.returncode == 0, scored.stderr[-3000:]
        evaluated = json.loads((evaluated_dir / "metrics.json").read_text())
        for branch in ("fused", "cls", "fg"):
            assert evaluated[f"acc_{branch}"] == pytest.approx(row[f"val_acc_{branch}"])


@pytest.fixture(scope="module")
def rolled(trained, image_dataset_root, tmp_path_factory) -> dict[Path, dict]:
    """The run's checkpoint and a copy with W*'s classes rolled by one, so that the two score apart, each with its
    accuracies: the run's from its own log, the copy's from evaluating it alone."""
    out, _, _ = trained
    folder = tmp_path_factory.mktemp("rolled")
    copy = folder / "rolled.safetensors"
    tensors, meta = read_adapted(out / "checkpoint.safetensors")
    save_adapted(copy, {**tensors, "heads.w_star": tensors["heads.w_star"].roll(1, dims=0)}, meta)
    dataset = str(image_dataset_root / "shapes")
    alone = command_here("evaluate.py", "--dataset", dataset, "--ckpt-path", str(copy), "--output_dir", str(folder))
    assert alone.returncode == 0, alone.stderr[-3000:]
    scored = json.loads((folder / "metrics.json").read_text())
    logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    accuracies = {
        out / "checkpoint.safetensors": {b: logged[f"test_acc_{b}"] for b in ("fused", "cls", "fg")},
        copy: {b: scored[f"acc_{b}"] for b in ("fused", "cls", "fg")},
    }
    assert any(len({acc[b] for acc in accuracies.values()}) > 1 for b in ("fused", "cls", "fg")), (
        "the two checkpoints score alike on every branch: a summary of them would not be tested"
    )
    return accuracies


BRANCHES = (("fused", "TokenFusion"), ("cls", "[CLS] only"), ("fg", "[FG] only"))


def test_evaluate_summarises_several_checkpoints(rolled, image_dataset_root, tmp_path):
    """Several checkpoints (e.g. one recipe's seeds) are each scored as alone, then summarised; the summary is
    checked against the statistics module on accuracies evaluate did not compute in this call."""
    import statistics

    folder = tmp_path / "several"
    done = evaluate_on_shapes(image_dataset_root, "--ckpt-path", *map(str, rolled), "--output_dir", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((folder / "metrics.json").read_text())
    assert [entry["ckpt_path"] for entry in summary["runs"]] == list(map(str, rolled))
    for branch, label in BRANCHES:
        values = [accuracies[branch] for accuracies in rolled.values()]
        for index, value in enumerate(values):  # each checkpoint, in its own folder, as evaluate scores it alone
            scored = json.loads((folder / str(index) / "metrics.json").read_text())
            assert scored[f"acc_{branch}"] == pytest.approx(value)
        spread = summary["spread"][branch]
        assert spread["n"] == 2
        assert spread["mean"] == pytest.approx(statistics.mean(values))
        assert spread["sd"] == pytest.approx(statistics.stdev(values))
        assert (spread["low"], spread["high"]) == pytest.approx((min(values), max(values)))
        line = next(line for line in done.stdout.splitlines()[-3:] if line.strip().startswith(label))
        assert f"mean {statistics.mean(values):.2f}%" in line and f"{max(values):.2f}" in line


def test_evaluate_compares_two_sets_pair_by_pair(rolled, image_dataset_root, tmp_path):
    """--against: the differences are taken pair by pair, in the order given (swapping one pair changes them)."""
    import statistics

    run_ckpt, copy = rolled
    folder = tmp_path / "paired"
    done = evaluate_on_shapes(
        image_dataset_root,
        "--ckpt-path",
        str(run_ckpt),
        str(run_ckpt),
        "--against",
        str(copy),
        str(run_ckpt),
        "--output_dir",
        str(folder),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((folder / "metrics.json").read_text())
    assert [entry["ckpt_path"] for entry in summary["against"]] == [str(copy), str(run_ckpt)]
    assert (folder / "against-1" / "metrics.json").is_file()
    for branch, label in BRANCHES:
        differences = [rolled[run_ckpt][branch] - rolled[copy][branch], 0.0]  # first pair apart, second the same
        result = summary["difference"][branch]
        assert result["pairs"] == pytest.approx(differences, abs=1e-9)
        assert result["mean"] == pytest.approx(statistics.mean(differences), abs=1e-9)
        assert result["sd"] == pytest.approx(statistics.stdev(differences), abs=1e-9)
        assert (result["ahead"], result["behind"]) == (differences[0] > 0, differences[0] < 0)
        line = next(line for line in done.stdout.splitlines()[-3:] if line.strip().startswith(label))
        assert f"mean {statistics.mean(differences):+.2f} points" in line
        assert f"ahead on {result['ahead']}, behind on {result['behind']} of 2" in line
    refused = evaluate_on_shapes(image_dataset_root, "--ckpt-path", str(run_ckpt), str(copy), "--against", str(copy))
    assert refused.returncode == 2 and "--against names 1 checkpoint(s) for --ckpt-path's 2" in refused.stderr
    assert "TokenFusion" not in refused.stdout  # refused before any scoring


def test_evaluate_checks_every_checkpoint_before_scoring(trained, image_dataset_root, tmp_path):
    out, _, _ = trained
    missing = tmp_path / "seed-3" / "checkpoint.safetensors"
    done = evaluate_on_shapes(
        image_dataset_root,
        "--ckpt-path",
        str(out / "checkpoint.safetensors"),
        str(missing),
        "--output_dir",
        str(tmp_path / "eval"),
    )
    assert done.returncode == 2
    assert f"no such checkpoint: {missing}" in done.stderr
    assert "TokenFusion" not in done.stdout and not (tmp_path / "eval").exists()  # nothing scored, nothing written


def test_seeds_runs_each_seed_as_alone_then_summarises_and_resume_keeps_finished_seeds(
    trained, image_dataset_root, tiny_model_dir, tmp_path
):
    """--seeds 1 0: seed 0, run second in the same process, makes the tensors the single ``trained`` run (seed 0,
    its own process) made; the summary agrees with the statistics module on the runs' own metrics; --resume keeps a
    finished seed untouched and re-makes a missing one."""
    import statistics

    out, descriptions, _ = trained
    folder = tmp_path / "seeds"
    command = [*two_epoch_run(image_dataset_root, tiny_model_dir, descriptions, folder), "--seeds", "1", "0"]
    done = run(*command)
    assert done.returncode == 0, done.stderr[-3000:]
    alone, _ = read_adapted(out / "checkpoint.safetensors")
    second, _ = read_adapted(folder / "seed-0" / "checkpoint.safetensors")
    first, _ = read_adapted(folder / "seed-1" / "checkpoint.safetensors")
    assert alone.keys() == second.keys()
    assert all(torch.equal(alone[key], second[key]) for key in alone)  # nothing carried over from seed 1's run
    assert any(not torch.equal(first[key], second[key]) for key in first)  # the seed reached the run
    assert "seed 0 (2 of 2)" not in (folder / "seed-1" / "stdout_log.txt").read_text()  # each seed logs alone

    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["mode"] == "ours_train_spread" and summary["seeds"] == [1, 0]
    for branch, label in BRANCHES:
        values = [json.loads((folder / f"seed-{s}" / "metrics.json").read_text())[f"acc_{branch}"] for s in (1, 0)]
        spread = summary["spread"][branch]
        assert spread["mean"] == pytest.approx(statistics.mean(values))
        assert spread["sd"] == pytest.approx(statistics.stdev(values))
        assert (spread["low"], spread["high"]) == pytest.approx((min(values), max(values)))
        assert any(
            line.strip().startswith(label) and f"mean {statistics.mean(values):.2f}%" in line
            for line in done.stdout.splitlines()
        )

    kept = (folder / "seed-1" / "checkpoint.safetensors").stat().st_mtime_ns
    shutil.rmtree(folder / "seed-0")  # as if the run had been killed before seed 0 began
    resumed = run(*command, "--resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "seed 1 (1 of 2): finished earlier, kept" in resumed.stderr
    assert (folder / "seed-1" / "checkpoint.safetensors").stat().st_mtime_ns == kept
    again, _ = read_adapted(folder / "seed-0" / "checkpoint.safetensors")
    assert all(torch.equal(alone[key], again[key]) for key in alone)
    assert json.loads((folder / "metrics.json").read_text())["spread"] == summary["spread"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seeds", "0", "0"], "--seeds: give distinct seeds"),
        (["--seeds", "0", "1", "--eval"], "does not combine with --seed, --eval"),
        (["--seeds", "0", "1", "--seed", "3"], "does not combine with --seed, --eval"),
        (["--seeds", "0", "1", "--resume", "checkpoint-last.pth"], "--seeds --resume: name the seeds' folder"),
        (["--seeds", "0", "1", "--resume", "no-such-folder"], "--seeds --resume: no folder 'no-such-folder'"),
    ],
)
def test_seeds_refuses_what_it_cannot_do_before_training(
    image_dataset_root, tiny_model_dir, tmp_path, monkeypatch, capsys, flags, message
):
    # In this process (train.py is this call and an exit): a refusal is argument checking, and a new interpreter
    # for each of the five would cost the suite half a minute.
    from microclip.cli import train

    monkeypatch.chdir(tmp_path)  # where a relative --resume is looked for
    descriptions = tmp_path / "unused.json"
    command = two_epoch_run(image_dataset_root, tiny_model_dir, descriptions, tmp_path / "out")
    assert command[0] == "train.py"
    assert train([*command[1:], *flags]) == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validation_scoring_leaves_the_run_unchanged(trained, image_dataset_root, tiny_model_dir, tmp_path):
    """The same run without --val_dataset ends with the same tensors and the same test accuracy: scoring a
    validation folder draws on no randomness the run's own training uses."""
    from safetensors.torch import load_file

    out, descriptions, _ = trained
    plain = tmp_path / "plain"
    done = run(*two_epoch_run(image_dataset_root, tiny_model_dir, descriptions, plain))
    assert done.returncode == 0, done.stderr[-3000:]
    with_val, without = load_file(out / "checkpoint.safetensors"), load_file(plain / "checkpoint.safetensors")
    assert set(with_val) == set(without) and all(torch.equal(with_val[k], without[k]) for k in with_val)
    metrics, plain_metrics = (json.loads((d / "metrics.json").read_text()) for d in (out, plain))
    assert metrics["acc"] == plain_metrics["acc"] and "val_acc" not in plain_metrics


def test_a_validation_folder_without_every_class_fails_before_anything_is_written(
    trained, image_dataset_root, tiny_model_dir, tmp_path, capsys
):
    from microclip.cli import train

    _, descriptions, _ = trained
    partial = tmp_path / "val"
    for name in ("blue bar", "green disc"):  # no "red square"
        shutil.copytree(image_dataset_root / "shapes" / "test" / name, partial / name)
    out = tmp_path / "run"
    command = two_epoch_run(image_dataset_root, tiny_model_dir, descriptions, out)[1:]  # in this process: a refusal
    assert train([*command, "--val_dataset", str(partial)]) == 2
    stderr = capsys.readouterr().err
    assert "--val_dataset" in stderr and "red square" in stderr
    assert not out.exists()


def evaluate_epoch(out: Path, dataset_root: Path, epoch: int) -> tuple[dict, dict]:
    """``evaluate.py`` on a --keep_epochs run's saved epoch: the log's row for that epoch, and the evaluation."""
    done = evaluate_on_shapes(
        dataset_root,
        "--ckpt-path",
        str(out / "epochs" / f"epoch-{epoch}.safetensors"),
        "--output_dir",
        str(out / f"eval-epoch-{epoch}"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][epoch]
    return logged, json.loads((out / f"eval-epoch-{epoch}" / "metrics.json").read_text())


def test_keep_epochs_saves_each_epoch_and_the_last_is_the_final_checkpoint(trained, image_dataset_root):
    from safetensors.torch import load_file

    out, _, _ = trained
    final = load_file(out / "checkpoint.safetensors")
    epochs = {n: load_file(out / "epochs" / f"epoch-{n}.safetensors") for n in (1, 2)}
    assert set(epochs[2]) == set(final)
    assert all(torch.equal(epochs[2][k], final[k]) for k in final)
    assert any(not torch.equal(epochs[1][k], final[k]) for k in final)  # training moved something after epoch 1
    # Epoch 1's checkpoint, evaluated on its own, gives the accuracy the log recorded at that epoch's end.
    logged, evaluated = evaluate_epoch(out, image_dataset_root, 1)
    assert logged["epoch"] == 1
    assert evaluated["acc"] == pytest.approx(logged["test_acc"])
    # ... and carries that epoch's label-free signs, as logged, for Explore's epoch view
    _, meta = read_adapted(out / "epochs" / "epoch-1.safetensors")
    signs = {k: meta.metrics[k] for k in ("agree_cls", "agree_fg", "shared_cls", "shared_fg", "shift_fg")}
    assert signs == {k: logged[f"train_{k}"] for k in signs}
    # ... and how many training images its labels gave each class (all of them, once), and each class's accuracy
    labels = meta.metrics["per_class"]["labels"]
    assert labels == logged["train_labels_per_class"] and list(labels) == ["blue bar", "green disc", "red square"]
    assert sum(labels.values()) == len(list((image_dataset_root / "shapes" / "train").rglob("*.png")))
    assert meta.metrics["per_class"]["acc"] == logged["test_per_class"]
    assert meta.metrics["per_class"]["confused_with"] == logged["test_confused_with"]
    for name, other in logged["test_confused_with"].items():  # a class is mistaken for another only where not 100%
        assert (other is None) == (logged["test_per_class"][name] == 100.0)
        assert other is None or (other[0] != name and 0 < other[1] <= 100 - logged["test_per_class"][name] + 1e-6)
    mean = sum(logged["test_per_class"].values()) / 3
    assert mean == pytest.approx(logged["test_mean_per_class"])
    # ... and `[FG]`'s shift as that epoch ended, which evaluate.py reads back to score `[FG]` without it
    shift = torch.tensor(meta.drift["fg_shift"])
    assert float(shift.norm()) == pytest.approx(logged["train_shift_fg"], abs=1e-6)
    assert evaluated["acc_fg_unshifted"] == pytest.approx(logged["test_acc_fg_unshifted"])
    final_shift = torch.tensor(read_adapted(out / "checkpoint.safetensors")[1].drift["fg_shift"])
    assert not torch.allclose(shift, final_shift)  # epoch 1's own, not the run's last
    torch.testing.assert_close(
        torch.tensor(read_adapted(out / "epochs" / "epoch-2.safetensors")[1].drift["fg_shift"]), final_shift
    )


def test_keep_epochs_saves_the_start_as_epoch_0(trained, image_dataset_root):
    from safetensors.torch import load_file

    from microclip.checkpoint import epochs_beside

    out, _, _ = trained
    assert [epoch for epoch, _ in epochs_beside(out / "checkpoint.safetensors")] == [0, 1, 2]
    start = load_file(out / "epochs" / "epoch-0.safetensors")
    projections = [k for k in start if k.startswith("soap.") and k.endswith("proj.weight")]
    assert projections and all(torch.equal(start[k], torch.eye(start[k].shape[0])) for k in projections)
    logged, evaluated = evaluate_epoch(out, image_dataset_root, 0)
    assert logged["epoch"] == 0
    assert evaluated["acc_fused"] == pytest.approx(logged["test_acc_fused"])
    assert evaluated["acc_cls"] == pytest.approx(logged["test_acc_cls"])
    assert read_adapted(start_file := out / "epochs" / "epoch-0.safetensors")[1].drift == {}  # no shift yet
    assert "acc_fg_unshifted" not in evaluated and "shift_fg" not in read_adapted(start_file)[1].metrics
    # the start's per-class test accuracy (fused, the branch every epoch reports), and no labels yet
    per_class = read_adapted(start_file)[1].metrics["per_class"]
    assert set(per_class) == {"acc", "confused_with", "lead"} and per_class["acc"] == logged["test_per_class"]
    assert per_class["lead"] == logged["test_lead_per_class"]
    assert sum(per_class["acc"].values()) / 3 == pytest.approx(evaluated["mean_per_class"])  # evaluate.py's, fused


def test_explain_prints_branches_and_writes_json(trained, image_dataset_root, tmp_path):
    out, _, _ = trained
    image = next((image_dataset_root / "shapes" / "test" / "red square").glob("*.png"))
    done = explain(image, out / "checkpoint.safetensors", "--json", str(tmp_path / "e.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[CLS] only" in done.stdout and "contributions" in done.stdout
    data = json.loads((tmp_path / "e.json").read_text())
    assert len(data["soap_weights"]) == 4 and data["classes"] == ["blue bar", "green disc", "red square"]
    # the run recorded [FG]'s shared shift: [FG] is also shown without it, and its part of each fused logit
    unshifted = np.array(data["logits_fg_unshifted"])
    top = data["classes"][int(unshifted.argmax())]
    assert f"[FG] without its shared shift: {top} " in done.stdout
    part = (1 - data["ratio"]) * np.array(data["fg_shift_logits"])
    fused = int(np.argmax(data["logits_fused"]))
    assert f"(shift {part[fused]:+.3f})" in done.stdout


def test_explain_epochs_walks_the_run_s_saved_epochs(trained, image_dataset_root, tmp_path):

    import numpy as np
    from PIL import Image

    from microclip.checkpoint import load_model
    from microclip.explain import explain_image

    out, _, _ = trained
    image = next((image_dataset_root / "shapes" / "test" / "red square").glob("*.png"))
    checkpoint = str(out / "checkpoint.safetensors")
    done = explain(image, checkpoint, "--epochs", "--json", str(tmp_path / "e.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "e.json").read_text())["epochs"]
    assert [row["epoch"] for row in rows] == [0, 1, 2] and "start" in done.stdout and "epoch 2" in done.stdout
    # Each row against that epoch's file explained on its own, in this process.
    for row, path in zip(rows, ("epochs/epoch-0.safetensors", "epochs/epoch-1.safetensors", "checkpoint.safetensors")):
        alone = explain_image(load_model(out / path), Image.open(image))
        name, probability = alone.top_k("fused", 1)[0]
        assert row["answers"]["fused"] == {"class": name, "probability": pytest.approx(probability, abs=1e-6)}
        assert row["soap_top_weight"] == pytest.approx(float(np.max(alone.soap_weights)), abs=1e-6)
        if alone.logits_fg_unshifted is None:  # the start: no shift yet
            assert "fg_unshifted" not in row["answers"] and path.endswith("epoch-0.safetensors")
        else:  # [FG] without the shift that epoch's own file recorded
            name, probability = alone.top_k("fg_unshifted", 1)[0]
            assert row["answers"]["fg_unshifted"] == {
                "class": name,
                "probability": pytest.approx(probability, abs=1e-6),
            }
    assert "[FG] only, no shift" in done.stdout
    lone = tmp_path / "lone" / "checkpoint.safetensors"  # a checkpoint copied without its epochs
    lone.parent.mkdir()
    shutil.copy(checkpoint, lone)
    done = explain(image, lone, "--epochs")
    assert done.returncode == 2 and "--keep_epochs" in done.stderr


def test_explain_a_folder_writes_the_bundle_of_the_app(trained, image_dataset_root, tmp_path):
    import zipfile

    import numpy as np
    import torch

    from microclip.checkpoint import load_model
    from microclip.data.images import load_image
    from microclip.explain import explain_image

    out, _, _ = trained
    folder = tmp_path / "images"
    shutil.copytree(image_dataset_root / "shapes" / "test" / "green disc", folder / "discs")
    (folder / "notes.png").write_bytes(b"not a picture")
    bundle = tmp_path / "b.zip"
    done = explain(folder, out / "checkpoint.safetensors", "--out", str(bundle))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 explained, 1 skipped" in done.stdout
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        data = json.loads(zf.read("explanations.json"))
    assert {"predictions.csv", "explanations.json", "skipped.csv", "settings.json"} <= names
    assert sum(n.startswith("overlays/") for n in names) == 4
    # each record is what the single-image explanation of that file gives
    model = load_model(out / "checkpoint.safetensors")
    first = data["images"][0]
    with torch.no_grad():
        expected = explain_image(model, load_image(folder / first["file"]))
    np.testing.assert_allclose(first["soap_weights"], expected.soap_weights, atol=1e-5)
    np.testing.assert_allclose(first["logits"]["fused"], expected.logits_fused, atol=1e-4)


def test_explain_one_image_with_out_writes_a_bundle_of_one(trained, image_dataset_root, tmp_path):
    """``explain IMAGE --out B.zip`` (the flag was ignored for one image): the bundle of a folder holding only it,
    its settings naming the file given; a file that is not a picture is an error and writes nothing."""
    import zipfile

    import numpy as np

    from microclip.checkpoint import load_model
    from microclip.data.images import load_image
    from microclip.explain import explain_image

    out, _, _ = trained
    image = next((image_dataset_root / "shapes" / "test" / "red square").iterdir())
    done = explain(image, out / "checkpoint.safetensors", "--out", str(tmp_path / "one.zip"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 explained, 0 skipped" in done.stdout
    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        names = set(zf.namelist())
        record = json.loads(zf.read("explanations.json"))["images"]
        settings = json.loads(zf.read("settings.json"))
    assert [n for n in names if n.startswith("overlays/")] == [f"overlays/0000_{image.name}"]
    assert len(record) == 1 and settings["input"] == str(image)
    expected = explain_image(load_model(out / "checkpoint.safetensors"), load_image(image))
    np.testing.assert_allclose(record[0]["logits"]["fused"], expected.logits_fused, atol=1e-4)
    text = tmp_path / "notes.png"
    text.write_bytes(b"not a picture")
    bad = explain(text, out / "checkpoint.safetensors", "--out", str(tmp_path / "bad.zip"))
    assert bad.returncode == 2 and "notes.png" in bad.stderr and not (tmp_path / "bad.zip").exists()


def test_missing_descriptions_are_named(trained, image_dataset_root, tiny_model_dir, tmp_path):
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"blue bar": ["a blue bar."]}))
    done = run(  # its own process: the command a user types, which must end in one line, not a traceback
        "train.py",
        "--dataset",
        str(image_dataset_root / "shapes"),
        "--clip_model",
        f"local-dir:{tiny_model_dir}",
        "--text_descriptions_path",
        str(partial),
        "--epochs",
        "1",
        "--output_dir",
        str(tmp_path / "o"),
    )
    assert done.returncode == 2
    assert "green disc" in done.stderr and "--allow_missing_descriptions" in done.stderr
    assert "Traceback" not in done.stderr


def test_corrupt_checkpoint_is_one_clear_error(tmp_path, image_dataset_root):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    done = run("evaluate.py", "--dataset", str(image_dataset_root / "shapes"), "--ckpt-path", str(bad))
    assert done.returncode == 2 and "not a readable safetensors" in done.stderr
    assert "Traceback" not in done.stderr


def _state_step(path: Path) -> int:
    import json as _json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as reader:
            return int(_json.loads(reader.metadata()["run_state"])["meta"]["global_step"])
    except Exception:  # noqa: BLE001 - the file may be mid-rename; try again
        return -1


def test_killed_training_resumes_to_the_uninterrupted_weights(image_dataset_root, tiny_model_dir, tmp_path):
    import signal
    import time

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "train.py",
            "--dataset",
            str(image_dataset_root / "shapes"),
            "--clip_model",
            f"local-dir:{tiny_model_dir}",
            "--no_descriptions",
            "--epochs",
            "4",
            "--batch_size",
            "4",
            "--n_crops",
            "2",
            "--save_every_steps",
            "1",
            "--eval_every",
            "0",
            "--no_progress",
            "--centre_values",  # its centre is run state too (tests/test_engine.py resumes the plain method)
            "--output_dir",
            str(out),
        ]

    full = subprocess.run(command(tmp_path / "full"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        command(killed_dir), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = killed_dir / "train_state.safetensors"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and _state_step(state) < 9:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)  # no clean-up, no final save
    process.wait()
    assert 0 < _state_step(state) < 24 and not (killed_dir / "checkpoint.safetensors").exists()

    resumed = subprocess.run(
        [*command(killed_dir)[:-2], "--resume", str(killed_dir)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, expected_meta = read_adapted(tmp_path / "full" / "checkpoint.safetensors")
    actual, actual_meta = read_adapted(killed_dir / "checkpoint.safetensors")
    assert "soap.value_centre" in expected
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)
    # [FG]'s shift is measured from the run's true start, not from the state the resumed process began with
    shifts = (torch.tensor(m.drift["fg_shift"]) for m in (actual_meta, expected_meta))
    torch.testing.assert_close(*shifts, rtol=0, atol=1e-6)


def test_train_stores_fg_s_shift_and_the_drift_command_measures_the_same(trained, image_dataset_root, tmp_path):

    out, _, _ = trained
    _, meta = read_adapted(out / "checkpoint.safetensors")
    stored = torch.tensor(meta.drift["fg_shift"])
    n_train = json.loads((out / "metrics.json").read_text())["num_train"]
    tensors, _ = read_adapted(out / "checkpoint.safetensors")
    assert meta.drift["images"] == n_train and stored.shape == (tensors["heads.w_star"].shape[1],)
    # Measured again from the checkpoint alone: the start rebuilt from its base, not the state train.py kept.
    copy = Path(shutil.copy(out / "checkpoint.safetensors", tmp_path / "copy.safetensors"))
    copy_meta = read_adapted(copy)[1]
    copy_meta.drift = {}
    save_adapted(copy, tensors, copy_meta)
    done = command_here(
        "-m", "microclip", "drift", "--ckpt-path", str(copy), "--dataset", str(image_dataset_root / "shapes"), "--write"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"measured on {n_train} train images" in done.stdout
    # and how much of it SOAP's value map makes through the token every image shares (tests/test_drift.py by hand)
    assert "the shift with only that part of W_v's change: length" in done.stdout
    remeasured = torch.tensor(read_adapted(copy)[1].drift["fg_shift"])
    assert torch.allclose(remeasured, stored, atol=1e-5)
    # what it prints per class is 100 × s · Ŵ*, from the file's own head
    w_hat = torch.nn.functional.normalize(tensors["heads.w_star"], dim=-1)
    part = 100 * stored @ w_hat.T
    top = int(part.argmax())
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith(meta.classes[top]))
    assert float(line.split()[-1]) == pytest.approx(float(part[top]), abs=2e-3)
    assert all(torch.equal(tensors[k], v) for k, v in read_adapted(copy)[0].items())  # --write keeps the tensors


def test_centre_values_trains_with_the_centre_measured_at_the_start_and_every_command_reads_it(
    image_dataset_root, tiny_model_dir, tmp_path
):
    from torch.utils.data import DataLoader

    from microclip.checkpoint import load_model, load_start_model
    from microclip.data.datasets import build_dataset
    from microclip.data.seeded import SeededDataset
    from microclip.data.transforms import test_transform
    from microclip.drift import mean_value_input

    shapes = str(image_dataset_root / "shapes")
    common = ["--dataset", shapes, "--train_config", "ours_vit_b_32_cupl_proto", "--no_descriptions"]
    done = run(
        "train.py", *common, "--clip_model", f"local-dir:{tiny_model_dir}", "--epochs", "1", "--batch_size", "8",
        "--n_crops", "2", "--centre_values", "--output_dir", str(tmp_path / "run"), "--no_progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    tensors, meta = read_adapted(ckpt)
    assert meta.method["centre_values"] is True
    # the start rebuilt from the base with the file's centre: what its value map is applied to has mean zero over
    # the training images (the centre is their mean token, as SOAP's attention weighs them)
    start = load_start_model(ckpt)
    images = SeededDataset(build_dataset(shapes, "train"), test_transform(start.backbone.image_size, crop="center"))
    residual = mean_value_input(start, (batch[0] for batch in DataLoader(images, batch_size=5)))
    again = tensors["soap.value_centre"]
    assert again.norm() > 0 and residual.norm() < 1e-5 * again.norm()
    # the trained model centres on it: its pooled [FG] token by hand from its own tensors
    model = load_model(ckpt)
    image = images[0][0][None]
    with torch.no_grad():
        out = model(image)
        weights, patches = out.soap.weights[0], out.tokens.patches[0]
        values = (patches - again) @ tensors["soap.value_proj.weight"].T + again
        pooled = (weights[:-1, None] * values).sum(0)
    assert torch.allclose(out.soap.pooled[0], pooled, atol=1e-4)
    assert not torch.equal(tensors["soap.value_proj.weight"], torch.eye(len(again)))  # it did train
    evaluated = command_here(
        "evaluate.py", "--dataset", shapes, "--ckpt-path", str(ckpt), "--output_dir", str(tmp_path / "ev")
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["acc"] == pytest.approx(metrics["acc"])


def test_an_epoch_whose_labels_never_named_a_class_is_a_warning(caplog):
    from types import SimpleNamespace

    from microclip.cli import EpochReport

    main = SimpleNamespace(is_main=True)
    row = {"epoch": 3, "train_labels_per_class": {"blue bar": 7, "green disc": 0, "red square": 0}}
    with caplog.at_level("WARNING", logger="microclip"):
        EpochReport().on_epoch_end(main, row)
        EpochReport().on_epoch_end(main, {"epoch": 4, "train_labels_per_class": {"blue bar": 7, "green disc": 1}})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["epoch 3: self-training's labels named no training image as green disc, red square"]


def test_evaluate_sweeps_the_fusion_ratio_from_one_forward_pass(rolled, image_dataset_root, tmp_path):
    """--fusion_sweep re-fuses the branch logits: at 0 it is [FG]-only, at 1 [CLS]-only, at the checkpoint's own ρ
    its fused answer (image by image against whole forward passes: tests/test_engine.py); summarised over
    checkpoints like the branches; a ρ outside 0..1 is refused."""
    import statistics

    ratios = ("0", "0.2", "0.5", "0.8", "1")
    folder = tmp_path / "swept"
    done = evaluate_on_shapes(
        image_dataset_root, "--ckpt-path", *map(str, rolled), "--fusion_sweep", *ratios, "--output_dir", str(folder)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((folder / "metrics.json").read_text())
    for run_metrics, accuracies in zip(summary["runs"], rolled.values()):
        swept = run_metrics["fused_by_fusion_ratio"]
        assert list(swept) == list(ratios)
        assert swept["0"] == pytest.approx(accuracies["fg"])
        assert swept["1"] == pytest.approx(accuracies["cls"])
        assert swept["0.5"] == pytest.approx(accuracies["fused"])  # the runs trained and answer with ρ 0.5
    assert any(len(set(run["fused_by_fusion_ratio"].values())) > 1 for run in summary["runs"]), (
        "every swept ρ scores alike: the sweep would not be tested"
    )
    for ratio in ratios:
        values = [run["fused_by_fusion_ratio"][ratio] for run in summary["runs"]]
        assert summary["spread"]["fused_by_fusion_ratio"][ratio]["mean"] == pytest.approx(statistics.mean(values))
        assert f"TokenFusion at ρ = {ratio}: top-1 mean {statistics.mean(values):.2f}%" in done.stdout

    first = str(next(iter(rolled)))
    refused = evaluate_on_shapes(image_dataset_root, "--ckpt-path", first, "--fusion_sweep", "0.5", "1.5")
    assert refused.returncode == 2 and "must be from 0 to 1, not 1.5" in refused.stderr


@pytest.mark.parametrize(
    ("flags", "query", "pool"),
    [
        ([], "ncut", "attention"),
        (["--use_global_feature_for_query"], "global", "attention"),
        (["--use_token_avg_for_query", "--use_naive_token_avg"], "token_avg", "naive_avg"),
        (["--use_random_selection_for_query", "--use_ncut_token_avg"], "random", "ncut_avg"),
        # two switches of one kind: the [CLS] query wins, and the foreground's plain mean over every token's
        (["--use_token_avg_for_query", "--use_global_feature_for_query"], "global", "attention"),
        (["--use_naive_token_avg", "--use_ncut_token_avg"], "ncut", "ncut_avg"),
    ],
)
def test_the_reference_s_soap_switches_choose_the_query_and_the_pooling(flags, query, pool):
    from microclip.cli import build_train_parser, method_config

    config = method_config(build_train_parser().parse_args(flags))
    assert (config.query, config.pool) == (query, pool)


def test_walkthrough_writes_the_app_s_page_for_each_image_as_a_handout(tmp_path):
    from studio.examples import example_images
    from studio.registry import TOY_ADAPTED, default_registry
    from ui.walkthrough import _walk

    if not TOY_ADAPTED.is_file():
        pytest.skip("the bundled toy-world model is not in this checkout")
    toy = next(p for p in example_images() if "toybird-" in p)
    photo = next(p for p in example_images() if "toybird-" not in p)
    done = command_here("-m", "microclip", "walkthrough", toy, photo, "--out", str(tmp_path / "pages"))
    assert done.returncode == 0, done.stderr
    registry = default_registry("cpu")
    for path in (toy, photo):
        page, _ = _walk(registry, path, None, "")  # the Walkthrough tab's page of the same picture and model
        written = tmp_path / "pages" / f"microclip-walkthrough-{Path(path).stem}.html"
        text = written.read_text(encoding="utf-8")
        assert f'<div id="walkthrough">{page}</div>' in text, written
        assert str(written) in done.stdout
    # the photo is outside the toy world: the page says so at the top, as the app does, and so does the command
    flagged = (tmp_path / "pages" / f"microclip-walkthrough-{Path(photo).stem}.html").read_text(encoding="utf-8")
    assert "This image looks outside the model&#x27;s world" in flagged
    # the toy bird's page ends with each of its parts erased in turn (the photo has none to erase)
    toy_page = (tmp_path / "pages" / f"microclip-walkthrough-{Path(toy).stem}.html").read_text(encoding="utf-8")
    assert "each part erased in turn" in toy_page and "each part erased in turn" not in flagged
    assert f"{Path(photo).name}: " in done.stdout and "(looks outside the model's world)" in done.stdout
    # one image and a name ending in .html: that file
    one = command_here("-m", "microclip", "walkthrough", toy, "--out", str(tmp_path / "mine.html"))
    assert one.returncode == 0 and (tmp_path / "mine.html").read_text().startswith("<!doctype html>")
    assert "A CLS-only baseline" not in (tmp_path / "mine.html").read_text(encoding="utf-8")
    # a CLS-only baseline's page says which row to read, as the app does
    tensors, meta = read_adapted(TOY_ADAPTED)
    meta.training = {**meta.training, "config": {**meta.training["config"], "mode": "baseline"}}
    save_adapted(tmp_path / "baseline.safetensors", tensors, meta)
    args = ("--ckpt-path", str(tmp_path / "baseline.safetensors"), "--out", str(tmp_path / "baseline.html"))
    assert command_here("-m", "microclip", "walkthrough", toy, *args).returncode == 0
    assert "A CLS-only baseline:" in (tmp_path / "baseline.html").read_text(encoding="utf-8")


def test_explain_says_when_a_picture_looks_outside_the_model_s_world(tmp_path):
    from microclip.resources import EXAMPLES_DIR
    from studio.registry import TOY_ADAPTED

    if not TOY_ADAPTED.is_file():
        pytest.skip("the bundled toy-world model is not in this checkout")
    photo = explain(EXAMPLES_DIR / "photo-grace-hopper.jpg", TOY_ADAPTED)
    assert photo.returncode == 0 and "⚠ This image looks outside the model's world" in photo.stdout
    bird = explain(EXAMPLES_DIR / "toybird-dastrel-wren.png", TOY_ADAPTED)
    assert bird.returncode == 0 and "outside the model" not in bird.stdout
    many = explain(EXAMPLES_DIR, TOY_ADAPTED, "--out", str(tmp_path / "b.zip"), "--no_overlays")
    flagged = {line.split(":")[0] for line in many.stdout.splitlines() if "looks outside the model’s world" in line}
    assert flagged == {"photo-grace-hopper.jpg", "scene-flower.jpg", "scene-sunset-bird.jpg"}


def test_walkthrough_checks_every_image_before_writing_any(tmp_path):
    from studio.examples import example_images

    toy = next(p for p in example_images() if "toybird-" in p)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = command_here("-m", "microclip", "walkthrough", toy, str(tmp_path / "nope.png"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "no such image file" in missing.stderr
    assert not list(tmp_path.glob("*.html"))  # nothing written: the missing file was named before the model loaded
    bad = command_here("-m", "microclip", "walkthrough", str(text), "--out", str(tmp_path))
    assert bad.returncode == 2 and "not an image" in bad.stderr


def test_walkthrough_and_explain_among_your_own_classes(tmp_path):
    """``--classname FILE``: the pictures among a user's own classes, as the app's typed class names: the same page
    as the Walkthrough tab's under the same names (string equality), the same probabilities as the app's model for
    them, and the app's flags (a word the toy CLIP never read; one class only)."""
    from microclip.data.images import load_image
    from microclip.explain import explain_image
    from microclip.resources import EXAMPLES_DIR
    from studio.registry import TOY_ADAPTED, default_registry
    from ui.walkthrough import _walk

    if not TOY_ADAPTED.is_file():
        pytest.skip("the bundled toy-world model is not in this checkout")
    toy = EXAMPLES_DIR / "toybird-dastrel-wren.png"
    names = ["dastrel wren", "zorsaik wren", "blue jay"]
    (tmp_path / "own.txt").write_text("\n".join(names) + "\n")
    done = command_here("-m", "microclip", "walkthrough", str(toy), "--classname", str(tmp_path / "own.txt"),
                        "--out", str(tmp_path / "own.html"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    registry = default_registry("cpu")
    page, _ = _walk(registry, str(toy), None, ", ".join(names))  # the tab's page under the typed names
    written = (tmp_path / "own.html").read_text(encoding="utf-8")
    assert f'<div id="walkthrough">{page}</div>' in written
    assert "Words this model never saw in pretraining" in written and "*blue jay* (jay)" in page

    told = explain(toy, TOY_ADAPTED, "--classname", str(tmp_path / "own.txt"))
    assert told.returncode == 0, told.stderr
    expected = explain_image(registry.with_classes(None, names), load_image(toy))
    fused = ", ".join(f"{name} {prob:.1%}" for name, prob in expected.top_k("fused", 5))
    assert f"TokenFusion  {fused}" in told.stdout and "never saw in pretraining: *blue jay* (jay)" in told.stdout
    (tmp_path / "one.txt").write_text("dastrel wren\n")
    one = explain(toy, TOY_ADAPTED, "--classname", str(tmp_path / "one.txt"))
    assert one.returncode == 0 and "One class only" in one.stdout and "dastrel wren 100.0%" in one.stdout
    both = explain(toy, TOY_ADAPTED, "--classname", str(tmp_path / "one.txt"), "--epochs")
    assert both.returncode == 2 and "leave out --classname" in both.stderr
