"""The reference's flags and outputs: check-data, the sub-command line, --resume from its checkpoint-last.pth,
--test_fusion reference, and strict method configs."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from test_data_layouts import _flowers, _pets
from test_engine import CONFIG, Crash, fresh_model, train_set

from microclip.__main__ import build_parser
from microclip.__main__ import main as microclip_main
from microclip.checkpoint import _reference_trainable, read_reference_resume
from microclip.engine import FitState, OptimizerStep, eval_fusion_ratio, fit, load_train_state
from microclip.losses import FairnessRegulariser
from microclip.model import MethodConfig

# --- check-data ------------------------------------------------------------------------------------


def test_check_data_passes_a_good_layout_and_notes_coops_names(tmp_path, capsys):
    _flowers(tmp_path)
    assert microclip_main(["check-data", "flowers", "--data_root", str(tmp_path), "--no_descriptions"]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("flowers  ")]
    assert " ok " in row and "3 / 4,093" in row and "2 / 2,463" in row and "2 names differ" in row
    assert "flowers (note): train: 3 images where the reference's split has 4,093" in out


def test_check_data_explains_each_failure_in_one_line_and_exits_nonzero(tmp_path, capsys):
    _pets(tmp_path)
    (tmp_path / "oxford_pets" / "test" / "yorkshire").mkdir()
    descriptions = tmp_path / "pets.json"
    descriptions.write_text(json.dumps({"Abyssinian": ["a cat."]}))
    code = microclip_main(
        ["check-data", "all", "--data_root", str(tmp_path), "--text_descriptions_path", str(descriptions)]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    [row] = [line for line in out if line.startswith("pets  ")]
    assert "FAIL" in row and "0 missing, 1 extra" in row and "lacks 36" in row and "oxford_pets" in row
    pets = [line for line in out if line.startswith("pets: ")]
    assert any("1 folders name no class ('yorkshire')" in line for line in pets)
    assert any("lack 36 classes" in line and "--allow_missing_descriptions" in line for line in pets)
    assert any(line.startswith("cub: no data under") and "train_test_split.txt" in line for line in out)


def test_train_runs_the_quick_check_before_loading_a_model(tmp_path, capsys):
    _pets(tmp_path)
    (tmp_path / "oxford_pets" / "train" / "yorkshire").mkdir()
    code = microclip_main(
        [
            "train",
            "--dataset",
            "pets",
            "--data_root",
            str(tmp_path),
            "--no_descriptions",
            "--clip_model",
            "no-such-model",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'yorkshire'" in err and "check-data pets" in err and not (tmp_path / "out").exists()


# --- one command line --------------------------------------------------------------------------------


def test_every_command_is_an_argparse_sub_command_with_its_own_flags(capsys):
    parser = build_parser()
    assert parser.parse_args(["train", "--dataset", "flowers", "--amp"]).amp == "fp16"  # the reference's --amp
    assert parser.parse_args(["train", "--amp", "bf16"]).amp == "bf16"
    args = parser.parse_args(
        [
            "train",
            "--ablation_name",
            "abl",
            "--start_epoch",
            "3",
            "--image_mean",
            "0.5,0.5,0.5",
            "--image_std",
            "0.2 0.2 0.2",
            "--ncut_device",
            "cuda",
        ]
    )
    assert (args.ablation_name, args.start_epoch, args.ncut_device) == ("abl", 3, "cuda")
    assert args.image_mean == (0.5, 0.5, 0.5) and args.image_std == (0.2, 0.2, 0.2)
    assert parser.parse_args(["evaluate", "--ckpt-path", "x", "--test_fusion", "reference"]).test_fusion == "reference"
    assert parser.parse_args(["check-data", "all"]).name == "all"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--image_mean", "0.5,0.5"])
    with pytest.raises(SystemExit):
        parser.parse_args(["fly"])


@pytest.mark.parametrize("command", ["train", "evaluate", "describe"])
@pytest.mark.parametrize("spelling", ["--classes", "--classnames"])
def test_old_class_name_flags_still_work_with_a_note(command, spelling, capsys):
    extra = {"evaluate": ["--ckpt-path", "x"], "describe": ["--out", "d.json"]}.get(command, [])
    args = build_parser().parse_args([command, spelling, "names.txt", *extra])
    assert str(args.classname) == "names.txt"
    assert f"{spelling} is deprecated; use --classname" in capsys.readouterr().err


def test_unknown_method_config_keys_are_errors():
    assert MethodConfig.from_dict({"fusion_ratio": 0.3}).fusion_ratio == 0.3
    with pytest.raises(ValueError, match="unknown key.*'fusion_ration'"):
        MethodConfig.from_dict({"fusion_ration": 0.3})


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_fusion_ratio_outside_0_to_1_is_refused_by_the_config_and_the_command_line(ratio, capsys):
    with pytest.raises(ValueError, match=f"fusion_ratio must be from 0 to 1, not {ratio:g}"):
        MethodConfig.from_dict({"fusion_ratio": ratio})  # a checkpoint's or a config file's
    for command, extra in (("train", []), ("evaluate", ["--ckpt-path", "x"]), ("explain", ["image.png"])):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--fusion_ratio", str(ratio), *extra])
        assert f"must be from 0 to 1, not {ratio:g}" in capsys.readouterr().err
    assert build_parser().parse_args(["train", "--fusion_ratio", "1"]).fusion_ratio == 1.0


# --- test-time fusion --------------------------------------------------------------------------------


def test_reference_test_fusion_puts_rho_on_fg():
    model = fresh_model().eval()
    model.config.fusion_ratio = 0.8
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(images)
        swapped = model(images, ratio=eval_fusion_ratio(model, "reference")).logits.fused
    # the reference's evaluation: ρ · [FG] + (1 − ρ) · [CLS], computed here from the branch logits
    torch.testing.assert_close(swapped, 0.8 * out.logits.fg + 0.2 * out.logits.cls)
    torch.testing.assert_close(out.logits.fused, 0.8 * out.logits.cls + 0.2 * out.logits.fg)
    assert eval_fusion_ratio(model, "consistent") == 0.8


# --- --resume checkpoint-last.pth --------------------------------------------------------------------


def _as_reference_checkpoint(model, optimizer, epoch: int, path) -> None:
    """What the reference's utils.save_model writes: its state-dict names, AdamW indexed in its parameter order."""
    state = {f"clip_model.visual.{k}": v for k, v in model.backbone.visual.state_dict().items()}
    state |= {
        "classifier": model.heads.w_star.detach().clone(),
        **{
            f"{p}_proj.linear.weight": getattr(model.soap, f"{p}_proj").weight.detach().clone()
            for p in ("query", "key", "value")
        },
    }
    ours = {id(p): n for n, p in model.trainable_parameters().items()}
    moments = {ours[id(p)]: s for p, s in optimizer.state.items()}
    to_ours = {f"clip_model.visual.{k}": f"backbone.visual.{k}" for k in model.backbone.visual.state_dict()}
    to_ours |= {
        "classifier": "heads.w_star",
        **{f"{p}_proj.linear.weight": f"soap.{p}_proj.weight" for p in ("query", "key", "value")},
    }
    order = [k for k in state if _reference_trainable(k, False)]
    optimizer_state = {
        "state": {i: moments[to_ours[k]] for i, k in enumerate(order)},
        "param_groups": [{"params": list(range(len(order))), "weight_decay": 0.1}, {"params": [], "weight_decay": 0.0}],
    }
    args = argparse.Namespace(clip_model="Test-ViT-Tiny", fusion_ratio=0.5, dataset="shapes")
    torch.save({"model": state, "optimizer": optimizer_state, "epoch": epoch, "args": args}, path)


