"""The Adapt and Batch tabs over HTTP: the app is launched on 127.0.0.1 with a real `AdaptationRunner`
on the tiny random ViT and driven with ``gradio_client`` (adapt_start / adapt_status / adapt_stop /
adapt_save, batch), including unsafe and broken uploads. Nothing under test is mocked."""

from __future__ import annotations

import csv
import io
import json
import re
import stat
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CLASSES, draw_sample, serve, tiny_base_registry, write_image_folder, zip_folder
from PIL import Image

from microclip.checkpoint import load_model, read_adapted
from microclip.data.descriptions import parse_description_lines
from microclip.recipe import Recipe
from studio.about import model_markdown
from studio.adapt_request import AdaptLimits, AdaptRequest
from studio.jobs import AdaptationRunner
from studio.registry import ModelRegistry
from ui.adapt import CENTRING, CUTS, LABELS, PRIORS, STRONG_VIEWS, entry_settings, label_settings
from ui.app import build_demo
from ui.layout import entry_fusion_ratio, entry_recipe

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

BASE = "tiny"
N_GOOD = 24  # readable images in good.zip (8 per class)
DISPLAY = dict(opacity=0.5, cmap="jet", clip_lo=0, clip_hi=100, threshold=0, raw_map="SOAP weight", numbers=False)
RUN = dict(
    per_class=8, class_text="", descriptions=None, allow=False, steps=200, batch_size=16, lr=1e-4, crops=4, probes=2
)
TIMEOUT = 60.0
CENTRED = next(choice for choice, centred in CENTRING.items() if centred)
AS_CHOSEN = next(iter(CENTRING))  # SOAP's values as the chosen model has them
# adapt_start's method settings after the probes, in its (positional) order, each at the chosen model's or the
# tiny base's recipe's value; a test takes those before the one it asks about (what it leaves out is the recipe's)
METHOD = dict(steps=1, centring=AS_CHOSEN, gamma=0.5, fairness=1.0, seed=0, fusion=0.5, query=AS_CHOSEN, pool=AS_CHOSEN)
METHOD |= dict(labels=next(iter(LABELS)), debias=0.0, prior=next(iter(PRIORS)), momentum=0.9, cut=next(iter(CUTS)))
METHOD |= dict(soap_lr=1.0, description_lines=None)


def settings_before(name: str) -> dict:
    names = list(METHOD)
    return {key: METHOD[key] for key in names[: names.index(name)]} if name in METHOD else dict(METHOD)


# (file, the message the user gets): each is refused by the batch endpoint and fails an adaptation run.
BAD_ZIPS = [
    ("traversal.zip", r"contains '\.\.' \(path traversal\)"),
    ("symlink.zip", "is a symbolic link"),
    ("bomb.zip", "looks like a zip bomb"),
    ("big-bomb.zip", "more than the limit of 524.3 MB"),
    ("empty.zip", "is an empty zip"),
    ("not-a-zip.zip", "is not a zip file"),
]


