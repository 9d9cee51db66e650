"""The bundled toy-world checkpoints load through the normal loaders and reproduce their record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import command_here, load_bench

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "checkpoints" / "toybirds-microclip.json"
pytestmark = pytest.mark.skipif(not RECORD.is_file(), reason="the toy-world checkpoints are not built yet")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("toydata"))


def test_shipped_checkpoints_reproduce_their_recorded_accuracy(data_root):
    # The record was measured on another machine; nothing in it may depend on the CPU (the NCut mask
    # is canonical), so every branch must match to 0.3 points (two of the 800 test images).
    record_accuracies = load_bench("toyworld").record_accuracies

    recorded = json.loads(RECORD.read_text())["test_split"]
    measured = record_accuracies(data_root)
    for key in ("zero_shot_cls", "adapted_fused", "adapted_cls", "adapted_fg", "part_probe"):
        assert measured[key] == pytest.approx(recorded[key], abs=0.3), key
    assert measured["adapted_fused"] > measured["zero_shot_cls"]


def test_the_shipped_epochs_per_class_record_is_what_each_epoch_s_model_scores(data_root):
    from microclip.checkpoint import epochs_beside, load_model, read_adapted
    from microclip.data.datasets import build_dataset
    from microclip.data.transforms import SeededDataset, test_transform
    from microclip.engine import evaluate

    files = dict(epochs_beside(ROOT / "checkpoints" / "toybirds-microclip.safetensors"))
    log = {row["epoch"]: row for row in json.loads(RECORD.read_text())["log"]}
    test = SeededDataset(build_dataset("toybirds", "test", root=data_root), test_transform(64), seed=0)
    for epoch in (0, max(files)):  # the start (its fused answer, the branch every epoch reports) and the end
        per_class = read_adapted(files[epoch])[1].metrics["per_class"]
        result = evaluate(load_model(files[epoch]), test)
        assert result.per_class_accuracy("fused") == pytest.approx(per_class["acc"], abs=2.0)  # one image in 50
        for name, other in result.commonest_wrong("fused").items():  # a clear commonest mistake stays the same
            recorded = per_class["confused_with"][name]
            if recorded is not None and recorded[1] >= 10.0:
                assert other[0] == recorded[0] and other[1] == pytest.approx(recorded[1], abs=2.0), name
        # each class's lead over its best rival, in logits at scale 100: a CPU moves it by far less than a tenth
        assert result.per_class_lead("fused") == pytest.approx(per_class["lead"], abs=0.1)
        assert per_class["lead"] == log[epoch]["test_lead_per_class"]  # the file and the run's log say the same
    for epoch in set(files) - {0}:  # every epoch labelled each of the 1,600 training images once
        assert sum(read_adapted(files[epoch])[1].metrics["per_class"]["labels"].values()) == 1600
    assert "labels" not in read_adapted(files[0])[1].metrics["per_class"]


def test_the_shipped_epochs_labels_checked_against_the_true_classes_agree_with_the_run_s_own_log():
    from microclip.checkpoint import epochs_beside, read_adapted

    log = {row["epoch"]: row for row in json.loads(RECORD.read_text())["log"]}
    per_species = 100  # the toy training split: 1,600 images, 100 a species
    for epoch, path in epochs_beside(ROOT / "checkpoints" / "toybirds-microclip.safetensors")[1:]:
        record = read_adapted(path)[1].metrics["per_class"]
        right, given, went = record["labels_right"], record["labels"], record["labels_confused_with"]
        assert right == log[epoch]["train_labels_right_per_class"] and went == log[epoch]["train_labels_confused_with"]
        # 25 full batches of 64: the share of right labels is the mean of the steps' own pseudo-label accuracy
        assert 100 * sum(right.values()) / 1600 == pytest.approx(log[epoch]["train_pl_acc"], abs=1e-4), epoch
        for name in right:
            assert right[name] <= given[name], (epoch, name)
            if went[name] is None:
                assert right[name] == per_species, (epoch, name)
            else:  # a share of its 100 images, all labelled something else
                wrong = went[name][1] * per_species / 100
                assert wrong == pytest.approx(round(wrong)) and 1 <= round(wrong) <= per_species - right[name], name


def test_the_shipped_base_s_record_says_what_its_object_stage_optimised():
    from dataclasses import fields

    from microclip.toyworld.pretrain import PretrainConfig, objective

    record = json.loads((ROOT / "checkpoints" / "toybirds-base" / "pretrain.json").read_text())
    names = {f.name for f in fields(PretrainConfig)}
    settings = PretrainConfig(out="", **{k: v for k, v in record["object_stage"].items() if k in names})
    key = "stage 3 (object_steps)"
    assert record["objective"][key] == objective(settings)[key]


def test_shipped_files_are_small():
    base = sum(p.stat().st_size for p in (ROOT / "checkpoints" / "toybirds-base").iterdir())
    adapted = sum(
        (ROOT / "checkpoints" / f"{name}.safetensors").stat().st_size
        + sum(p.stat().st_size for p in (ROOT / "checkpoints" / f"{name}-epochs").glob("*"))
        for name in ("toybirds-microclip", "toybirds-microclip-centred", "toybirds-microclip-debiased")
    )
    assert base + adapted <= 30 * 2**20


def assert_evaluate_py_reproduces(checkpoint: Path, recorded: dict, data_root: str, tmp_path: Path) -> None:
    """``evaluate.py`` on the toy test split gives every branch the checkpoint recorded, to 0.3 points."""
    evaluated = command_here(
        "evaluate.py", "--dataset", "toybirds", "--data_root", data_root, "--ckpt-path", str(checkpoint),
        "--output_dir", str(tmp_path),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    measured = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("acc_fused", "acc_cls", "acc_fg", "acc_fg_unshifted", "acc_fused_unshifted"):
        assert measured[key] == pytest.approx(recorded[key], abs=0.3), key


def test_the_centred_model_is_the_shipped_base_adapted_with_centred_values_and_reproduces_its_run(data_root, tmp_path):
    from microclip.checkpoint import read_adapted

    centred = ROOT / "checkpoints" / "toybirds-microclip-centred.safetensors"
    _, meta = read_adapted(centred)
    _, reference = read_adapted(ROOT / "checkpoints" / "toybirds-microclip.safetensors")
    assert meta.method == {**reference.method, "centre_values": True} and meta.base == reference.base
    assert (
        meta.training["config"] == reference.training["config"] and meta.training["seed"] == reference.training["seed"]
    )
    assert_evaluate_py_reproduces(centred, meta.metrics, data_root, tmp_path)


def test_the_debiased_model_is_the_shipped_base_adapted_with_debiased_labels_and_reproduces_its_run(
    data_root, tmp_path
):
    from microclip.checkpoint import read_adapted

    debiased = ROOT / "checkpoints" / "toybirds-microclip-debiased.safetensors"
    _, meta = read_adapted(debiased)
    _, reference = read_adapted(ROOT / "checkpoints" / "toybirds-microclip.safetensors")
    # the reference's method, base, seed and recipe; only the labels' debiasing differs
    assert meta.method == reference.method and meta.base == reference.base and meta.mode == reference.mode
    config = meta.training["config"]
    unset = {k: v for k, v in config.items() if k != "label_debias"}  # the reference's run predates the setting
    assert config["label_debias"] > 0 and not reference.training["config"].get("label_debias")
    assert unset == {k: v for k, v in reference.training["config"].items() if k != "label_debias"}
    assert meta.training["seed"] == reference.training["seed"]
    # its record: the model's own numbers, and its CLS-only baseline run with the same labels' debiasing
    record = json.loads((ROOT / "checkpoints" / "toybirds-microclip-debiased.json").read_text())
    assert {k: record["metrics"][k] for k in meta.metrics} == meta.metrics
    baseline = record["baseline"]
    assert baseline["metrics"]["mode"] == "baseline" and baseline["config"] == {**config, "mode": "baseline"}
    assert f"--label_debias {config['label_debias']:g}" in baseline["command"] and "--baseline" in baseline["command"]
    assert_evaluate_py_reproduces(debiased, meta.metrics, data_root, tmp_path)


def test_train_py_on_toybirds_end_to_end(data_root, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--dataset",
            "toybirds",
            "--train_config",
            "toybirds",
            "--data_root",
            data_root,
            "--max_steps",
            "2",
            "--epochs",
            "1",
            "--batch_size",
            "16",
            "--n_crops",
            "2",
            "--output_dir",
            str(tmp_path),
            "--no_progress",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["num_test"] == 800
    evaluated = command_here(  # in this process (train.py above is the typed command)
        "evaluate.py", "--dataset", "toybirds", "--data_root", data_root, "--ckpt-path",
        str(ROOT / "checkpoints" / "toybirds-microclip.safetensors"),
    )  # fmt: skip
    assert evaluated.returncode == 0 and "TokenFusion" in evaluated.stdout, evaluated.stderr[-2000:]


# Kernels of another CPU, emulated: PyTorch's own (ATen), oneDNN's and MKL's (BLAS and LAPACK) dispatch
# can be capped at an instruction set, which is what differs between the Intel (AVX-512, AMX) and AMD
# (AVX2) machines the record has to hold on.
EMULATED_CPUS = {
    "no SIMD": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "AVX2 (as on AMD EPYC)": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
}
_PREDICT = """
import hashlib, json, sys, torch
from microclip.checkpoint import load_model
from microclip.toyworld.dataset import load_split_arrays
images, _ = load_split_arrays(sys.argv[1], "test")
model = load_model(sys.argv[2])
with torch.no_grad():
    out = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "mask": hashlib.sha256(out.mask.numpy().tobytes()).hexdigest(),
                  **{b: getattr(out.logits, b).argmax(1).tolist() for b in ("fused", "cls", "fg")}}))
