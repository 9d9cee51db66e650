"""The adaptation recipe: one dataclass that is the config files' schema and the command line's flags.

Precedence, lowest first: the field defaults (the reference's dataset config, docs/method.md §6), the
dataset config file, then flags given on the command line. A config key that is not a field is an
error naming the nearest valid key, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from microclip.constants import CLS_ONLY_MODES
from microclip.data.transforms import DEFAULT_AUTO_AUGMENT, TrainViews
from microclip.files import parse_json
from microclip.labeling import PRIOR_MOMENTUM, PRIOR_SOURCES, Debiasing
from microclip.resources import config_file

Mode = Literal["microclip", "baseline", "wca_baseline", "fully_supervised"]


def reported_branch(mode: str | None) -> str:
    """The branch a run of ``mode`` trains and reports: "cls" for the CLS-only baselines, else "fused"."""
    return "cls" if mode in CLS_ONLY_MODES else "fused"


# train.py's switch for each mode other than the method's own (the reference's flags; they exclude each other)
MODE_FLAGS = {"baseline": "--baseline", "wca_baseline": "--wca_baseline", "fully_supervised": "--fully_supervised"}
AmpMode = Literal["none", "bf16", "fp16"]
Decay = Literal["all", "intended"]
TestFusion = Literal["consistent", "reference"]
PriorSource = Literal["scores", "labels"]  # microclip.labeling.PRIOR_SOURCES


class ConfigError(ValueError):
    """A config file or mapping that does not fit the recipe; the message names the key."""


def _flag(help_text: str) -> dict:
    """Fields with this metadata become ``--name`` flags of ``train``."""
    return {"flag": help_text}


@dataclass
class Recipe:
    """How one adaptation trains: optimisation, self-training, the training views, bookkeeping."""

    # optimisation (the reference: AdamW, per-iteration cosine to 2 · min_lr)
    epochs: int | None = field(default=15, metadata=_flag("passes over the training set"))
    batch_size: int = field(default=64, metadata=_flag("images per step (over all processes)"))
    lr: float = field(default=1e-4, metadata=_flag("peak learning rate"))
    min_lr: float = field(default=1e-6, metadata=_flag("the cosine ends at twice this (the reference's doubling)"))
    warmup_steps: int = field(default=0, metadata=_flag("linear warmup steps (takes precedence over warmup_epochs)"))
    warmup_epochs: int = field(default=0, metadata=_flag("the reference's warmup: this many epochs of steps"))
    weight_decay: float = field(default=0.1, metadata=_flag("AdamW weight decay"))
    decay: Decay = "all"  # --no_decay_groups: "intended", no decay on LayerNorms
    # not in the reference (all its parts learn at one rate): steering knobs, 1.0 is the reference
    soap_lr_scale: float = field(default=1.0, metadata=_flag("SOAP's projections learn at lr x this (0 freezes them)"))
    layernorm_lr_scale: float = field(
        default=1.0, metadata=_flag("the visual LayerNorms learn at lr x this (0 freezes them)")
    )
    # self-training (docs/method.md §3-§5)
    gamma: float = field(default=0.5, metadata=_flag("DKA: weight of the static (W_LLM) labels"))
    n_crops: int = field(default=8, metadata=_flag("random crops K behind each pseudo-label"))
    ce_weight: float = field(default=1.0, metadata=_flag("weight of the pseudo-label cross-entropy"))
    fairness_weight: float = field(default=1.0, metadata=_flag("weight of the fairness regulariser"))
    branch_ce_weight: float = field(  # not in the reference: its loss sees only the fused logits
        default=0.0, metadata=_flag("weight of the pseudo-label cross-entropy on [CLS] and on [FG] alone (mean)")
    )
    label_debias: float = field(  # not in the reference: its labels are the plain argmax
        default=0.0,
        metadata=_flag(
            "labels from the scores minus this x log of the labels' running class marginal (logit adjustment, "
            "DebiasPL; 0: the reference's plain argmax)"
        ),
    )
    label_debias_momentum: float = field(
        default=PRIOR_MOMENTUM,
        metadata=_flag("momentum of the running class marginal --label_debias takes out (0 <= m < 1)"),
    )
    label_debias_source: PriorSource = field(
        default=PRIOR_SOURCES[0],
        metadata=_flag(
            "what --label_debias's marginal is a running mean of: scores (the softmax of the labels' scores, "
            "DebiasPL's) or labels (the adjusted labels' own shares)"
        ),
    )
    mode: Mode = "microclip"  # --baseline, --wca_baseline, --fully_supervised
    use_fixed_classifier: bool = False  # --use_fixed_classifier: baselines label with W_LLM
    # the training views
    input_size: int | None = field(default=None, metadata=_flag("input side; default: the model's"))
    alpha: float = field(default=0.5, metadata=_flag("crop side min, fraction of the short side"))
    beta: float = field(default=0.9, metadata=_flag("crop side max, fraction of the short side"))
    train_crop_min: float = field(default=0.3, metadata=_flag("strong view: smallest RandomResizedCrop area"))
    aa: str = field(
        default=DEFAULT_AUTO_AUGMENT,
        metadata=_flag("strong view: timm auto-augment policy ('none': crop and flip only)"),
    )
    color_jitter: float = field(default=0.0, metadata=_flag("strong view: colour jitter"))
    train_interpolation: str = field(default="bicubic", metadata=_flag("resize interpolation of the views"))
    # running
    amp: AmpMode = "none"  # --amp (fp16 + GradScaler, as the reference's), --amp bf16
    test_fusion: TestFusion = field(
        default="consistent",
        metadata=_flag(
            "test-time fusion: consistent (ρ on [CLS], as in training) or reference (its swapped unpacking: ρ on [FG])"
        ),
    )
    seed: int = 0  # --seed
    num_workers: int = 0  # --num_workers
    max_steps: int | None = field(default=None, metadata=_flag("cap on optimisation steps (short runs)"))
    eval_every: int = field(default=1, metadata=_flag("epochs between test evaluations (0: at the end only)"))
    save_every_steps: int = field(default=0, metadata=_flag("mid-epoch resumable state (0: at epoch ends)"))
    eval_batch_size: int | None = field(default=None, metadata=_flag("test batch size (default 4 x batch)"))

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None:
            raise ConfigError("a recipe needs epochs or max_steps to end")
        for name in ("soap_lr_scale", "layernorm_lr_scale", "label_debias"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_debias_momentum < 1.0:
            raise ConfigError(f"label_debias_momentum must be in [0, 1), got {self.label_debias_momentum}")

    @property
    def reported_branch(self) -> str:
        """The prediction reported as ``acc``: [CLS]-only for the baselines (as the reference), else fused."""
        return reported_branch(self.mode)

    @property
    def debiasing(self) -> Debiasing:
        """How the run's labels are debiased (``label_debias*``; strength 0, the reference's plain argmax)."""
        return Debiasing(self.label_debias, self.label_debias_source, self.label_debias_momentum)

    @property
    def test_batch_size(self) -> int:
        """The batch of test evaluations: ``eval_batch_size``, else four training batches (no gradients)."""
        return self.eval_batch_size or 4 * self.batch_size

    def warmup(self, steps_per_epoch: int) -> int:
        """Warmup steps: ``warmup_steps`` when set, else ``warmup_epochs`` epochs (the reference's rule)."""
        return self.warmup_steps if self.warmup_steps > 0 else self.warmup_epochs * steps_per_epoch

    # -------------------------------------------------------------- views

    def views(self, image_size: int) -> TrainViews:
        """The weak, strong and crop views of a training step (``input_size`` overrides ``image_size``)."""
        return TrainViews(
            input_size=self.input_size or image_size,
            n_crops=self.n_crops,
            alpha=self.alpha,
            beta=self.beta,
            scale=(self.train_crop_min, 1.0),
            auto_augment=self.aa,
            color_jitter=self.color_jitter,
            interpolation=self.train_interpolation,
        )

    # -------------------------------------------------------------- (de)serialisation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "recipe") -> Recipe:
        """Validated: unknown keys and values of the wrong type are a ConfigError naming the key."""
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{source}: unknown key '{key}'{hint}; valid keys: {', '.join(known)}")
            _check_type(known[key], value, source)
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str, source: str) -> Recipe:
        data = parse_json(text, source, ConfigError)
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object of recipe keys")
        return cls.from_dict(data, source)

    @classmethod
    def for_dataset(cls, dataset: str) -> Recipe:
        """The bundled dataset config of a benchmark (by name or path's last part), else the default one."""
        name = Path(dataset).name
        entry = config_file("dataset_configs", name) or config_file("dataset_configs", "default")
        return cls.from_json(entry.read_text(), f"dataset config {entry.name}")

    # -------------------------------------------------------------- command line

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """One ``--name`` per flagged field; default None, so an absent flag leaves the config's value."""
        for spec in fields(cls):
            if "flag" in spec.metadata:
                kind = _field_types(spec)[0]
                choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
                parser.add_argument(
                    f"--{spec.name}", type=_scalar_type(spec), choices=choices, default=None, help=spec.metadata["flag"]
                )

    @classmethod
    def flag_names(cls) -> list[str]:
        return [spec.name for spec in fields(cls) if "flag" in spec.metadata]

    @classmethod
    def from_sources(
        cls, config: Recipe | None, args: argparse.Namespace | Mapping[str, Any] | None = None, **fixed: Any
    ) -> Recipe:
        """``config`` (a dataset config) overridden by the flags set in ``args``, then by ``fixed``."""
        values = (config or cls()).to_dict()
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
        values.update({name: given[name] for name in cls.flag_names() if given.get(name) is not None})
        values.update(fixed)
        return cls.from_dict(values)


