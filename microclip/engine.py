"""``fit`` and ``evaluate``: the self-training loop (method.md §1.2, §5, §6) with callbacks.

The loop reads like the method: weak view → pseudo-labels (no grad, with K crops) → strong view →
fused logits → CE + fairness → AdamW step on the trainable set. Everything around it (progress,
logs, plots, checkpoints, the app's live view, cancellation) is a callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from microclip.checkpoint import atomic_save_tensors, read_tensors
from microclip.labeling import aggregate, crop_composite, fuse_for_labels
from microclip.losses import FairnessRegulariser, pseudo_label_loss
from microclip.model import MicroCLIP

log = logging.getLogger(__name__)

Mode = Literal["microclip", "baseline", "wca_baseline", "fully_supervised"]
AmpMode = Literal["none", "bf16", "fp16"]


@dataclass
class TrainConfig:
    """The recipe (method.md §6); defaults are the reference's dataset config."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-4
    min_lr: float = 1e-6  # the reference doubles it: the cosine ends at 2e-6
    warmup_steps: int = 0  # linear warmup steps; takes precedence over warmup_epochs, as in the reference
    warmup_epochs: int = 0  # the reference's --warmup_epochs: warmup_epochs x steps per epoch
    weight_decay: float = 0.1
    decay: Literal["all", "intended"] = "all"  # reference: decay on all; "intended": none on LayerNorms
    gamma: float = 0.5
    n_crops: int = 8
    ce_weight: float = 1.0
    fairness_weight: float = 1.0
    mode: Mode = "microclip"
    use_fixed_classifier: bool = False  # baselines: pseudo-label with W_LLM instead of Ŵ*
    amp: AmpMode = "none"
    seed: int = 0
    num_workers: int = 0
    max_steps: int | None = None  # cap on optimisation steps (short runs)
    eval_every: int = 1  # epochs between test evaluations (0: only at the end)
    save_every_steps: int = 0  # mid-epoch resumable state (0: at epoch ends only)
    eval_batch_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def reported_branch(self) -> str:
        """The prediction reported as ``acc``: [CLS]-only for the baselines (as the reference), else fused."""
        return "cls" if self.mode in ("baseline", "wca_baseline") else "fused"

    def warmup(self, steps_per_epoch: int) -> int:
        """Warmup steps: ``warmup_steps`` when set, else ``warmup_epochs`` epochs (the reference's rule)."""
        return self.warmup_steps if self.warmup_steps > 0 else self.warmup_epochs * steps_per_epoch

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class FitState:
    """What callbacks see; setting ``should_stop`` ends the run after the current step."""

    config: TrainConfig
    model: MicroCLIP
    steps_per_epoch: int
    total_steps: int
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    should_stop: bool = False
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Callback:
    """Override what you need; every hook gets the shared :class:`FitState`."""

    def on_fit_start(self, state: FitState) -> None: ...
    def on_step_end(self, state: FitState, metrics: dict) -> None: ...
    def on_epoch_end(self, state: FitState, metrics: dict) -> None: ...
    def on_fit_end(self, state: FitState) -> None: ...


@dataclass(frozen=True)
class EvalResult:
    n: int
    predictions: dict[str, torch.Tensor]  # branch → (n,) predicted class
    targets: torch.Tensor | None  # (n,) or None when unlabelled
    classes: tuple[str, ...]

    def accuracy(self, branch: str = "fused") -> float | None:
        if self.targets is None or self.n == 0:
            return None
        return 100.0 * (self.predictions[branch] == self.targets).float().mean().item()

    def per_class_accuracy(self, branch: str = "fused") -> dict[str, float | None]:
        """Standard per-class accuracy (a class absent from the test set maps to None)."""
        if self.targets is None:
            return {}
        result = {}
        for index, name in enumerate(self.classes):
            chosen = self.targets == index
            result[name] = 100.0 * (self.predictions[branch][chosen] == index).float().mean().item() \
                if chosen.any() else None
        return result

    def mean_per_class(self, branch: str = "fused") -> float | None:
        values = [v for v in self.per_class_accuracy(branch).values() if v is not None]
        return sum(values) / len(values) if values else None

    def summary(self, reported: str = "fused") -> dict:
        """``acc`` (and ``mean_per_class``) of the ``reported`` branch, and every branch under its own name."""
        return {"n": self.n, "acc": self.accuracy(reported), "acc_fused": self.accuracy("fused"),
                "acc_cls": self.accuracy("cls"), "acc_fg": self.accuracy("fg"),
                "mean_per_class": self.mean_per_class(reported)}