# ------------------------------------------------------------------ fixtures


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    draw_sample(seed % 3, np.random.default_rng(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """good.zip (class folders + a text file + a truncated PNG), the unsafe zips, an image, descriptions."""
    folder = tmp_path_factory.mktemp("uploads")
    images = write_image_folder(folder / "shapes", per_class=N_GOOD // len(CLASSES), seed=3)
    paths = {
        "good.zip": zip_folder(
            images,
            folder / "good.zip",
            prefix="shapes/",
            extra={"shapes/red square/notes.txt": b"not an image", "shapes/green disc/broken.png": png_bytes(0)[:60]},
        )
    }
    paths["image.png"] = folder / "image.png"
    draw_sample(1, np.random.default_rng(7), size=48).save(paths["image.png"])
    with zipfile.ZipFile(folder / "traversal.zip", "w") as zf:
        zf.writestr("shapes/red square/a.png", png_bytes(1))
        zf.writestr("../../escaped.png", png_bytes(2))
    with zipfile.ZipFile(folder / "symlink.zip", "w") as zf:
        zf.writestr("shapes/red square/a.png", png_bytes(1))
        link = zipfile.ZipInfo("shapes/red square/b.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(folder / "bomb.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("shapes/red square/a.png", png_bytes(1))
        zf.writestr("shapes/red square/zeros.png", bytes(8 * 2**20))  # 8 MB of zeros → ~8 kB: ratio ≈ 1000:1
    # A real bomb above the default 500 MiB total: 510 members of ~1 MB of zeros, each small enough to pass
    # the per-member ratio check (under its 1 MiB floor); 2.4 MB on disk.
    with zipfile.ZipFile(folder / "big-bomb.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zeros = bytes(1_048_000)
        for index in range(510):
            zf.writestr(f"shapes/blue bar/{index:04d}.png", zeros)
    zipfile.ZipFile(folder / "empty.zip", "w").close()
    (folder / "not-a-zip.zip").write_text("these are not the images you are looking for")
    (folder / "partial.json").write_text(
        json.dumps({"red square": ["a red square shape."], "green disc": ["a round green disc."]})
    )
    return paths | {name: folder / name for name, _ in BAD_ZIPS} | {"partial.json": folder / "partial.json"}


@dataclass
class App:
    url: str
    client: gradio_client.Client
    runner: AdaptationRunner
    batch_workspace: Path  # where the Batch tab writes (one folder per call)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir) -> App:
    root = tmp_path_factory.mktemp("app-adapt-batch")
    registry = tiny_base_registry(tiny_model_dir, BASE)
    runner = AdaptationRunner(registry, root / "runs")
    # The Batch tab makes its workspace (tempfile.mkdtemp, prefix microclip-batch-) when the app is built:
    # the one folder that appears meanwhile is it, so the test can look inside.
    pattern = "microclip-batch-*"
    existing = set(Path(tempfile.gettempdir()).glob(pattern))
    demo = build_demo(registry, runner)
    created = set(Path(tempfile.gettempdir()).glob(pattern)) - existing
    assert len(created) == 1, f"expected one new batch workspace in {tempfile.gettempdir()}, found {created}"
    (workspace,) = created
    with serve(demo) as url:
        yield App(url, gradio_client.Client(url, verbose=False), runner, workspace)
        for job_id in list(runner._jobs):  # never leave a training thread behind a failed test
            runner.stop(job_id)


# ------------------------------------------------------------------ helpers


@dataclass
class Status:
    text: str
    step: int
    total: int
    loss: dict
    accuracy: dict
    branches: dict  # how often each branch alone gives the fused answer (%)
    probes: str  # the probe cards (HTML): each probe's map before training and at the latest point, captioned
    skipped: str

    def captions(self, when: str) -> list[str]:
        """The full captions of the probe maps of one moment ("before", "step 12")."""
        return re.findall(rf"<figcaption>({re.escape(when)}: [^<]*)</figcaption>", self.probes)


def adapt_start(client, source: str, archive: Path | None = None, folder: str = "", **overrides) -> str:
    values = {**RUN, **overrides}
    if values["descriptions"] is not None:
        values["descriptions"] = handle_file(str(values["descriptions"]))
    job_id, text, progress, checkpoint, saved, _timer = client.predict(
        BASE, source, handle_file(str(archive)) if archive else None, folder, *values.values(), api_name="/adapt_start"
    )
    assert re.fullmatch(r"\d+-[0-9a-f]{8}", job_id) and checkpoint is None and saved == ""
    return job_id


def adapt_status(client, job_id: str) -> Status:
    outputs = client.predict(job_id, api_name="/adapt_status")
    text, progress, loss, _confidence, accuracy, branches, probes, skipped = outputs
    bar = re.search(r"value='(\d+)' max='(\d+)'", progress)
    step, total = (int(bar[1]), int(bar[2])) if bar else (0, 0)
    return Status(text, step, total, loss, accuracy, branches, probes or "", skipped)


def wait_until(client, job_id: str, done, what: str) -> Status:
    deadline = time.monotonic() + TIMEOUT
    while True:
        status = adapt_status(client, job_id)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"waited {TIMEOUT:.0f} s for {what}; last status: {status.text}"
        time.sleep(0.2)


def finished(status: Status) -> bool:
    return re.search(r"\*\*(done|stopped|finished|error|cancelled)", status.text) is not None


def explore(client, image: Path, model: str = BASE) -> list:
    return client.predict(handle_file(str(image)), model, "", None, 0.5, *DISPLAY.values(), api_name="/explore")


def labels_of(label: dict) -> set[str]:
    return {row["label"] for row in label["confidences"]}


def workspace_files(app: App) -> list[Path]:
    return sorted(p for p in app.batch_workspace.rglob("*") if p.is_file())


# ------------------------------------------------------------------ adapt


def test_adapt_and_batch_are_named_endpoints(app):
    names = set(app.client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/adapt_start", "/adapt_status", "/adapt_stop", "/adapt_save", "/batch"} <= names


def test_adapt_run_reports_progress_keeps_explore_serving_stops_and_saves(app, files):
    client = app.client
    job_id = adapt_start(client, "upload a zip", files["good.zip"])
    with pytest.raises(AppError, match="still going"):
        client.predict(job_id, "", api_name="/adapt_save")

    running = wait_until(client, job_id, lambda s: s.step >= 2 or finished(s), "two training steps")
    assert f"running: step {running.step}/200" in running.text, running.text
    assert running.total == 200 and "24 images, 3 classes (labelled by folders)" in running.text
    loss_steps = [step for step, _value, series in running.loss["data"] if series == "loss"]
    assert loss_steps[:2] == [1, 2] and len(loss_steps) >= running.step
    raw = {step: value for step, value, series in running.loss["data"] if series == "loss"}
    smoothed = {step: value for step, value, series in running.loss["data"] if series == "smoothed"}
    assert sorted(smoothed) == sorted(raw) and smoothed[1] == pytest.approx(raw[1])  # debiased: starts at the loss
    assert {series for *_, series in running.accuracy["data"]} >= {"combined", "fused · W*"}
    for plot in (running.loss, running.accuracy, running.branches):  # numeric axes, not one category per value
        assert plot["datatypes"] == {"step": "quantitative", "value": "quantitative", "series": "nominal"}
    agreement = {(step, series): value for step, value, series in running.branches["data"]}
    assert {series for _, series in agreement} == {"[CLS] alone", "[FG] alone"}
    assert all(0.0 <= value <= 100.0 for value in agreement.values()) and (1, "[FG] alone") in agreement
    captions = running.captions("before")
    assert len(captions) == 2 and all(
        re.search(r" → .+ \(\d+%\) · SOAP .+ \(lowest\) – .+ \(highest\)$", c) for c in captions
    ), captions  # whole captions, none cut
    assert "notes.txt" in running.skipped and "broken.png" in running.skipped

    # While the run goes, Explore still answers (the run is still going once the answer is back).
    summary, fused, *_ = explore(client, files["image.png"])
    assert "Prediction:" in summary and labels_of(fused) == set(CLASSES)
    during = adapt_status(client, job_id)
    assert not finished(during) and during.step < 200, during.text

    text, progress = client.predict(job_id, api_name="/adapt_stop")
    assert re.search(r"\*\*(stopping|stopped)", text), text
    stopped = wait_until(client, job_id, finished, "the run to stop")
    assert re.search(r"stopped after \d+ of 200 steps", stopped.text), stopped.text
    assert 2 <= stopped.step < 200
    assert len(stopped.captions(f"step {stopped.step}")) == 2, stopped.probes

    path, text, name = client.predict(job_id, "my shapes", api_name="/adapt_save")
    assert name == "my shapes" and "saved as **my shapes**" in text
    assert "keep the model they show" in text  # saving never switches another tab's model
    assert (app.runner.runs_dir / "my-shapes.safetensors").is_file()  # written into the runs folder
    # After a restart the runs folder lists it again, under its name and the date it was saved.
    relisted = ModelRegistry("cpu").add_saved_runs(app.runner.runs_dir)
    assert any(re.fullmatch(r"my shapes · saved \d{4}-\d\d-\d\d \d\d:\d\d", n) for n in relisted), relisted
    model = load_model(path)  # the downloaded checkpoint loads on its own
    assert list(model.classes) == sorted(CLASSES)
    assert model.meta.metrics["stopped"] is True and model.meta.metrics["steps"] == stopped.step
    assert model.meta.training["source"] == "zip"

    updates = client.predict(BASE, BASE, BASE, BASE, api_name="/list_models")
    assert all(["my shapes", "my shapes"] in update["choices"] for update in updates)
    summary, fused, *_ = explore(client, files["image.png"], model="my shapes")
    assert "Prediction:" in summary and labels_of(fused) == set(CLASSES)
    assert list((app.runner.workdir / "jobs").iterdir()) == []  # the job's extracted zip is gone


def test_status_of_an_unknown_job_says_so(app):
    assert "no adaptation job 'nope'" in adapt_status(app.client, "nope").text


def test_plots_before_the_first_step_get_no_table(app):
    """A plot with no point yet is sent None, not an empty table: Gradio's LinePlot builds its chart (the series'
    colours, the axes' types) from the first value it gets, and an empty table left the run's lines uncoloured and
    undrawn to its end. The first rows are typed (tests/test_viz_runs.py; the running run's tables below)."""
    _text, _progress, *plots = app.client.predict("nope", api_name="/adapt_status")[:6]
    assert plots == [None] * 4


def test_settings_outside_the_caps_are_refused(app, files):
    with pytest.raises(AppError, match="greater than maximum value 200"):
        adapt_start(app.client, "upload a zip", files["good.zip"], steps=500)


@pytest.mark.parametrize(("name", "message"), BAD_ZIPS)
def test_bad_zip_fails_the_adaptation_with_a_clear_message(app, files, name, message):
    job_id = adapt_start(app.client, "upload a zip", files[name], steps=1)
    status = wait_until(app.client, job_id, finished, "the run to fail")
    assert status.text.startswith("**error:") and re.search(message, status.text), status.text
    assert list((app.runner.workdir / "jobs").iterdir()) == []


def test_descriptions_missing_classes_are_a_clear_error_and_the_runner_keeps_going(app, files):
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], steps=1, descriptions=files["partial.json"])
    status = wait_until(app.client, job_id, finished, "the run to fail")
    assert "no entry for class 'blue bar'" in status.text and "tick 'allow missing descriptions'" in status.text
    job_id = adapt_start(
        app.client, "upload a zip", files["good.zip"], steps=1, descriptions=files["partial.json"], allow=True
    )
    status = wait_until(app.client, job_id, finished, "a one-step run")
    assert "finished after 1 of 1 steps" in status.text, status.text


def test_a_run_can_centre_soap_s_values_and_saves_the_centre(app, files):
    # the tiny base is the reference's; "centred" adapts with train.py --centre_values's SOAP instead
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], steps=1, centring=CENTRED)
    status = wait_until(app.client, job_id, finished, "a one-step centred run")
    assert "finished after 1 of 1 steps" in status.text, status.text
    path, _text, _name = app.client.predict(job_id, "centred shapes", api_name="/adapt_save")
    model = load_model(path)
    assert model.config.centre_values and model.soap.value_centre.norm() > 0
    with pytest.raises(AppError, match="'sideways'.* is not in the list of choices"):
        adapt_start(app.client, "upload a zip", files["good.zip"], steps=1, centring="sideways")
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], steps=1)  # no choice: the entry's own
    wait_until(app.client, job_id, finished, "a one-step run")
    path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
    assert not load_model(path).config.centre_values


