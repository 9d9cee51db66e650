"""A run's saved epochs, explained: one image through the model at the start of its adaptation run and after every
epoch it saved (``train.py --keep_epochs``, a run saved in the app's Adapt tab, the bundled toy model's
``checkpoints/toybirds-microclip-epochs/``; ``microclip.checkpoint.epochs_beside`` finds them).

A saved epoch holds only what self-training changes (the visual LayerNorms, SOAP's projections and W*: a few
hundred kB on the toy model, about 7 MB on a ViT-B/32), so a ``Timeline`` builds one private model and loads each
epoch's tensors into it in turn: stepping through nine epochs builds nothing, and models other code holds are never
written to.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from microclip.checkpoint import CheckpointError, load_model, read_adapted, stored_fg_shift
from microclip.drift import PER_CLASS, SIGNS
from microclip.explain import Explanation, explain_batch, image_batch


@dataclass(frozen=True)
class EpochView:
    """One saved epoch's explanation of the image, and what the run logged then."""

    epoch: int  # 0: the start (SOAP at identity, W* from the descriptions); n: after the n-th epoch
    explanation: Explanation
    # from the file's metadata, each may be missing: test accuracy "acc_fused", "acc_cls", "acc_fg" (%), and the
    # epoch's label-free signs (microclip.drift.SIGNS: "agree_fg", "shared_fg", ...; none at the start)
    logged: dict[str, float]


def epoch_name(epoch: int) -> str:
    return "start" if epoch == 0 else f"epoch {epoch}"


class Timeline:
    """The saved epochs of one adaptation run, ready to explain an image at each of them."""

    def __init__(self, files: Sequence[tuple[int, Path]], device: torch.device | str = "cpu") -> None:
        """``files``: (epoch, path) pairs (``microclip.checkpoint.epochs_beside``). Every file is read now; one
        that is not a microCLIP checkpoint, or is from another base model or label set than the first, is a
        ``CheckpointError`` naming it."""
        if not files:
            raise CheckpointError("no saved epochs: adapt with train.py --keep_epochs")
        _, first_path = files[0]
        self.model = load_model(first_path, device)
        first = self.model.meta
        self._states: dict[int, dict[str, torch.Tensor]] = {}
        self._shifts: dict[int, torch.Tensor | None] = {}  # `[FG]`'s shared shift then, where the run measured it
        self._logged: dict[int, dict[str, float]] = {}
        self._per_class: dict[int, dict[str, dict]] = {}
        for epoch, path in files:
            tensors, meta = read_adapted(path)
            if meta.classes != first.classes or meta.base != first.base:
                raise CheckpointError(
                    f"{path}: not from the same run as {first_path.name} (another base model or label set)"
                )
            self._states[epoch] = tensors
            self._shifts[epoch] = stored_fg_shift(meta, self.model.heads.w_star.shape[1], str(path))
            self._logged[epoch] = {k: float(v) for k, v in meta.metrics.items() if k.startswith("acc_") or k in SIGNS}
            self._per_class[epoch] = meta.metrics.get(PER_CLASS, {})
        self._lock = threading.Lock()  # one model, loaded epoch by epoch: one image at a time
        self.token = uuid.uuid4().hex  # names this timeline in the app's answer cache (never reused, unlike id())

    @property
    def epochs(self) -> list[int]:
        return list(self._states)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    def per_class(self, what: str) -> dict[int, dict[str, float | None]]:
        """Per saved epoch that logged it, each class's ``what``: "labels", how many of the epoch's training images
        self-training labelled as that class (none at the start), "acc", its test accuracy (%; a run with a
        labelled test split), or "confused_with", what its test images were most often wrongly called and on what %
        of them (None: never wrong); where the training images had true classes, "labels_right", how many of the
        class's labels were right, and "labels_confused_with", what its training images were most often wrongly
        labelled and on what % of them; "lead", how far ahead of its best rival its test images keep it on average
        (``engine.own_lead``; runs from round 29 on)."""
        return {epoch: record[what] for epoch, record in self._per_class.items() if what in record}

    def explain(self, picture: Image.Image, ratio: float | None = None) -> list[EpochView]:
        """The image explained at every saved epoch, in order (the centre crop the model sees, made once)."""
        tensor = image_batch(self.model, picture)
        views = []
        with self._lock:
            for epoch, state in self._states.items():
                self.model.load_adapted_state(state)
                self.model.fg_shift = self._shifts[epoch]
                views.append(EpochView(epoch, explain_batch(self.model, tensor, ratio)[0], self._logged[epoch]))
        return views
