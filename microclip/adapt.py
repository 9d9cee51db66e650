"""One adaptation, from data and a base model to an adapted model and its checkpoint metadata.

The command line's ``train`` and the app's Adapt tab both run this; they differ only in where the
data, the recipe and the callbacks come from. Same inputs, same weights, either way.

    run = prepare(train_data, recipe, base=("local-dir:checkpoints/toybirds-base", None),
                  templates=templates, descriptions=descriptions)
    zero_shot = run.evaluate()          # optional: the epoch-0 row
    result = run.fit(callbacks=[...])   # the self-training loop (engine.fit)
    save_adapted(path, run.model.adapted_state(), run.checkpoint_meta(result, drift=run.measure_drift()))

or, in one call, :func:`adapt`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from microclip.checkpoint import CheckpointMeta
from microclip.constants import CLS_ONLY_MODES
from microclip.data.seeded import SeededDataset
from microclip.data.transforms import test_transform
from microclip.drift import ShiftProbe, set_value_centre, shift_record
from microclip.engine import Callback, EvalResult, FitResult, StopToken, evaluate_as, fit
from microclip.heads import HeadWeights
from microclip.model import MethodConfig, MicroCLIP
from microclip.recipe import Recipe


@dataclass(frozen=True)
class AdaptResult:
    """What a finished (or stopped) run gives back besides the model itself."""

    history: list[dict]  # one row per completed epoch (train means, test accuracy when evaluated)
    stopped: bool
    global_step: int
    seconds: float


@dataclass
class Adaptation:
    """A prepared run: the fresh model, its data views and the recipe, before and after :meth:`fit`."""

    model: MicroCLIP
    head_weights: HeadWeights
    recipe: Recipe
    train_set: SeededDataset
    test_set: SeededDataset | None
    templates: list[str]
    descriptions: dict[str, list[str]] | None
    device: torch.device
    # [FG]'s shared shift against the adapted tensors as the run starts (before any resume is loaded), on the
    # training images, centre-cropped: measured at each epoch's end and by measure_drift
    shift_probe: ShiftProbe
    provenance: dict = field(default_factory=dict)
    # labelled images to choose a recipe by (train.py --val_dataset), scored as the test split is
    val_set: SeededDataset | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    def evaluate(self) -> EvalResult | None:
        """Fused, [CLS] and [FG] accuracy of the current model on the test data (None without it)."""
        return self._score(self.test_set)

    def evaluate_validation(self) -> EvalResult | None:
        """As :meth:`evaluate`, on the validation data (None without it)."""
        return self._score(self.val_set)

    def _score(self, data: SeededDataset | None) -> EvalResult | None:
        return None if data is None else evaluate_as(self.model, data, self.recipe, self.device)

    def fit(
        self,
        callbacks: Sequence[Callback] = (),
        stop: StopToken | None = None,
        state_path: Path | None = None,
        resume: bool = False,
        start_epoch: int = 0,
        restore: Callable | None = None,
        shift_each_epoch: bool = False,
    ) -> AdaptResult:
        """:func:`microclip.engine.fit` on the prepared run; ``shift_each_epoch`` (a run that keeps its epochs)
        measures `[FG]`'s shift at every epoch's end, not only where a test evaluation is due."""
        started = time.perf_counter()
        result: FitResult = fit(
            self.model,
            self.train_set,
            self.recipe,
            test_set=self.test_set,
            callbacks=callbacks,
            device=self.device,
            state_path=state_path,
            resume=resume,
            stop=stop,
            start_epoch=start_epoch,
            restore=restore,
            shift_probe=None if self.recipe.mode in CLS_ONLY_MODES else self.shift_probe,
            shift_each_epoch=shift_each_epoch,
            val_set=self.val_set,
        )
        return AdaptResult(
            history=result.history,
            stopped=result.stopped,
            global_step=result.global_step,
            seconds=time.perf_counter() - started,
        )

    def measure_drift(self) -> dict:
        """What self-training did to `[FG]` without labels, for the checkpoint's ``drift``: the shift every image's
        token took on (:class:`microclip.drift.ShiftProbe`, a pass over at most ``SHIFT_IMAGES`` training
        images), also set on the model so its explanations can take it away. The last epoch's end has usually
        measured it already (fit leaves ``model.fg_shift`` None where it has not, or after a stop); then no pass
        is made. Empty for the CLS-only baselines, whose SOAP never trains."""
        if self.recipe.mode in CLS_ONLY_MODES:
            return {}
        if self.model.fg_shift is None:
            self.model.fg_shift = self.shift_probe.measure(self.model)
        return shift_record(self.model.fg_shift, self.shift_probe.n_images)

    def current_drift(self) -> dict:
        """The shift measured at the latest epoch's end (:func:`microclip.engine.fit`), for that epoch's
        checkpoint; empty where that epoch's end measured none, and for the CLS-only baselines."""
        shift = self.model.fg_shift
        return {} if shift is None else shift_record(shift, self.shift_probe.n_images)

    def checkpoint_meta(
        self, result: AdaptResult, training: dict | None = None, metrics: dict | None = None, drift: dict | None = None
    ) -> CheckpointMeta:
        """What a checkpoint records: base, classes, method, the recipe and where the run came from."""
        return CheckpointMeta(
            base=self.model.base,
            classes=self.classes,
            method=self.model.config.to_dict(),
            training={"config": self.recipe.to_dict(), **self.provenance, **(training or {})},
            metrics={
                "steps": result.global_step,
                "stopped": result.stopped,
                "train_seconds": result.seconds,
                **(metrics or {}),
            },
            templates=list(self.templates),
            descriptions=self.descriptions or {},
            drift=drift or {},
        )