def test_a_run_takes_dka_s_gamma_and_the_fairness_weight_and_records_them(app, files):
    # what each does to the run is tested in tests/test_jobs.py (which half labels it, the loss's fairness term)
    settings = dict(steps=1, centring=AS_CHOSEN, gamma=0.8, fairness=4.0)
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings)
    wait_until(app.client, job_id, finished, "a one-step run")
    path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
    config = read_adapted(path)[1].training["config"]
    assert (config["gamma"], config["fairness_weight"]) == (0.8, 4.0)
    with pytest.raises(AppError, match="greater than maximum value 1"):
        adapt_start(app.client, "upload a zip", files["good.zip"], **{**settings, "gamma": 1.5})
    with pytest.raises(AppError, match="greater than maximum value 16"):
        adapt_start(app.client, "upload a zip", files["good.zip"], **{**settings, "fairness": 20.0})
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], steps=1)  # left out: the data set's recipe's
    wait_until(app.client, job_id, finished, "a one-step run")
    path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
    config, default = read_adapted(path)[1].training["config"], Recipe.for_dataset("default")
    assert (config["gamma"], config["fairness_weight"]) == (default.gamma, default.fairness_weight)


def test_a_run_takes_a_seed_that_repeats_it_and_records_it(app, files):
    settings = dict(steps=1, centring=AS_CHOSEN, gamma=0.5, fairness=1.0)  # positional: the seed is the last

    def one_step(seed: int) -> tuple[dict, Any]:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, seed=seed)
        wait_until(app.client, job_id, finished, f"a one-step run with seed {seed}")
        path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
        return read_adapted(path)

    (first, meta), (again, _), (other, other_meta) = one_step(1), one_step(1), one_step(2)
    assert (meta.training["config"]["seed"], other_meta.training["config"]["seed"]) == (1, 2)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)  # the seed reached the run: crops, order
    with pytest.raises(AppError, match="less than minimum value 0"):
        adapt_start(app.client, "upload a zip", files["good.zip"], **settings, seed=-1)


