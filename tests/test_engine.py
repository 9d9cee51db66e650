from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_clip

from microclip.backbone import Backbone
from microclip.data.datasets import build_dataset
from microclip.data.transforms import SeededDataset, TrainViews, test_transform
from microclip.engine import (
    Callback,
    EvalResult,
    OptimizerStep,
    cosine_lr,
    evaluate,
    evaluate_as,
    fit,
    labels_given_record,
    own_lead,
    pseudo_label,
    train_step,
)
from microclip.heads import Heads
from microclip.losses import FairnessRegulariser
from microclip.model import MicroCLIP
from microclip.recipe import ConfigError, Recipe

ROOT = Path(__file__).resolve().parent.parent


def fresh_model() -> MicroCLIP:
    torch.manual_seed(0)
    heads = Heads(
        ["blue bar", "green disc", "red square"],
        F.normalize(torch.randn(3, 32), dim=-1),
        F.normalize(torch.randn(3, 32), dim=-1),
    )
    return MicroCLIP(Backbone(make_clip().visual), heads)


def train_set(root: Path) -> SeededDataset:
    base = build_dataset(str(root / "shapes"), "train")
    return SeededDataset(base, TrainViews(input_size=32, n_crops=2), seed=0)


def shapes_test_set(root: Path) -> SeededDataset:
    return SeededDataset(build_dataset(str(root / "shapes"), "test"), test_transform(32), seed=0)


CONFIG = Recipe(epochs=2, batch_size=8, n_crops=2, lr=1e-3, save_every_steps=1)


class Crash(Callback):
    """Dies without any clean-up after a given step, like a killed process."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, state, metrics) -> None:
        if state.global_step == self.at_step:
            raise SystemExit("killed")


def test_cosine_schedule_matches_reference_formula():
    total = 100
    for step in (0, 1, 50, 99):
        expected = 2e-6 + 0.5 * (1e-4 - 2e-6) * (1 + math.cos(math.pi * step / total))
        assert math.isclose(cosine_lr(step, total, 1e-4, 1e-6), expected)


def _reference_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0):
    """The reference's utils.cosine_scheduler (start_warmup_value 0, no warmup_steps), re-typed from its source."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(0, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array(
        [final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters)))) for i in iters]
    )
    return np.concatenate((warmup_schedule, schedule))


@pytest.mark.parametrize("warmup_epochs", [0, 1, 2])
def test_warmup_epochs_follow_the_reference_scheduler(warmup_epochs):
    epochs, per_epoch = 4, 5
    expected = _reference_cosine_scheduler(1e-4, 2e-6, epochs, per_epoch, warmup_epochs)
    warmup = Recipe(warmup_epochs=warmup_epochs).warmup(per_epoch)
    got = [cosine_lr(step, epochs * per_epoch, 1e-4, 1e-6, warmup) for step in range(epochs * per_epoch)]
    assert np.allclose(got, expected, rtol=1e-12, atol=0)
    assert Recipe(warmup_epochs=2, warmup_steps=3).warmup(per_epoch) == 3  # steps win, as in the reference


def test_each_class_s_commonest_wrong_answer_by_hand():
    # class a: 2 of 5 called b, 1 called c; class b: never wrong; class c: one of each other class (a tie: the lower);
    # class d: no test image
    targets = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    answers = torch.tensor([0, 1, 1, 2, 0, 1, 1, 1, 0, 2])
    result = EvalResult(n=10, predictions={"fused": answers}, targets=targets, classes=("a", "b", "c", "d"))
    assert result.commonest_wrong("fused") == {
        "a": ("b", 40.0),
        "b": None,
        "c": ("a", pytest.approx(100 / 3)),
        "d": None,
    }


