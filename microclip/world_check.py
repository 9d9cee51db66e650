"""Does an image look like part of the world a model's base weights were trained on?

A classifier always answers with one of its classes, so a photo of a person shown to a model of 16 toy birds
still comes out "wickstel tit, 99%". This module measures how unlike the training images an image's visual
tokens are, and says so with its reasons.

The signal is a Mahalanobis distance of the image's value-path patch tokens, summarised as their mean and their
spread over the patches, to the same summary over training images. It depends only on the visual tower, so one
world serves every model built on the same base weights (the LayerNorms an adaptation trains move it little;
``bench/ood.py`` measures each bundled model). Worlds are stored by the base weights' sha256 (never by a display
name, which a registry may change), with the thresholds ``bench/ood.py`` fitted and, for the toy world, the words
its pretraining captions used. Weights without a measured world get no verdict: nothing is said rather than
guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from microclip.backbone import Backbone
from microclip.constants import CLS_ONLY_FLAG, CLS_ONLY_MODES
from microclip.files import atomic_write_json
from microclip.model import MicroCLIP
from microclip.modes import eval_mode
from microclip.resources import PROJECT_ROOT

WORLDS_FILE = PROJECT_ROOT / "assets" / "toybirds" / "world.json"
FORMAT = 2  # the first format was keyed by display names; it is ignored (re-run bench/ood.py)
SIGNALS = {"token_distance": "its patch tokens are unlike those of the images the model was trained on"}


@dataclass(frozen=True)
class Gaussian:
    """Mean and precision (inverse covariance, ridge-regularised) of feature vectors."""

    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, ridge: float = 1e-3) -> Gaussian:
        """``ridge`` is relative to the average variance, so it does not depend on the features' scale."""
        covariance = np.cov(features.T)
        covariance = covariance + ridge * float(np.trace(covariance)) / len(covariance) * np.eye(len(covariance))
        return cls(features.mean(0), np.linalg.inv(covariance))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (B, F) → (B,)."""
        delta = np.atleast_2d(features) - self.mean
        return np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", delta, self.precision, delta), 0.0))

    def to_dict(self) -> dict:
        """The mean and the precision's upper triangle (it is symmetric), to 7 significant digits (float32's)."""
        upper = self.precision[np.triu_indices(len(self.precision))]
        return {"mean": [float(f"{v:.7g}") for v in self.mean], "precision_upper": [float(f"{v:.7g}") for v in upper]}

    @classmethod
    def from_dict(cls, data: dict) -> Gaussian:
        mean = np.asarray(data["mean"], dtype=np.float64)
        precision = np.zeros((len(mean), len(mean)))
        precision[np.triu_indices(len(mean))] = data["precision_upper"]
        return cls(mean, precision + np.triu(precision, 1).T)


@dataclass(frozen=True)
class Rule:
    """``signal`` above ``above`` looks outside the world; ``above`` is a high quantile of in-world images."""

    signal: str
    above: float
    quantile: float  # the share of held-out in-world images at or below ``above``

    def fires(self, value: float) -> bool:
        return bool(np.isfinite(value) and value > self.above)

    def describe(self, value: float) -> str:
        return (
            f"{SIGNALS[self.signal]} ({self.signal} = {value:.3g}; {self.quantile:.0%} of held-out images of "
            f"its world have ≤ {self.above:.3g})"
        )


@dataclass(frozen=True)
class World:
    """What one set of base weights knows: the token statistics, the rules, and (if known) its words."""

    weights_sha256: str
    base: str  # the base model in words, for people reading the file
    tokens: Gaussian
    rules: tuple[Rule, ...] = ()
    vocabulary: frozenset[str] | None = None  # every word its pretraining captions used; None: unknown
    measured: dict = field(default_factory=dict)  # what bench/ood.py measured, for the record

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "tokens": self.tokens.to_dict(),
            "rules": [r.__dict__ for r in self.rules],
            "vocabulary": sorted(self.vocabulary) if self.vocabulary is not None else None,
            "measured": self.measured,
        }

    @classmethod
    def from_dict(cls, weights_sha256: str, data: dict) -> World:
        vocabulary = data.get("vocabulary")
        return cls(
            weights_sha256,
            data.get("base", ""),
            Gaussian.from_dict(data["tokens"]),
            tuple(Rule(**rule) for rule in data.get("rules", [])),
            frozenset(vocabulary) if vocabulary is not None else None,
            data.get("measured", {}),
        )


@dataclass(frozen=True)
class Verdict:
    """The answer of :func:`check`. ``measured`` is False when no world is known for the weights."""

    outside: bool
    reasons: tuple[str, ...]
    signals: dict[str, float]
    measured: bool

    def flag(self) -> str:
        """The warning set above a prediction of an image outside the world (Markdown, bold only); "" inside."""
        if not self.outside:
            return ""
        return (
            "**⚠ This image looks outside the model's world:** "
            + "; ".join(self.reasons)
            + ". The prediction below is the closest of its classes, not a recognition."
        )


# ------------------------------------------------------------------------------------------------ signals


def _backbone(model_or_backbone: MicroCLIP | Backbone) -> Backbone:
    return model_or_backbone.backbone if isinstance(model_or_backbone, MicroCLIP) else model_or_backbone


def token_summary(patches: torch.Tensor) -> np.ndarray:
    """(B, N, D) value-path patch tokens → (B, 2D): their mean and standard deviation over the patches."""
    patches = patches.detach().double().cpu()
    return torch.cat([patches.mean(1), patches.std(1, unbiased=False)], dim=-1).numpy()


@torch.no_grad()
def token_summaries(model_or_backbone: MicroCLIP | Backbone, images: Iterable, batch_size: int = 64) -> np.ndarray:
    """PIL images → (B, 2D) :func:`token_summary` rows, through the test transform (centre crop)."""
    from microclip.data.images import to_rgb
    from microclip.data.transforms import test_transform

    backbone = _backbone(model_or_backbone)
    transform = test_transform(backbone.image_size, crop="center")
    device = next(backbone.parameters()).device
    rows, chunk = [], []
    with eval_mode(backbone):
        for image in [*images, None]:
            if image is not None:
                chunk.append(transform(to_rgb(image)))
            if chunk and (image is None or len(chunk) == batch_size):
                rows.append(token_summary(backbone(torch.stack(chunk).to(device)).patches))
                chunk = []
    width = 2 * backbone.width
    return np.concatenate(rows) if rows else np.zeros((0, width))


def signals_of(world: World, summaries: np.ndarray) -> dict[str, np.ndarray]:
    """Each signal of :data:`SIGNALS` for each row of ``summaries``."""
    return {"token_distance": world.tokens.distance(summaries)}


# ------------------------------------------------------------------------------------------------ fitting


def fit_world(
    model_or_backbone: MicroCLIP | Backbone,
    fit_images: Sequence,
    held_out_images: Sequence,
    weights_sha256: str,
    base: str = "",
    quantile: float = 0.99,
    vocabulary: Iterable[str] | None = None,
) -> World:
    """Token statistics from ``fit_images``; each rule's threshold is the ``quantile`` of its signal on
    ``held_out_images`` (other in-world images), so a share of about 1 − ``quantile`` of in-world images is
    flagged. Measure that share on a third set (``bench/ood.py`` uses the test split)."""
    tokens = Gaussian.fit(token_summaries(model_or_backbone, fit_images))
    world = World(weights_sha256, base, tokens, vocabulary=frozenset(vocabulary) if vocabulary else None)
    held_out = signals_of(world, token_summaries(model_or_backbone, held_out_images))
    rules = tuple(
        Rule(name, float(f"{np.quantile(values, quantile):.4g}"), quantile) for name, values in held_out.items()
    )
    return World(weights_sha256, base, tokens, rules, world.vocabulary)


def verdicts(world: World, summaries: np.ndarray) -> list[Verdict]:
    """One verdict per row of ``summaries`` (see :func:`token_summaries`)."""
    values = signals_of(world, summaries)
    out = []
    for row in range(len(summaries)):
        signals = {name: float(v[row]) for name, v in values.items()}
        reasons = tuple(rule.describe(signals[rule.signal]) for rule in world.rules if rule.fires(signals[rule.signal]))
        out.append(Verdict(bool(reasons), reasons, signals, True))
    return out


# ------------------------------------------------------------------------------------------------ storage


def save_worlds(worlds: Iterable[World], path: str | Path = WORLDS_FILE, keep_others: bool = True) -> Path:
    """Add or replace ``worlds`` in the file at ``path``, in one atomic write. ``keep_others`` False drops the
    worlds of other weights (``bench/ood.py`` after a re-trained base: the old weights' world would linger)."""
    path = Path(path)
    data = _read(path) if keep_others else _fresh()
    for world in worlds:
        data["worlds"][world.weights_sha256] = world.to_dict()
    _cache.pop(path, None)
    return atomic_write_json(path, data, indent=None)


def _fresh() -> dict:
    return {"format": FORMAT, "measured_by": "bench/ood.py", "worlds": {}}


def _read(path: Path) -> dict:
    """The file's contents; a fresh one when it is missing, unreadable or of the first format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _fresh()
    return {**_fresh(), "worlds": data.get("worlds", {})} if data.get("format") == FORMAT else _fresh()


_cache: dict[Path, tuple[float, dict[str, World]]] = {}


def load_worlds(path: str | Path = WORLDS_FILE) -> dict[str, World]:
    """weights sha256 → World, from ``path``; re-read when the file changes."""
    path = Path(path)
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return {}
    cached = _cache.get(path)
    if cached is None or cached[0] != stamp:
        worlds = {sha: World.from_dict(sha, entry) for sha, entry in _read(path)["worlds"].items()}
        cached = _cache[path] = (stamp, worlds)
    return cached[1]


def world_for(model: MicroCLIP, path: str | Path = WORLDS_FILE) -> World | None:
    """The measured world of a model's base weights, or None (weights without a sha256, or never measured)."""
    sha = model.base.weights_sha256 if model.base is not None else None
    return load_worlds(path).get(sha) if sha else None


# ------------------------------------------------------------------------------------------------ the checks


def check(model_or_backbone: MicroCLIP | Backbone, image, world: World | None = None) -> Verdict:
    """Whether ``image`` (PIL) looks outside the world of the model's base weights, with the reasons.

    A bare ``Backbone`` does not know its weights: pass its ``world``. Without a world the verdict says
    ``measured=False`` and flags nothing."""
    if world is None and isinstance(model_or_backbone, MicroCLIP):
        world = world_for(model_or_backbone)
    if world is None:
        return Verdict(False, (), {}, False)
    return verdicts(world, token_summaries(model_or_backbone, [image]))[0]


def words(text: str) -> list[str]:
    """Lower-case words of a class name or caption (letters, digits, apostrophes)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def unseen_words(model: MicroCLIP, class_names: Sequence[str]) -> dict[str, list[str]] | None:
    """For each class name, the words the base model never saw in its pretraining captions (only names with such
    words are listed). None when the pretraining vocabulary is unknown (any model but the toy world's): then
    nothing is said rather than guessed."""
    world = world_for(model)
    if world is None or world.vocabulary is None:
        return None
    unseen = {name: [w for w in words(name) if w not in world.vocabulary] for name in class_names}
    return {name: found for name, found in unseen.items() if found}


# ------------------------------------------------------------------------------------------------ the page's flags

ONE_CLASS_FLAG = (
    "**One class only:** a softmax over a single class is always 100%, whatever the image. "
    "Give it at least two classes to see which the model prefers."
)


def unseen_words_flag(model: MicroCLIP, class_names: Sequence[str]) -> str:
    """A note naming a user's class words the base model never read in pretraining (Markdown, bold only; "" when
    there are none, or when its vocabulary is unknown)."""
    unseen = unseen_words(model, class_names)
    if not unseen:
        return ""
    listed = "; ".join(f"*{name}* ({', '.join(found)})" for name, found in unseen.items())
    return (
        f"**Words this model never saw in pretraining:** {listed}. Its text tower never learnt what they "
        "mean, so answers naming these classes are word games, not recognition."
    )


def page_flags(
    model: MicroCLIP, classes: Sequence[str], own_classes: bool, mode: str | None, verdict: Verdict | None
) -> str:
    """What is set above a prediction (Markdown paragraphs, bold only), in the app and in the command line's pages:
    a one-class label set, a user's words the model never read (``own_classes``), a CLS-only baseline (``mode``,
    the checkpoint's), and the picture outside the model's world (``verdict``, from :func:`check`)."""
    lines = []
    if len(classes) == 1:
        lines.append(ONE_CLASS_FLAG)
    elif own_classes:
        lines.append(unseen_words_flag(model, classes))
    if mode in CLS_ONLY_MODES:
        lines.append(CLS_ONLY_FLAG)
    if verdict is not None:
        lines.append(verdict.flag())
    return "\n\n".join(line for line in lines if line)