"""


def _predict(data_root: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT, data_root, str(ROOT / "checkpoints" / "toybirds-microclip.safetensors")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def native(data_root) -> dict:
    """This machine's own predictions and masks, made once for every emulated CPU to be compared with."""
    from microclip.toyworld.dataset import ensure_split

    ensure_split(data_root, "test")
    return _predict(data_root, {})


@pytest.mark.parametrize("cpu", sorted(EMULATED_CPUS))
def test_predictions_and_masks_do_not_depend_on_the_cpu(data_root, native, cpu):
    if native["capability"].lower() == EMULATED_CPUS[cpu]["ATEN_CPU_CAPABILITY"]:
        pytest.skip(
            f"this CPU runs {native['capability']} natively: nothing to emulate (the other case still compares)"
        )
    other = _predict(data_root, EMULATED_CPUS[cpu])
    assert other["capability"] != native["capability"]  # the emulation took effect
    assert other["mask"] == native["mask"]  # every NCut mask of the 800 test images, bit for bit
    for branch in ("fused", "cls", "fg"):
        flips = sum(a != b for a, b in zip(native[branch], other[branch]))
        assert flips <= 2, f"{branch}: {flips} of 800 predictions changed"


def test_name_frequencies_follow_the_base_s_caption_record(tmp_path):
    """names_by_frequency reports the tail the base was pretrained on (pretrain.json's "captions"), not
    text.py's defaults; a base without that record (the third world's predates it) gets the defaults."""
    from microclip.toyworld.text import NAME_RANK, name_rate

    name_tail = load_bench("toyworld")._name_tail
    (tmp_path / "pretrain.json").write_text(json.dumps({"captions": {"p_name": 0.3, "name_zipf": 3.5}}))
    tail = name_tail(str(tmp_path))
    commonest = min(NAME_RANK, key=NAME_RANK.get)
    rarest = max(NAME_RANK, key=NAME_RANK.get)
    assert name_rate(commonest, **tail) == pytest.approx(0.3)
    assert name_rate(rarest, **tail) == pytest.approx(0.3 / 16**3.5)
    assert name_tail(str(tmp_path / "missing")) == {}
    shipped = json.loads((ROOT / "checkpoints" / "toybirds-base" / "pretrain.json").read_text())["captions"]
    assert name_tail(str(ROOT / "checkpoints" / "toybirds-base")) == {
        "p_name": shipped["p_name"],
        "zipf": shipped["name_zipf"],
    }


