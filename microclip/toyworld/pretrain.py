"""Contrastive pretraining of the tiny CLIP on toy bird images and captions.

    python -m microclip.toyworld.pretrain --out checkpoints/toybirds-base --steps 2500

Reads top to bottom: build data and model, then for each step draw a batch and its captions from a
rng seeded by (seed, step) -- so a resumed run continues exactly like an uninterrupted one -- take an
AdamW step on open_clip's ClipLoss, and checkpoint now and then. At the end the model is written as an
open_clip `local-dir:` folder and evaluated on the toybirds test split.

Checkpoints hold no pickle: tensors (model, optimizer state, torch rng) in `state.safetensors`, scalars
in `state.json` (and, for atomicity, the same JSON inside the safetensors metadata).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file
from tqdm import tqdm

from microclip.constants import CLIP_MEAN, CLIP_STD
from microclip.toyworld import MODEL_CONFIG_DIR, TOY_MODEL_NAME, register_model_configs
from microclip.toyworld.dataset import (
    ensure_pretrain_corpus,
    ensure_split,
    load_pretrain_corpus,
    load_split_arrays,
)
from microclip.toyworld.metrics import evaluate_toy_clip, images_to_tensor
from microclip.toyworld.text import P_NAME, TEMPLATES, descriptions, pretrain_caption
from microclip.toyworld.world import CLASS_NAMES, SPECIES

log = logging.getLogger(__name__)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp on the learned temperature


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (plain values; the CLI maps flags onto these)."""

    out: str
    steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 150
    seed: int = 0
    n_images: int = 40000
    data_root: str = "./data"
    resume: bool = False
    ckpt_every: int = 100
    stop_after: int | None = None  # stop (with a checkpoint) after this step, as if killed; for tests
    augment: bool = True
    p_name: float = P_NAME  # how often a caption names the species (the rest describe parts)
    eval_train_per_class: int = 100
    eval_test_per_class: int = 50
    threads: int = 2
    command: str = field(default="")


