"""``fit`` and ``evaluate``: the self-training loop (docs/method.md §1.2, §5, §6) with callbacks.

The loop reads like the method: weak view → pseudo-labels (no grad, with K crops) → strong view →
fused logits → CE + fairness → AdamW step on the trainable set. Everything around it (progress,
logs, plots, checkpoints, the app's live view, cancellation) is a callback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from microclip.constants import CLS_ONLY_MODES
from microclip.drift import ShiftProbe, agreement, shared_part, shift_logits
from microclip.labeling import LabelPrior, crop_composite, dka_pass, encode_crops
from microclip.losses import FairnessRegulariser, pseudo_label_loss
from microclip.model import MicroCLIP
from microclip.modes import eval_mode
from microclip.recipe import AmpMode, Recipe
from microclip.state import load_run_state, save_run_state

log = logging.getLogger(__name__)


@dataclass
class StepMeans:
    """The epoch's mean of each step metric, as sums and counts (which a train state file carries as JSON: a
    Python float survives JSON exactly, so a resumed epoch's means equal an uninterrupted one's)."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, metrics: dict) -> dict:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        return metrics

    def means(self) -> dict:
        return {key: self.sums[key] / self.counts[key] for key in self.sums}

    def to_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict) -> StepMeans:
        return cls(
            sums={k: float(v) for k, v in data["sums"].items()}, counts={k: int(v) for k, v in data["counts"].items()}
        )


@dataclass
class FitState:
    """What callbacks see; setting ``should_stop`` ends the run after the current step."""

    config: Recipe
    model: MicroCLIP
    steps_per_epoch: int
    total_steps: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    should_stop: bool = False
    rank: int = 0
    # the epoch's labels so far (this process's share): row the image's true class (the last row: images without
    # one), column the label it was given; None after resuming from a state file written before it existed
    labels_given: torch.Tensor | None = None
    # the epoch's step metrics so far: run state too, so that a resumed epoch's logged means cover all its steps
    step_means: StepMeans = field(default_factory=StepMeans)
    # the labels' running class marginal (Recipe.label_debias; not the reference's): run state across epochs
    label_prior: LabelPrior = field(default_factory=LabelPrior)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def count_labels(self, labels: torch.Tensor, targets: torch.Tensor) -> None:
        if self.labels_given is not None:
            n = self.labels_given.shape[1]
            truth = torch.where(targets >= 0, targets, n).cpu()  # an unlabelled image (-1) counts in the last row
            self.labels_given += confusion_counts(truth, labels.cpu(), n, rows=n + 1)


class Callback:
    """Override what you need; every hook gets the shared :class:`FitState`."""

    def on_fit_start(self, state: FitState) -> None: ...
    def on_step_end(self, state: FitState, metrics: dict) -> None: ...
    def on_epoch_end(self, state: FitState, metrics: dict) -> None: ...
    def on_fit_end(self, state: FitState) -> None: ...


def confusion_counts(targets: torch.Tensor, predictions: torch.Tensor, n: int, rows: int | None = None) -> torch.Tensor:
    """(rows, n) counts, ``rows`` n unless given: row the true class, column the one given."""
    rows = n if rows is None else rows
    return torch.bincount(targets * n + predictions, minlength=rows * n).view(rows, n)


def commonest_wrong(confusion: torch.Tensor, classes: Sequence[str]) -> dict[str, tuple[str, float] | None]:
    """Per class (a row of ``confusion``): the class its images were most often wrongly given, and on what % of them
    (the lower index on a tie); None when none was wrong or the class has no images."""
    confusion = confusion.double()
    totals = confusion.sum(1)
    confusion.fill_diagonal_(0)
    other = confusion.argmax(1)  # the first of equal maxima: the lower index
    return {
        name: (classes[int(other[i])], 100.0 * float(confusion[i, other[i]] / totals[i]))
        if confusion[i].any()
        else None
        for i, name in enumerate(classes)
    }


