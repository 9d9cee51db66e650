"""Label-free signs of a branch drifting in self-training. The loss sees only the fused logits, so either branch
alone can stop being a classifier while the fused answer holds: `[FG]` does, by taking on a shift that every image
shares (docs/toyworld.md, rounds 11 and 20). Both measures need no labels, so they work on a user's own data."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from microclip.constants import LOGIT_SCALE
from microclip.modes import eval_mode

SHIFT_IMAGES = 2000  # the shift's means are taken over at most this many training images, evenly spaced

# An epoch's label-free signs, as train_<name> in its log row: each branch's agreement with the fused answer (%) and
# the part of its embeddings every image shares (engine.pseudo_label, averaged over the epoch's steps), and the
# length of `[FG]`'s shared shift as the epoch ends (engine.fit with a ShiftProbe).
SIGNS = ("agree_cls", "agree_fg", "shared_cls", "shared_fg", "shift_fg")


def shared_part(embeds: torch.Tensor) -> float:
    """Mean cosine between each unit row of ``embeds`` (N, E) and the rows' mean direction: 1 when all are alike."""
    return float((embeds.float() @ F.normalize(embeds.float().mean(0), dim=0)).mean())


def agreement(branch_logits: torch.Tensor, fused_logits: torch.Tensor) -> float:
    """% of rows whose branch-alone answer is the fused answer."""
    return 100.0 * float((branch_logits.argmax(1) == fused_logits.argmax(1)).float().mean())


# in an epoch checkpoint's metrics: {"labels": {class: count}, "acc": {class: % or None},
# "confused_with": {class: [the class its test images are most often wrongly called, on what %] or None}}
PER_CLASS = "per_class"


def per_class_record(row: Mapping[str, object]) -> dict[str, dict]:
    """An epoch's per-class record from its log row, for its checkpoint's metrics (under ``PER_CLASS``): how many
    training images each class was the label of that epoch ("labels", label-free) and each class's test accuracy
    ("acc", where the run had a labelled test split), what its test images are most often wrongly called
    ("confused_with") and how far ahead of their best rival they keep it ("lead"); where the training images had
    true classes, how many of each class's labels were right ("labels_right") and what its training images were most
    often wrongly labelled ("labels_confused_with"); {} when the row has none of them."""
    keys = (
        ("labels", "train_labels_per_class"),
        ("labels_right", "train_labels_right_per_class"),
        ("labels_confused_with", "train_labels_confused_with"),
        ("acc", "test_per_class"),
        ("confused_with", "test_confused_with"),
        ("lead", "test_lead_per_class"),
    )
    record = {name: row[key] for name, key in keys if key in row}
    return {PER_CLASS: record} if record else {}


def epoch_signs(row: Mapping[str, object]) -> dict[str, float]:
    """An epoch's label-free signs from its log row (``train_agree_fg`` → ``agree_fg``); those it lacks are left out
    (the start has none, and runs logged before a sign existed lack it)."""
    return {name: float(row[f"train_{name}"]) for name in SIGNS if f"train_{name}" in row}


# ------------------------------------------------------------------ the shift every image's [FG] takes on


