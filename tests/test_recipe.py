"""The Recipe: config files validated against it, flags generated from it, precedence defaults < file < flags."""

from __future__ import annotations

import json

import pytest

from microclip.cli import build_train_parser, load_train_config
from microclip.recipe import ConfigError, Recipe, check_train_config
from microclip.resources import config_names


def test_every_bundled_config_is_valid_and_a_typo_names_the_nearest_key():
    for name in config_names("dataset_configs"):
        Recipe.for_dataset(name)
    for name in config_names("train_configs"):
        load_train_config(name)
    with pytest.raises(ConfigError, match=r"unknown key 'batchsize'.*did you mean 'batch_size'"):
        Recipe.from_dict({"batchsize": 32}, "dataset config x.json")
    with pytest.raises(ConfigError, match=r"unknown key 'n_crop'.*did you mean 'n_crops'"):
        Recipe.from_json(json.dumps({"n_crop": 4}), "x.json")
    with pytest.raises(ConfigError, match=r"unknown key 'vision_backbon'.*did you mean 'vision_backbone'"):
        check_train_config({"vision_backbon": "ViT-B/32"}, "train config y")


def test_values_of_the_wrong_type_are_refused():
    with pytest.raises(ConfigError, match="'epochs' = 'ten' is not a int"):
        Recipe.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match="'mode' must be one of"):
        Recipe.from_dict({"mode": "supervised"})
    with pytest.raises(ConfigError, match="'lr' cannot be null"):
        Recipe.from_dict({"lr": None})
    assert Recipe.from_dict({"lr": 1}).lr == 1  # an int is a valid float
    with pytest.raises(ConfigError, match="epochs or max_steps"):
        Recipe(epochs=None)


def test_flags_are_the_flagged_fields_and_override_the_config_file(tmp_path):
    parser = build_train_parser()
    flags = {action.dest for action in parser._actions}
    assert set(Recipe.flag_names()) <= flags
    args = parser.parse_args(["--dataset", "flowers", "--lr", "3e-4", "--n_crops", "2"])
    config = Recipe.from_dict({"lr": 1e-5, "epochs": 7, "n_crops": 8}, "file")
    recipe = Recipe.from_sources(config, args, seed=5)
    assert (recipe.lr, recipe.n_crops, recipe.epochs, recipe.seed) == (3e-4, 2, 7, 5)  # flag > file > default
    assert recipe.batch_size == Recipe().batch_size
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_a_flag_with_a_fixed_set_of_values_offers_them_and_refuses_others(capsys):
    parser = build_train_parser()
    args = parser.parse_args(["--dataset", "flowers", "--label_debias_source", "labels"])
    assert Recipe.from_sources(None, args).label_debias_source == "labels"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "flowers", "--label_debias_source", "counts"])
    assert "invalid choice: 'counts' (choose from 'scores', 'labels')" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="label_debias_momentum must be in"):
        Recipe(epochs=1, label_debias_momentum=1.0)