def own_lead(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per image (row of ``logits``): its own class's logit minus the largest other class's; positive while the image
    is called right (a tie is not)."""
    own = logits.gather(1, targets[:, None])[:, 0]
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return own - others.max(1).values


# What evaluate adds for a model that carries its run's shared `[FG]` shift (model.fg_shift)
UNSHIFTED_BRANCHES = ("fg_unshifted", "fused_unshifted")


def sweep_branch(ratio: float) -> str:
    """The branch :func:`evaluate_as` names the fused answer re-fused with the fusion ratio ``ratio``
    (``"fused@0.7"``)."""
    return f"fused@{ratio:g}"


@dataclass(frozen=True)
class EvalResult:
    n: int
    predictions: dict[str, torch.Tensor]  # branch → (n,) predicted class
    targets: torch.Tensor | None  # (n,) or None when unlabelled
    classes: tuple[str, ...]
    leads: dict[str, torch.Tensor] = field(default_factory=dict)  # branch → (n,) own_lead; labelled sets only

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
            result[name] = (
                100.0 * (self.predictions[branch][chosen] == index).float().mean().item() if chosen.any() else None
            )
        return result

    def commonest_wrong(self, branch: str = "fused") -> dict[str, tuple[str, float] | None]:
        """Per class: the class its images are most often wrongly called, and on what % of them (the lower index on
        a tie); None when none is wrong or the class is absent from the test set."""
        if self.targets is None:
            return {}
        n = len(self.classes)
        return commonest_wrong(confusion_counts(self.targets, self.predictions[branch], n), self.classes)

    def per_class_lead(self, branch: str = "fused") -> dict[str, float | None]:
        """Per class: the mean over its images of how far their own class's logit is ahead of the best other class's
        (``own_lead``; negative when they are mostly called something else); None for a class absent from the set,
        {} for an unlabelled set or one evaluated without leads."""
        if self.targets is None or branch not in self.leads:
            return {}
        lead = self.leads[branch]
        return {
            name: float(lead[self.targets == index].mean()) if (self.targets == index).any() else None
            for index, name in enumerate(self.classes)
        }

    def mean_per_class(self, branch: str = "fused") -> float | None:
        values = [v for v in self.per_class_accuracy(branch).values() if v is not None]
        return sum(values) / len(values) if values else None

    def summary(self, reported: str = "fused") -> dict:
        """``acc`` (and ``mean_per_class``) of the ``reported`` branch, and every branch under its own name."""
        return {
            "n": self.n,
            "acc": self.accuracy(reported),
            "acc_fused": self.accuracy("fused"),
            "acc_cls": self.accuracy("cls"),
            "acc_fg": self.accuracy("fg"),
            **{f"acc_{b}": self.accuracy(b) for b in UNSHIFTED_BRANCHES if b in self.predictions},
            "mean_per_class": self.mean_per_class(reported),
        }


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


def end_distributed() -> None:
    """Destroy the process group after a run that ended well. Left to the interpreter's exit, Gloo's worker threads
    can abort the process ("terminate called without an active exception", pytorch/pytorch#190489); after a failure
    it is left alone, since destroying it while another rank waits in a collective can hang (torchtitan#1342)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def _lr_scale(name: str, config: Recipe) -> float:
    if name.startswith("soap."):
        return config.soap_lr_scale
    if name.startswith("backbone."):
        return config.layernorm_lr_scale
    return 1.0


def build_optimizer(model: MicroCLIP, config: Recipe) -> torch.optim.AdamW:
    """AdamW over the trainable set; each group carries ``lr_scale`` (its share of the scheduled lr).

    With every scale at 1 the groups are the reference's one (or two, with --no_decay_groups), so the
    resumable states of earlier runs still load; other scales split the groups further.
    """
    params = model.trainable_parameters()
    skip = model.no_decay_names() if config.decay != "all" else set()
    # seeded in the reference's order (decay, then no decay): the LayerNorms come first in the trainable set
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {(1.0, True): []}
    if config.decay != "all":
        groups[(1.0, False)] = []
    for name, param in params.items():
        groups.setdefault((_lr_scale(name, config), name not in skip), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": members, "weight_decay": config.weight_decay if decays else 0.0, "lr_scale": scale}
            for (scale, decays), members in groups.items()
            if members
        ],
        lr=config.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )


class StopToken(Protocol):
    """What ``fit`` polls between steps to end a run early (a ``threading.Event`` is one)."""

    def is_set(self) -> bool: ...


class OptimizerStep:
    """backward → (AMP: unscale, clip the L1 gradient norm at 1.0, as the reference's --amp) → AdamW step."""

    def __init__(self, model: MicroCLIP, config: Recipe, device: torch.device) -> None:
        self.optimizer = build_optimizer(model, config)
        # what --amp's clipping measures: a part frozen by an lr scale of 0 must not shrink the others' steps
        self.trainable = [p for g in self.optimizer.param_groups if g["lr_scale"] > 0 for p in g["params"]]
        self.clip = config.amp != "none"
        self.scaler = (
            torch.amp.GradScaler(device.type, init_scale=2.0**7, growth_factor=20.0, growth_interval=500)
            if config.amp == "fp16"
            else None
        )

    def set_lr(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0, norm_type=1)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()


# ------------------------------------------------------------------ data


class _SkipSampler(Sampler):
    """The epoch's sampler order with the first ``skip`` indices dropped (mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _loader(dataset: Dataset, batch_size: int, sampler: Sampler, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=False,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


# ------------------------------------------------------------------ the step


@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor
    metrics: dict
    labels: torch.Tensor  # (B,) the pseudo-labels (or true labels) the step trained on


def pseudo_label(
    model: MicroCLIP, views: torch.Tensor, targets: torch.Tensor, config: Recipe, prior: LabelPrior | None = None
):
    """Labels for the strong view, from the weak view and the crops; no gradient. With ``config.label_debias``
    (not the reference's) each mode's scores are adjusted by ``prior`` (updated here) before the argmax."""

    def chosen(scores: torch.Tensor) -> torch.Tensor:
        if config.label_debias and prior is not None:
            return prior.label(scores, config.label_debias)
        return scores.argmax(1)

    weak = views[:, 0]
    with torch.no_grad():
        if config.mode == "fully_supervised":
            return targets, {}
        head = model.heads.w_llm if config.use_fixed_classifier else model.heads.w_star_hat()
        if config.mode == "baseline":
            cls_embed = model.encode_cls(weak)
            return chosen(cls_embed @ head.T.to(cls_embed.dtype)), {}
        crops = views[:, 2:]  # (B, K, 3, S, S)
        if config.mode == "wca_baseline":
            crop_embeds = encode_crops(model, crops)
            anchor = model.encode_cls(weak).float()
            composite = crop_composite(crop_embeds, anchor)
            return chosen(composite @ head.T.float()), {}
        dka = dka_pass(model, weak, crops, config.gamma)
        out, labels = dka.output, dka.labels
        if config.label_debias:
            labels = replace(labels, labels=chosen(labels.scores))
        extra = {"pl_conf": labels.confidence.mean().item()}
        # label-free (microclip.drift): how often each branch alone names the fused answer on the weak view, and
        # how much of each branch's token every image shares
        for branch, embeds in (("cls", out.tokens.cls_embed), ("fg", out.fg_embed)):
            extra[f"agree_{branch}"] = agreement(getattr(out.logits, branch), out.logits.fused)
            extra[f"shared_{branch}"] = shared_part(embeds)
        if (targets >= 0).all():
            extra["pl_acc_static"] = 100.0 * (labels.static_labels == targets).float().mean().item()
            extra["pl_acc_dynamic"] = 100.0 * (labels.dynamic_labels == targets).float().mean().item()
        return labels.labels, extra


def train_step(
    model: MicroCLIP,
    wrapped: torch.nn.Module,
    views: torch.Tensor,
    targets: torch.Tensor,
    config: Recipe,
    fairness: FairnessRegulariser,
    device: torch.device,
    prior: LabelPrior | None = None,
) -> StepOutput:
    """One self-training step up to the loss (no optimiser step).

    Pseudo-labels are computed outside autocast, in float32, as the reference does; only the strong
    view's forward pass (the one with gradients) runs under ``--amp``. ``prior``: the run's (``FitState``) for
    ``config.label_debias``.
    """
    labels, metrics = pseudo_label(model, views, targets, config, prior)
    with autocast(device, config.amp):
        cls_only = config.mode in CLS_ONLY_MODES
        out = wrapped(views[:, 1], cls_only=cls_only)
        logits = (out.logits.cls if cls_only else out.logits.fused).float()
    ce = pseudo_label_loss(logits, labels)
    loss = config.ce_weight * ce
    if config.branch_ce_weight and not cls_only:
        # the fused loss constrains only the sum of the branches' logits, so either branch alone may drift
        branch_ce = 0.5 * (
            pseudo_label_loss(out.logits.cls.float(), labels) + pseudo_label_loss(out.logits.fg.float(), labels)
        )
        loss = loss + config.branch_ce_weight * branch_ce
        metrics["branch_ce"] = branch_ce.item()
    if config.mode != "fully_supervised":
        fair = fairness(logits)
        loss = loss + config.fairness_weight * fair
        metrics["fair"] = fair.item()
    metrics["ce"] = ce.item()
    if (targets >= 0).all():
        metrics["pl_acc"] = 100.0 * (labels == targets).float().mean().item()
    return StepOutput(loss=loss, metrics=metrics, labels=labels)


# ------------------------------------------------------------------ resumable state


def save_train_state(
    path: Path, model: MicroCLIP, optimizer: torch.optim.Optimizer, state: FitState, fairness: FairnessRegulariser
) -> None:
    """Everything a resumed run needs (:mod:`microclip.state`: safetensors + JSON, no pickle)."""
    tensors = {f"model.{k}": v for k, v in model.adapted_state().items()}
    if fairness.running is not None:
        tensors["fairness.running"] = fairness.running.float()
    if state.labels_given is not None:
        tensors["labels_given"] = state.labels_given
    if state.label_prior.mean is not None:
        tensors["label_prior"] = state.label_prior.mean.float()
    meta = {
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "global_step": state.global_step,
        "history": state.history,
        "step_means": state.step_means.to_dict(),
        "config": state.config.to_dict(),
    }
    save_run_state(path, tensors, optimizer, meta)


def load_train_state(
    path: Path, model: MicroCLIP, optimizer: torch.optim.Optimizer, state: FitState, fairness: FairnessRegulariser
) -> None:
    tensors, meta = load_run_state(path, optimizer)
    model.load_adapted_state({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    running = tensors.get("fairness.running")
    fairness.running = running.to(next(model.parameters()).device) if running is not None else None
    state.labels_given = tensors.get("labels_given")
    prior = tensors.get("label_prior")
    state.label_prior.mean = prior.to(next(model.parameters()).device) if prior is not None else None
    state.epoch, state.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
    state.global_step, state.history = meta["global_step"], meta["history"]
    # a state file written before the means were run state: the epoch's means cover the steps after the resume
    state.step_means = StepMeans.from_dict(meta["step_means"]) if "step_means" in meta else StepMeans()
    log.info("resumed from %s at epoch %d, step %d", path, state.epoch, state.step_in_epoch)


# ------------------------------------------------------------------ fit


def fit(
    model: MicroCLIP,
    train_set: Dataset,
    config: Recipe,
    test_set: Dataset | None = None,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    resume: bool = False,
    stop: StopToken | None = None,
    start_epoch: int = 0,
    restore: Callable[[MicroCLIP, OptimizerStep], None] | None = None,
    shift_probe: ShiftProbe | None = None,
    shift_each_epoch: bool = False,
    val_set: Dataset | None = None,
) -> FitResult:
    """Self-train ``model`` on the (unlabelled) ``train_set`` of ``(views (2+K, 3, S, S), label or -1, index)``.

    ``train_set.set_epoch`` makes augmentations a function of (seed, epoch, index), so a run resumed
    from ``state_path`` ends with the weights of an uninterrupted one. ``stop`` (e.g. a
    ``threading.Event``) or a callback setting ``state.should_stop`` ends the run after the current step.
    ``start_epoch`` starts a fresh run at that epoch, as the reference's ``--start_epoch`` (the schedule
    continues from there); ``restore`` fills the model and optimiser first (a reference checkpoint).
    With ``shift_probe``, an epoch's end with a test evaluation due (every epoch's with ``shift_each_epoch``: a
    run that keeps its epochs) measures `[FG]`'s shared shift (no labels), sets it as ``model.fg_shift`` before the
    evaluation (which then also scores `[FG]` and the fused answer without it) and logs its length; at other epoch
    ends, and after a stop, ``model.fg_shift`` is None, so nothing reads a stale one: once fit returns it is the
    shift of the model as it is, or None. A measure costs one pass over at most ``drift.SHIFT_IMAGES`` training
    images. ``val_set`` (labelled images the test split does not hold) is scored whenever the test split is, into
    the row's ``val_`` fields: numbers to choose a recipe by, so that the test split is read once, at the end.
    Unlike the read-only calls (``evaluate``, ``explain``), it hands the model back in eval mode, ready to explain.
    """
    device = torch.device(device)
    rank, world = distributed_context()
    model.to(device).train()
    stepper, fairness = OptimizerStep(model, config, device), FairnessRegulariser()
    wrapped = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model
    sampler, local_batch = _sampler(train_set, config, rank, world)
    state = FitState(
        config=config,
        model=model,
        steps_per_epoch=math.ceil(len(sampler) / local_batch),
        rank=rank,
        label_prior=config.debiasing.prior(),
    )
    state.total_steps = _total_steps(config, state.steps_per_epoch)
    save = (
        (lambda: save_train_state(state_path, model, stepper.optimizer, state, fairness))
        if state_path is not None and state.is_main
        else (lambda: None)
    )

    seed_everything(config.seed)
    _start(model, stepper, state, fairness, state_path if resume else None, start_epoch, restore)
    _emit(callbacks, "on_fit_start", state)
    stopped = False
    while state.global_step < state.total_steps and not stopped:
        sampler.set_epoch(state.epoch)
        train_set.set_epoch(state.epoch)
        if state.step_in_epoch == 0:
            fairness.reset()
            state.labels_given = torch.zeros(len(model.classes) + 1, len(model.classes), dtype=torch.long)
            state.step_means = StepMeans()
        loader = _loader(
            train_set, local_batch, _SkipSampler(sampler, state.step_in_epoch * local_batch), config.num_workers
        )
        epoch_start = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for views, targets, _ in loader:
            views, targets = views.to(device, non_blocking=True), targets.to(device)
            lr = stepper.set_lr(
                cosine_lr(
                    state.global_step, state.total_steps, config.lr, config.min_lr, config.warmup(state.steps_per_epoch)
                )
            )
            step = train_step(model, wrapped, views, targets, config, fairness, device, state.label_prior)
            stepper(step.loss)
            state.count_labels(step.labels, targets)
            state.step_in_epoch, state.global_step = state.step_in_epoch + 1, state.global_step + 1
            _emit(
                callbacks,
                "on_step_end",
                state,
                state.step_means.add({"loss": step.loss.item(), "lr": lr, **step.metrics}),
            )
            if state.global_step >= state.total_steps:
                break
            stopped = state.should_stop or (stop is not None and stop.is_set())
            if stopped:
                break
            if config.save_every_steps and state.global_step % config.save_every_steps == 0:
                save()
        if not stopped:
            seconds = time.perf_counter() - epoch_start
            row = _end_epoch(model, state, test_set, seconds, device, shift_probe, shift_each_epoch, val_set)
            state.history.append(row)
            save()
            _emit(callbacks, "on_epoch_end", state, state.history[-1])
    if stopped:
        save()
        if shift_probe is not None:
            model.fg_shift = None  # the model has trained past the last epoch's measure
    _emit(callbacks, "on_fit_end", state)
    model.eval()
    return FitResult(history=state.history, stopped=stopped, global_step=state.global_step)


def _start(
    model: MicroCLIP,
    stepper: OptimizerStep,
    state: FitState,
    fairness: FairnessRegulariser,
    resume_from: Path | None,
    start_epoch: int,
    restore: Callable[[MicroCLIP, OptimizerStep], None] | None,
) -> None:
    """Where a run begins: a reference checkpoint's weights, then our own run state, or a chosen epoch."""
    if restore is not None:
        restore(model, stepper)
    if resume_from is not None and resume_from.is_file():
        load_train_state(resume_from, model, stepper.optimizer, state, fairness)
    elif start_epoch:
        state.epoch, state.global_step = start_epoch, min(start_epoch * state.steps_per_epoch, state.total_steps)


def _emit(callbacks: Sequence[Callback], hook: str, *args) -> None:
    for callback in callbacks:
        getattr(callback, hook)(*args)


def _total_steps(config: Recipe, steps_per_epoch: int) -> int:
    by_epochs = config.epochs * steps_per_epoch if config.epochs is not None else None
    return min(n for n in (by_epochs, config.max_steps) if n is not None)


def _sampler(train_set: Dataset, config: Recipe, rank: int, world: int) -> tuple[DistributedSampler, int]:
    local_batch = config.batch_size // world
    if local_batch * world != config.batch_size:
        raise ValueError(f"batch size {config.batch_size} does not split over {world} processes")
    return DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed), local_batch