def test_each_image_s_lead_and_each_class_s_mean_lead_by_hand():
    logits = torch.tensor([[5.0, 3.0, 1.0], [2.0, 4.0, 0.0], [0.0, 1.0, 7.0], [3.0, 0.0, 3.0]])
    targets = torch.tensor([0, 0, 2, 2])
    # right by 2; wrong by 2 (b leads); right by 6; a tie with a: a lead of 0, which is not right
    assert own_lead(logits, targets).tolist() == [2.0, -2.0, 6.0, 0.0]
    result = EvalResult(
        n=4,
        predictions={"fused": logits.argmax(1)},
        targets=targets,
        classes=("a", "b", "c"),
        leads={"fused": own_lead(logits, targets)},
    )
    assert result.per_class_lead("fused") == {"a": 0.0, "b": None, "c": 3.0}
    assert result.per_class_lead("cls") == {}  # a branch evaluated without leads
    unlabelled = EvalResult(n=4, predictions={"fused": logits.argmax(1)}, targets=None, classes=("a", "b", "c"))
    assert unlabelled.per_class_lead("fused") == {}


def test_evaluate_s_leads_are_each_image_s_logits_one_by_one(image_dataset_root):
    test = shapes_test_set(image_dataset_root)
    model = fresh_model()
    result = evaluate(model, test, batch_size=4)
    assert result.targets is not None and set(result.leads) == {"fused", "cls", "fg"}
    with torch.no_grad():
        for i in range(len(test)):
            image, label = test[i][0], int(test[i][1])
            logits = model(image[None]).logits
            for branch, row in (("fused", logits.fused[0]), ("cls", logits.cls[0]), ("fg", logits.fg[0])):
                best_other = max(float(v) for c, v in enumerate(row) if c != label)
                assert float(result.leads[branch][i]) == pytest.approx(float(row[label]) - best_other, abs=1e-4)
                assert (result.leads[branch][i] > 0) == (result.predictions[branch][i] == label)
    per_class = result.per_class_lead("fused")
    for index, name in enumerate(model.classes):
        chosen = result.targets == index
        assert per_class[name] == pytest.approx(float(result.leads["fused"][chosen].mean()))