# ---------------------------------------------------------------- data for one step


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup then cosine decay to 0 over cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(step: int, cfg: PretrainConfig, n: int) -> np.ndarray:
    """Image indices of `step`: epoch-wise permutations, each seeded by (seed, epoch)."""
    start = step * cfg.batch_size
    out = []
    while len(out) < cfg.batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([cfg.seed, 7, epoch]).permutation(n)
        out.extend(perm[offset: offset + cfg.batch_size - len(out)].tolist())
    return np.array(out)


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random shift by up to 4 px (edge padding) and horizontal flip; parts keep their meaning."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 9, size=(2, n))
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, dy[i]: dy[i] + h, dx[i]: dx[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def make_batch(step: int, cfg: PretrainConfig, images: np.ndarray, species: np.ndarray, tokenizer
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) and caption tokens (B, L) for `step`, a pure function of (seed, step)."""
    idx = batch_indices(step, cfg, len(images))
    rng = np.random.default_rng([cfg.seed, 11, step])
    batch = augment(images[idx], rng) if cfg.augment else images[idx]
    captions = [pretrain_caption(SPECIES[int(s)], rng, cfg.p_name) for s in species[idx]]
    return images_to_tensor(batch), tokenizer(captions)


# ---------------------------------------------------------------- model and optimizer


def build_model() -> torch.nn.Module:
    register_model_configs()
    import open_clip

    return open_clip.create_model(TOY_MODEL_NAME)


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on gains, biases, embeddings' scalars and the logit scale (as open_clip)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg.weight_decay}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


# ---------------------------------------------------------------- checkpoints (no pickle)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(out: Path, model: torch.nn.Module, opt: torch.optim.AdamW, scalars: dict) -> None:
    """Write state.safetensors (tensors + the scalars as metadata) and state.json, each atomically."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt_sd = opt.state_dict()
    for pid, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = torch.as_tensor(v).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [{k: v for k, v in g.items()} for g in opt_sd["param_groups"]]
    state = dict(scalars, optimizer_param_groups=groups)
    text = json.dumps(state, indent=2)
    _atomic_write(out / "state.safetensors", lambda p: save_file(tensors, p, metadata={"state_json": text}))
    _atomic_write(out / "state.json", lambda p: Path(p).write_text(text + "\n"))


def load_state(out: Path, model: torch.nn.Module, opt: torch.optim.AdamW) -> dict:
    """Restore model, optimizer and torch rng from `out/state.safetensors`; return the saved scalars."""
    path = out / "state.safetensors"
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["state_json"])
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state.pop("optimizer_param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    return state


def export_open_clip_folder(model: torch.nn.Module, out: Path) -> None:
    """Write `open_clip_config.json` + fp16 `open_clip_model.safetensors`, loadable as 'local-dir:OUT'."""
    model_cfg = json.loads((MODEL_CONFIG_DIR / f"{TOY_MODEL_NAME}.json").read_text())
    preprocess_cfg = {"size": model_cfg["vision_cfg"]["image_size"], "mean": list(CLIP_MEAN),
                      "std": list(CLIP_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    weights = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(out / "open_clip_model.safetensors", lambda p: save_file(weights, p))
    config_text = json.dumps(config, indent=2) + "\n"
    _atomic_write(out / "open_clip_config.json", lambda p: Path(p).write_text(config_text))


# ---------------------------------------------------------------- the run


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining; returns the summary also written to `out/pretrain.json` when done."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    import open_clip

    register_model_configs()
    tokenizer = open_clip.get_tokenizer(TOY_MODEL_NAME)
    images, species = load_pretrain_corpus(ensure_pretrain_corpus(cfg.data_root, cfg.n_images, cfg.seed))

    # All batch, caption and augmentation randomness comes from per-step numpy generators seeded by
    # (seed, step), so there is no numpy state to checkpoint; the global seeds are for library code.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model()
    opt = build_optimizer(model, cfg)
    loss_fn = open_clip.ClipLoss()
    # The first training batch: its loss before and after training shows that learning happened.
    probe_images, probe_tokens = make_batch(0, cfg, images, species, tokenizer)

    step, losses, elapsed, commands = 0, [], 0.0, [cfg.command]
    probe_loss_start = None
    if cfg.resume and (out / "state.safetensors").is_file():
        state = load_state(out, model, opt)
        if state["seed"] != cfg.seed or state["steps"] != cfg.steps or state["batch_size"] != cfg.batch_size:
            raise ValueError(f"--resume: checkpoint in {out} was made with seed={state['seed']}, "
                             f"steps={state['steps']}, batch_size={state['batch_size']}; "
                             "pass the same values or use a new --out")
        step, losses, elapsed = state["step"], state["losses"], state["elapsed_s"]
        probe_loss_start = state["probe_loss_start"]
        commands = state.get("commands", []) + [cfg.command]  # every invocation that built this model
        log.info("resumed from %s at step %d", out, step)
    if probe_loss_start is None:
        probe_loss_start = _probe_loss(model, loss_fn, probe_images, probe_tokens)

    def scalars() -> dict:
        return {"step": step, "steps": cfg.steps, "seed": cfg.seed, "batch_size": cfg.batch_size,
                "losses": losses, "elapsed_s": elapsed, "probe_loss_start": probe_loss_start,
                "commands": commands, "config": asdict(cfg)}

    last = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    model.train()
    t0 = time.time()
    bar = tqdm(total=last, initial=step, desc="pretrain", mininterval=5.0, disable=None)
    while step < last:
        imgs, tokens = make_batch(step, cfg, images, species, tokenizer)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        img_f, txt_f, logit_scale = model(imgs, tokens)
        loss = loss_fn(img_f, txt_f, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        losses.append(round(loss.item(), 5))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{logit_scale.item():.1f}")
        if step % cfg.ckpt_every == 0 or step == last:
            elapsed += time.time() - t0
            t0 = time.time()
            save_state(out, model, opt, scalars())
            log.info("step %d/%d loss(avg20) %.4f  %.1f img/s", step, cfg.steps, np.mean(losses[-20:]),
                     step * cfg.batch_size / max(elapsed, 1e-9))
    bar.close()
    if step < cfg.steps:
        return scalars()  # stopped early on purpose; --resume continues

    export_open_clip_folder(model, out)
    summary = {"command": cfg.command, "commands": commands, "seed": cfg.seed, "steps": cfg.steps,
               "batch_size": cfg.batch_size, "lr": cfg.lr, "n_images": cfg.n_images,
               "wall_time_s": round(elapsed, 1),
               "final_loss": float(np.mean(losses[-50:])), "probe_loss_start": probe_loss_start,
               "probe_loss_end": _probe_loss(model, loss_fn, probe_images, probe_tokens)}
    summary["metrics"] = evaluate_exported(out, cfg)
    _atomic_write(out / "pretrain.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n"))
    log.info("done: %s", json.dumps(summary))
    return summary


@torch.no_grad()
def _probe_loss(model, loss_fn, images: torch.Tensor, tokens: torch.Tensor) -> float:
    model.eval()
    loss = float(loss_fn(*model(images, tokens)))
    model.train()
    return loss


def evaluate_exported(folder: Path, cfg: PretrainConfig) -> dict:
    """Load `local-dir:folder` (checks the export) and measure it on the toybirds splits."""
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    ensure_split(cfg.data_root, "train", cfg.eval_train_per_class, cfg.seed)
    ensure_split(cfg.data_root, "test", cfg.eval_test_per_class, cfg.seed)
    metrics = evaluate_toy_clip(model, tokenizer, load_split_arrays(cfg.data_root, "train"),
                                load_split_arrays(cfg.data_root, "test"), CLASS_NAMES, TEMPLATES,
                                descriptions())
    return metrics.as_dict()


def parse_args(argv: list[str] | None = None) -> PretrainConfig:
    defaults = PretrainConfig(out="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint folder (becomes an open_clip local-dir)")
    for name in ("steps", "batch_size", "warmup_steps", "seed", "n_images", "ckpt_every", "threads",
                 "eval_train_per_class", "eval_test_per_class"):
        p.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight_decay", type=float, default=defaults.weight_decay)
    p.add_argument("--p_name", type=float, default=defaults.p_name, help="share of captions that name it")
    p.add_argument("--data_root", default=defaults.data_root)
    p.add_argument("--stop_after", type=int, default=None, help="stop after this step (resumable)")
    p.add_argument("--no_augment", dest="augment", action="store_false")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    args = p.parse_args(argv)
    argv_list = sys.argv[1:] if argv is None else argv
    command = "python -m microclip.toyworld.pretrain " + shlex.join(argv_list)
    return PretrainConfig(**vars(args), command=command)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    summary = pretrain(parse_args(argv))
    print(json.dumps(summary.get("metrics", {"stopped_at_step": summary.get("step")}), indent=2))


if __name__ == "__main__":
    main()