def test_a_run_takes_the_fusion_ratio_and_the_checkpoint_answers_with_it(app, files, tiny_model_dir):
    settings = dict(steps=1, centring=AS_CHOSEN, gamma=0.5, fairness=1.0, seed=0)  # positional: ρ is the last

    def one_step(**extra) -> tuple[str, str]:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, **extra)
        wait_until(app.client, job_id, finished, f"a one-step run with {extra or 'the default ρ'}")
        path, _text, name = app.client.predict(job_id, "", api_name="/adapt_save")
        return path, name

    (leaning, leaning_name), (default, _) = one_step(fusion=0.3), one_step()
    assert (load_model(leaning).config.fusion_ratio, load_model(default).config.fusion_ratio) == (0.3, 0.5)
    # choosing the saved entry in the Adapt tab starts its ρ slider at the entry's (the handler of the choice)
    assert entry_fusion_ratio(app.runner.registry, leaning_name) == 0.3
    assert entry_fusion_ratio(app.runner.registry, "no such model") == 0.5
    # nothing is loaded to read an entry's ρ: a checkpoint's is in its file's header, a base model's the default's
    listed = tiny_base_registry(tiny_model_dir, BASE)
    listed.add_checkpoint(leaning, "from its file")
    assert (listed.fusion_ratio("from its file"), listed.fusion_ratio(BASE)) == (0.3, 0.5)
    assert not listed._models
    with pytest.raises(KeyError, match="no model named"):
        listed.fusion_ratio("no such model")
    first, second = read_adapted(leaning)[0], read_adapted(default)[0]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # the loss weighed the branches differently
    with pytest.raises(AppError, match="greater than maximum value 1"):
        adapt_start(app.client, "upload a zip", files["good.zip"], **settings, fusion=1.5)