def test_baselines_report_cls_only_accuracy():
    targets = torch.tensor([0, 1, 2, 1])
    result = EvalResult(
        n=4,
        predictions={
            "fused": torch.tensor([0, 0, 0, 0]),
            "cls": torch.tensor([0, 1, 2, 0]),
            "fg": torch.tensor([2, 2, 2, 2]),
        },
        targets=targets,
        classes=("a", "b", "c"),
    )
    cls_summary = result.summary(Recipe(mode="baseline").reported_branch)
    assert cls_summary["acc"] == pytest.approx(75.0) and cls_summary["acc_fused"] == pytest.approx(25.0)
    assert cls_summary["mean_per_class"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    assert Recipe(mode="wca_baseline").reported_branch == "cls"
    assert result.summary(Recipe().reported_branch)["acc"] == pytest.approx(25.0)


def test_baseline_run_logs_cls_accuracy_as_test_acc(image_dataset_root):
    test = shapes_test_set(image_dataset_root)
    config = Recipe(epochs=1, batch_size=8, n_crops=2, lr=1e-3, mode="baseline", max_steps=1)
    row = fit(fresh_model(), train_set(image_dataset_root), config, test_set=test).history[-1]
    assert row["test_acc"] == row["test_acc_cls"] and "test_acc_fused" in row


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        replace(CONFIG, soap_lr_scale=0.25, layernorm_lr_scale=2.0),
        replace(CONFIG, label_debias=1.0),
        replace(CONFIG, label_debias=1.0, label_debias_source="labels", label_debias_momentum=0.5),
    ],
    ids=["reference", "lr-scales", "debiased-labels", "debiased-by-label-shares"],
)
def test_resume_after_a_crash_ends_with_the_same_weights(image_dataset_root, tmp_path, config):
    uninterrupted = fresh_model()
    whole = fit(uninterrupted, train_set(image_dataset_root), config, state_path=tmp_path / "a.safetensors").history

    crashed = fresh_model()
    with pytest.raises(SystemExit):
        fit(
            crashed,
            train_set(image_dataset_root),
            config,
            callbacks=[Crash(at_step=5)],
            state_path=tmp_path / "b.safetensors",
        )
    # killed inside the second epoch (3 steps each): the state file holds step 4, one step into it
    resumed = fresh_model()  # a new process: nothing survives but the state file
    result = fit(resumed, train_set(image_dataset_root), config, state_path=tmp_path / "b.safetensors", resume=True)

    assert result.global_step == 6
    # the labels each class got in the epoch the crash cut in two are counted whole, as without the crash
    for key in ("train_labels_per_class", "train_labels_right_per_class", "train_labels_confused_with"):
        assert [row[key] for row in result.history] == [r[key] for r in whole], key
    # and its logged step means cover all its steps, not only those after the resume
    means = [{k: v for k, v in row.items() if k.startswith("train_") and isinstance(v, float)} for row in whole]
    assert means[1] and {k for k in result.history[1] if k in means[1]} == set(means[1])
    for row, expected_means in zip(result.history, means, strict=True):
        assert {k: row[k] for k in expected_means} == pytest.approx(expected_means, rel=1e-5, abs=1e-6)
    expected, actual = uninterrupted.adapted_state(), resumed.adapted_state()
    assert any(not torch.equal(expected[k], fresh_model().adapted_state()[k]) for k in expected)  # it trained
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_a_shift_probe_measures_each_epoch_without_changing_what_the_run_trains(image_dataset_root):
    from microclip.drift import ShiftProbe

    root = image_dataset_root / "shapes"
    test = SeededDataset(build_dataset(str(root), "test"), test_transform(32), seed=0)
    plain_images = SeededDataset(build_dataset(str(root), "train"), test_transform(32, crop="center"), seed=0)

    class Snapshots(Callback):
        def __init__(self) -> None:
            self.states: dict[int, dict[str, torch.Tensor]] = {}

        def on_epoch_end(self, state, metrics) -> None:
            self.states[metrics["epoch"]] = state.model.adapted_state()

    plain = fresh_model()
    fit(plain, train_set(image_dataset_root), CONFIG, test_set=test)
    probed, snapshots = fresh_model(), Snapshots()
    start = probed.adapted_state()
    rows = fit(
        probed,
        train_set(image_dataset_root),
        CONFIG,
        test_set=test,
        callbacks=[snapshots],
        shift_probe=ShiftProbe(start, plain_images, batch_size=5),
    ).history
    # the measures mid-run leave the run exactly as it is without them
    assert all(torch.equal(v, plain.adapted_state()[k]) for k, v in probed.adapted_state().items())
    assert "train_shift_fg" not in fit(fresh_model(), train_set(image_dataset_root), CONFIG).history[-1]
    # each epoch's shift, by hand: mean f over the plain training images at that epoch, minus at the start
    images = torch.stack([plain_images[i][0] for i in range(len(plain_images))])
    labels = torch.tensor([test[i][1] for i in range(len(test))])
    test_images = torch.stack([test[i][0] for i in range(len(test))])

    def mean_f(state: dict[str, torch.Tensor]) -> torch.Tensor:
        model = fresh_model().eval()
        model.load_adapted_state(state)
        with torch.no_grad():
            return model(images).fg_embed.mean(0)

    for row in rows:
        shift = mean_f(snapshots.states[row["epoch"]]) - mean_f(start)
        assert row["train_shift_fg"] == pytest.approx(float(shift.norm()), abs=1e-5)
        assert float(shift.norm()) > 1e-4  # it moved: not a measure of nothing
        # [FG] without it on the test images: argmax of normalize(f - s) · Ŵ*, counted by hand
        model = fresh_model().eval()
        model.load_adapted_state(snapshots.states[row["epoch"]])
        with torch.no_grad():
            out = model(test_images)
            f, g, w_hat = out.fg_embed, out.tokens.cls_embed, model.heads.w_star_hat()
            answers = (F.normalize(f - shift, dim=-1) @ w_hat.T).argmax(1)
            # the fused answer without the shift's part: ρ·100·g·Ŵ* + (1 − ρ)·100·(f − s)·Ŵ*
            rho = model.config.fusion_ratio
            fused = (rho * 100 * g @ w_hat.T + (1 - rho) * 100 * (f - shift) @ w_hat.T).argmax(1)
        assert row["test_acc_fg_unshifted"] == pytest.approx(100 * float((answers == labels).float().mean()))
        assert row["test_acc_fused_unshifted"] == pytest.approx(100 * float((fused == labels).float().mean()))
    assert probed.fg_shift is not None and float(probed.fg_shift.norm()) == pytest.approx(rows[-1]["train_shift_fg"])