@functools.cache
def _type_hints() -> dict[str, Any]:
    """Recipe's annotations, resolved once (they are strings under ``from __future__ import annotations``)."""
    return typing.get_type_hints(Recipe)


def _field_types(spec) -> tuple[type, ...]:
    hint = _type_hints()[spec.name]
    args = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    return tuple(a for a in args if a is not type(None))


def _scalar_type(spec) -> type:
    kind = _field_types(spec)[0]
    return str if typing.get_origin(kind) is Literal else kind


def _check_type(spec, value: Any, source: str) -> None:
    if value is None:
        hint = _type_hints()[spec.name]
        if type(None) not in typing.get_args(hint):
            raise ConfigError(f"{source}: '{spec.name}' cannot be null")
        return
    for kind in _field_types(spec):
        if typing.get_origin(kind) is Literal:
            if value in typing.get_args(kind):
                return
            raise ConfigError(f"{source}: '{spec.name}' must be one of {list(typing.get_args(kind))}, not {value!r}")
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if kind in (str, bool) and isinstance(value, kind):
            return
    raise ConfigError(f"{source}: '{spec.name}' = {value!r} is not a {_scalar_type(spec).__name__}")


# The train configs (``--train_config NAME``) say which base model and text sources a run uses. The
# reference's files carry more keys than it reads; they are accepted and documented as such.
TRAIN_CONFIG_KEYS = {
    "vision_backbone": "open_clip model name, ViT-B/32 style name or local-dir: folder",
    "pretrained": "open_clip pretrained tag or weight file",
    "use_handcrafted": "initial W* from templates instead of descriptions",
    "text_descriptions_path": "descriptions JSON file or folder (CuPL format)",
    "templates": "templates JSON file",
    "eval_crop": "test-time crop, center or random",
    # read by the reference's scripts, no effect here
    "method": "reference bookkeeping",
    "eval_freq": "reference bookkeeping",
    "final_model": "reference bookkeeping",
    "source_model": "reference bookkeeping",
    "use_learnable_classifier": "always true here",
    "prompt_type": "reference bookkeeping",
}


def check_train_config(data: Mapping[str, Any], source: str) -> dict:
    """``data`` unchanged when every key is a known train-config key; else a ConfigError naming it."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object")
    for key in data:
        if key not in TRAIN_CONFIG_KEYS:
            close = difflib.get_close_matches(key, TRAIN_CONFIG_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{key}'{hint}; valid keys: {', '.join(TRAIN_CONFIG_KEYS)}")
    return dict(data)
