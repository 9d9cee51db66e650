from __future__ import annotations

import argparse
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import make_clip
from safetensors.torch import load_file, save_file

from microclip.backbone import Backbone, BaseModelSpec, create_clip
from microclip.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    check_compatible,
    load_model,
    load_reference_model,
    read_adapted,
    save_adapted,
)
from microclip.heads import Heads
from microclip.model import MicroCLIP


def perturbed_model(seed: int = 0) -> MicroCLIP:
    torch.manual_seed(seed)
    heads = Heads(["a", "b", "c"], F.normalize(torch.randn(3, 32), dim=-1), torch.randn(3, 32))
    model = MicroCLIP(Backbone(make_clip().visual), heads)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def test_round_trip_through_local_dir_base(tmp_path, tiny_model_dir):
    from microclip.backbone import create_clip

    clip, spec = create_clip(f"local-dir:{tiny_model_dir}")
    model = perturbed_model()
    model.backbone = Backbone(clip.visual)
    model.base = spec
    path = save_adapted(tmp_path / "m.safetensors", model.adapted_state(), CheckpointMeta(spec, ["a", "b", "c"]))
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind
    assert path.stat().st_size < 200_000  # only the adapted tensors
    loaded = load_model(path)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images).logits.fused, model(images).logits.fused)


def test_pickle_renamed_safetensors_is_refused(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        read_adapted(path)
    torch.save({"x": torch.zeros(2)}, tmp_path / "zip.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        read_adapted(tmp_path / "zip.safetensors")


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    model = perturbed_model()
    spec = BaseModelSpec("Test-ViT-Tiny", "none", seed=0)
    path = save_adapted(tmp_path / "m.safetensors", model.adapted_state(), CheckpointMeta(spec, ["a", "b", "c"]))
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_adapted(truncated)

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="without microCLIP metadata"):
        read_adapted(tmp_path / "plain.safetensors")


def test_mismatched_base_and_classes_fail_clearly():
    meta = CheckpointMeta(BaseModelSpec("ViT-B-32-quickgelu", "openai"), ["a", "b"])
    with pytest.raises(CheckpointError, match="adapted from ViT-B-32-quickgelu / openai"):
        check_compatible(meta, BaseModelSpec("ViT-B-32-quickgelu", "laion2b_s34b_b79k"), None, "ckpt")
    with pytest.raises(CheckpointError, match="classes"):
        check_compatible(meta, BaseModelSpec("ViT-B-32-quickgelu", "openai"), ["a", "c"], "ckpt")
    hashed = CheckpointMeta(BaseModelSpec("X", "/w.safetensors", weights_sha256="a" * 64), ["a"])
    with pytest.raises(CheckpointError, match="sha256"):
        check_compatible(hashed, BaseModelSpec("X", "/w.safetensors", weights_sha256="b" * 64), None, "ckpt")


def test_a_base_folder_is_known_by_its_weights_not_by_where_it_lies(tiny_model_dir, tmp_path):
    _, here = create_clip(f"local-dir:{tiny_model_dir}")
    moved = tmp_path / "elsewhere" / "base"
    shutil.copytree(tiny_model_dir, moved)
    _, there = create_clip(f"local-dir:{moved}")
    assert here.clip_model != there.clip_model  # spelt differently, so the check below could refuse it
    meta = CheckpointMeta(here, ["a"])
    check_compatible(meta, there, ["a"], "ckpt")
    weights = next(moved.glob("*.safetensors"))
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, weights)
    _, changed = create_clip(f"local-dir:{moved}")
    with pytest.raises(CheckpointError, match="sha256"):
        check_compatible(meta, changed, ["a"], "ckpt")
    with pytest.raises(CheckpointError, match="adapted from"):  # a folder against a named model still differs
        check_compatible(meta, BaseModelSpec("ViT-B-32-quickgelu", "openai"), ["a"], "ckpt")


def reference_checkpoint(model: MicroCLIP, path, unr_token: bool = False) -> None:
    """A checkpoint laid out as the reference's train.py saves it (docs/method.md §12b)."""
    visual = {f"clip_model.visual.{k}": v for k, v in model.backbone.visual.state_dict().items()}
    state = {
        **visual,
        "classifier": model.heads.w_star.detach().clone(),
        "query_proj.linear.weight": model.soap.query_proj.weight.detach().clone(),
        "key_proj.linear.weight": model.soap.key_proj.weight.detach().clone(),
        "value_proj.linear.weight": model.soap.value_proj.weight.detach().clone(),
        **{f"zs_encoder.{k}": torch.zeros_like(v) for k, v in model.backbone.visual.state_dict().items()},
    }
    args = argparse.Namespace(clip_model="Test-ViT-Tiny", fusion_ratio=0.5, dataset="shapes", lr=1e-4)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 14, "args": args}, path)


def test_reference_pth_import_reproduces_the_model(tmp_path):
    model = perturbed_model()
    reference_checkpoint(model, tmp_path / "checkpoint-last.pth")
    imported = load_reference_model(tmp_path / "checkpoint-last.pth", classes=["a", "b", "c"])
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(imported(images).logits.fused, model(images).logits.fused)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/microclip-pwned",))


def test_malicious_pth_is_refused_without_running_code(tmp_path):
    import os

    if os.path.exists("/tmp/microclip-pwned"):
        os.remove("/tmp/microclip-pwned")
    torch.save({"model": {"classifier": torch.zeros(2, 2)}, "args": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_reference_model(tmp_path / "evil.pth")
    assert not os.path.exists("/tmp/microclip-pwned")