def test_the_shift_is_measured_where_a_test_evaluation_is_due_or_every_epoch_when_asked(image_dataset_root):
    from microclip.drift import ShiftProbe

    root = image_dataset_root / "shapes"
    test = SeededDataset(build_dataset(str(root), "test"), test_transform(32), seed=0)
    plain_images = SeededDataset(build_dataset(str(root), "train"), test_transform(32, crop="center"), seed=0)
    config = replace(CONFIG, epochs=3, eval_every=2)

    def measured(test_set, each_epoch: bool) -> list[bool]:
        model = fresh_model()
        probe = ShiftProbe(model.adapted_state(), plain_images, batch_size=8)
        rows = fit(
            model, train_set(image_dataset_root), config, test_set, shift_probe=probe, shift_each_epoch=each_epoch
        ).history
        return ["train_shift_fg" in row for row in rows]

    assert measured(test, each_epoch=False) == [False, True, True]  # epoch 2 (every 2nd) and the last
    assert measured(None, each_epoch=False) == [False, False, False]  # nothing evaluated: measure_drift at the end
    assert measured(None, each_epoch=True) == [True, True, True]  # a run that keeps its epochs


def test_stop_request_ends_cleanly_and_keeps_state(image_dataset_root, tmp_path):
    class StopAt(Callback):
        def on_step_end(self, state, metrics):
            state.should_stop = state.global_step == 2

    model = fresh_model()
    result = fit(
        model, train_set(image_dataset_root), CONFIG, callbacks=[StopAt()], state_path=tmp_path / "s.safetensors"
    )
    assert result.stopped and result.global_step == 2
    assert (tmp_path / "s.safetensors").is_file()


def test_fully_supervised_mode_learns_the_toy_shapes(image_dataset_root):
    model = fresh_model()
    config = Recipe(epochs=6, batch_size=8, n_crops=1, lr=3e-2, mode="fully_supervised")
    test = shapes_test_set(image_dataset_root)
    before = evaluate(model, test).accuracy()
    rows = fit(model, train_set(image_dataset_root), config).history
    after = evaluate(model, test).accuracy()
    assert after > before  # the loop really optimises the trainable set
    # trained on the true labels, each epoch's label count per class is the training set's class count
    truth = np.bincount(build_dataset(str(image_dataset_root / "shapes"), "train").targets, minlength=3)
    expected = dict(zip(model.classes, truth.tolist(), strict=True))
    assert all(row["train_labels_per_class"] == expected for row in rows)
    assert all(row["train_labels_right_per_class"] == expected for row in rows)  # every label right
    assert all(set(row["train_labels_confused_with"].values()) == {None} for row in rows)


def test_the_labels_each_class_got_are_checked_against_the_true_classes(image_dataset_root):
    row = fit(fresh_model(), train_set(image_dataset_root), replace(CONFIG, epochs=1)).history[-1]
    counts, right = row["train_labels_per_class"], row["train_labels_right_per_class"]
    assert all(0 <= right[c] <= counts[c] for c in counts) and sum(counts.values()) == 24
    # three full batches of 8: the share of right labels is the mean of the steps' own pseudo-label accuracy
    assert 100 * sum(right.values()) / 24 == pytest.approx(row["train_pl_acc"])
    assert sum(right.values()) < 24  # self-training's labels, not the truth: something to check
    per_class = 8  # the shapes set has 8 training images a class
    for name, other in row["train_labels_confused_with"].items():
        if other is None:
            assert right[name] == per_class
        else:
            assert other[0] != name and 0 < other[1] * per_class / 100 <= per_class - right[name] + 1e-9


