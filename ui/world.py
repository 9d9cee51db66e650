"""What a loaded model knows, and whether an image looks like part of that world.

A classifier always answers with one of its classes, so a photo of a person shown to a model of 16
toy birds still comes out "wickstel tit, 99%". The app says what the model knows (classes, input
size, training domain) and flags images whose numbers look unlike those of the model's own world.

The signals and their thresholds come from a measurement, ``bench/ood.py``: the bundled toy model
on the 800 toy-world test images against out-of-world pictures (the example photos, bundled sample
photos, procedural scenes, noise). Its results are in ``bench/README.md``; the thresholds are stored
next to the toy model's assets (``assets/toybirds/world.json``) and apply only to models built on the
toy-world base, each bundled model with its own. For any other model only the label-set checks apply
(one class; own class names on a toy model), which need no calibration.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from microclip.resources import PROJECT_ROOT

if TYPE_CHECKING:
    from microclip.explain import Explanation
    from ui.registry import LoadedModel

TOY_WORLD_FILE = PROJECT_ROOT / "assets" / "toybirds" / "world.json"
TOY_BASE_MARKER = "toybirds-base"  # the toy-world base model's folder name in a checkpoint's base spec
ONE_CLASS_NOTE = ("**One class only:** a softmax over a single class is always 100%, whatever the image. "
                  "Type at least two classes to see which the model prefers.")


@dataclass(frozen=True)
class WorldSignals:
    """Numbers of one explanation that tell in-world images from others (see ``bench/ood.py``)."""

    top_cosine: float  # the fused logit of the prediction / 100: a cosine-like match to its class vector
    cls_cosine: float  # the [CLS] branch's best logit / 100
    fg_cosine: float  # the [FG] branch's best logit / 100
    margin: float  # fused probability of the top class minus the runner-up's
    logit_gap: float  # fused logit of the top class minus the runner-up's
    ncut_coverage: float  # share of patches NCut put in the foreground
    null_weight: float  # SOAP weight of the null token
    disagree: bool  # [CLS] and [FG] predict different classes
    score_distance: float = float("nan")  # Mahalanobis distance of the score pattern to the world's (needs stats)

    @classmethod
    def of(cls, explanation: Explanation, stats: WorldStats | None = None) -> WorldSignals:
        fused = np.sort(explanation.logits_fused)[::-1]
        probs = np.sort(explanation.probabilities("fused"))[::-1]
        second = 1 if len(fused) > 1 else 0
        return cls(top_cosine=float(fused[0]) / 100.0, cls_cosine=float(explanation.logits_cls.max()) / 100.0,
                   fg_cosine=float(explanation.logits_fg.max()) / 100.0,
                   margin=float(probs[0] - probs[second]), logit_gap=float(fused[0] - fused[second]),
                   ncut_coverage=float(np.mean(explanation.ncut_mask)), null_weight=float(explanation.null_weight),
                   disagree=explanation.prediction("cls") != explanation.prediction("fg"),
                   score_distance=stats.distance(explanation) if stats is not None else float("nan"))

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.__dict__.items()}


def score_pattern(explanation: Explanation) -> np.ndarray:
    """The explanation's class scores as one vector: [CLS] and [FG] logits / 100, and each class's mean cosine
    over the patches. In-world images share a typical pattern; the distance to it separates photos best."""
    patches = explanation.patch_class_cosine.reshape(-1, explanation.patch_class_cosine.shape[-1])
    return np.concatenate([explanation.logits_cls / 100.0, explanation.logits_fg / 100.0, patches.mean(0)])


@dataclass(frozen=True)
class WorldStats:
    """Mean and inverse covariance of ``score_pattern`` over a model's own training images."""

    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, patterns: np.ndarray, ridge: float = 1e-4) -> WorldStats:
        covariance = np.cov(patterns.T) + ridge * np.eye(patterns.shape[1])
        return cls(patterns.mean(0), np.linalg.inv(covariance))

    def distance(self, explanation: Explanation) -> float:
        pattern = score_pattern(explanation)
        if pattern.shape != self.mean.shape:  # another label set: the stats do not apply
            return float("nan")
        delta = pattern - self.mean
        return float(np.sqrt(max(delta @ self.precision @ delta, 0.0)))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "precision": self.precision.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> WorldStats:
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["precision"], dtype=np.float64))