@dataclass(frozen=True)
class FitResult:
    history: list[dict]
    stopped: bool
    global_step: int


# ------------------------------------------------------------------ devices, precision, distribution

def select_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, amp: AmpMode):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ schedule and optimiser

def cosine_lr(step: int, total: int, base_lr: float, min_lr: float, warmup: int = 0) -> float:
    """Per-iteration cosine from ``base_lr`` to ``2 * min_lr`` (the reference's doubling), linear warmup.

    The warmup is the reference's ``np.linspace(0, base_lr, warmup)``: it starts at 0 and reaches
    ``base_lr`` on its last step; the cosine then restarts from ``base_lr`` over the remaining steps.
    """
    final = 2.0 * min_lr
    if step < warmup:
        return base_lr * step / (warmup - 1) if warmup > 1 else 0.0
    progress = (step - warmup) / max(1, total - warmup)
    return final + 0.5 * (base_lr - final) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: MicroCLIP, config: TrainConfig) -> torch.optim.AdamW:
    params = model.trainable_parameters()
    if config.decay == "all":
        groups = [{"params": list(params.values()), "weight_decay": config.weight_decay}]
    else:
        skip = model.no_decay_names()
        groups = [
            {"params": [p for n, p in params.items() if n not in skip], "weight_decay": config.weight_decay},
            {"params": [p for n, p in params.items() if n in skip], "weight_decay": 0.0},
        ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)


# ------------------------------------------------------------------ data