def test_the_bench_measures_the_base_as_adaptation_starts_from_it_with_adapted_start():
    import argparse

    import torch

    adapted_model = load_bench("toyworld").adapted_model
    base = str(ROOT / "checkpoints" / "toybirds-base")
    start = adapted_model(argparse.Namespace(adapted="start", base=base))
    shipped = adapted_model(argparse.Namespace(adapted=str(ROOT / "checkpoints" / "toybirds-microclip.safetensors")))
    eye = torch.eye(start.backbone.width)
    for proj in (start.soap.query_proj, start.soap.key_proj, start.soap.value_proj):
        assert torch.equal(proj.weight, eye)
    assert not torch.equal(shipped.soap.value_proj.weight, eye)  # adaptation moved it; "start" did not
    # W* at the start is the descriptions' (the shipped model's frozen W_LLM head is built from the same text)
    assert not torch.allclose(start.heads.w_star, shipped.heads.w_star)
    assert torch.allclose(start.heads.w_llm, shipped.heads.w_llm, atol=1e-5)


def test_the_bench_reports_the_recorded_baseline_only_for_the_base_it_was_run_on(tmp_path):
    import argparse

    baseline_accuracy = load_bench("toyworld")._baseline_accuracy
    shipped = json.loads(RECORD.read_text())["baseline"]["metrics"]["acc_cls"]
    args = argparse.Namespace(run_baseline=False, baseline_dir=None, base=str(ROOT / "checkpoints" / "toybirds-base"))
    assert baseline_accuracy(args) == shipped
    assert baseline_accuracy(argparse.Namespace(**{**vars(args), "base": str(tmp_path)})) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"acc_cls": 12.5}))
    assert baseline_accuracy(argparse.Namespace(**{**vars(args), "baseline_dir": str(tmp_path)})) == 12.5