def test_a_run_takes_soap_s_query_and_pooling_and_the_checkpoint_answers_with_them(app, files):
    settings = dict(steps=1, centring=AS_CHOSEN, gamma=0.5, fairness=1.0, seed=0, fusion=0.5)  # query, pool last

    def one_step(query: str, pool: str = AS_CHOSEN) -> Any:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, query=query, pool=pool)
        wait_until(app.client, job_id, finished, f"a one-step run with the query {query!r} and pooling {pool!r}")
        path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
        return load_model(path)

    assert one_step("[CLS] (an ablation)").config.query == "global"
    chosen = one_step(AS_CHOSEN)
    assert (chosen.config.query, chosen.config.pool) == ("ncut", "attention")  # the tiny base's: the method's
    averaged = one_step(AS_CHOSEN, "the cut's foreground, a plain mean (an ablation)")
    assert (averaged.config.query, averaged.config.pool) == ("ncut", "ncut_avg")
    # a plain mean reads none of SOAP's projections, so a step leaves them at their identity start; attention's moves
    eye = torch.eye(averaged.soap.width)
    assert all(torch.equal(proj.weight, eye) for proj in (averaged.soap.query_proj, averaged.soap.value_proj))
    assert not torch.equal(chosen.soap.value_proj.weight, eye)
    with pytest.raises(AppError, match="'global'.* is not in the list of choices"):
        one_step("global")
    with pytest.raises(ValueError, match="unknown SOAP query 'random'"):  # its map changes from call to call
        AdaptRequest(soap_query="random").check(AdaptLimits())
    with pytest.raises(ValueError, match="unknown SOAP pooling 'max'"):
        AdaptRequest(soap_pool="max").check(AdaptLimits())


def test_a_run_takes_its_labels_from_the_method_the_cls_only_baseline_or_the_truth(app, files, tmp_path):
    settings = dict(steps=1, centring=AS_CHOSEN, gamma=0.5, fairness=1.0, seed=0, fusion=0.5, query=AS_CHOSEN)
    settings["pool"] = AS_CHOSEN  # every method setting is positional: the labels come after the pooling

    def one_step(labels: str, source: str = "upload a zip", **data) -> tuple[Status, Any, Any, list[dict]]:
        job_id = adapt_start(app.client, source, **{"archive": files["good.zip"], **data}, **settings, labels=labels)
        status = wait_until(app.client, job_id, finished, f"a one-step run on {labels!r}")
        path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
        return status, load_model(path), read_adapted(path)[1], app.runner.status(job_id).metrics

    truth = next(choice for choice, mode in LABELS.items() if mode == "fully_supervised")
    status, model, meta, metrics = one_step(truth)
    assert meta.mode == "fully_supervised" and "Supervised, not label-free" in status.text, status.text
    assert metrics[-1]["pl_acc"] == 100.0  # the step trained on the folders' own labels
    assert "fair" not in metrics[-1]  # and without the fairness term, as train.py --fully_supervised
    assert "Checked against the folders' classes" not in status.text  # the truth checked against itself
    assert "Supervised, not label-free" in model_markdown(app.runner.registry.get(meta.training["app_saved_name"]))
    baseline = next(choice for choice, mode in LABELS.items() if mode == "baseline")
    status, model, meta, metrics = one_step(baseline)
    assert meta.mode == "baseline" and "The CLS-only baseline" in status.text
    eye = torch.eye(model.soap.width)  # SOAP never trains in a CLS-only run; the probes name [CLS]'s answer
    assert all(torch.equal(proj.weight, eye) for proj in (model.soap.query_proj, model.soap.value_proj))
    assert status.captions("step 1") and all(" → [CLS] only: " in c for c in status.captions("step 1"))
    status, model, meta, _ = one_step(next(iter(LABELS)))  # the method's: no note, fused captions
    assert meta.mode == "microclip" and "label-free" not in status.text and "baseline" not in status.text
    assert not torch.equal(model.soap.value_proj.weight, eye)
    assert not any(" → [CLS] only: " in c for c in status.captions("step 1"))
    # the truth needs labels: images in one folder, the class names typed, is refused with what to do
    for index in range(4):
        draw_sample(index % 3, np.random.default_rng(index)).save(tmp_path / f"{index}.png")
    job_id = adapt_start(
        app.client,
        "folder on the server",
        folder=str(tmp_path),
        **{**settings, "class_text": ", ".join(CLASSES)},
        labels=truth,
    )
    status = wait_until(app.client, job_id, finished, "a supervised run on unlabelled images")
    assert "**error" in status.text and "one folder per class" in status.text, status.text
    with pytest.raises(AppError, match="'wca_baseline'.* is not in the list of choices"):
        one_step("wca_baseline")
    with pytest.raises(ValueError, match="unknown labels 'wca_baseline'"):
        AdaptRequest(mode="wca_baseline").check(AdaptLimits())


