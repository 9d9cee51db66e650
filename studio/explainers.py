"""The explainer comparison's words and pictures without Gradio: which class, each map as a picture file, the
table of costs and scores, and what each map shows.

The toy world's ground truth comes in as ``ToyParts`` (the species and its part mask), found by the tab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from microclip.explainers import (
    EXPLAINERS,
    TIMING_REPEATS,
    ExplainerComparison,
    PartScore,
    chance_score,
    part_score,
    unavailable_explainers,
)
from microclip.faithfulness import deletion_scores
from microclip.formats import BRANCH_LABELS
from microclip.heads import BRANCHES
from studio.images import image_file
from viz.colormaps import symmetric_limit
from viz.peers import SCALE_NOTE, SIGNED_NOTE, peer_panel

PREDICTED = "predicted class"
NOT_TOY = (
    "_No part scores: this image is not a known toy-world image (a bundled `toybird-*` example or an image "
    "of a generated split under `data/toybirds`, recognised by its exact pixels; a resized or re-saved copy "
    "is not), so where its evidence lies is unknown._"
)


@dataclass(frozen=True)
class ToyParts:
    """What the toy world knows of an image: the bird's species and where its discriminative parts are."""

    species: str
    part_mask: np.ndarray  # (H, W) bool, on the picture's pixels


def class_index(classes: list[str], model_name: str, choice: str | None) -> int | None:
    """The class to explain: None for the prediction, else the index of one of the model's own classes."""
    if not choice or choice == PREDICTED:
        return None
    if choice not in classes:
        raise ValueError(
            f"'{choice}' is not one of {model_name}'s {len(classes)} classes; pick one from the list, or '{PREDICTED}'."
        )
    return classes.index(choice)


def panel_files(
    crop: np.ndarray, comparison: ExplainerComparison, cmap: str, opacity: float, outline: np.ndarray | None
) -> list[tuple[str, str]]:
    """Each available map over the crop (the parts outlined, on a toy image) as a PNG file, with its caption."""
    return [
        (
            image_file(peer_panel(crop, run.saliency, cmap, opacity, outline, EXPLAINERS[name].signed)),
            caption(name, run.ms, run.saliency),
        )
        for name, run in comparison.runs.items()
        if run.saliency is not None
    ]


def shows_signed(comparison: ExplainerComparison) -> bool:
    """Whether a signed map (drawn on the diverging scale) is among the maps shown."""
    return any(EXPLAINERS[name].signed and run.saliency is not None for name, run in comparison.runs.items())


def caption(name: str, ms: float | None, saliency: np.ndarray | None = None) -> str:
    """The map's title and cost; a signed map's also says its scale (red and blue at ± its largest |value|)."""
    text = EXPLAINERS[name].title
    if EXPLAINERS[name].signed and saliency is not None:
        text += f" · red +, blue −, full at ±{symmetric_limit(saliency):.3g}"
    return text if ms is None else f"{text} · {ms:.1f} ms"


def _pointing(score: PartScore) -> str:
    if score.n_top == 1:
        return "yes" if score.top_on_part == 1.0 else "no"
    return f"{score.top_on_part:.0%} of {score.n_top} tied"


DELETION_HEADER = "deletion"