def test_the_labels_given_record_by_hand():
    classes = ("a", "b", "c")
    # rows: true a, b, c, then images without a true class; columns: the label given
    given = torch.tensor([[3, 1, 0], [2, 0, 2], [0, 0, 4], [0, 0, 0]])
    record = labels_given_record(given, classes)
    assert record["train_labels_per_class"] == {"a": 5, "b": 1, "c": 6}
    assert record["train_labels_right_per_class"] == {"a": 3, "b": 0, "c": 4}
    # b's images went to a and c equally: the lower index; c's were never wrong
    assert record["train_labels_confused_with"] == {"a": ["b", 25.0], "b": ["a", 50.0], "c": None}
    unlabelled = labels_given_record(torch.cat([given[:-1], torch.tensor([[0, 1, 0]])]), classes)
    assert unlabelled == {"train_labels_per_class": {"a": 5, "b": 2, "c": 6}}  # nothing to check the labels against


def test_an_unlabelled_training_set_logs_label_counts_only(image_dataset_root):
    class Unlabelled(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base, self.classes = base, base.classes

        def __len__(self):
            return len(self.base)

        def __getitem__(self, index):
            return self.base[index][0], -1

    base = Unlabelled(build_dataset(str(image_dataset_root / "shapes"), "train"))
    unlabelled = SeededDataset(base, TrainViews(input_size=32, n_crops=2), seed=0)
    row = fit(fresh_model(), unlabelled, replace(CONFIG, epochs=1)).history[-1]
    labelled = fit(fresh_model(), train_set(image_dataset_root), replace(CONFIG, epochs=1)).history[-1]
    assert row["train_labels_per_class"] == labelled["train_labels_per_class"]  # the labels never read the truth
    assert "train_labels_right_per_class" not in row and "train_labels_confused_with" not in row


def _train_command(root: Path, model_dir: Path, out: Path, batch: int) -> list[str]:
    return [
        "train.py",
        "--dataset",
        str(root / "shapes"),
        "--clip_model",
        f"local-dir:{model_dir}",
        "--no_descriptions",
        "--epochs",
        "1",
        "--batch_size",
        str(batch),
        "--n_crops",
        "2",
        "--output_dir",
        str(out),
        "--no_progress",
        "--seed",
        "3",
    ]


def test_ddp_on_two_cpu_processes_matches_one_process(image_dataset_root, tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = [sys.executable, *_train_command(image_dataset_root, tiny_model_dir, tmp_path / "one", 8)]
    subprocess.run(single, cwd=ROOT, env=env, check=True, capture_output=True, timeout=240)
    # two seeds in one torchrun (train.py --seeds): the process group outlives the first seed's run
    command = _train_command(image_dataset_root, tiny_model_dir, tmp_path / "seeds", 8)
    command[command.index("--seed") :] = ["--seeds", "3", "4"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", *command]
    done = subprocess.run(ddp, cwd=ROOT, env=env, capture_output=True, text=True, timeout=360)
    assert done.returncode == 0, done.stderr[-3000:]
    # the process group is destroyed before exit: left to it, Gloo's threads can abort a rank at the very end
    assert "terminate called" not in done.stderr
    assert sorted(json.loads((tmp_path / "seeds" / "metrics.json").read_text())["seeds"]) == [3, 4]

    from microclip.checkpoint import read_adapted

    two = tmp_path / "seeds" / "seed-3"  # seed 3 in two processes: the single run's seed
    # each process counts its half of the labels; the log has the epoch's whole count, as one process counts it
    counts = [
        [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][-1]
        for run in (tmp_path / "one", two)
    ]
    for key in ("train_labels_per_class", "train_labels_right_per_class", "train_labels_confused_with"):
        assert counts[1][key] == counts[0][key], key
    assert sum(counts[0]["train_labels_per_class"].values()) == len(
        build_dataset(str(image_dataset_root / "shapes"), "train")
    )
    one, _ = read_adapted(tmp_path / "one" / "checkpoint.safetensors")
    two, _ = read_adapted(two / "checkpoint.safetensors")
    assert not torch.all(one["backbone.visual.ln_post.weight"] == 1.0)  # it trained (LN gains start at 1)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    other, _ = read_adapted(tmp_path / "seeds" / "seed-4" / "checkpoint.safetensors")
    assert any(not torch.equal(other[k], two[k]) for k in two)  # the second seed ran as its own run


def test_bf16_autocast_trains_on_cpu(image_dataset_root):
    model = fresh_model()
    before = model.adapted_state()["heads.w_star"].clone()
    config = Recipe(epochs=1, batch_size=8, n_crops=2, amp="bf16", max_steps=2)
    result = fit(model, train_set(image_dataset_root), config)
    row = result.history[-1]
    assert result.global_step == 2 and all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    assert sum(row["train_labels_per_class"].values()) == 16  # two steps of 8
    assert not torch.equal(model.adapted_state()["heads.w_star"], before)
    assert model.heads.w_star.dtype == torch.float32  # autocast leaves the master weights in fp32


# --- per-part learning rates (--soap_lr_scale, --layernorm_lr_scale) ------------------------------------


def _one_step_delta(root: Path, **scales: float) -> dict[str, torch.Tensor]:
    model = fresh_model()
    before = {k: v.clone() for k, v in model.adapted_state().items()}
    fit(model, train_set(root), Recipe(epochs=1, batch_size=8, n_crops=2, lr=1e-3, max_steps=1, **scales))
    return {k: v - before[k] for k, v in model.adapted_state().items()}


def _part(name: str) -> str:
    return "soap" if name.startswith("soap.") else "layernorm" if name.startswith("backbone.") else "head"


def test_an_lr_scale_scales_that_parts_first_step_and_no_other(image_dataset_root):
    # AdamW's first step is lr * (m / sqrt(v) + wd * p) on the same gradient, so halving a part's lr
    # halves its step exactly; the other parts see the same gradient and take the same step
    full = _one_step_delta(image_dataset_root)
    for scaled in ("soap", "layernorm"):
        half = _one_step_delta(image_dataset_root, **{f"{scaled}_lr_scale": 0.5})
        for name in fresh_model().trainable_parameters():
            delta = full[name]
            expected = 0.5 * delta if _part(name) == scaled else delta
            assert delta.abs().max() > 0, name  # every adaptable part moved at scale 1
            torch.testing.assert_close(half[name], expected, rtol=0, atol=1e-6, msg=name)  # p - p0 rounds at p ~ 1


@pytest.mark.parametrize("frozen", ["soap", "layernorm"])
def test_an_lr_scale_of_zero_freezes_that_part_for_a_whole_run(image_dataset_root, frozen):
    start = fresh_model().adapted_state()
    model = fresh_model()
    fit(model, train_set(image_dataset_root), replace(CONFIG, **{f"{frozen}_lr_scale": 0.0}))
    trained = model.adapted_state()
    for name in model.trainable_parameters():
        assert torch.equal(trained[name], start[name]) == (_part(name) == frozen), name


def test_a_negative_lr_scale_is_refused():
    with pytest.raises(ConfigError, match="soap_lr_scale must be >= 0"):
        Recipe(epochs=1, soap_lr_scale=-0.1)


# --- --branch_ce_weight -------------------------------------------------------------------------------------


def _mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -torch.stack([row.log_softmax(0)[label] for row, label in zip(logits, labels)]).mean()


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_the_branch_loss_adds_each_branchs_cross_entropy_on_the_same_labels(weight):
    model = fresh_model().eval()
    views = torch.rand(4, 2 + 2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 1, 2, 1])
    config = Recipe(epochs=1, n_crops=2, branch_ce_weight=weight)
    step = train_step(model, model, views, targets, config, FairnessRegulariser(), torch.device("cpu"))

    labels, _ = pseudo_label(model, views, targets, config)
    logits = model(views[:, 1]).logits
    fairness = FairnessRegulariser()(logits.fused)
    expected = _mean_ce(logits.fused, labels) + fairness
    expected = expected + weight * 0.5 * (_mean_ce(logits.cls, labels) + _mean_ce(logits.fg, labels))
    torch.testing.assert_close(step.loss, expected, rtol=1e-5, atol=1e-5)
    assert ("branch_ce" in step.metrics) == (weight > 0)
    weak = model(views[:, 0]).logits
    for branch in ("cls", "fg"):
        agree = [int(row.argmax()) == int(f.argmax()) for row, f in zip(getattr(weak, branch), weak.fused)]
        assert step.metrics[f"agree_{branch}"] == pytest.approx(100.0 * sum(agree) / len(agree))


def test_amp_clipping_measures_only_the_parts_that_learn():
    model = fresh_model()
    ids = {id(p): n for n, p in model.trainable_parameters().items()}
    for scale, expected in ((1.0, set(ids.values())), (0.0, {n for n in ids.values() if not n.startswith("soap.")})):
        stepper = OptimizerStep(model, replace(CONFIG, amp="bf16", soap_lr_scale=scale), torch.device("cpu"))
        assert {ids[id(p)] for p in stepper.trainable} == expected


def test_a_swept_ratio_is_a_whole_evaluation_at_that_ratio(image_dataset_root):
    """Each swept branch predicts, image by image, what argmax(ρ·[CLS] + (1 − ρ)·[FG]) of a forward pass does, and
    what a whole evaluation at that ρ calls the fused answer; the reference's swapped test fusion puts a swept ρ
    on [FG] as it does the model's own."""
    test = shapes_test_set(image_dataset_root)
    model = fresh_model()
    with torch.no_grad():  # W*'s first class the mean [CLS], its second the mean [FG]: the two branches disagree
        out = model(torch.stack([test[i][0] for i in range(len(test))]))
        g, f = out.tokens.cls_embed.mean(0), out.fg_embed.mean(0)
        model.heads.w_star.copy_(F.normalize(torch.stack([g, f, g - f]), dim=-1))
    ratios = {"low": 0.2, "high": 0.8}
    swept = evaluate(model, test, batch_size=4, sweep=ratios)
    with torch.no_grad():
        for i in range(len(test)):
            logits = model(test[i][0][None]).logits
            for name, ratio in ratios.items():
                by_hand = (ratio * logits.cls[0] + (1 - ratio) * logits.fg[0]).argmax()
                assert int(swept.predictions[name][i]) == int(by_hand)
    for name, ratio in ratios.items():
        whole = evaluate(model, test, batch_size=4, ratio=ratio)
        assert torch.equal(swept.predictions[name], whole.predictions["fused"])
    assert not torch.equal(swept.predictions["low"], swept.predictions["high"]), "the two ratios agree on every image"
    swapped = evaluate_as(model, test, Recipe(eval_batch_size=4, test_fusion="reference"), "cpu", sweep=[0.2])
    assert torch.equal(swapped.predictions["fused@0.2"], swept.predictions["high"])


def test_debiased_labels_are_the_argmax_of_the_adjusted_scores_and_off_by_default(image_dataset_root):
    from microclip.labeling import LabelPrior

    model, data = fresh_model(), train_set(image_dataset_root)
    views = torch.stack([data[i][0] for i in range(8)])
    targets = torch.tensor([int(data[i][1]) for i in range(8)])
    unread = LabelPrior()
    plain, _ = pseudo_label(model, views, targets, CONFIG, unread)  # label_debias 0: the reference's labels
    assert torch.equal(plain, pseudo_label(model, views, targets, CONFIG)[0]) and unread.mean is None
    # the CLS-only baseline's scores, by hand: [CLS] of the weak view against Ŵ*, then 100·s − log p̄
    config, prior = replace(CONFIG, mode="baseline", label_debias=1.0), LabelPrior()
    debiased, _ = pseudo_label(model, views, targets, config, prior)
    with torch.no_grad():
        scores = model.encode_cls(views[:, 0]) @ model.heads.w_star_hat().T
    marginal = (100 * scores).softmax(1).mean(0)
    torch.testing.assert_close(prior.mean, marginal)
    assert torch.equal(debiased, (100 * scores - marginal.log()).argmax(1))
    with pytest.raises(ConfigError, match="label_debias must be >= 0"):
        Recipe(epochs=1, label_debias=-1.0)