def mean_fg(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean `[FG]` token f (E,) over images in batches (B, 3, S, S) in [0, 1], in eval mode."""
    device = next(model.parameters()).device
    total, count = None, 0
    with eval_mode(model), torch.no_grad():
        for images in batches:
            f = model(images.to(device)).fg_embed.float().sum(0).cpu()
            total, count = (f if total is None else total + f), count + len(images)
    if total is None:
        raise ValueError("no images to measure [FG]'s shift on")
    return total / count


def evenly_spaced(data: Dataset) -> Subset:
    """At most ``SHIFT_IMAGES`` of ``data``, evenly spaced: the images every label-free mean here is taken over."""
    return Subset(data, np.linspace(0, len(data) - 1, min(len(data), SHIFT_IMAGES)).round().astype(int).tolist())


def _image_batches(images: Dataset, batch_size: int) -> Iterable[torch.Tensor]:
    # A private generator: a measure mid-run leaves the global random state as it found it (the run's own
    # draws are seeded by epoch and image, but a caller's may not be).
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    return (batch[0] for batch in loader)


def mean_value_input(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """(D,) the mean of what SOAP's value map is applied to: the patch tokens as its attention weighs them, Σ_ij α_ij
    t_ij / Σ_ij α_ij over images (the null token's weight left out), minus the centre in a ``centre_values`` model.
    Every image's tokens share it, so W_v's change on it adds one vector to every image (docs/toyworld.md, round 23)."""
    device = next(model.parameters()).device
    total, weight = None, 0.0
    with eval_mode(model), torch.no_grad():
        for images in batches:
            out = model(images.to(device))
            alpha = out.soap.weights[:, :-1].float()  # (B, N)
            part = (alpha.unsqueeze(-1) * out.tokens.patches.float()).sum((0, 1)).cpu()
            total, weight = (part if total is None else total + part), weight + float(alpha.sum())
    if total is None or weight <= 0:
        raise ValueError("no images to average SOAP's value input over")
    mean = total / weight
    return mean - model.soap.value_centre.float().cpu() if model.config.centre_values else mean


def set_value_centre(model: torch.nn.Module, data: Dataset, batch_size: int = 64) -> torch.Tensor:
    """Give a ``centre_values`` model its centre, :func:`mean_value_input` over ``data`` (items ``(image tensor,
    ...)``, no labels; :func:`evenly_spaced`), measured as the model is now: call it before training."""
    with torch.no_grad():
        model.soap.value_centre.zero_()  # the tokens' own mean, not their mean minus an earlier centre
        centre = mean_value_input(model, _image_batches(evenly_spaced(data), batch_size))
        model.soap.value_centre.copy_(centre)
    return centre


@dataclass(frozen=True)
class ValueMapSplit:
    """SOAP's value map W_v as trained, at the start, and two in between: with its change cut to its part on the
    direction of the mean input m (a rank-one piece, (ΔW_v m̂) m̂ᵀ, which adds one vector to every image) and with
    that part removed; and that part's share of the change (squared norms)."""

    as_trained: torch.Tensor
    at_start: torch.Tensor
    only_mean_part: torch.Tensor
    without_mean_part: torch.Tensor
    mean_part_share: float


def split_value_map(start: torch.Tensor, trained: torch.Tensor, mean_input: torch.Tensor) -> ValueMapSplit:
    """:class:`ValueMapSplit` of W_v from ``start`` to ``trained`` (D, D), on ``mean_input`` (D,)."""
    unit = F.normalize(mean_input.to(trained), dim=0)
    change = trained - start
    on_mean = torch.outer(change @ unit, unit)
    share = float(on_mean.pow(2).sum() / change.pow(2).sum().clamp_min(1e-30))
    return ValueMapSplit(trained, start, start + on_mean, trained - on_mean, share)


@contextmanager
def value_map_set_to(model: torch.nn.Module, weight: torch.Tensor) -> Iterator[None]:
    """``model`` with SOAP's value map set to ``weight`` inside the block, as it was after."""
    value_map = model.soap.value_proj.weight
    kept = value_map.detach().clone()
    with torch.no_grad():
        value_map.copy_(weight.to(value_map))
    try:
        yield
    finally:
        with torch.no_grad():
            value_map.copy_(kept)


@dataclass(frozen=True)
class ValueRoute:
    """How much of `[FG]`'s shift SOAP's value map makes through m, the mean of what it is applied to (every image's
    tokens share it, so W_v's change on it adds one vector to every image, like a bias): the shift's length as
    trained, with W_v's change cut to its part on m, and with that part removed (everything else as trained), and
    that part's share of W_v's change (squared norms). docs/toyworld.md, round 23."""

    shift: float
    through_mean: float
    without_mean: float
    mean_part_share: float


class ShiftProbe:
    """The shift self-training gives every image's `[FG]` token, measured as often as a run asks: mean f with the
    model as it is, minus mean f with the run's first adapted tensors ``start``, over ``data`` (items ``(image
    tensor, ...)``, no labels needed; at most ``SHIFT_IMAGES``, evenly spaced). The start's mean is measured once,
    on first use, so each later measure is one pass; a resumed run, given the same ``start``, measures the same.
    docs/toyworld.md, round 20, found the shift; the explanations subtract it."""

    def __init__(self, start: dict[str, torch.Tensor], data: Dataset, batch_size: int = 64) -> None:
        self.start, self.images, self.batch_size = start, evenly_spaced(data), batch_size
        self._start_mean: torch.Tensor | None = None

    @property
    def n_images(self) -> int:
        return len(self.images)

    def _batches(self) -> Iterable[torch.Tensor]:
        return _image_batches(self.images, self.batch_size)

    def measure(self, model: torch.nn.Module) -> torch.Tensor:
        """The shift (E,) of ``model`` as it is now; the model is left as it was."""
        if self._start_mean is None:
            now = model.adapted_state()
            model.load_adapted_state(self.start)
            try:
                self._start_mean = mean_fg(model, self._batches())
            finally:
                model.load_adapted_state(now)
        return mean_fg(model, self._batches()) - self._start_mean

    def value_route(self, model: torch.nn.Module, shift: torch.Tensor | None = None) -> ValueRoute:
        """:class:`ValueRoute` of ``model`` (attention pooling: the ablations' pools apply no W_v); the model is
        left as it was. A few passes over the probe's images; ``shift``, this probe's measure of the model as it
        is, saves one."""
        now = model.adapted_state()
        model.load_adapted_state(self.start)
        try:
            mean_input = mean_value_input(model, self._batches())
        finally:
            model.load_adapted_state(now)
        split = split_value_map(self.start["soap.value_proj.weight"], now["soap.value_proj.weight"], mean_input)
        lengths = [float((self.measure(model) if shift is None else shift).norm())]
        for weight in (split.only_mean_part, split.without_mean_part):
            with value_map_set_to(model, weight):
                lengths.append(float(self.measure(model).norm()))
        return ValueRoute(*lengths, mean_part_share=split.mean_part_share)


def shift_record(shift: torch.Tensor, n_images: int) -> dict:
    """A checkpoint's ``drift`` metadata for a measured shift (microclip.checkpoint reads it back)."""
    return {"fg_shift": shift.tolist(), "images": n_images}


def shift_class_logits(model: torch.nn.Module) -> torch.Tensor | None:
    """(C,) 100 · s · Ŵ*: what the run's shared shift s (``model.fg_shift``) adds to each class's `[FG]` logit, on
    every image alike; None when the run did not measure it."""
    shift = getattr(model, "fg_shift", None)
    if shift is None:
        return None
    w_hat = model.heads.w_star_hat()
    return LOGIT_SCALE * shift.to(w_hat) @ w_hat.T


def shift_logits(model: torch.nn.Module, fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For ``fg`` (..., E): :func:`shift_class_logits`, the shift's exact part of every image's `[FG]` logits, and
    (..., C) 100 · normalize(f − s) · Ŵ*, `[FG]` alone without it; None when the run did not measure s."""
    part = shift_class_logits(model)
    if part is None:
        return None
    w_hat = model.heads.w_star_hat()
    unshifted = F.normalize(fg.to(w_hat) - model.fg_shift.to(w_hat), dim=-1) @ w_hat.T
    return part, LOGIT_SCALE * unshifted
