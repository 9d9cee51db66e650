"""The adaptation runner: real runs on the tiny random ViT, in its background thread."""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLED_TOY_MODEL, CLASSES

from microclip.checkpoint import load_model, read_adapted, read_meta
from microclip.model import MethodConfig
from microclip.recipe import Recipe
from studio.adapt_request import AdaptLimits, AdaptRequest
from studio.jobs import AdaptationRunner, JobStatus, QueueFullError, status_markdown
from studio.registry import ModelRegistry


@pytest.fixture(scope="module")
def registry(tiny_model_dir) -> ModelRegistry:
    registry = ModelRegistry("cpu")
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, "tiny")
    return registry


@pytest.fixture
def train_dir(image_dataset_root) -> Path:
    return image_dataset_root / "shapes" / "train"


def request(train_dir: Path, **overrides) -> AdaptRequest:
    values = dict(source="folder", path=str(train_dir), model_name="tiny", steps=3, batch_size=4, n_crops=2, n_probes=2)
    return AdaptRequest(**{**values, **overrides})


def wait_for_step(runner: AdaptationRunner, job_id: str, step: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while runner.status(job_id).step < step:
        assert not runner.status(job_id).status.finished, runner.status(job_id).message
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


def test_a_request_adapts_with_the_entry_s_method_unless_it_asks_for_centring(registry):
    entry = registry.get("tiny").model.config
    assert not entry.centre_values
    kept = AdaptRequest().method(entry)
    assert kept == entry and kept is not entry  # a copy: the entry's own is never changed
    centred = AdaptRequest(centre_values=True).method(entry)
    assert centred.centre_values and centred == replace(entry, centre_values=True)
    assert AdaptRequest(centre_values=False).method(centred) == entry


def test_dka_s_gamma_decides_which_half_labels_a_run_of_the_toy_model(tmp_path):
    """γ = 1: every pseudo-label is the static half's (crops against W_LLM); γ = 0: the dynamic half's (the fused weak
    view against W*). On the bundled toy model the two halves disagree, so each run's labels tell which one it used."""
    toy = ModelRegistry("cpu")
    toy.add_checkpoint(BUNDLED_TOY_MODEL, "toy", default=True)
    runner = AdaptationRunner(toy, tmp_path)
    halves = {1.0: "pl_acc_static", 0.0: "pl_acc_dynamic"}
    toy_run = dict(source="toybirds", toy_per_class=2, steps=2, batch_size=16, n_crops=2, n_probes=0)
    rows = {}
    for gamma, half in halves.items():
        snap = runner.wait(runner.submit(AdaptRequest(**toy_run, gamma=gamma)), timeout=120)
        assert snap.status == JobStatus.DONE, snap.message
        rows[gamma] = snap.metrics
        assert [row["pl_acc"] for row in snap.metrics] == [row[half] for row in snap.metrics]
    assert any(row["pl_acc_static"] != row["pl_acc_dynamic"] for runs in rows.values() for row in runs), rows
    assert AdaptRequest().recipe("toybirds", 32).gamma == Recipe.for_dataset("toybirds").gamma  # left out: the config's
    with pytest.raises(ValueError, match="gamma = 1.5 is outside the allowed range 0..1"):
        AdaptRequest(gamma=1.5).check(AdaptLimits())


def test_a_request_s_fairness_weight_weighs_the_fairness_term_in_every_step_s_loss(registry, train_dir, tmp_path):
    runner = AdaptationRunner(registry, tmp_path)
    for weight in (4.0, 0.0):
        snap = runner.wait(runner.submit(request(train_dir, fairness_weight=weight)), timeout=60)
        assert snap.status == JobStatus.DONE, snap.message
        assert len(snap.metrics) == 3 and all(row["fair"] != 0 for row in snap.metrics)
        for row in snap.metrics:  # ce_weight is the recipe's 1
            assert row["loss"] == pytest.approx(row["ce"] + weight * row["fair"], rel=1e-5)
    with pytest.raises(ValueError, match="fairness weight 17 is outside the allowed range 0..16"):
        AdaptRequest(fairness_weight=17).check(AdaptLimits())
    assert AdaptRequest().recipe("toybirds", 32).fairness_weight == Recipe.for_dataset("toybirds").fairness_weight


def test_a_request_s_fusion_ratio_replaces_the_entry_s_and_nothing_else():
    entry = replace(MethodConfig(), fusion_ratio=0.7, centre_values=True)
    asked = AdaptRequest(fusion_ratio=0.3).method(entry)
    assert asked == replace(entry, fusion_ratio=0.3)  # the entry's other settings kept
    assert AdaptRequest().method(entry) == entry  # left out: the entry's own ρ
    assert AdaptRequest(fusion_ratio=0.3, centre_values=False).method(entry).centre_values is False
    with pytest.raises(ValueError, match="fusion ratio = 1.2 is outside the allowed range 0..1"):
        AdaptRequest(fusion_ratio=1.2).check(AdaptLimits())


def test_a_run_records_progress_metrics_and_probe_maps(registry, train_dir, tmp_path):
    runner = AdaptationRunner(registry, tmp_path)
    job_id = runner.submit(request(train_dir))
    snap = runner.wait(job_id, timeout=60)
    assert snap.status == JobStatus.DONE, snap.message
    assert (snap.step, snap.total_steps) == (3, 3)
    assert [row["step"] for row in snap.metrics] == [1, 2, 3]
    assert all(
        {"loss", "pl_conf", "pl_acc", "agree_cls", "agree_fg", "shared_cls", "shared_fg", "lr"} <= row.keys()
        for row in snap.metrics
    )
    assert snap.classes == sorted(CLASSES) and snap.labelled and snap.n_images == 24
    assert snap.probes_before.step == 0 and snap.probes_latest.step == 3
    assert len(snap.probes_before.explanations) == len(snap.probe_images) == 2
    assert snap.probe_images[0].shape == (32, 32, 3)
    assert snap.can_save and snap.saved_path is None
    assert list((tmp_path / "jobs").iterdir()) == []  # the per-job temp folder is gone


def test_typed_descriptions_adapt_as_a_file_would_and_a_typo_is_an_error(registry, train_dir, tmp_path):
    typed = {"red square": ["a red square shape."], "green disc": ["a green disc."], "blue bar": ["a blue bar."]}
    runner = AdaptationRunner(registry, tmp_path / "work")
    done = runner.wait(runner.submit(request(train_dir, steps=1, descriptions=typed)), 60)
    assert done.status == JobStatus.DONE, done.message
    saved = read_meta(runner.save(done.job_id))
    assert saved.descriptions == typed  # the run's model, and the checkpoint it saves, carry the typed sentences
    file = tmp_path / "typed.json"
    file.write_text(json.dumps(typed))
    by_file = runner.wait(runner.submit(request(train_dir, steps=1, descriptions_path=str(file))), 60)
    assert torch.equal(  # the same start as the same sentences in a file, so the same run
        load_model(runner.save(by_file.job_id)).heads.w_star, load_model(runner.save(done.job_id)).heads.w_star
    )
    misspelt = {**typed, "blue bra": ["a blue bar."]}
    failed = runner.wait(runner.submit(request(train_dir, steps=1, descriptions=misspelt)), 60)
    assert (
        failed.status == JobStatus.ERROR
        and "the typed descriptions name 'blue bra', none of the run's classes" in failed.error
    )
    partial = {k: v for k, v in typed.items() if k != "blue bar"}
    failed = runner.wait(runner.submit(request(train_dir, steps=1, descriptions=partial)), 60)
    assert "the typed text has no entry for class 'blue bar'" in failed.error
    assert "tick 'allow missing descriptions'" in failed.error
    with pytest.raises(ValueError, match="as a file or typed, not both"):
        runner.submit(request(train_dir, steps=1, descriptions=typed, descriptions_path=str(file)))


def test_stop_then_save_gives_a_loadable_registered_checkpoint(registry, train_dir, tmp_path):
    runner = AdaptationRunner(registry, tmp_path)
    job_id = runner.submit(request(train_dir, steps=200))
    with pytest.raises(ValueError, match="still going"):
        runner.save(job_id)
    wait_for_step(runner, job_id, 2)
    runner.request_probes(job_id)  # maps on demand, computed by the training thread between steps
    deadline = time.monotonic() + 60
    while runner.status(job_id).probes_latest is None:
        assert time.monotonic() < deadline, "no probe maps on demand"
        time.sleep(0.05)
    on_demand = runner.status(job_id).probes_latest
    assert 2 <= on_demand.step < 200 and len(on_demand.explanations) == 2
    runner.stop(job_id)
    snap = runner.wait(job_id, timeout=60)
    assert snap.status == JobStatus.STOPPED, snap.message
    assert snap.probes_latest.step == snap.step  # and fresh ones at the end
    assert 2 <= snap.step < 200 and len(snap.metrics) == snap.step
    path = runner.save(job_id, "my shapes")
    assert path.parent == tmp_path / "checkpoints" and path.suffix == ".safetensors"
    assert runner.save(job_id) == path  # saving twice gives the same file
    model = load_model(path)
    assert list(model.classes) == sorted(CLASSES)
    assert model.meta.metrics["steps"] == snap.step and model.meta.metrics["stopped"] is True
    assert "my shapes" in registry.names()
    registered = registry.get("my shapes").model
    assert torch.equal(registered.heads.w_star, model.heads.w_star)
    # The adapted W* moved away from its zero-shot start (same classes, same templates): the stopped
    # run's trained state was kept, not the initial one.
    zero_shot = registry.with_classes("tiny", sorted(CLASSES))
    assert zero_shot.classes == model.classes
    assert not torch.allclose(model.heads.w_star, zero_shot.heads.w_star)


def test_second_job_waits_with_its_position_and_a_third_is_refused(registry, train_dir, tmp_path):
    runner = AdaptationRunner(registry, tmp_path, max_waiting=1)
    first = runner.submit(request(train_dir, steps=200))
    second = runner.submit(request(train_dir, steps=1))
    assert runner.status(second).status == JobStatus.QUEUED
    wait_for_step(runner, first, 1)
    assert runner.status(second).position == 1
    with pytest.raises(QueueFullError, match="limit is 1"):
        runner.submit(request(train_dir, steps=1))
    runner.stop(first)
    snap = runner.wait(second, timeout=60)  # the waiting job runs once the first one has stopped
    assert snap.status == JobStatus.DONE and snap.step == 1, snap.message
    assert runner.status(first).status == JobStatus.STOPPED


def test_a_waiting_job_can_be_cancelled(registry, train_dir, tmp_path):
    runner = AdaptationRunner(registry, tmp_path, max_waiting=2)
    first = runner.submit(request(train_dir, steps=200))
    second = runner.submit(request(train_dir, steps=1))
    assert runner.stop(second).status == JobStatus.CANCELLED
    runner.stop(first)
    runner.wait(first, timeout=60)
    assert runner.status(second).step == 0
    with pytest.raises(ValueError, match="nothing to save"):
        runner.save(second)


def test_missing_descriptions_are_a_clear_error_unless_allowed(registry, train_dir, tmp_path):
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(json.dumps({"red square": ["a red square shape"], "green disc": ["a green disc"]}))
    runner = AdaptationRunner(registry, tmp_path / "work")
    failed = runner.wait(runner.submit(request(train_dir, steps=1, descriptions_path=str(descriptions))), 60)
    assert failed.status == JobStatus.ERROR
    assert "no entry for class 'blue bar'" in failed.error and "tick 'allow missing descriptions'" in failed.error
    allowed = runner.wait(
        runner.submit(
            request(train_dir, steps=1, descriptions_path=str(descriptions), allow_missing_descriptions=True)
        ),
        60,
    )
    assert allowed.status == JobStatus.DONE, allowed.message
    (tmp_path / "broken.json").write_text("{not json")
    broken = runner.wait(
        runner.submit(request(train_dir, steps=1, descriptions_path=str(tmp_path / "broken.json"))), 60
    )
    assert broken.status == JobStatus.ERROR and "broken.json" in broken.error


def test_a_zip_upload_trains_and_reports_skipped_files(registry, train_dir, tmp_path):
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in sorted(train_dir.rglob("*.png")):
            zf.write(image, f"shapes/{image.relative_to(train_dir).as_posix()}")
        zf.writestr("shapes/red square/notes.txt", "not an image")
        zf.writestr("shapes/green disc/broken.png", b"\x89PNG\r\n\x1a\n truncated")
    runner = AdaptationRunner(registry, tmp_path / "work")
    snap = runner.wait(runner.submit(request(train_dir, source="zip", path=str(archive), steps=1)), 60)
    assert snap.status == JobStatus.DONE, snap.message
    assert snap.classes == sorted(CLASSES) and snap.n_images == 24
    reasons = dict(snap.skipped)
    assert "shapes/red square/notes.txt" in reasons
    assert any("broken.png" in name for name in reasons)
    assert list((tmp_path / "work" / "jobs").iterdir()) == []  # the extracted copy is removed


def test_settings_outside_the_caps_and_server_paths_are_refused(registry, train_dir, tmp_path):
    runner = AdaptationRunner(registry, tmp_path)
    with pytest.raises(ValueError, match="steps = 500 is outside"):
        runner.submit(request(train_dir, steps=500))
    with pytest.raises(ValueError, match="learning rate"):
        runner.submit(request(train_dir, lr=1.0))
    locked = AdaptationRunner(registry, tmp_path, allow_local_paths=False)
    with pytest.raises(ValueError, match="upload a zip"):
        locked.submit(request(train_dir))


def test_a_saved_run_keeps_its_start_and_epochs_for_explore(registry, train_dir, tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    from microclip.checkpoint import epochs_beside
    from microclip.explain import explain_image

    runner = AdaptationRunner(registry, tmp_path)
    job_id = runner.submit(request(train_dir, steps=13))  # 24 images, batch 4: epochs end at steps 6, 12 and 13
    finished = runner.wait(job_id, timeout=60)
    assert finished.status == JobStatus.DONE
    path = runner.save(job_id, "shapes, epoch by epoch")
    files = epochs_beside(path)
    assert [epoch for epoch, _ in files] == [0, 1, 2, 3]
    final, last, start = load_file(path), load_file(files[-1][1]), load_file(files[0][1])
    assert all(torch.equal(final[k], last[k]) for k in final)  # the last epoch is the model saved
    assert all(torch.equal(start[k], torch.eye(len(start[k]))) for k in start if k.endswith("proj.weight"))
    # each epoch carries the label-free signs its run plotted, the mean of that epoch's steps (the start has none)
    steps = runner.status(job_id).metrics
    for epoch, (first, last) in {1: (0, 6), 2: (6, 12), 3: (12, 13)}.items():
        _, meta = read_adapted(files[epoch][1])
        for sign in ("agree_fg", "shared_fg"):
            assert meta.metrics[sign] == pytest.approx(np.mean([row[sign] for row in steps[first:last]]), abs=1e-6)
    assert "agree_fg" not in read_adapted(files[0][1])[1].metrics
    # ... and how many of the epoch's images its labels gave each class: 24 a whole epoch, 4 the one step of epoch 3
    for epoch, images in {1: 24, 2: 24, 3: 4}.items():
        labels = read_adapted(files[epoch][1])[1].metrics["per_class"]["labels"]
        assert list(labels) == list(registry.get("shapes, epoch by epoch").model.classes)
        assert sum(labels.values()) == images
    assert "per_class" not in read_adapted(files[0][1])[1].metrics  # no labels yet; the job has no test split
    # the status box says what the last epoch's labels gave each class, as its file has it
    assert finished.labels == (3, read_adapted(files[3][1])[1].metrics["per_class"]["labels"])
    assert "Without labels: in epoch 3 self-training labelled 4 training images" in status_markdown(finished)
    # the data is labelled by folders: how many of those labels were right, as the step's own accuracy says
    right = read_adapted(files[3][1])[1].metrics["per_class"]["labels_right"]
    assert finished.labels_right == right and 100 * sum(right.values()) / 4 == pytest.approx(steps[12]["pl_acc"])
    assert f"(self-training does not use them): {sum(right.values())} of 4 right." in status_markdown(finished)
    # each epoch carries `[FG]`'s shift as it ended (the last epoch's is the run's), its length among the signs
    shifts = {epoch: read_adapted(files[epoch][1])[1] for epoch in (1, 2, 3)}
    for meta in shifts.values():
        assert float(torch.tensor(meta.drift["fg_shift"]).norm()) == pytest.approx(meta.metrics["shift_fg"], abs=1e-6)
    final_shift = torch.tensor(read_adapted(path)[1].drift["fg_shift"])
    torch.testing.assert_close(torch.tensor(shifts[3].drift["fg_shift"]), final_shift)
    assert not torch.allclose(torch.tensor(shifts[1].drift["fg_shift"]), final_shift)
    assert read_adapted(files[0][1])[1].drift == {}
    # the status box listed the shift as each epoch ended, the lengths the saved epochs carry
    assert finished.shifts == [(epoch, pytest.approx(meta.metrics["shift_fg"])) for epoch, meta in shifts.items()]
    lengths = ", ".join(f"{meta.metrics['shift_fg']:.2f}" for meta in shifts.values())
    assert f"after epoch 1 on: {lengths}" in status_markdown(finished)
    # and the checkpoint carries the shift its [FG] took on, measured on the job's 24 images, as the run's end said
    drift = read_adapted(path)[1].drift
    assert drift["images"] == 24
    length = float(torch.tensor(drift["fg_shift"]).norm())
    assert f"one shared shift of length {length:.2f};" in finished.message
    timeline = registry.timeline("shapes, epoch by epoch")
    picture = Image.open(next(train_dir.rglob("*.png")))
    views = timeline.explain(picture)
    alone = explain_image(registry.get("shapes, epoch by epoch").model, picture)
    assert [v.epoch for v in views] == [0, 1, 2, 3]
    assert torch.allclose(torch.from_numpy(views[-1].explanation.logits_fused), torch.from_numpy(alone.logits_fused))


def test_a_stopped_run_ends_its_epochs_at_the_model_it_saves(registry, train_dir, tmp_path):
    from safetensors.torch import load_file

    from microclip.checkpoint import epochs_beside

    runner = AdaptationRunner(registry, tmp_path)
    job_id = runner.submit(request(train_dir, steps=200))
    wait_for_step(runner, job_id, 8)  # past the first epoch's end (6 steps)
    snap = runner.stop(job_id)
    snap = runner.wait(job_id, timeout=60)
    assert snap.status == JobStatus.STOPPED
    files = epochs_beside(runner.save(job_id, "stopped shapes"))
    assert [epoch for epoch, _ in files][-1] == (snap.step - 1) // 6 + 1  # the epoch its last step was in
    final, last = load_file(runner.save(job_id)), load_file(files[-1][1])
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_a_run_of_many_short_epochs_keeps_every_kth_and_the_last(registry, train_dir, tmp_path):
    from microclip.checkpoint import epochs_beside
    from studio.jobs import MAX_KEPT_EPOCHS

    runner = AdaptationRunner(registry, tmp_path)
    job_id = runner.submit(request(train_dir, steps=30, batch_size=24, n_probes=0))  # one step per epoch
    assert runner.wait(job_id, timeout=120).status == JobStatus.DONE
    kept = [epoch for epoch, _ in epochs_beside(runner.save(job_id, "short epochs"))]
    stride = -(-30 // MAX_KEPT_EPOCHS)
    assert kept == [0, *range(stride, 31, stride)] + ([30] if 30 % stride else [])
    assert len(kept) <= MAX_KEPT_EPOCHS + 2