class _SkipSampler(Sampler):
    """The epoch's sampler order with the first ``skip`` indices dropped (mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _loader(dataset: Dataset, batch_size: int, sampler: Sampler, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=False, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


# ------------------------------------------------------------------ the step

@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor
    metrics: dict


def pseudo_label(model: MicroCLIP, views: torch.Tensor, targets: torch.Tensor, config: TrainConfig):
    """Labels for the strong view, from the weak view and the crops; no gradient."""
    weak = views[:, 0]
    with torch.no_grad():
        if config.mode == "fully_supervised":
            return targets, {}
        head = model.heads.w_llm if config.use_fixed_classifier else model.heads.w_star_hat()
        if config.mode == "baseline":
            cls_embed = model.encode_cls(weak)
            return (cls_embed @ head.T.to(cls_embed.dtype)).argmax(1), {}
        crops = views[:, 2:]  # (B, K, 3, S, S)
        batch, n_crops = crops.shape[:2]
        crop_embeds = model.encode_cls(crops.flatten(0, 1)).view(batch, n_crops, -1).float()
        if config.mode == "wca_baseline":
            anchor = model.encode_cls(weak).float()
            composite = crop_composite(crop_embeds, anchor)
            return (composite @ head.T.float()).argmax(1), {}
        out = model(weak)
        composite = crop_composite(crop_embeds, out.tokens.cls_embed.float())
        fused = fuse_for_labels(out.tokens.cls_embed.float(), out.fg_embed.float())
        labels = aggregate(composite, fused, model.heads.w_llm, model.heads.w_star_hat(), config.gamma)
        extra = {"pl_conf": labels.confidence.mean().item()}
        if (targets >= 0).all():
            extra["pl_acc_static"] = 100.0 * (labels.static_labels == targets).float().mean().item()
            extra["pl_acc_dynamic"] = 100.0 * (labels.dynamic_labels == targets).float().mean().item()
        return labels.labels, extra


def train_step(model: MicroCLIP, wrapped: torch.nn.Module, views: torch.Tensor, targets: torch.Tensor,
               config: TrainConfig, fairness: FairnessRegulariser, device: torch.device) -> StepOutput:
    """One self-training step up to the loss (no optimiser step)."""
    with autocast(device, config.amp):
        labels, metrics = pseudo_label(model, views, targets, config)
        cls_only = config.mode in ("baseline", "wca_baseline")
        out = wrapped(views[:, 1], cls_only=cls_only)
        logits = (out.logits.cls if cls_only else out.logits.fused).float()
    ce = pseudo_label_loss(logits, labels)
    loss = config.ce_weight * ce
    if config.mode != "fully_supervised":
        fair = fairness(logits)
        loss = loss + config.fairness_weight * fair
        metrics["fair"] = fair.item()
    metrics["ce"] = ce.item()
    if (targets >= 0).all():
        metrics["pl_acc"] = 100.0 * (labels == targets).float().mean().item()
    return StepOutput(loss=loss, metrics=metrics)


# ------------------------------------------------------------------ resumable state

def save_train_state(path: Path, model: MicroCLIP, optimizer: torch.optim.Optimizer, state: FitState,
                     fairness: FairnessRegulariser) -> None:
    """Everything a resumed run needs, in safetensors + JSON (no pickle)."""
    tensors = {f"model.{k}": v for k, v in model.adapted_state().items()}
    names = {id(p): n for n, p in model.trainable_parameters().items()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                tensors[f"optim.{names[id(param)]}.{key}"] = torch.as_tensor(value).float()
    if fairness.running is not None:
        tensors["fairness.running"] = fairness.running.float()
    tensors["rng.torch"] = torch.get_rng_state()
    np_state = np.random.get_state()
    meta = {
        "epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "global_step": state.global_step,
        "history": state.history, "config": state.config.to_dict(),
        "python_rng": random.getstate(), "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    atomic_save_tensors(path, tensors, {"train_state": json.dumps(meta)})


def load_train_state(path: Path, model: MicroCLIP, optimizer: torch.optim.Optimizer,
                     fairness: FairnessRegulariser) -> dict:
    tensors, metadata = read_tensors(path)
    meta = json.loads(metadata["train_state"])
    model.load_adapted_state({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = model.trainable_parameters()
    for name, param in params.items():
        keys = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.")
                and k.count(".") == name.count(".") + 2}
        if keys:
            optimizer.state[param] = {
                "step": keys["step"].reshape(()),
                "exp_avg": keys["exp_avg"].to(param.device, param.dtype),
                "exp_avg_sq": keys["exp_avg_sq"].to(param.device, param.dtype),
            }
    fairness.running = tensors["fairness.running"].to(next(iter(params.values())).device) \
        if "fairness.running" in tensors else None
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate((meta["python_rng"][0], tuple(meta["python_rng"][1]), meta["python_rng"][2]))
    np_state = meta["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return meta


# ------------------------------------------------------------------ fit

def fit(
    model: MicroCLIP,
    train_set: Dataset,
    config: TrainConfig,
    test_set: Dataset | None = None,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Self-train ``model`` on the (unlabelled) ``train_set``.

    ``train_set`` yields ``(views (2+K, 3, S, S), label, index)`` with label -1 when unknown;
    it must offer ``set_epoch`` so that augmentations are a function of (seed, epoch, index).
    ``state_path`` receives the resumable state; with ``resume`` the run continues from it and
    ends with the same weights as an uninterrupted run.
    """
    device = torch.device(device)
    rank, world = distributed_context()
    model.to(device).train()
    optimizer = build_optimizer(model, config)
    trainable = list(model.trainable_parameters().values())
    fairness = FairnessRegulariser()
    wrapped: torch.nn.Module = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 7, growth_factor=20.0, growth_interval=500) \
        if config.amp == "fp16" else None

    local_batch = config.batch_size // world
    if local_batch * world != config.batch_size:
        raise ValueError(f"batch size {config.batch_size} does not split over {world} processes")
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    state = FitState(config=config, model=model, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                     rank=rank)

    seed_everything(config.seed)
    if resume and state_path is not None and state_path.is_file():
        meta = load_train_state(state_path, model, optimizer, fairness)
        state.epoch, state.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        state.global_step, state.history = meta["global_step"], meta["history"]
        log.info("resumed from %s at epoch %d, step %d", state_path, state.epoch, state.step_in_epoch)

    for callback in callbacks:
        callback.on_fit_start(state)
    stopped = False
    while state.epoch < config.epochs and state.global_step < total_steps and not stopped:
        sampler.set_epoch(state.epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(state.epoch)
        if state.step_in_epoch == 0:
            fairness.reset()
        loader = _loader(train_set, local_batch, _SkipSampler(sampler, state.step_in_epoch * local_batch),
                         config.num_workers)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        epoch_start = time.perf_counter()
        for views, targets, _ in loader:
            views, targets = views.to(device, non_blocking=True), targets.to(device)
            lr = cosine_lr(state.global_step, total_steps, config.lr, config.min_lr, config.warmup(steps_per_epoch))
            for group in optimizer.param_groups:
                group["lr"] = lr
            step = train_step(model, wrapped, views, targets, config, fairness, device)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(step.loss) if scaler is not None else step.loss).backward()
            if config.amp != "none":  # the reference's --amp clips the L1 gradient norm at 1.0
                if scaler is not None:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, 1.0, norm_type=1)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            state.step_in_epoch += 1
            state.global_step += 1
            metrics = {"loss": step.loss.item(), "lr": lr, **step.metrics}
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            for callback in callbacks:
                callback.on_step_end(state, metrics)
            at_end = state.global_step >= total_steps
            if state.should_stop or at_end:
                stopped = state.should_stop and not at_end
                break
            if config.save_every_steps and state.global_step % config.save_every_steps == 0 \
                    and state_path is not None and state.is_main:
                save_train_state(state_path, model, optimizer, state, fairness)
        if stopped:
            break
        epoch_metrics = {"epoch": state.epoch + 1, "step": state.global_step,
                         "epoch_time": time.perf_counter() - epoch_start}
        epoch_metrics.update({f"train_{k}": sums[k] / counts[k] for k in sums})
        last_epoch = state.epoch + 1 >= config.epochs or state.global_step >= total_steps
        if test_set is not None and state.is_main and (
                last_epoch or (config.eval_every and (state.epoch + 1) % config.eval_every == 0)):
            result = evaluate(model, test_set, batch_size=config.eval_batch_size or 4 * config.batch_size,
                              device=device, amp=config.amp, num_workers=config.num_workers)
            epoch_metrics.update({f"test_{k}": v for k, v in result.summary(config.reported_branch).items()})
            model.train()
        state.history.append(epoch_metrics)
        state.epoch += 1
        state.step_in_epoch = 0
        if state_path is not None and state.is_main:
            save_train_state(state_path, model, optimizer, state, fairness)
        for callback in callbacks:
            callback.on_epoch_end(state, epoch_metrics)
    if stopped and state_path is not None and state.is_main:
        save_train_state(state_path, model, optimizer, state, fairness)
    for callback in callbacks:
        callback.on_fit_end(state)
    model.eval()
    return FitResult(history=state.history, stopped=stopped, global_step=state.global_step)


# ------------------------------------------------------------------ evaluate

@torch.no_grad()
def evaluate(model: MicroCLIP, dataset: Dataset, batch_size: int = 256, device: torch.device | str = "cpu",
             amp: AmpMode = "none", num_workers: int = 0, ratio: float | None = None) -> EvalResult:
    """Fused, [CLS]-only and [FG]-only predictions on ``dataset`` (items ``(image, label, ...)``)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    predictions: dict[str, list[torch.Tensor]] = {"fused": [], "cls": [], "fg": []}
    targets = []
    for batch in loader:
        images, labels = batch[0].to(device), batch[1]
        with autocast(device, amp):
            logits = model(images, ratio=ratio).logits
        predictions["fused"].append(logits.fused.argmax(1).cpu())
        predictions["cls"].append(logits.cls.argmax(1).cpu())
        predictions["fg"].append(logits.fg.argmax(1).cpu())
        targets.append(labels)
    model.train(was_training)
    merged = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for k, v in predictions.items()}
    all_targets = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    labelled = bool(len(all_targets)) and bool((all_targets >= 0).all())
    return EvalResult(n=len(all_targets), predictions=merged, targets=all_targets if labelled else None,
                      classes=model.classes)