def test_a_run_takes_the_label_debiasing_and_records_it(app, files):
    settings = settings_before("debias")

    def one_step(**extra) -> tuple[dict, Any, str]:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **(settings | extra))
        status = wait_until(app.client, job_id, finished, f"a one-step run with {extra or 'no debiasing'}")
        path, _text, name = app.client.predict(job_id, "", api_name="/adapt_save")
        names.append(name)
        return *read_adapted(path), status.text

    names: list[str] = []
    shares = "the labels' own shares (round 47)"
    debiased, meta, said = one_step(debias=2.0, gamma=0.25, prior=shares, momentum=0.99)
    plain, plain_meta, plain_said = one_step()
    assert (meta.training["config"]["label_debias"], plain_meta.training["config"]["label_debias"]) == (2.0, 0.0)
    assert meta.training["config"]["label_debias_source"] == PRIORS[shares] == "labels"
    momenta = [m.training["config"]["label_debias_momentum"] for m in (meta, plain_meta)]
    assert momenta == [0.99, 0.9]  # left out: the data set's recipe's
    # choosing a saved entry starts the Adapt tab's λ, prior, momentum, γ and fairness controls at its own (the
    # choice's handler), a base model and an entry that cannot be read at the data sets' recipe
    registry, limits, scores = app.runner.registry, app.runner.limits, next(iter(PRIORS))
    assert label_settings(entry_recipe(registry, names[0]), limits) == (2.0, shares, 0.99, 0.25, 1.0)
    assert label_settings(entry_recipe(registry, names[1]), limits) == (0.0, scores, 0.9, 0.5, 1.0)
    default = label_settings(Recipe.for_dataset("default"), limits)
    assert label_settings(entry_recipe(registry, BASE), limits) == default
    assert label_settings(entry_recipe(registry, "no such model"), limits) == default
    # the status says how the run's labels were made, as the saved model's card will
    flags = "--label_debias 2 --label_debias_source labels --label_debias_momentum 0.99"
    assert f"**Not the reference's labels** (`train.py {flags}`)" in said, said
    assert "Not the reference's labels" not in plain_said, plain_said
    assert any(not torch.equal(debiased[k], plain[k]) for k in plain)  # other labels, another step
    with pytest.raises(AppError, match="greater than maximum value 4"):
        one_step(debias=5.0)
    with pytest.raises(ValueError, match="label debiasing -1 is outside the allowed range 0..4"):
        AdaptRequest(label_debias=-1.0).check(AdaptLimits())
    with pytest.raises(ValueError, match="unknown debiasing prior 'counts'; choose from scores, labels"):
        AdaptRequest(label_debias_source="counts").check(AdaptLimits())
    with pytest.raises(AppError, match="'counts'.* is not in the list of choices"):
        one_step(debias=1.0, prior="counts")
    with pytest.raises(AppError, match="greater than maximum value 0.99"):
        one_step(debias=1.0, prior=shares, momentum=1.0)
    with pytest.raises(ValueError, match="debiasing momentum 1 is outside the allowed range 0..0.99"):
        AdaptRequest(label_debias_momentum=1.0).check(AdaptLimits())


def test_a_run_s_curves_download_as_csv_one_row_per_step(app, files):
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], steps=3)
    wait_until(app.client, job_id, finished, "a three-step run")
    path = app.client.predict(job_id, api_name="/adapt_curves")
    with open(path, newline="", encoding="utf-8") as table:
        reader = csv.DictReader(table)
        header, rows = reader.fieldnames, list(reader)
    logged = app.runner.status(job_id).metrics
    assert header[0] == "step" and {"loss", "pl_conf", "pl_acc"} <= set(header)  # the zip's folders give labels
    assert [int(row["step"]) for row in rows] == [m["step"] for m in logged] == [1, 2, 3]
    for row, metrics in zip(rows, logged, strict=True):  # every logged value, to the printed digits
        assert all(float(row[key]) == pytest.approx(value, rel=1e-9) for key, value in metrics.items()), row
    with pytest.raises(AppError, match="No run yet: press Start first"):
        app.client.predict("", api_name="/adapt_curves")
    with pytest.raises(AppError, match="no adaptation job 'nope'"):
        app.client.predict("nope", api_name="/adapt_curves")


