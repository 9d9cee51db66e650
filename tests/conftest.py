"""Shared fixtures: tiny random ViTs registered as open_clip configs, small generated image folders, and
helpers that serve the app on loopback for the app tests."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
MODEL_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIGS)

CLASSES = ["red square", "green disc", "blue bar"]
BUNDLED_TOY_MODEL = ROOT / "checkpoints" / "toybirds-microclip.safetensors"


SHAPE_DESCRIPTIONS = {
    "red square": ["a red square.", "a shape with four corners."],
    "green disc": ["a green disc.", "a round shape."],
    "blue bar": ["a blue bar.", "a long thin shape."],
}
SHAPE_TEMPLATES = ["a photo of a {}."]


def moved_registry(tiny_model_dir: Path, folder: Path, training: dict | None = None):
    """The tiny ViT zero-shot from SHAPE_DESCRIPTIONS ("zero-shot"), and "adapted" (the default): its trainable
    parameters moved off their start, saved as a checkpoint that carries the same descriptions (and ``training``,
    the header's record of how it was adapted)."""
    from microclip.checkpoint import CheckpointMeta, save_adapted
    from microclip.model import MicroCLIP
    from studio.registry import ModelRegistry

    base = f"local-dir:{tiny_model_dir}"
    registry = ModelRegistry("cpu")
    registry.add_base(base, None, CLASSES, "zero-shot", SHAPE_TEMPLATES, SHAPE_DESCRIPTIONS)
    model, _, _ = MicroCLIP.build(base, None, CLASSES, SHAPE_TEMPLATES, SHAPE_DESCRIPTIONS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    meta = CheckpointMeta(
        model.base,
        CLASSES,
        method=model.config.to_dict(),
        training=training or {},
        templates=SHAPE_TEMPLATES,
        descriptions=SHAPE_DESCRIPTIONS,
    )
    registry.add_checkpoint(save_adapted(folder / "adapted.safetensors", model.adapted_state(), meta), "adapted", True)
    return registry


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report kept on the test item (``item.report_call``), for fixtures that keep evidence of a
    failure (the browser tests' page as it was when an assertion failed)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def shipped_start_and_last_epoch() -> list[tuple[int, Path]]:
    """The bundled toy model's start and last saved epoch (number and file), found beside it as the app finds them,
    whatever the toy recipe's epoch count; [] when its epochs are not shipped."""
    from microclip.checkpoint import epochs_beside

    saved = epochs_beside(BUNDLED_TOY_MODEL)
    return [saved[0], saved[-1]] if len(saved) > 1 else []


def command_here(*args: str) -> subprocess.CompletedProcess:
    """``python train.py …``, ``python evaluate.py …`` or ``python -m microclip …`` called in this process, from the
    project's folder, its output and exit status returned as ``subprocess.run`` returns them. A new interpreter
    spends 3.6 s importing torch and open_clip (AMD EPYC): most of what a test of a command that reads a checkpoint,
    or refuses its input, took. An exception the command lets out fails the test, as its traceback would show
    in a terminal. The logging set-up the command makes (it replaces the root logger's handlers) is undone."""
    from microclip.__main__ import main as microclip_main
    from microclip.cli import evaluate_main, train

    entries = {"train.py": (train, 1), "evaluate.py": (evaluate_main, 1), "-m": (microclip_main, 2)}
    entry, skip = entries[args[0]]
    assert args[0] != "-m" or args[1] == "microclip", args
    root, ours = logging.getLogger(), logging.getLogger("microclip")
    kept = (root.handlers[:], root.level, ours.level)
    out, err, folder = io.StringIO(), io.StringIO(), Path.cwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(list(args[skip:]))
            except SystemExit as exit_:  # argparse's refusals
                code = 0 if exit_.code is None else exit_.code
    finally:
        os.chdir(folder)
        root.handlers[:], (root.level, ours.level) = kept[0], kept[1:]
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def load_bench(name: str):
    """A bench/ script is not a package module: load bench/NAME.py from its file."""
    path = ROOT / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_clip(name: str = "Test-ViT-Tiny", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_clip() -> torch.nn.Module:
    return make_clip()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An open_clip ``local-dir:`` folder with random tiny weights (usable from subprocesses)."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    model = make_clip()
    config = json.loads((MODEL_CONFIGS / "Test-ViT-Tiny.json").read_text())
    preprocess = {
        "size": 32,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def draw_sample(label: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """Class 0: a red square, 1: a green disc, 2: a blue bar, on a noisy background."""
    image = (rng.random((size, size, 3)) * 80).astype(np.uint8)
    cy, cx = rng.integers(12, size - 12, 2)
    yy, xx = np.mgrid[:size, :size]
    if label == 0:
        region = (abs(yy - cy) < 7) & (abs(xx - cx) < 7)
    elif label == 1:
        region = (yy - cy) ** 2 + (xx - cx) ** 2 < 49
    else:
        region = (abs(yy - cy) < 3) & (abs(xx - cx) < 10)
    image[region] = [(220, 30, 30), (30, 220, 30), (30, 30, 220)][label]
    return Image.fromarray(image)


def write_image_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            draw_sample(label, rng).save(root / name / f"{index:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_dataset_root(tmp_path_factory) -> Path:
    """``<root>/shapes/{train,test}/<class>/*.png``: the reference's data layout, 3 classes."""
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "shapes" / "train", per_class=8, seed=1)
    write_image_folder(root / "shapes" / "test", per_class=4, seed=2)
    return root


# ------------------------------------------------------------------ the app, served on loopback (tests/test_app_*.py)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(demo, auth: tuple[str, str] | None = None):
    """Launch a built Gradio app on 127.0.0.1 (no thread lock; behind a login when ``auth`` is given) and close it
    afterwards; yields its URL."""
    from ui.app import launch_kwargs

    demo.launch(**launch_kwargs("127.0.0.1", free_port(), auth=auth), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def zip_folder(folder: Path, archive: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> Path:
    """Zip every file under ``folder`` (paths relative to it, under ``prefix``), plus ``extra`` members."""
    import zipfile

    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def tiny_base_registry(model_dir: Path, name: str = "tiny"):
    """A ``ModelRegistry`` holding the tiny random ViT as a zero-shot base model on the shape classes."""
    from studio.registry import ModelRegistry

    registry = ModelRegistry("cpu")
    registry.add_base(f"local-dir:{model_dir}", None, CLASSES, name)
    return registry