def comparison_markdown(
    comparison: ExplainerComparison, truth: ToyParts | None, deletion: dict[str, dict[str, float]] | None = None
) -> str:
    """The class explained, then name | ms | (scores) per explainer; notes (unavailable explainers, why a map is
    unscored) under the table, never in it. ``truth``: a toy image's species and part mask (None elsewhere);
    ``deletion``: each map's ROAD deletion drop of each branch's prediction ({map: {branch: drop}})."""
    how = "the model's prediction" if comparison.predicted else "chosen"
    lines = [
        f"**Explaining class: {comparison.class_name}** ({how}). Maps on one colour scale: {SCALE_NOTE}. _ms_: each "
        f"method's time on this image, the median of {TIMING_REPEATS} calls."
    ]
    if shows_signed(comparison):
        lines[0] += f" But {SIGNED_NOTE}."
    if truth is not None:
        lines += [
            "",
            f"Toy-world image: a *{truth.species}*; its discriminative parts are outlined "
            "in white. _Top patch on a part_: is the map's highest patch on a part (with ties, the share "
            "of tied patches that are). _Mass inside_: the share of the map's mass, shifted so its lowest "
            "patch has none, that falls on part pixels.",
        ]
    if deletion is not None:
        lines += [
            "",
            "_Deletion (ROAD)_: the map's most relevant pixels removed (10% … 90%, whole patches in the map's "
            "order, equal scores in a fixed random order, so a mask such as NCut's is removed a share at a time; "
            "filled in by noisy linear imputation) and the mean drop, in points, of the fused prediction's "
            "probability (a negative number: it rose): a larger drop, a map the decision depends on more "
            "(`microclip.faithfulness`). Each branch's own drop is in the table under it.",
        ]
    header, rule = ["method", "ms"], ["---", "---:"]
    if truth is not None:
        header, rule = header + ["top patch on a part", "mass inside the part mask"], rule + ["---", "---:"]
    if deletion is not None:
        header += [DELETION_HEADER]
        rule += ["---:"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    missing = []
    for name, run in comparison.runs.items():
        title = EXPLAINERS[name].title
        if run.saliency is None:  # said under the table: a long reason in a cell squeezes every column
            missing.append(f"**{title}** is unavailable here: {run.error}")
            continue
        row = f"| {title} | {run.ms:.1f} |"
        if truth is not None:
            score = part_score(run.saliency, truth.part_mask)
            row += f" {_pointing(score)} | {score.mass_inside:.1%} |"
        if deletion is not None:
            row += f" {100.0 * deletion[name]['fused']:.1f} |" if name in deletion else " — |"
        lines.append(row)
    if truth is not None:
        chance = chance_score(truth.part_mask, comparison.grid)
        lines.append(
            f"| _chance (uniform map)_ | | {chance.top_on_part:.0%} | {chance.mass_inside:.1%} |"
            + (" |" if deletion is not None else "")
        )
    lines += _branch_deletion_table(deletion) if deletion else []
    lines += ["", *[f"- {text}" for text in missing]] if missing else []
    if truth is None:
        lines += ["", NOT_TOY]
    return "\n".join(lines)


def _branch_deletion_table(deletion: dict[str, dict[str, float]]) -> list[str]:
    """Each map's deletion drop (points) for each branch's own prediction, in a table of its own: three more
    columns beside the pointing scores would squeeze the panel's table until its numbers break."""
    lines = [
        "",
        "_Deletion, branch by branch_ (points of each branch's probability for the class it predicts alone). "
        "SOAP's weights build `[FG]`: compare its `[FG]` drop with the other maps'. One image ranks the maps "
        "by chance as much as by faithfulness; over many images (the README's toy-world deletion rows) the gaps "
        "between the close maps are a point or two.",
        "",
        "| method | " + " | ".join(BRANCH_LABELS[b] for b in BRANCHES) + " |",
        "|---|" + "---:|" * len(BRANCHES),
    ]
    for name, drops in deletion.items():
        lines.append(f"| {EXPLAINERS[name].title} | " + " | ".join(f"{100.0 * drops[b]:.1f}" for b in BRANCHES) + " |")
    return lines


def deletion_of(model, tensor: torch.Tensor, comparison: ExplainerComparison) -> dict[str, dict[str, float]]:
    """Each available map's ROAD deletion drop of each branch's predicted-class probability on this one image."""
    maps = {name: run.saliency.reshape(1, -1) for name, run in comparison.runs.items() if run.saliency is not None}
    return deletion_scores(model, tensor[None], maps)


def notes_markdown() -> str:
    """What each map shows (the registry's notes), and which explainers cannot run here and why."""
    missing = unavailable_explainers()
    lines = []
    for name, explainer in EXPLAINERS.items():
        suffix = f" **Unavailable here:** {missing[name]}" if name in missing else ""
        lines.append(f"- **{explainer.title}** (`{name}`). {explainer.note}{suffix}")
    return "\n".join(lines)