@dataclass(frozen=True)
class WorldCheck:
    """A measured rule: ``signal`` below ``below`` (or above ``above``) looks outside the world."""

    signal: str
    below: float | None = None
    above: float | None = None
    why: str = ""

    def fires(self, signals: WorldSignals) -> bool:
        value = float(getattr(signals, self.signal))
        if np.isnan(value):
            return False
        return (self.below is not None and value < self.below) or (self.above is not None and value > self.above)

    def describe(self, signals: WorldSignals) -> str:
        value = float(getattr(signals, self.signal))
        usual = f"≥ {self.below:.3g}" if self.below is not None else f"≤ {self.above:.3g}"
        return f"{self.why} ({self.signal} = {value:.3g}; 99% of the toy test images have {usual})"


@functools.lru_cache(maxsize=4)
def load_world(path: Path = TOY_WORLD_FILE) -> dict[str, tuple[tuple[WorldCheck, ...], WorldStats | None]]:
    """Model name → its measured rules and score statistics, from ``path`` (``bench/ood.py --write``)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {name: (tuple(WorldCheck(**rule) for rule in entry.get("checks", [])),
                   WorldStats.from_dict(entry["stats"]) if "stats" in entry else None)
            for name, entry in data.get("models", {}).items()}


def outside_reasons(signals: WorldSignals, checks: Sequence[WorldCheck]) -> list[str]:
    """Why an image looks outside the world (empty: nothing unusual)."""
    return [check.describe(signals) for check in checks if check.fires(signals)]


def is_toy_world(loaded: LoadedModel) -> bool:
    """Whether a model is built on the bundled toy-world base (the only one the thresholds were measured on)."""
    return TOY_BASE_MARKER in loaded.model.base.clip_model


def world_for(loaded: LoadedModel) -> tuple[tuple[WorldCheck, ...], WorldStats | None]:
    """The measured rules of a model: each bundled toy-world model has its own (its heads differ, so its
    typical score pattern does too); any other model has none."""
    if not is_toy_world(loaded):
        return (), None
    return load_world().get(loaded.name, ((), None))


def world_markdown(loaded: LoadedModel) -> str:
    """A short, visible note of what the model knows: its classes, its input size and its domain."""
    classes = loaded.classes
    shown = ", ".join(classes[:6]) + (f", … ({len(classes)} in all)" if len(classes) > 6 else "")
    size = loaded.model.backbone.image_size
    grid = "×".join(map(str, loaded.model.backbone.grid)) if hasattr(loaded.model.backbone, "grid") else "?"
    if is_toy_world(loaded):
        domain = ("the **toy world**: drawn birds of 16 invented species on plain backgrounds. Photos, people "
                  "or real birds are outside it: it still names one of its species, but the answer means little")
    elif loaded.meta is not None:
        dataset = loaded.meta.training.get("dataset") or loaded.meta.training.get("source") or "unknown data"
        domain = f"its CLIP base ({loaded.meta.base.describe()}), adapted on *{dataset}*"
    else:
        domain = f"{loaded.source}"
    return (f"**What this model knows.** {len(classes)} classes ({shown}); images at {size}×{size} px "
            f"({grid} patches); domain: {domain}.")


def world_flag_markdown(explanation: Explanation, loaded: LoadedModel, typed: bool) -> str:
    """The flag shown above the prediction: one-class label sets, and images that look out of the world."""
    lines = []
    if len(explanation.classes) == 1:
        lines.append(ONE_CLASS_NOTE)
    elif typed and is_toy_world(loaded) and not set(explanation.classes) <= set(loaded.classes):
        lines.append("**Your own classes on a toy-world model:** it learnt only its 16 toy species, so names "
                     "outside them are read by a text tower that never saw such images; treat the scores as "
                     "word games, not recognition.")
    # The rules were measured on the model's own classes: with a typed label set they do not apply.
    own_classes = tuple(explanation.classes) == tuple(loaded.classes)
    checks, stats = world_for(loaded) if own_classes else ((), None)
    reasons = outside_reasons(WorldSignals.of(explanation, stats), checks) if len(explanation.classes) > 1 else []
    if reasons:
        lines.append("**⚠ This image looks outside the model's world:** " + "; ".join(reasons)
                     + ". The prediction below is the closest of its classes, not a recognition.")
    return "\n\n".join(lines)