def test_a_run_takes_what_the_cut_reads_and_the_model_card_says_so(app, files):
    settings = settings_before("cut")

    def one_step(cut: str) -> tuple[Any, str]:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, cut=cut)
        wait_until(app.client, job_id, finished, f"a one-step run with the cut on {cut!r}")
        path, _text, name = app.client.predict(job_id, "", api_name="/adapt_save")
        return load_model(path), model_markdown(app.runner.registry.get(name))

    keys = next(choice for choice, read in CUTS.items() if read == "keys")
    (on_keys, card), (chosen, plain_card) = one_step(keys), one_step(next(iter(CUTS)))
    assert (on_keys.config.ncut_features, chosen.config.ncut_features) == ("keys", "values")  # the tiny base's
    assert "The cut on the keys" in card and "The cut on the keys" not in plain_card
    # the run trained on another cut: the query SOAP asked with differed, and so did the step it took
    assert not torch.equal(on_keys.soap.query_proj.weight, chosen.soap.query_proj.weight)
    with pytest.raises(AppError, match="'keys'.* is not in the list of choices"):
        one_step("keys")
    with pytest.raises(ValueError, match="unknown cut features 'queries'; choose from values, keys"):
        AdaptRequest(ncut_features="queries").check(AdaptLimits())


def test_a_run_takes_soap_s_share_of_the_learning_rate_and_a_choice_starts_at_the_model_s(app, files):
    settings = settings_before("soap_lr")  # every method setting before it

    def one_step(**extra) -> tuple[Any, Any, str]:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, **extra)
        wait_until(app.client, job_id, finished, f"a one-step run with {extra or 'the recipe'}")
        path, _text, name = app.client.predict(job_id, "", api_name="/adapt_save")
        return load_model(path), read_adapted(path)[1], name

    (frozen, meta, name), (plain, plain_meta, _) = one_step(soap_lr=0.0), one_step()
    assert (meta.training["config"]["soap_lr_scale"], plain_meta.training["config"]["soap_lr_scale"]) == (0.0, 1.0)
    eye = torch.eye(frozen.soap.width)  # frozen, SOAP stays at its identity start; the recipe's moves it
    assert all(torch.equal(proj.weight, eye) for proj in (frozen.soap.query_proj, frozen.soap.value_proj))
    assert not torch.equal(plain.soap.value_proj.weight, eye)
    # choosing the frozen run's model starts the slider at its 0, as ρ and the labels' settings start at its own
    assert entry_settings(app.runner.registry, app.runner.limits, name)[:2] == (0.5, 0.0)
    assert entry_settings(app.runner.registry, app.runner.limits, BASE)[1] == 1.0
    with pytest.raises(AppError, match="greater than maximum value 2"):
        one_step(soap_lr=3.0)
    with pytest.raises(ValueError, match="SOAP's share of the learning rate -1 is outside the allowed range 0..2"):
        AdaptRequest(soap_lr_scale=-1.0).check(AdaptLimits())


def test_a_run_takes_the_strong_view_and_a_choice_starts_at_the_model_s(app, files):
    settings = settings_before("strong_view")  # the last of adapt_start's parameters
    plain_view, reference = next(iter(STRONG_VIEWS)), "crop and flip only"
    assert STRONG_VIEWS[reference] == "none" and STRONG_VIEWS[plain_view] == "rand-m9-mstd0.5-inc1"

    def one_step(**extra) -> tuple[Any, Any, str]:
        job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, **extra)
        wait_until(app.client, job_id, finished, f"a one-step run with {extra or 'the recipe'}")
        path, _text, name = app.client.predict(job_id, "", api_name="/adapt_save")
        return load_model(path), read_adapted(path)[1], name

    (flat, meta, name), (plain, plain_meta, _) = one_step(strong_view=reference), one_step()
    assert (meta.training["config"]["aa"], plain_meta.training["config"]["aa"]) == ("none", "rand-m9-mstd0.5-inc1")
    # the same seed and data: only the view the loss saw differs, and so does the step it took
    assert not torch.equal(flat.soap.value_proj.weight, plain.soap.value_proj.weight)
    # choosing the run's model starts the control at its view; the tiny base at the data set's recipe's
    assert entry_settings(app.runner.registry, app.runner.limits, name)[-1] == reference
    assert entry_settings(app.runner.registry, app.runner.limits, BASE)[-1] == plain_view
    with pytest.raises(AppError, match="is not in the list of choices"):
        one_step(strong_view="rand-m3")
    with pytest.raises(ValueError, match="unknown auto-augment policy 'rand-q9'"):
        AdaptRequest(strong_view="rand-q9").check(AdaptLimits())
    AdaptRequest(strong_view="rand-m7-mstd0.5-inc1").check(AdaptLimits())  # any timm policy, from Python


