"""Self-training epoch by epoch: the saved epochs found beside a checkpoint, the timeline checked against the models
the registry builds on its own (the shipped checkpoint at the end, the base zero-shot at the start), its words, and
the ``/epochs`` endpoint driven with ``gradio_client`` on a served app. Nothing under test is mocked."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import serve
from PIL import Image
from safetensors.torch import load_file

from microclip.checkpoint import CheckpointError, epochs_beside, read_adapted, save_adapted, saved_epochs
from microclip.explain import explain_image
from microclip.timeline import Timeline
from microclip.toyworld.truth import toy_truth
from studio.epochs import MAX_SPECIES_ROWS, species_markdown, timeline_markdown
from studio.registry import TOY_ADAPTED, default_registry

ROOT = Path(__file__).resolve().parent.parent
TOY_EXAMPLE = ROOT / "assets" / "examples" / "toybird-yovanel-warbler.png"
ADAPTED, BASE = "toybirds · microCLIP adapted", "toybirds · base zero-shot"
pytestmark = pytest.mark.skipif(not epochs_beside(TOY_ADAPTED), reason="the toy model's epochs are not shipped")


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.fixture(scope="module")
def views(registry):
    return registry.timeline(ADAPTED).explain(Image.open(TOY_EXAMPLE))


def test_the_bundled_run_ships_its_start_and_every_epoch_and_ends_at_the_shipped_checkpoint():
    files = epochs_beside(TOY_ADAPTED)
    _, meta = read_adapted(TOY_ADAPTED)
    assert [epoch for epoch, _ in files] == list(range(meta.training["config"]["epochs"] + 1))
    last, shipped = load_file(files[-1][1]), load_file(TOY_ADAPTED)
    assert set(last) == set(shipped) and all(torch.equal(last[k], shipped[k]) for k in shipped)


def test_the_timeline_ends_at_the_adapted_model_and_starts_at_the_base_zero_shot(registry, views):
    picture = Image.open(TOY_EXAMPLE)
    # Two models the registry builds its own way: the checkpoint through load_model, the base through
    # MicroCLIP.build with the descriptions (W* as self-training starts, SOAP at identity).
    for view, name in ((views[-1], ADAPTED), (views[0], BASE)):
        alone = explain_image(registry.get(name).model, picture)
        np.testing.assert_allclose(view.explanation.soap_weights, alone.soap_weights, atol=1e-6)
        np.testing.assert_allclose(view.explanation.logits_fused, alone.logits_fused, atol=1e-4)
        np.testing.assert_array_equal(view.explanation.ncut_mask, alone.ncut_mask)
    assert [v.epoch for v in views] == list(range(len(views)))
    maps = [v.explanation.soap_weights for v in views]
    assert any(not np.allclose(a, b) for a, b in zip(maps, maps[1:]))  # self-training moved the map
    # Each epoch carries the accuracy the run logged then: the end's is the shipped checkpoint's own record.
    _, meta = read_adapted(TOY_ADAPTED)
    assert views[-1].logged["acc_fused"] == pytest.approx(meta.metrics["acc_fused"])


def test_each_epoch_shows_fg_without_the_shift_it_had_then(registry, views):
    assert views[0].explanation.logits_fg_unshifted is None  # the start: nothing to take away yet
    assert all(v.explanation.logits_fg_unshifted is not None for v in views[1:])
    # the last epoch is the shipped checkpoint, with the shift its metadata records
    alone = explain_image(registry.get(ADAPTED).model, Image.open(TOY_EXAMPLE))
    np.testing.assert_allclose(views[-1].explanation.logits_fg_unshifted, alone.logits_fg_unshifted, atol=1e-4)
    # each epoch took away its own shift, not the last one: epoch 1's logits differ from the last shift's
    first = read_adapted(epochs_beside(TOY_ADAPTED)[1][1])[1]
    assert views[1].logged["shift_fg"] == pytest.approx(float(torch.tensor(first.drift["fg_shift"]).norm()))
    assert views[1].logged["shift_fg"] < views[-1].logged["shift_fg"]
    truth = toy_truth(Image.open(TOY_EXAMPLE), views[0].explanation.grid)
    text = timeline_markdown(ADAPTED, views, truth)
    table = text.split("**`[FG]` and its shared shift**")[1].split("**Without labels**")[0]
    rows = [line.strip("| ").split(" | ") for line in table.splitlines() if re.match(r"\| (start|epoch \d+) \|", line)]
    assert rows[0][1:4:2] == ["–", "no shift yet"]  # the start: `[FG]` has nothing to take away yet
    assert len(rows) == len(views)
    for row, view in zip(rows[1:], views[1:]):
        name, probability = view.explanation.top_k("fg_unshifted", 1)[0]
        assert row[1] == f"{view.logged['shift_fg']:.2f}" and row[3].startswith(f"{name} {probability:.0%}")
        # the run's own test accuracy then, `[FG]` with / without the shift
        assert row[4] == f"{view.logged['acc_fg']:.1f} / {view.logged['acc_fg_unshifted']:.1f}"


def test_the_registry_s_model_is_not_touched_and_concurrent_images_do_not_mix(registry, views):
    model = registry.get(ADAPTED).model
    before = {k: v.clone() for k, v in model.adapted_state().items()}
    timeline = registry.timeline(ADAPTED)
    assert registry.timeline(ADAPTED) is timeline  # built once
    other = Image.open(ROOT / "assets" / "examples" / "toybird-dastrel-wren.png")
    results: dict[str, list] = {}

    def run(key: str, picture: Image.Image) -> None:
        results[key] = timeline.explain(picture)

    threads = [threading.Thread(target=run, args=(k, p)) for k, p in (("a", Image.open(TOY_EXAMPLE)), ("b", other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results["a"], views):
        np.testing.assert_array_equal(got.explanation.soap_weights, want.explanation.soap_weights)
    assert all(torch.equal(before[k], v) for k, v in model.adapted_state().items())


def test_the_words_follow_the_numbers_of_this_image(views):
    truth = toy_truth(Image.open(TOY_EXAMPLE), views[0].explanation.grid)
    text = timeline_markdown(ADAPTED, views, truth)
    rows = [line for line in text.splitlines() if re.match(r"\| (start|epoch \d+) \|", line)]
    answers, soap = rows[: len(views)], rows[-len(views) :]  # the answers' table first, SOAP's last
    for answer, map_row, view in zip(answers, soap, views):
        name, probability = view.explanation.top_k("fused", 1)[0]
        assert answer.split(" | ")[1] == f"{name} {probability:.0%} {'✓' if name == truth.true_class else '✗'}"
        top = np.unravel_index(int(np.argmax(view.explanation.soap_weights)), view.explanation.grid)
        assert map_row.split(" | ")[1].startswith(f"({top[0]}, {top[1]}) on the ")
    fg = [v.explanation.top_k("fg", 1)[0][0] for v in views]
    changes = sum(a != b for a, b in zip(fg, fg[1:]))
    line = next(line for line in text.splitlines() if line.startswith("- `[FG]`"))
    assert ("never changes" in line) == (changes == 0)
    assert changes == 0 or f"changes {changes} time" in line
    assert truth.true_class in text


def test_erasing_each_part_is_each_epoch_s_model_on_the_bird_drawn_without_it(registry):
    from microclip.checkpoint import load_model
    from microclip.toyworld.render import rerender
    from ui.epochs import epochs
    from ui.walkthrough import toy_sample

    _, table = epochs(registry, str(TOY_EXAMPLE), ADAPTED, "jet", 0.6)
    picture = Image.open(TOY_EXAMPLE)
    sample = toy_sample(picture)
    parts = sample.visible_parts()
    assert parts and "**Erasing each part**" in table
    rows = [line.strip("| ").split(" | ") for line in table.split("**Erasing each part**")[1].splitlines()]
    rows = [row for row in rows if re.match(r"(start|epoch \d+)$", row[0])]
    files = epochs_beside(TOY_ADAPTED)
    assert len(rows) == len(files)
    true_class = toy_truth(picture, (8, 8)).true_class
    means = []
    for row, (_, path) in zip(rows, files):  # each epoch's file loaded on its own, not through the timeline
        model = load_model(path).eval()
        index = list(model.classes).index(true_class)
        before = explain_image(model, picture)
        drops = []
        for part, cell in zip(parts, row[1:]):
            after = explain_image(model, Image.fromarray(rerender(sample, (part,)).image))
            drop = [100 * (before.probabilities(b)[index] - after.probabilities(b)[index]) for b in ("cls", "fg")]
            assert [float(x) for x in cell.split(" / ")] == pytest.approx(drop, abs=0.051), (path.name, part)
            assert "-0.0" not in cell
            drops.append(drop)
        means.append(np.mean(drops, axis=0))
        assert [float(x) for x in row[len(parts) + 1].split(" / ")] == pytest.approx(means[-1], abs=0.051)
        after = explain_image(model, Image.fromarray(rerender(sample, parts).image))  # every part in one render
        every = [100 * (before.probabilities(b)[index] - after.probabilities(b)[index]) for b in ("cls", "fg")]
        assert len(row) == len(parts) + 3 and [float(x) for x in row[-1].split(" / ")] == pytest.approx(
            every, abs=0.051
        )
    fact = next(line for line in table.splitlines() if line.startswith("- Erasing a part"))
    assert f"costs `[CLS]` {means[0][0]:.1f} and `[FG]` {means[0][1]:.1f} points" in fact
    assert f"With all {len(parts)} erased at once: `[CLS]` " in fact
    assert ("more than `[CLS]` at the end" in fact) == (means[-1][1] > means[-1][0])


def test_the_label_free_signs_are_shown_as_the_epochs_logged_them(views):
    from dataclasses import replace

    # the signs as a run logs them, made up here so that every number and its place can be checked
    signs = {
        e: {"agree_cls": 90.0 - e, "agree_fg": 88.0 - 4 * e, "shared_cls": 0.4, "shared_fg": 0.5 + e / 50}
        | ({"shift_fg": 0.125 * e} if e == 2 else {})  # epoch 1 as a run logged before the shift was measured
        for e in (1, 2)
    }
    signed = [replace(views[0], logged={})] + [replace(v, logged=signs[v.epoch]) for v in views[1:3]]
    text = timeline_markdown(ADAPTED, signed, None)
    table = text.split("**Without labels**")[1].split("**SOAP's map**")[0]
    rows = [line for line in table.splitlines() if re.match(r"\| epoch \d", line)]
    assert rows == ["| epoch 1 | 89.0% | 84.0% | 0.40 / 0.52 |", "| epoch 2 | 88.0% | 80.0% | 0.40 / 0.54 |"]
    fact = next(line for line in text.splitlines() if line.startswith("- Without labels"))
    assert "84% of the training batches' images in epoch 1 and 80% in epoch 2" in fact
    assert "(`[CLS]` alone: 89% → 88%)" in fact and "0.52 → 0.54" in fact
    assert "every image's `[FG]` took on reached length 0.25" in fact
    # a run logged before the signs existed: no table, no sentence
    assert "Without labels" not in timeline_markdown(ADAPTED, [replace(v, logged={}) for v in views[:3]], None)


def test_each_class_through_self_training_reads_what_the_run_logged():
    # made-up records, so that every number and its place can be checked
    labels = {1: {"a": 10, "b": 6, "c": 0}, 2: {"a": 12, "b": 4, "c": 0}}
    accuracy = {
        0: {"a": 50.0, "b": 90.0, "c": 40.0},
        1: {"a": 70.0, "b": 80.0, "c": 10.0},
        2: {"a": 75.0, "b": 60.0, "c": 0.0},
    }
    confused = {2: {"a": ["b", 25.0], "b": ["a", 40.0], "c": ["a", 100.0]}}
    text = species_markdown(labels, accuracy, confused)
    assert "| a | 10 · 12 | 50 · 70 · 75 | b (25%) |" in text and "| c | 0 · 0 | 40 · 10 · 0 | a (100%) |" in text
    assert "in epoch 2 self-training labelled 16 training images, an even share 5 a class; 1 class got under a" in text
    assert (
        "a tenth of that: c 0." in text and "On the test split the class with so few labels went: c 40% → 0%." in text
    )
    assert "it rose on 1 class and fell on 2; the largest fall c (40% → 0%; 100% of them called a); the largest" in text
    assert "; the largest rise a (50% → 75%)." in text
    assert "labels right" not in text  # the run logged no true classes for its training images
    # where it did: how many of the last epoch's labels were right, and where the largest fall's images went
    right = {1: {"a": 5, "b": 6, "c": 0}, 2: {"a": 7, "b": 1, "c": 0}}
    went = {
        1: {"a": ["b", 10.0], "b": None, "c": ["a", 90.0]},
        2: {"a": ["c", 20.0], "b": ["a", 50.0], "c": ["a", 95.0]},
    }
    checked = species_markdown(labels, accuracy, confused, right, went)
    assert "| labels right, epoch 2 | most often mistaken for, epoch 2 |" in checked
    assert "| a | 10 · 12 | 50 · 70 · 75 | 7 of 12 (c 20%) | b (25%) |" in checked
    assert "| c | 0 · 0 | 40 · 10 · 0 | 0 of 0 (a 95%) | a (100%) |" in checked
    assert (
        "- Checked against the training images' true classes (self-training never sees them): c got no label in"
        " epoch 2; 95% of its own training images were labelled a." in checked
    )
    fell = {**accuracy, 2: {**accuracy[2], "b": 0.0, "c": 40.0}}  # now b falls most
    assert "of the 4 labels b got in epoch 2, 1 was right; 50% of its own training images were labelled a." in (
        species_markdown(labels, fell, confused, right, went)
    )
    assert "labels right" not in species_markdown(labels, accuracy, confused, {}, {})  # runs from before round 28
    # none that scarce: the fewest; a run with no test split: labels only; a run from before the record: nothing
    only_labels = species_markdown({1: {"a": 3, "b": 1}}, {})
    assert "the fewest went to b (1)" in only_labels and "test accuracy" not in only_labels.split("|")[-3]
    assert species_markdown({}, {}) == ""
    # many classes: the rows of those self-training treated worst, the largest falls first
    many = {0: {f"k{i:02d}": 50.0 for i in range(30)}, 1: {f"k{i:02d}": 50.0 + i for i in range(30)}}
    text = species_markdown({}, many)
    assert "rose on 29 classes and fell on 0; the largest rise k29 (50% → 79%)." in text and "fall" not in text
    rows = [line for line in text.splitlines() if line.startswith("| k")]
    assert len(rows) == MAX_SPECIES_ROWS and rows[0].startswith("| k00 |") and not any("k29" in r for r in rows)
    # one evaluation and no labels: nothing to rank by, every class in its order
    rows = [line for line in species_markdown({}, {0: many[0]}).splitlines() if line.startswith("| k")]
    assert [r.split(" |")[0] for r in rows] == [f"| k{i:02d}" for i in range(30)]


def test_each_class_s_lead_goes_in_a_column_and_a_fact():
    labels = {1: {"a": 10, "b": 6, "c": 0}, 2: {"a": 12, "b": 4, "c": 0}}
    accuracy = {0: {"a": 50.0, "b": 90.0, "c": 40.0}, 2: {"a": 75.0, "b": 60.0, "c": 0.0}}
    lead = {0: {"a": -0.5, "b": 6.25, "c": 2.0}, 1: {"a": 1.0, "b": 5.0, "c": 0.5}, 2: {"a": 2.5, "b": 3.0, "c": -1.25}}
    text = species_markdown(labels, accuracy, None, None, None, lead)
    assert "| class | labels, epoch 1 to epoch 2 | test accuracy, start to epoch 2 | lead, start → epoch 2 |" in text
    assert "| a | 10 · 12 | 50 · 75 | −0.5 → +2.5 |" in text and "| c | 0 · 0 | 40 · 0 | +2.0 → −1.2 |" in text
    # the classes the labels all but stopped naming: how their leads went, beside the spread of every class's
    assert (
        "- Each class's lead over its best rival on the test split: from −0.5 to +6.2 at the start, from −1.2 to +3.0"
        " after epoch 2; c +2.0 → −1.2." in text
    )
    assert "lead: how far ahead of its best rival" in text.split("*Columns*")[1]
    # no class that starved: the largest fall's lead
    fed = {2: {"a": 6, "b": 5, "c": 5}}
    assert "; c +2.0 → −1.2." in species_markdown(fed, accuracy, None, None, None, lead)
    fell_b = {**accuracy, 2: {"a": 75.0, "b": 0.0, "c": 40.0}}
    assert "; b +6.2 → +3.0." in species_markdown(fed, fell_b, None, None, None, lead)
    # a start evaluated on no image of any class: its leads are missing, not a failure
    missing = {0: {"a": None, "b": None, "c": None}, 2: lead[2]}
    assert "rival on the test split: – at the start, from −1.2 to +3.0 after epoch 2; c – → −1.2." in (
        species_markdown(labels, accuracy, None, None, None, missing)
    )
    # runs from before round 29 logged no lead, and one evaluation is no change: no column, no fact
    for old in ({}, {2: lead[2]}):
        assert "lead" not in species_markdown(labels, accuracy, None, None, None, old)


def test_the_lost_classes_are_read_against_the_ties_the_descriptions_leave():
    labels = {1: {"a": 10, "b": 6, "c": 0}}
    accuracy = {0: {"a": 50.0, "b": 90.0, "c": 40.0}, 1: {"a": 75.0, "b": 45.0, "c": 0.0}}
    confused = {1: {"a": None, "b": ["a", 55.0], "c": ["a", 100.0]}}
    ties = {"a": [], "b": ["a"], "c": ["a", "b"]}
    fact = next(
        line
        for line in species_markdown(labels, accuracy, confused, ties=ties).splitlines()
        if "descriptions tie" in line
    )
    assert fact == (
        "- The descriptions tie 2 of the 3 classes to another: their images fit that class's description in full, so "
        "no reader of the lines can tell the two apart. Of the 2 under 50% after epoch 1, both are tied: b (tied to a; "
        "mistaken most often for a); c (tied to a, b; mistaken most often for a)."
    )
    untied_c = species_markdown(labels, accuracy, confused, ties={**ties, "c": []})
    assert (
        "Of the 2 under 50% after epoch 1, 1 is tied: b (tied to a; mistaken most often for a); c (tied to none;"
        in (untied_c)
    )
    kept = {**accuracy, 1: {"a": 75.0, "b": 60.0, "c": 50.0}}
    assert "so no reader of the lines can tell the two apart; no class is under 50% after epoch 1." in (
        species_markdown(labels, kept, confused, ties=ties)
    )
    # off the toy world (no ties known) and with one evaluation only: no such fact
    assert "descriptions tie" not in species_markdown(labels, accuracy, confused, ties=None)
    assert "descriptions tie" not in species_markdown(labels, {1: accuracy[1]}, confused, ties=ties)


def test_saved_epochs_reads_only_epoch_files(tmp_path):
    source = epochs_beside(TOY_ADAPTED)
    for _, path in source[:2]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "epoch-best.safetensors").write_bytes(b"")
    (tmp_path / "epoch-3.safetensors.tmp").write_bytes(b"")
    assert [e for e, _ in saved_epochs(tmp_path)] == [0, 1]
    assert saved_epochs(tmp_path / "missing") == []
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    (tmp_path / "run" / "epochs").mkdir(parents=True)
    shutil.copy(source[1][1], tmp_path / "run" / "epochs" / "epoch-1.safetensors")
    assert [e for e, _ in epochs_beside(checkpoint)] == [1]  # train.py's layout


def test_an_epoch_from_another_run_is_refused_by_name(tmp_path):
    files = [(epoch, Path(shutil.copy(path, tmp_path / path.name))) for epoch, path in epochs_beside(TOY_ADAPTED)[:3]]
    tensors, meta = read_adapted(files[1][1])
    meta.classes = list(reversed(meta.classes))
    save_adapted(files[1][1], tensors, meta)
    with pytest.raises(CheckpointError, match=re.escape(str(files[1][1]))):
        Timeline(files)
    with pytest.raises(CheckpointError, match="keep_epochs"):
        Timeline([])
    # an epoch whose recorded shift is not a vector of the model's width is refused by name too
    tensors, meta = read_adapted(files[2][1])
    meta.drift = {"fg_shift": [0.1, 0.2], "images": 2}
    save_adapted(files[2][1], tensors, meta)
    with pytest.raises(CheckpointError, match=re.escape(f"{files[2][1]}: drift.fg_shift is not a list")):
        Timeline([files[0], files[2]])


def test_a_broken_epoch_file_is_a_clear_error_and_nothing_broken_is_kept(tmp_path):
    from studio.registry import ModelRegistry

    checkpoint = Path(shutil.copy(TOY_ADAPTED, tmp_path / "toy.safetensors"))
    (tmp_path / "toy-epochs").mkdir()
    for _, path in epochs_beside(TOY_ADAPTED)[:2]:
        shutil.copy(path, tmp_path / "toy-epochs" / path.name)
    broken = tmp_path / "toy-epochs" / "epoch-1.safetensors"
    broken.write_bytes(b"not a safetensors file")
    registry = ModelRegistry()
    name = registry.add_checkpoint(checkpoint)
    for _ in range(2):  # refused each time: a failed build is not cached
        with pytest.raises(CheckpointError, match="epoch-1.safetensors"):
            registry.timeline(name)
    shutil.copy(epochs_beside(TOY_ADAPTED)[1][1], broken)
    assert registry.timeline(name).epochs == [0, 1]
    assert registry.get(name).model is not registry.timeline(name).model  # the timeline's model is its own


def test_a_repeated_request_gets_fresh_picture_files_from_the_cached_answer(registry):
    import os

    from ui.epochs import epochs

    first, table = epochs(registry, str(TOY_EXAMPLE), ADAPTED, "jet", 0.6)
    for path, _ in first:  # as studio.images prunes old picture files
        os.unlink(path)
    again, table_again = epochs(registry, str(TOY_EXAMPLE), ADAPTED, "jet", 0.6)
    assert table_again == table and all(os.path.isfile(path) for path, _ in again)


# ------------------------------------------------------------------ over HTTP

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(registry):
    from ui.app import build_demo

    with serve(build_demo(registry)) as url:
        yield gradio_client.Client(url, verbose=False)


def test_the_endpoint_shows_one_map_per_epoch_and_the_table(client, views):
    from gradio_client import handle_file

    gallery, table = client.predict(handle_file(str(TOY_EXAMPLE)), ADAPTED, "jet", 0.6, api_name="/epochs")
    assert len(gallery) == len(views)
    assert [item["caption"] for item in gallery] == ["start"] + [f"epoch {v.epoch}" for v in views[1:]]
    assert all(Image.open(item["image"]).size == (448, 448) for item in gallery)
    assert "| start |" in table and f"| epoch {views[-1].epoch} |" in table
    # the run's classes, as its last epoch's file logged them: the labels each got, the scarcest named
    last = read_adapted(epochs_beside(TOY_ADAPTED)[-1][1])[1].metrics["per_class"]
    species = table.split("**Each class through self-training**")[1]
    for name, count in last["labels"].items():
        assert (f"{name} {count}" in species.split("| class |")[0]) == (count < 0.1 * 1600 / len(last["labels"]))
        assert re.search(rf"\| {name} \| [^|]* · {count} \| [^|]* · {last['acc'][name]:.0f} \|", species)


def test_a_model_without_saved_epochs_says_how_to_keep_them(client):
    from gradio_client import handle_file

    gallery, table = client.predict(handle_file(str(TOY_EXAMPLE)), BASE, "jet", 0.6, api_name="/epochs")
    assert gallery == [] and "--keep_epochs" in table


def test_compare_puts_two_runs_side_by_side_class_by_class(client, registry):
    from gradio_client.exceptions import AppError

    from studio.compare import RunClasses, runs_markdown
    from studio.registry import TOY_DEBIASED_NAME

    shown = client.predict(ADAPTED, TOY_DEBIASED_NAME, api_name="/compare_runs")
    runs = (RunClasses.of(name, registry.timeline(name)) for name in (ADAPTED, TOY_DEBIASED_NAME))
    assert shown == runs_markdown(*runs) and "| brennic finch |" in shown
    assert "has no saved epochs" in client.predict(ADAPTED, BASE, api_name="/compare_runs")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(ADAPTED, "no such model", api_name="/compare_runs")


def steps_from_the_reference_s_start_to_its_own_end(registry, name: str, checkpoint: Path) -> tuple:
    """A bundled model beside the reference's: its timeline has every epoch of its run, ends at the model itself
    and starts where the reference's run starts (the same base, recipe and seed). Returns its views, its epoch files
    and the reference's views."""
    views = registry.timeline(name).explain(Image.open(TOY_EXAMPLE))
    files = epochs_beside(checkpoint)
    run_epochs = read_adapted(checkpoint)[1].training["config"]["epochs"]
    assert [v.epoch for v in views] == [epoch for epoch, _ in files] == list(range(run_epochs + 1))
    alone = explain_image(registry.get(name).model, Image.open(TOY_EXAMPLE))
    for branch in ("logits_fused", "logits_fg"):
        np.testing.assert_allclose(getattr(views[-1].explanation, branch), getattr(alone, branch), atol=1e-4)
    reference = registry.timeline(ADAPTED).explain(Image.open(TOY_EXAMPLE))
    np.testing.assert_allclose(views[0].explanation.logits_fused, reference[0].explanation.logits_fused, atol=1e-4)
    return views, files, reference