def labels_given_record(given: torch.Tensor, classes: Sequence[str]) -> dict:
    """An epoch's log fields from its labels (``FitState.labels_given``): how many training images each class was
    the label of (label-free: a class the labels stop naming gets no pull from the cross-entropy, only from the
    fairness term), and, where every training image has a true class, how many of those labels were right and what
    each class's images were most often wrongly labelled (label-dependent, as ``train_pl_acc``)."""
    record = {"train_labels_per_class": dict(zip(classes, given.sum(0).tolist(), strict=True))}
    if given[-1].sum() == 0:
        labelled = given[:-1]
        record["train_labels_right_per_class"] = dict(zip(classes, labelled.diagonal().tolist(), strict=True))
        record["train_labels_confused_with"] = _as_logged(commonest_wrong(labelled, classes))
    return record


def per_class_test_fields(result: EvalResult, branch: str) -> dict:
    """A test evaluation's per-class log fields, as every epoch's row (the start's too) has them: each class's
    accuracy, what its images are most often wrongly called, and how far ahead of its best rival they keep it (the
    mean ``own_lead`` of the branch's logits)."""
    return {
        "test_per_class": result.per_class_accuracy(branch),
        "test_confused_with": _as_logged(result.commonest_wrong(branch)),
        "test_lead_per_class": result.per_class_lead(branch),
    }