def test_a_reference_run_continues_to_the_uninterrupted_weights(image_dataset_root, tmp_path):
    uninterrupted = fresh_model()
    fit(uninterrupted, train_set(image_dataset_root), CONFIG)

    # a run killed after its first epoch (3 steps); the reference saved checkpoint-last.pth at that epoch's end
    with pytest.raises(SystemExit):
        fit(
            fresh_model(),
            train_set(image_dataset_root),
            CONFIG,
            callbacks=[Crash(at_step=4)],
            state_path=tmp_path / "state.safetensors",
        )
    model = fresh_model()
    stepper = OptimizerStep(model, CONFIG, torch.device("cpu"))
    load_train_state(
        tmp_path / "state.safetensors",
        model,
        stepper.optimizer,
        FitState(CONFIG, model, steps_per_epoch=3),
        FairnessRegulariser(),
    )
    _as_reference_checkpoint(model, stepper.optimizer, epoch=0, path=tmp_path / "checkpoint-last.pth")

    reference = read_reference_resume(tmp_path / "checkpoint-last.pth")
    assert reference.start_epoch == 1 and len(reference.optimizer_state) == len(model.trainable_parameters())
    resumed = fresh_model()
    notes = []
    result = fit(
        resumed,
        train_set(image_dataset_root),
        CONFIG,
        start_epoch=reference.start_epoch,
        restore=lambda m, s: notes.extend(reference.restore(m, s)),
    )
    assert result.global_step == 6 and any("W_LLM" in note for note in notes)
    expected, actual = uninterrupted.adapted_state(), resumed.adapted_state()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)
