"""What one adaptation run is asked for (:class:`AdaptRequest`) and the caps a server puts on it
(:class:`AdaptLimits`): the Adapt tab's and the ``adapt_start`` endpoint's settings, checked before a run is queued,
and turned into the method and the recipe the run trains with (``train.py``'s flags, one by one)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from microclip.data.transforms import strong_transform
from microclip.labeling import PRIOR_SOURCES
from microclip.model import MethodConfig
from microclip.recipe import Recipe
from microclip.soap import DETERMINISTIC_QUERIES, NCUT_FEATURES, POOLS

Source = Literal["toybirds", "zip", "folder"]
# The labels a run may train on: the method's, the CLS-only baseline's, the truth's. Not the WCA baseline's (the
# CLS-only baseline's with the crops averaged in): on the toy world it ends where the CLS-only baseline does (round 45).
ADAPT_MODES = ("microclip", "baseline", "fully_supervised")


@dataclass(frozen=True)
class AdaptLimits:
    """Caps that keep one run short on a CPU (and the UI's slider ranges)."""

    max_steps: int = 200
    max_batch_size: int = 64
    max_images: int = 2000
    max_crops: int = 8
    max_probes: int = 6
    max_toy_per_class: int = 50
    min_lr: float = 1e-6
    max_lr: float = 1e-2
    max_fairness_weight: float = 16.0
    max_label_debias: float = 4.0
    max_soap_lr_scale: float = 2.0  # SOAP's share of the learning rate: 0 freezes it, 1 is the reference's
    max_debias_momentum: float = 0.99  # the slowest prior measured (round 47); at 1 the marginal would never move
    max_seed: int = 2**31 - 1  # numpy's and torch's seeds take any 32-bit value; a run's generators derive from it


@dataclass
class AdaptRequest:
    """One adaptation: which data, which base model, how long."""

    source: Source = "toybirds"
    path: str | None = None  # the uploaded zip (source "zip") or a server folder (source "folder")
    model_name: str | None = None  # registry entry whose *base* model is adapted; None: the default
    classnames: list[str] | None = None  # label order; None: from the class folders
    descriptions_path: str | None = None  # CuPL-format JSON {class: [sentence, ...]}
    descriptions: dict[str, list[str]] | None = None  # or typed (microclip.data.descriptions.parse_description_lines)
    allow_missing_descriptions: bool = False
    steps: int = 20  # optimiser steps; the run stops (and can be saved) there
    batch_size: int = 16  # images per step, capped at the data set's size
    lr: float = 1e-4  # AdamW's learning rate for the trainable parameters (LayerNorms, SOAP, W*)
    n_crops: int = 4  # random crops K behind each pseudo-label (their predictions are aggregated)
    n_probes: int = 4  # images of the data whose predictions the run's card shows before and after
    toy_per_class: int = 8  # toy-world images drawn per class (source "toybirds")
    seed: int = 0  # fixes the run: data order and crops
    # SOAP's values centred before W_v (train.py --centre_values, not the reference's): None keeps the chosen entry's
    centre_values: bool | None = None
    # DKA's weight of the static labels (crops against W_LLM; train.py --gamma): None keeps the data set's recipe's
    gamma: float | None = None
    # weight of the fairness term, which keeps the labels spread over the classes (train.py --fairness_weight): None
    # keeps the data set's recipe's
    fairness_weight: float | None = None
    # weight of [CLS] in the fused answer, in the loss and at inference (train.py --fusion_ratio, ρ): None keeps the
    # chosen entry's
    fusion_ratio: float | None = None
    # SOAP's query: "ncut" (the method's, the mean of the cut's foreground), or the reference's ablations "global"
    # ([CLS]) and "token_avg" (every patch token's mean); train.py --use_*_for_query. Not the random token's: its
    # map changes from call to call, which the run's probe maps cannot show. None keeps the chosen entry's
    soap_query: str | None = None
    # How [FG] is pooled: "attention" (SOAP's, the method's), or the reference's ablations "ncut_avg" (the plain mean
    # of the cut's foreground) and "naive_avg" (of every patch token); train.py --use_ncut_token_avg,
    # --use_naive_token_avg. None keeps the chosen entry's
    soap_pool: str | None = None
    # Where the labels come from (train.py's modes): "microclip" (DKA's pseudo-labels, the method), "baseline"
    # ([CLS] alone labels itself and trains; SOAP stays at its start), "fully_supervised" (the folders' true labels:
    # what the right labels give the same parameters, not label-free); None: the method's
    mode: str | None = None
    # how hard the labels' own running class marginal is taken out of their scores (train.py --label_debias, not the
    # reference's; 0: its plain argmax): None keeps the data set's recipe's
    label_debias: float | None = None
    # what that marginal is a running mean of: "scores" (their softmax, DebiasPL's) or "labels" (the labels' own
    # shares); train.py --label_debias_source. None keeps the data set's recipe's
    label_debias_source: str | None = None
    # how slowly that running mean follows the batches (train.py --label_debias_momentum): None keeps the data set's
    # recipe's
    label_debias_momentum: float | None = None
    # SOAP's projections learn at lr × this (train.py --soap_lr_scale, not the reference's unless 1; 0 freezes them):
    # None keeps the data set's recipe's
    soap_lr_scale: float | None = None
    # what the normalised cut reads: "values" (the value-path tokens, the reference's default) or "keys" (the last
    # block's keys, the reference's clean option; train.py --ncut_features). None keeps the chosen entry's
    ncut_features: str | None = None
    # the strong view's RandAugment policy (train.py --aa: a timm policy, or "none" for crop and flip only): None
    # keeps the data set's recipe's
    strong_view: str | None = None

    def method(self, entry: MethodConfig) -> MethodConfig:
        """The method the run adapts with: the chosen entry's, with SOAP's values centred or not, its query, its
        pooling, what its cut reads and ρ if asked."""
        config = MethodConfig.from_dict(entry.to_dict())
        if self.ncut_features is not None:
            config = replace(config, ncut_features=self.ncut_features)
        if self.centre_values is not None:
            config = replace(config, centre_values=bool(self.centre_values))
        if self.soap_query is not None:
            config = replace(config, query=self.soap_query)
        if self.soap_pool is not None:
            config = replace(config, pool=self.soap_pool)
        return config if self.fusion_ratio is None else replace(config, fusion_ratio=float(self.fusion_ratio))

    def recipe(self, dataset: str, n_images: int) -> Recipe:
        """The data set's recipe (the default one for uploads) for a run of ``steps`` steps."""
        return Recipe.from_sources(
            Recipe.for_dataset(dataset),
            # None keeps the data set's
            {
                "gamma": self.gamma,
                "fairness_weight": self.fairness_weight,
                "label_debias": self.label_debias,
                "label_debias_source": self.label_debias_source,
                "label_debias_momentum": self.label_debias_momentum,
                "soap_lr_scale": self.soap_lr_scale,
                "aa": self.strong_view,
            },
            mode=self.mode or "microclip",
            epochs=None,
            max_steps=self.steps,
            batch_size=min(self.batch_size, n_images),
            lr=self.lr,
            n_crops=self.n_crops,
            seed=self.seed,
            num_workers=0,
            eval_every=0,
        )

    def check(self, limits: AdaptLimits) -> None:
        """Raise ValueError naming the first setting outside its range."""
        ranges = {
            "steps": (1, limits.max_steps),
            "batch_size": (1, limits.max_batch_size),
            "n_crops": (1, limits.max_crops),
            "n_probes": (0, limits.max_probes),
            "toy_per_class": (1, limits.max_toy_per_class),
            "seed": (0, limits.max_seed),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} = {value} is outside the allowed range {low}..{high}")
        optional = (
            ("gamma =", self.gamma, 1.0),
            ("fusion ratio =", self.fusion_ratio, 1.0),
            ("fairness weight", self.fairness_weight, limits.max_fairness_weight),
            ("label debiasing", self.label_debias, limits.max_label_debias),
            ("debiasing momentum", self.label_debias_momentum, limits.max_debias_momentum),
            ("SOAP's share of the learning rate", self.soap_lr_scale, limits.max_soap_lr_scale),
        )
        for name, value, top in optional:
            if value is not None and not 0.0 <= value <= top:
                raise ValueError(f"{name} {value:g} is outside the allowed range 0..{top:g}")
        if not limits.min_lr <= self.lr <= limits.max_lr:
            raise ValueError(
                f"learning rate {self.lr:g} is outside the allowed range {limits.min_lr:g}..{limits.max_lr:g}"
            )
        # not the random query's: its map changes from call to call, which the run's probe maps cannot show
        named = (("SOAP query", self.soap_query, DETERMINISTIC_QUERIES), ("SOAP pooling", self.soap_pool, POOLS))
        named += (("labels", self.mode, ADAPT_MODES), ("debiasing prior", self.label_debias_source, PRIOR_SOURCES))
        named += (("cut features", self.ncut_features, NCUT_FEATURES),)
        for name, value, known in named:
            if value is not None and value not in known:
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(known)}")
        if self.strong_view is not None:
            strong_transform(8, auto_augment=self.strong_view)  # an unknown policy: ValueError naming the choices
        if self.descriptions_path and self.descriptions:
            raise ValueError("give the descriptions as a file or typed, not both")
        if self.source not in ("toybirds", "zip", "folder"):
            raise ValueError(f"unknown data source {self.source!r}; expected 'toybirds', 'zip' or 'folder'")
        if self.source in ("zip", "folder") and not self.path:
            raise ValueError("upload a zip of images" if self.source == "zip" else "type the folder's path")