def test_the_centred_model_steps_through_its_own_run_with_its_centre(registry):
    from studio.registry import TOY_CENTRED, TOY_CENTRED_NAME

    views, files, reference = steps_from_the_reference_s_start_to_its_own_end(registry, TOY_CENTRED_NAME, TOY_CENTRED)
    # every saved epoch carries the run's one centre, fixed before training
    centres = [load_file(path)["soap.value_centre"] for _, path in files]
    assert all(torch.equal(c, centres[0]) for c in centres) and centres[0].norm() > 0
    # a shorter shift than the reference's at every epoch
    assert all(c.logged["shift_fg"] < r.logged["shift_fg"] for c, r in zip(views[1:], reference[1:], strict=True))


def test_the_debiased_model_steps_through_its_own_run_and_names_the_class_the_reference_s_labels_starve(registry):
    from studio.registry import TOY_DEBIASED, TOY_DEBIASED_NAME

    _, files, _ = steps_from_the_reference_s_start_to_its_own_end(registry, TOY_DEBIASED_NAME, TOY_DEBIASED)
    # the class the reference's labels name least in an epoch gets more labels from the debiased ones in that epoch
    for (epoch, ours), (_, theirs) in zip(files[1:], epochs_beside(TOY_ADAPTED)[1:], strict=True):
        debiased, plain = (read_adapted(path)[1].metrics["per_class"]["labels"] for path in (ours, theirs))
        starved = min(plain, key=plain.get)
        assert debiased[starved] > plain[starved], (epoch, starved)