def test_a_run_takes_typed_descriptions_and_says_which_line_is_not_one(app, files):
    settings = settings_before("description_lines")
    typed = "red square: a red square shape.\ngreen disc: a green disc.\n\nblue bar: a blue bar."
    job_id = adapt_start(app.client, "upload a zip", files["good.zip"], **settings, description_lines=typed)
    wait_until(app.client, job_id, finished, "a one-step run with typed descriptions")
    path, _text, _name = app.client.predict(job_id, "", api_name="/adapt_save")
    assert read_adapted(path)[1].descriptions == parse_description_lines(typed)
    with pytest.raises(AppError, match=re.escape("Typed descriptions: line 2: expected 'class name: sentence'")):
        adapt_start(app.client, "upload a zip", files["good.zip"], **settings, description_lines="a: b\nno colon")
    with pytest.raises(AppError, match="as a file or typed, not both"):
        adapt_start(
            app.client,
            "upload a zip",
            files["good.zip"],
            **{**settings, "descriptions": files["partial.json"]},
            description_lines=typed,
        )


# ------------------------------------------------------------------ explore under concurrent load


def test_concurrent_explore_requests_all_succeed(app, files):
    """Several users at once: Explore runs requests in parallel threads, each drawing its own maps and plot
    (matplotlib's mathtext parser is not thread-safe; a race once failed most concurrent requests)."""
    results: list[str] = []

    def user(client) -> None:
        try:
            results.append(explore(client, files["image.png"])[0])
        except Exception as error:  # noqa: BLE001 - collected and reported below
            results.append(f"failed: {error}")

    threads = [threading.Thread(target=user, args=(gradio_client.Client(app.url, verbose=False),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(results) == 4 and all("Prediction:" in r for r in results), [r[:200] for r in results]


# ------------------------------------------------------------------ batch


def batch(client, archive: Path, cap: int = 50):
    return client.predict(BASE, handle_file(str(archive)), "", cap, 0.5, api_name="/batch")


def test_batch_gives_a_gallery_a_table_and_a_complete_bundle(app, files):
    gallery, table, notes, bundle = batch(app.client, files["good.zip"])
    assert len(gallery) == N_GOOD
    assert all(re.match(r"shapes/.+\.png: .+ \(\d+%\)", item["caption"]) for item in gallery)
    assert Image.open(gallery[0]["image"]).size == (224, 224)
    assert table["headers"][:3] == ["file", "fused top-1", "fused p"] and len(table["data"]) == N_GOOD
    assert all(row[1] in CLASSES and 0 <= row[2] <= 1 for row in table["data"])
    assert "Skipped 2 file(s)" in notes and "notes.txt" in notes and "broken.png" in notes

    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        pngs = [n for n in names if n.startswith("overlays/") and n.endswith(".png")]
        assert len(pngs) == N_GOOD and Image.open(io.BytesIO(zf.read(pngs[0]))).size == (224, 224)
        rows = list(csv.DictReader(io.StringIO(zf.read("predictions.csv").decode())))
        explanations = json.loads(zf.read("explanations.json"))
        settings = json.loads(zf.read("settings.json"))
        skipped = zf.read("skipped.csv").decode()
    assert [row["file"] for row in rows] == [row[0] for row in table["data"]]
    assert explanations["classes"] == CLASSES and len(explanations["images"]) == N_GOOD
    record = explanations["images"][0]
    assert len(record["logits"]["fused"]) == len(CLASSES) and np.asarray(record["soap_weights"]).shape == (4, 4)
    assert sum(map(sum, record["soap_weights"])) + record["null_weight"] == pytest.approx(1.0, abs=1e-4)
    assert settings["model"] == BASE and settings["n_explained"] == N_GOOD and settings["n_skipped"] == 2
    assert "notes.txt" in skipped and "broken.png" in skipped

    # The workspace keeps the returned bundle and nothing else (no extracted images, no loose files).
    left = workspace_files(app)
    assert Path(bundle).name in [p.name for p in left]
    assert all(re.fullmatch(r"microclip-batch-[\d-]+\.zip", p.name) for p in left), left


@pytest.mark.parametrize(("name", "message"), BAD_ZIPS)
def test_bad_zip_is_refused_by_batch_and_the_app_keeps_serving(app, files, name, message):
    before = workspace_files(app)
    with pytest.raises(AppError, match=message):
        batch(app.client, files[name])
    assert set(workspace_files(app)) <= set(before)  # nothing extracted was left behind
    assert "3 classes" in app.client.predict(BASE, api_name="/model_classes")[0]["placeholder"]  # still serving


def test_batch_refuses_a_file_that_is_not_a_zip_by_its_type(app, files, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(AppError, match=r"Invalid file type.*\.zip"):
        batch(app.client, notes)


def test_batch_still_runs_after_the_bad_inputs_and_caps_the_images_by_name(app, files):
    """Runs after the refusals above: the batch slot (one at a time) was released each time."""
    gallery, table, notes, _bundle = batch(app.client, files["good.zip"], cap=5)
    assert len(gallery) == len(table["data"]) == 5
    assert [row[0] for row in table["data"]] == sorted(row[0] for row in table["data"])
    assert "took the first 5 of 25 image files" in notes  # broken.png counts as a file until it is read
