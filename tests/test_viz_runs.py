"""How a run reads in the browser (``viz.runs``, and ``studio.jobs``' views of a snapshot): the loss curve's
moving average against a direct sum, typed plot tables, the progress bar, the probe cards drawn from real
explanations of the tiny random ViT, the batch captions and the skipped-files lists."""

from __future__ import annotations

import re
from dataclasses import replace
from importlib.resources import files

import numpy as np
import pytest
import torch
from conftest import CLASSES, tiny_base_registry

from microclip.explain import explain_batch
from studio.jobs import (
    JobSnapshot,
    JobStatus,
    Probes,
    probes_html,
    probes_key,
    progress_html,
    skipped_markdown,
    status_markdown,
)
from viz import runs

CAPTION = re.compile(
    r"<figcaption>(?P<when>[^:<]+): (?P<label>[^<]*) → (?P<top>[^<]+) \((?P<p>\d+)%\) · "
    r"SOAP (?P<lo>\S+) \(lowest\) – (?P<hi>\S+) \(highest\)</figcaption>"
)


@pytest.fixture(scope="module")
def explanations(tiny_model_dir):
    model = tiny_base_registry(tiny_model_dir).get("tiny").model
    size = model.backbone.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    return images, explain_batch(model, images)


@pytest.fixture(scope="module")
def snapshot(explanations) -> JobSnapshot:
    """A finished run's snapshot with two probes (one label needing escapes), maps before and at step 7."""
    images, found = explanations
    pictures = [(t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in images[:2]]
    return JobSnapshot(
        job_id="1-abcdef12",
        status=JobStatus.DONE,
        message="done",
        step=7,
        total_steps=10,
        classes=list(CLASSES),
        n_images=24,
        labelled=True,
        probe_images=pictures,
        probe_labels=[CLASSES[0], "<b>&bird"],
        probes_before=Probes(0, found[:2]),
        probes_latest=Probes(7, found[1:3]),
        elapsed_s=12.4,
    )


def test_smoothing_is_the_debiased_moving_average():
    values = list(np.random.default_rng(1).normal(size=40))
    weight = runs.SMOOTHING
    direct = [
        sum((1 - weight) * weight ** (t - i) * values[i - 1] for i in range(1, t + 1)) / (1 - weight**t)
        for t in range(1, len(values) + 1)
    ]
    assert runs.smooth(values) == pytest.approx(direct, rel=1e-12, abs=1e-12)
    assert runs.smooth([3.0] * 5) == pytest.approx([3.0] * 5)  # debiased: no pull towards 0 at the start


def test_curves_are_typed_long_tables_even_when_empty():
    for frame in runs.curves([]):
        assert list(frame.columns) == ["step", "value", "series"] and len(frame) == 0
        assert [str(t) for t in frame.dtypes] == ["int64", "float64", "object"]
    metrics = [
        {"step": 1, "loss": 2.0, "pl_conf": 0.5, "pl_acc": 40.0, "pl_acc_dynamic": 30.0, "agree_fg": 90.0},
        {"step": 2, "lr": 1e-4},  # a row without the curves' keys adds no point
        {"step": 3, "loss": 1.0, "pl_conf": 0.6, "pl_acc": 50.0, "pl_acc_dynamic": 35.0, "agree_fg": 80.0},
    ]
    loss, confidence, accuracy, branches = runs.curves(metrics)
    raw = loss[loss.series == "loss"]
    smoothed = loss[loss.series == "smoothed"]
    assert list(raw.step) == list(smoothed.step) == [1, 3]
    assert list(smoothed.value) == pytest.approx(runs.smooth([2.0, 1.0]))
    assert list(confidence.series.unique()) == ["confidence"] and list(confidence.value) == [0.5, 0.6]
    assert set(accuracy.series) == {"combined", "fused · W*"}  # only the keys the rows carry
    assert list(branches.series.unique()) == ["[FG] alone"] and list(branches.value) == [90.0, 80.0]
    assert [str(t) for t in loss.dtypes] == ["int64", "float64", "object"]


def test_progress_bar():
    assert re.search(r"<progress value='3' max='10'", runs.progress_html(3, 10, 2.4))
    assert "step 3 / 10 · 2 s" in runs.progress_html(3, 10, 2.4)
    assert "max='1'" in runs.progress_html(0, 0, 0.0) and "step 0 / ?" in runs.progress_html(0, 0, 0.0)
    assert progress_html(None) == runs.NO_RUN_HTML


def test_probe_cards_carry_every_map_with_its_whole_caption(snapshot, explanations):
    page = probes_html(snapshot)
    rules = files("viz").joinpath("static/adapt.css").read_text(encoding="utf-8")
    assert page.startswith("<style>") and rules in page  # the package's stylesheet, whole
    assert page.count("<div class='ad-probe'>") == 2 and page.count("<figure class='ad-fig'>") == 4
    assert page.count("src='data:image/jpeg;base64,") == 4 and "&lt;b&gt;&amp;bird" in page and "<b>&bird" not in page
    captions = [m.groupdict() for m in CAPTION.finditer(page)]
    assert [c["when"] for c in captions] == ["before", "step 7", "before", "step 7"]
    _, found = explanations
    shown = [found[0], found[1], found[1], found[2]]  # before: probes 0, 1; step 7: the latest list's 0, 1
    for caption, explanation in zip(captions, shown):
        top = int(np.argmax(explanation.logits_fused))
        assert caption["top"] == explanation.classes[top]
        assert int(caption["p"]) == round(100 * float(explanation.probabilities("fused")[top]))
        assert float(caption["lo"]) == pytest.approx(explanation.soap_weights.min(), rel=1e-2)
        assert float(caption["hi"]) == pytest.approx(explanation.soap_weights.max(), rel=1e-2)


def test_probe_cards_say_when_a_moment_has_no_map_yet(snapshot):
    assert probes_html(None) == probes_html(replace(snapshot, probes_before=None)) == runs.NO_PROBES_HTML
    running = replace(snapshot, status=JobStatus.RUNNING, probes_latest=None)
    page = probes_html(running)
    assert page.count("<figure class='ad-fig ad-wait'>") == 2 and page.count("<figcaption>before: ") == 2
    assert "latest: at the end of the run, or press Refresh maps" in page
    assert "no maps" in probes_html(replace(snapshot, probes_latest=Probes(9, snapshot.probes_latest.explanations[:1])))


def test_probe_cards_are_drawn_again_only_when_their_maps_change(snapshot):
    same = replace(snapshot, step=9, metrics=[{"step": 9, "loss": 1.0}])
    assert probes_key(same) == probes_key(snapshot)
    assert probes_key(replace(snapshot, probes_latest=Probes(9, []))) != probes_key(snapshot)
    assert probes_key(replace(snapshot, status=JobStatus.RUNNING)) != probes_key(snapshot)


def test_status_text(snapshot):
    assert "No run yet" in status_markdown(None)
    text = status_markdown(replace(snapshot, saved_name="my run"))
    assert "24 images, 3 classes (labelled by folders)" in text and "saved as **my run**" in text
    assert "unlabelled" in status_markdown(replace(snapshot, labelled=False))


def test_skipped_files_are_listed_up_to_fifty():
    many = [(f"f{i}.png", "not an image") for i in range(60)]
    text = runs.skipped_markdown(many, "took the first 5", " (all in skipped.csv)")
    lines = text.splitlines()
    assert lines[:2] == ["took the first 5", "**Skipped 60 file(s):**"] and lines[2] == "- `f0.png`: not an image"
    assert len(lines) == 2 + 50 + 1 and lines[-1] == "- ... and 10 more (all in skipped.csv)"
    assert runs.skipped_markdown([], "a note") == "a note" and runs.skipped_markdown([]) == ""
    assert skipped_markdown(None) == "" and skipped_markdown(JobSnapshot("x")) == ""
    assert skipped_markdown(JobSnapshot("x", skipped=many[:2])).splitlines()[0] == "**Skipped 2 file(s):**"


def test_batch_caption_marks_disagreeing_branches(explanations):
    for explanation in explanations[1]:
        caption = runs.batch_caption("shapes/a.png", explanation)
        name, probability = explanation.top_k("fused", 1)[0]
        assert caption.startswith(f"shapes/a.png: {name} ({probability:.0%})")
        disagree = (
            len({int(np.argmax(x)) for x in (explanation.logits_fused, explanation.logits_cls, explanation.logits_fg)})
            > 1
        )
        assert ("⚠ branches disagree" in caption) == disagree
        assert re.search(r"SOAP \S+e[-+]\d+ \(blue\) – \S+e[-+]\d+ \(red\)$", caption)
        assert "outside the model" not in caption  # said only of a picture the world check flagged
        assert "⚠ outside the model’s world" in runs.batch_caption("shapes/a.png", explanation, outside=True)


def test_a_plain_mean_model_s_maps_are_not_called_soap(explanations):
    """A model adapted with a pooling ablation (Adapt's *SOAP's pooling*) has no attention: its captions say so."""
    from dataclasses import replace

    explanation = explanations[1][0]
    for pool in ("ncut_avg", "naive_avg"):
        plain = replace(explanation, pool=pool)
        assert " · plain-mean weights " in runs.probe_caption("a", plain, "now") and "SOAP" not in runs.probe_caption(
            "a", plain, "now"
        )
        assert "plain-mean weights" in runs.batch_caption("a.png", plain)
    assert " · SOAP " in runs.probe_caption("a", explanation, "now")
