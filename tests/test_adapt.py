"""One recipe: the command line's train and the app's Adapt tab end with the same weights."""

from __future__ import annotations

import pytest
import torch
from conftest import CLASSES

from microclip.adapt import adapt, prepare
from microclip.checkpoint import read_adapted
from microclip.cli import train
from microclip.data import build_dataset
from microclip.recipe import Recipe
from studio.adapt_request import AdaptRequest
from studio.jobs import AdaptationRunner, JobStatus
from studio.registry import ModelRegistry


def test_cli_and_app_runs_of_one_recipe_give_the_same_weights(image_dataset_root, tiny_model_dir, tmp_path):
    out = tmp_path / "cli"
    code = train(
        [
            "--dataset",
            str(image_dataset_root / "shapes"),
            "--clip_model",
            f"local-dir:{tiny_model_dir}",
            "--no_descriptions",
            "--max_steps",
            "3",
            "--batch_size",
            "4",
            "--n_crops",
            "2",
            "--lr",
            "1e-3",
            "--eval_every",
            "0",
            "--seed",
            "3",
            "--no_progress",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 0
    cli_state, cli_meta = read_adapted(out / "checkpoint.safetensors")

    registry = ModelRegistry("cpu")
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, "tiny")
    runner = AdaptationRunner(registry, tmp_path / "app")
    job = runner.submit(
        AdaptRequest(
            source="folder",
            path=str(image_dataset_root / "shapes" / "train"),
            model_name="tiny",
            steps=3,
            batch_size=4,
            n_crops=2,
            lr=1e-3,
            seed=3,
            n_probes=2,
        )
    )
    assert runner.wait(job, timeout=120).status == JobStatus.DONE
    app_state, app_meta = read_adapted(runner.save(job))

    assert cli_meta.classes == app_meta.classes == sorted(CLASSES)
    assert cli_state.keys() == app_state.keys()
    for key in cli_state:
        torch.testing.assert_close(app_state[key], cli_state[key], rtol=0, atol=0, msg=key)
    # the recipe both recorded differs only where the run's bookkeeping does
    cli_recipe, app_recipe = cli_meta.training["config"], app_meta.training["config"]
    differing = {k for k in cli_recipe if cli_recipe[k] != app_recipe[k]}
    assert differing == {"epochs"}  # the app runs by steps alone (epochs None); the CLI's 15 epochs never bind
    # and training did move the weights away from the base
    fresh = prepare(
        build_dataset(str(image_dataset_root / "shapes"), "train"),
        Recipe(max_steps=1),
        (f"local-dir:{tiny_model_dir}", None),
        ["a photo of a {}."],
    ).model.adapted_state()
    assert any(not torch.equal(fresh[k], cli_state[k]) for k in fresh if k.startswith("soap."))


def test_adapt_in_one_call_records_its_recipe_and_provenance(image_dataset_root, tiny_model_dir):
    data = build_dataset(str(image_dataset_root / "shapes"), "train")
    recipe = Recipe(epochs=None, max_steps=2, batch_size=4, n_crops=2)
    model, meta, result = adapt(
        data, recipe, (f"local-dir:{tiny_model_dir}", None), ["a photo of a {}."], provenance={"dataset": "shapes"}
    )
    assert result.global_step == 2 and not result.stopped
    assert meta.training["config"] == recipe.to_dict() and meta.training["dataset"] == "shapes"
    assert meta.metrics["steps"] == 2
    assert not model.training  # fit leaves the model in eval mode, ready to explain


def test_a_stop_token_ends_the_run_after_the_current_step(image_dataset_root, tiny_model_dir):
    import threading

    from microclip.engine import Callback

    stop = threading.Event()

    class StopAtTwo(Callback):
        def on_step_end(self, state, metrics):
            if state.global_step == 2:
                stop.set()

    run = prepare(
        build_dataset(str(image_dataset_root / "shapes"), "train"),
        Recipe(epochs=None, max_steps=50, batch_size=4, n_crops=1),
        (f"local-dir:{tiny_model_dir}", None),
        ["a photo of a {}."],
    )
    result = run.fit([StopAtTwo()], stop=stop)
    assert result.stopped and result.global_step == 2


def test_one_class_data_is_refused_before_any_model_is_built(tmp_path, tiny_model_dir):
    import numpy as np
    from conftest import draw_sample

    (tmp_path / "one" / "red square").mkdir(parents=True)
    for index in range(2):
        draw_sample(0, np.random.default_rng(index)).save(tmp_path / "one" / "red square" / f"{index}.png")
    with pytest.raises(ValueError, match="at least two classes"):
        prepare(build_dataset(str(tmp_path / "one"), "train"), Recipe(), (f"local-dir:{tiny_model_dir}", None), ["{}"])
