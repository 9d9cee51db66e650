"""What if the descriptions said something else? One picture under the model's own class descriptions and under the
ones a user typed, with no training.

W* starts as the mean of each class's description embeddings (docs/method.md §4.5), so a sentence changed is a
class vector moved. Three answers: the model as it is; W* built from its own descriptions as adaptation starts; and
W* built from the same with the typed sentences in place (``ModelRegistry.with_classes``: the adapted visual tower and
SOAP kept). The last two differ by the sentences alone, the first two by what adaptation did to W* (on a zero-shot
model they are one answer). The backbone reads the picture once for all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from microclip.data.descriptions import description_lines, match_descriptions, parse_description_lines, refuse_unknown
from microclip.explain import Explanation, explain_sharing_the_tower
from studio.registry import ModelRegistry


@dataclass(frozen=True)
class ClassChange:
    """One re-described class: its sentences on each side and its fused logit and place on the picture, under the
    model's W*, W* from its descriptions and W* from the typed ones."""

    name: str
    before: tuple[str, ...]  # the model's sentences ((): it had none, templates stood in)
    after: tuple[str, ...]
    logits: tuple[float, float, float]
    places: tuple[int, int, int]  # 1 = the fused answer


@dataclass(frozen=True)
class Redescribed:
    """The picture under the model as it is, under W* built from the model's descriptions and from the typed ones."""

    now: Explanation  # the model's own W* (adapted: moved from its start)
    before: Explanation  # W* from the model's descriptions, as adaptation starts
    after: Explanation  # W* from the same with the typed sentences in place of a class's own
    classes: tuple[ClassChange, ...]  # the classes whose sentences the user changed, in class order
    true_class: str | None = None  # the toy world's truth, when it is one of the classes

    @property
    def columns(self) -> tuple[Explanation, Explanation, Explanation]:
        return self.now, self.before, self.after

    @property
    def adapted(self) -> bool:
        """Whether the model's own W* differs from the one its descriptions give (adaptation moved it)."""
        return not np.allclose(self.now.logits_cls, self.before.logits_cls, atol=1e-4)


def own_descriptions(registry: ModelRegistry, model_name: str | None, classes: Sequence[str]) -> dict[str, list[str]]:
    """The model's descriptions of ``classes`` (matched as a descriptions file is; [] for a class it has none of)."""
    return match_descriptions(registry.get(model_name).descriptions, classes)[0]


def sentences_in_use(
    registry: ModelRegistry, model_name: str | None, classes: Sequence[str], given: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """The sentences Explore answers ``classes`` with: those of the descriptions file the user gave (``given``), else
    the model's own ([] for a class with none)."""
    return own_descriptions(registry, model_name, classes) if given is None else match_descriptions(given, classes)[0]


def own_description_lines(registry: ModelRegistry, model_name: str | None, classes: Sequence[str]) -> str:
    """The model's descriptions of ``classes`` as lines to edit (``class name: sentence``)."""
    return description_lines(own_descriptions(registry, model_name, classes))


def typed_descriptions(text: str, classes: Sequence[str]) -> dict[str, list[str]]:
    """The classes the typed lines describe, with their sentences (``DescriptionsError`` for a line that is not
    ``class name: sentence`` and for a name that is none of ``classes``)."""
    typed = parse_description_lines(text)
    refuse_unknown(typed, classes, "the classes in use")
    return {name: sentences for name, sentences in match_descriptions(typed, classes)[0].items() if sentences}


@torch.no_grad()
def redescribe(
    registry: ModelRegistry,
    picture,
    model_name: str | None,
    classes: Sequence[str],
    typed: dict[str, list[str]],
    ratio: float | None = None,
    true_class: str | None = None,
    given: dict[str, list[str]] | None = None,
) -> Redescribed:
    """``picture`` (PIL) under the model for ``classes``, under W* built from its descriptions of them, and from the
    same with ``typed`` (class → sentences) in place of a class's own, at fusion ratio ``ratio``. ``given``:
    descriptions the user gave in place of the model's (Explore's file), which the model then answers with."""
    own = sentences_in_use(registry, model_name, classes, given)
    mine = {**own, **typed}
    # the model's own when they are its classes; with a file of descriptions, W* built from them, as Explore answers
    now_model = registry.with_classes(model_name, classes, given)
    models = (
        now_model,
        registry.with_classes(model_name, classes, own),
        registry.with_classes(model_name, classes, mine),
    )
    now, before, after = explain_sharing_the_tower(models, picture, ratio)
    fused = [e.logits_fused for e in (now, before, after)]
    places = [_places(logits) for logits in fused]
    changed = tuple(
        ClassChange(
            name,
            tuple(own[name]),
            tuple(mine[name]),
            tuple(float(logits[i]) for logits in fused),
            tuple(int(p[i]) for p in places),
        )
        for i, name in enumerate(now.classes)
        if mine[name] != own[name]
    )
    return Redescribed(now, before, after, changed, true_class if true_class in now.classes else None)


def _places(logits: np.ndarray) -> np.ndarray:
    """Each class's place in the fused answer (1 = first; ties in class order)."""
    return np.argsort(np.argsort(-logits, kind="stable"), kind="stable") + 1