def test_the_models_tab_and_explore_say_which_bundled_model_s_labels_are_not_the_reference_s(registry):
    from studio.about import model_markdown
    from studio.registry import TOY_CENTRED_NAME, TOY_DEBIASED_NAME
    from studio.world import world_markdown

    debiased = registry.get(TOY_DEBIASED_NAME)
    strength = debiased.meta.training["config"]["label_debias"]
    said = f"**Not the reference's labels** (`train.py --label_debias {strength:g}`)"
    assert said in model_markdown(debiased) and said in world_markdown(debiased)
    for name in (ADAPTED, TOY_CENTRED_NAME):
        assert "Not the reference's labels" not in model_markdown(registry.get(name)) + world_markdown(
            registry.get(name)
        )
    # and an Adapt run from it starts with its λ, read from the file's header (ui.layout.entry_recipe)
    from ui.layout import entry_recipe

    assert entry_recipe(registry, TOY_DEBIASED_NAME).label_debias == strength > 0
    assert entry_recipe(registry, ADAPTED).label_debias == 0.0


def test_the_models_tab_says_which_bundled_model_is_not_the_reference_s_soap(registry):
    from studio.about import model_markdown
    from studio.registry import TOY_CENTRED_NAME

    centred, reference = (model_markdown(registry.get(name)) for name in (TOY_CENTRED_NAME, ADAPTED))
    assert "**Not the reference's SOAP:**" in centred and "| `centre_values` | True |" in centred
    assert "Not the reference's SOAP" not in reference and "| `centre_values` | False |" in reference
    assert "An ablation of SOAP" not in centred + reference


