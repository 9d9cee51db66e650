"""How a run's labels were debiased, from its recipe to the words a saved model and a running job say."""

from __future__ import annotations

import pytest

from microclip.backbone import BaseModelSpec
from microclip.checkpoint import CheckpointMeta
from microclip.labeling import Debiasing, LabelPrior
from microclip.recipe import Recipe
from studio.about import debias_note, labels_notes


def test_a_recipe_saved_before_a_setting_existed_reads_as_its_default():
    assert Debiasing.of({}) == Debiasing() and not Debiasing().flags
    assert Debiasing.of({"label_debias": 3.0}) == Debiasing(3.0, "scores", 0.9)
    saved = Recipe(epochs=1, label_debias=1.0, label_debias_source="labels", label_debias_momentum=0.99)
    assert Debiasing.of(saved.to_dict()) == saved.debiasing == Debiasing(1.0, "labels", 0.99)
    meta = CheckpointMeta(BaseModelSpec("ViT-B-32", "none", seed=0), ["a", "b"], training={"config": saved.to_dict()})
    assert CheckpointMeta.from_json(meta.to_json(), "test").debiasing == saved.debiasing
    prior = saved.debiasing.prior()
    assert isinstance(prior, LabelPrior) and (prior.source, prior.momentum) == ("labels", 0.99)


@pytest.mark.parametrize(
    ("debiasing", "flags"),
    [
        (Debiasing(3.0), "--label_debias 3"),
        (Debiasing(1.0, "labels"), "--label_debias 1 --label_debias_source labels"),
        (Debiasing(3.0, momentum=0.99), "--label_debias 3 --label_debias_momentum 0.99"),
    ],
)
def test_the_note_names_the_flags_and_the_marginal_that_made_the_labels(debiasing, flags):
    assert debiasing.flags == flags
    note = debias_note(debiasing)
    assert note.startswith(f"**Not the reference's labels** (`train.py {flags}`)")
    said = "running share of the labels themselves" if debiasing.source == "labels" else "running mean probability"
    assert said in note and f"momentum {debiasing.momentum:g}" in note
    assert labels_notes("microclip", debiasing) == [note]
    assert labels_notes("microclip", Debiasing()) == [] and debias_note(Debiasing(0.0, "labels")) == ""