def validation_fields(result: EvalResult, branch: str) -> dict:
    """A validation evaluation's log fields: the test fields' accuracies under ``val_`` (no per-class tables)."""
    return {f"val_{k}": v for k, v in result.summary(branch).items()}


def _as_logged(pairs: dict[str, tuple[str, float] | None]) -> dict[str, list | None]:
    """As the row reads back from JSON (a resumed run's history), so that a row is the same either way."""
    return {name: list(pair) if pair is not None else None for name, pair in pairs.items()}


def _summed_over_processes(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Each process counted its share of the epoch's batches; every process calls this and gets the whole count."""
    if distributed_context()[1] == 1:
        return counts
    summed = counts.to(device)  # NCCL reduces only tensors on the GPU
    dist.all_reduce(summed)
    return summed.cpu()


def eval_fusion_ratio(model: MicroCLIP, test_fusion: str = "consistent", ratio: float | None = None) -> float:
    """The fusion ratio applied at test time: ρ (the model's, or ``ratio``) on [CLS] as in training ("consistent"),
    or the reference's evaluation, which unpacks the branch pair swapped and so puts ρ on [FG] and 1 − ρ on [CLS]
    ("reference")."""
    ratio = model.config.fusion_ratio if ratio is None else ratio
    return 1.0 - ratio if test_fusion == "reference" else ratio


def peak_memory_mb(device: torch.device) -> float | None:
    """The peak GPU memory allocated since the last reset, in MiB (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _end_epoch(
    model: MicroCLIP,
    state: FitState,
    test_set: Dataset | None,
    seconds: float,
    device: torch.device,
    shift_probe: ShiftProbe | None = None,
    shift_each_epoch: bool = False,
    val_set: Dataset | None = None,
) -> dict:
    """The epoch's history row: the test (and validation) evaluation on schedule (and always after the last epoch),
    and with a probe `[FG]`'s shift before it (at every epoch's end with ``shift_each_epoch``)."""
    config = state.config
    row = {
        "epoch": state.epoch + 1,
        "step": state.global_step,
        "epoch_time": seconds,
        **{f"train_{k}": v for k, v in state.step_means.means().items()},
    }
    if state.labels_given is not None:
        row.update(labels_given_record(_summed_over_processes(state.labels_given, device), model.classes))
    if (peak := peak_memory_mb(device)) is not None:
        row["gpu_peak_mb"] = peak
    last = state.global_step >= state.total_steps
    due = last or (config.eval_every and (state.epoch + 1) % config.eval_every == 0)
    if shift_probe is not None and state.is_main:
        measured = shift_each_epoch or (due and (test_set is not None or val_set is not None))
        model.fg_shift = shift_probe.measure(model) if measured else None
        if model.fg_shift is not None:
            row["train_shift_fg"] = float(model.fg_shift.norm())
    if test_set is not None and state.is_main and due:
        result = evaluate_as(model, test_set, config, device)
        row.update({f"test_{k}": v for k, v in result.summary(config.reported_branch).items()})
        row.update(per_class_test_fields(result, config.reported_branch))
    if val_set is not None and state.is_main and due:
        row.update(validation_fields(evaluate_as(model, val_set, config, device), config.reported_branch))
    state.epoch, state.step_in_epoch = state.epoch + 1, 0
    return row


# ------------------------------------------------------------------ evaluate


@torch.no_grad()
def evaluate(
    model: MicroCLIP,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp: AmpMode = "none",
    num_workers: int = 0,
    ratio: float | None = None,
    sweep: Mapping[str, float] | None = None,
) -> EvalResult:
    """Fused, [CLS]-only and [FG]-only predictions on ``dataset`` (items ``(image, label, ...)``); when the model
    carries its run's shared `[FG]` shift (``model.fg_shift``), also `[FG]`-only without it (branch "fg_unshifted")
    and the fused answer without the shift's part of each class's logit, (1 − ρ) · 100 · s · Ŵ* ("fused_unshifted":
    does the class preference the shift adds help the fused answer?). For each ``sweep`` item (branch name → weight on
    [CLS]), the fused answer re-fused with that weight from the same forward pass's branch logits."""
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    predictions: dict[str, list[torch.Tensor]] = {"fused": [], "cls": [], "fg": []}
    if getattr(model, "fg_shift", None) is not None:
        predictions |= {branch: [] for branch in UNSHIFTED_BRANCHES}
    sweep = dict(sweep or {})
    predictions |= {name: [] for name in sweep}
    targets = []
    leads: dict[str, list[torch.Tensor]] = {"fused": [], "cls": [], "fg": []}
    with eval_mode(model):
        for batch in loader:
            images, labels = batch[0].to(device), batch[1]
            with autocast(device, amp):
                out = model(images, ratio=ratio)
            for branch, logits in (("fused", out.logits.fused), ("cls", out.logits.cls), ("fg", out.logits.fg)):
                logits = logits.float().cpu()
                predictions[branch].append(logits.argmax(1))
                # an unlabelled image (label -1) gets a lead too, and the result drops every lead of such a set
                leads[branch].append(own_lead(logits, labels.clamp(min=0)))
            for name, swept in sweep.items():
                predictions[name].append(out.logits.with_ratio(swept).fused.float().argmax(1).cpu())
            if "fg_unshifted" in predictions:
                part, fg_unshifted = shift_logits(model, out.fg_embed)
                predictions["fg_unshifted"].append(fg_unshifted.argmax(1).cpu())
                fused = out.logits.fused.float() - (1.0 - out.logits.ratio) * part
                predictions["fused_unshifted"].append(fused.argmax(1).cpu())
            targets.append(labels)
    merged = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for k, v in predictions.items()}
    all_targets = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    labelled = bool(len(all_targets)) and bool((all_targets >= 0).all())
    return EvalResult(
        n=len(all_targets),
        predictions=merged,
        targets=all_targets if labelled else None,
        classes=model.classes,
        leads={branch: torch.cat(chunks) for branch, chunks in leads.items() if chunks} if labelled else {},
    )


def evaluate_as(
    model: MicroCLIP, dataset: Dataset, recipe: Recipe, device: torch.device | str, sweep: Sequence[float] = ()
) -> EvalResult:
    """:func:`evaluate` as ``recipe`` runs its test evaluations: its test batch, precision, workers and
    test-time fusion (which applies to each ratio in ``sweep`` as to the model's own)."""
    return evaluate(
        model,
        dataset,
        batch_size=recipe.test_batch_size,
        device=device,
        amp=recipe.amp,
        num_workers=recipe.num_workers,
        ratio=eval_fusion_ratio(model, recipe.test_fusion),
        sweep={sweep_branch(r): eval_fusion_ratio(model, recipe.test_fusion, r) for r in sweep},
    )