def prepare(
    train_data: Dataset,
    recipe: Recipe,
    base: tuple[str, str | None],
    templates: Sequence[str],
    descriptions: dict[str, list[str]] | None = None,
    method: MethodConfig | None = None,
    test_data: Dataset | None = None,
    use_handcrafted: bool = False,
    base_seed: int = 0,
    eval_crop: str = "center",
    device: torch.device | str = "cpu",
    provenance: dict | None = None,
    val_data: Dataset | None = None,
) -> Adaptation:
    """Build the model for ``train_data.classes`` from ``base`` = (open_clip name or ``local-dir:``, tag).

    ``base_seed`` seeds a randomly initialised base (``pretrained='none'``) so the same base is rebuilt;
    the run's own randomness is ``recipe.seed``. ``val_data`` (labelled, the classes of ``train_data``) is scored
    at every test evaluation, with the test data's transform.
    """
    classes = list(train_data.classes)
    if len(classes) < 2:
        raise ValueError(f"adaptation needs at least two classes; the data has {len(classes)} ({', '.join(classes)})")
    if recipe.mode == "fully_supervised" and not getattr(train_data, "has_labels", True):
        raise ValueError(
            "mode 'fully_supervised' trains on the true labels, but the training data is unlabelled "
            "(put the images in one folder per class)"
        )
    device = torch.device(device)
    method = method or MethodConfig()
    if recipe.mode in CLS_ONLY_MODES:
        method = replace(method, train_soap=False)  # the CLS-only baselines keep SOAP as it starts
    model, head_weights, _ = MicroCLIP.build(
        base[0],
        base[1],
        classes,
        list(templates),
        descriptions,
        method,
        use_handcrafted=use_handcrafted,
        device=device,
        seed=base_seed,
    )
    image_size = recipe.input_size or model.backbone.image_size
    train_set = SeededDataset(train_data, recipe.views(image_size), seed=recipe.seed)
    test_set, val_set = (
        SeededDataset(data, test_transform(image_size, crop=eval_crop), seed=recipe.seed) if data is not None else None
        for data in (test_data, val_data)
    )
    # the training images without labels, centre-cropped: what the shift is measured on (and centred on)
    probe_data = SeededDataset(train_data, test_transform(image_size, crop="center"), seed=recipe.seed)
    if method.centre_values:
        set_value_centre(model, probe_data, recipe.test_batch_size)  # before the start state is taken
    return Adaptation(
        model=model,
        head_weights=head_weights,
        recipe=recipe,
        train_set=train_set,
        test_set=test_set,
        templates=list(templates),
        descriptions=descriptions,
        device=device,
        provenance=dict(provenance or {}),
        val_set=val_set,
        shift_probe=ShiftProbe(model.adapted_state(), probe_data, recipe.test_batch_size),
    )


def adapt(
    *args: Any, callbacks: Sequence[Callback] = (), **options: Any
) -> tuple[MicroCLIP, CheckpointMeta, AdaptResult]:
    """:func:`prepare` (same arguments) then :meth:`Adaptation.fit`: the adapted model, its checkpoint metadata,
    the history."""
    run = prepare(*args, **options)
    result = run.fit(callbacks)
    return run.model, run.checkpoint_meta(result, drift=run.measure_drift()), result