def test_the_models_tab_names_the_reference_s_soap_ablations_a_model_was_trained_with(registry):
    from microclip.model import MethodConfig, MicroCLIP
    from studio.about import model_markdown
    from studio.registry import LoadedModel

    shipped = registry.get(ADAPTED)
    for config, flags in (
        (MethodConfig(query="global"), ["--use_global_feature_for_query"]),
        (MethodConfig(query="token_avg", pool="ncut_avg"), ["--use_token_avg_for_query", "--use_ncut_token_avg"]),
        (MethodConfig(pool="naive_avg"), ["--use_naive_token_avg"]),
    ):
        model = MicroCLIP(shipped.model.backbone, shipped.model.heads, config, shipped.model.base)
        card = model_markdown(LoadedModel("ablation", model, shipped.meta, "test"))
        assert [line.split("`")[1] for line in card.splitlines() if line.startswith("**An ablation of SOAP**")] == flags


def test_a_model_not_trained_the_method_s_way_says_so_in_the_models_tab_and_in_explore(registry):
    from dataclasses import replace

    from microclip.constants import CLS_ONLY_FLAG
    from microclip.recipe import MODE_FLAGS
    from studio.about import model_markdown
    from studio.registry import LoadedModel
    from studio.world import world_flag_markdown, world_markdown

    shipped = registry.get(ADAPTED)
    assert shipped.meta.mode == "microclip"
    assert "train.py --" not in world_markdown(shipped) and "not label-free" not in model_markdown(shipped)
    older = replace(shipped.meta, training={k: v for k, v in shipped.meta.training.items() if k != "config"})
    assert older.mode == "microclip"  # a checkpoint that does not say was adapted the method's way
    assert CLS_ONLY_FLAG not in world_flag_markdown(shipped.classes, shipped, typed=False)
    for mode, flag in MODE_FLAGS.items():
        config = {**shipped.meta.training["config"], "mode": mode}
        loaded = LoadedModel("other", shipped.model, replace(shipped.meta, training={"config": config}), "test")
        note = f"(`train.py {flag}`)"
        assert note in world_markdown(loaded) and note in model_markdown(loaded), mode
        # above a CLS-only model's prediction: read its [CLS] row, the branch it trained
        flagged = CLS_ONLY_FLAG in world_flag_markdown(loaded.classes, loaded, typed=False)
        assert flagged == (mode in ("baseline", "wca_baseline")), mode


def test_what_the_toy_model_knows_names_the_world_s_own_parts_and_scenes(registry):
    from microclip.toyworld.render import BACKGROUNDS
    from microclip.toyworld.world import PARTS, SPECIES
    from studio.world import world_markdown

    # the renderer draws every bird in a scene with clutter; the sentence once said "plain backgrounds"
    said = world_markdown(registry.get(ADAPTED))
    assert f"{len(SPECIES)} invented species" in said and "plain" not in said
    assert all(part.replace("_", " ") in said for part in PARTS)
    assert ", ".join(BACKGROUNDS[:-1]) + f" or {BACKGROUNDS[-1]} scenes" in said
