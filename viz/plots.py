"""Figures with matplotlib: training curves (the reference's accuracy.png and PL_accuracy.png) and
the [CLS]/[FG] split of one explanation's logits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from microclip.explain import Explanation


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def accuracy_figure(history: list[dict]) -> plt.Figure:
    """Test top-1 per epoch for the fused, [CLS]-only and [FG]-only predictions (epoch 0 = zero-shot)."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    # Older logs have no test_acc_fused; there test_acc is the fused accuracy.
    fused = "test_acc_fused" if any("test_acc_fused" in row for row in history) else "test_acc"
    for key, label in ((fused, "TokenFusion"), ("test_acc_cls", "[CLS] only"), ("test_acc_fg", "[FG] only")):
        epochs, values = _series(history, key)
        if values:
            axis.plot(epochs, values, marker="o", label=label)
    axis.set(xlabel="epoch", ylabel="test top-1 (%)", title="Test accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def pseudo_label_figure(history: list[dict]) -> plt.Figure:
    """Pseudo-label accuracy per epoch (needs labels) and the mean pseudo-label confidence."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in (("train_pl_acc", "combined"), ("train_pl_acc_static", "crops · W_LLM"),
                       ("train_pl_acc_dynamic", "fused · W*")):
        epochs, values = _series(history, key)
        if values:
            axis.plot(epochs, values, marker="o", label=label)
    axis.set(xlabel="epoch", ylabel="pseudo-label accuracy (%)", title="Pseudo-label accuracy")
    epochs, confidence = _series(history, "train_pl_conf")
    if confidence:
        twin = axis.twinx()
        twin.plot(epochs, confidence, color="grey", linestyle="--", label="confidence")
        twin.set_ylabel("mean max score (cosine)")
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def save_training_plots(history: list[dict], folder: Path) -> None:
    """Write ``accuracy.png`` and ``pl_accuracy.png`` into ``folder``."""
    for name, build in (("accuracy.png", accuracy_figure), ("pl_accuracy.png", pseudo_label_figure)):
        figure = build(history)
        figure.savefig(Path(folder) / name)
        plt.close(figure)


# ------------------------------------------------------------------ one explanation

CLS_COLOUR = "#4C72B0"  # [CLS]: the global token
FG_COLOUR = "#DD8452"  # [FG]: SOAP's fine-grained token
# Plain Unicode (DejaVu Sans has every glyph), not mathtext: matplotlib's mathtext parser (pyparsing) is
# not thread-safe, and the app draws and saves these figures in several request threads at once.
CLS_LABEL = "[CLS] part  ρ·100·⟨g, Ŵ*_c⟩"
FG_LABEL = "[FG] part  (1−ρ)·100·⟨f, Ŵ*_c⟩"


def contribution_figure(explanation: Explanation, class_indices: Sequence[int],
                        marks: dict[int, str] | None = None) -> Figure:
    """Horizontal stacked bars: the exact [CLS] part and [FG] part of each class's fused logit.

    ``fused_c = ρ·100·⟨g, Ŵ*_c⟩ + (1−ρ)·100·⟨f, Ŵ*_c⟩``; bar widths are these two terms as
    ``Explanation.contributions`` gives them. Parts of the same sign are stacked; a part of the
    opposite sign starts at 0, so each bar's length is always its part. A black tick marks the
    fused total. ``marks`` adds a note after a class name (e.g. "predicted", "runner-up").

    Built with the object-oriented API (not pyplot), so nothing global keeps the figure alive.
    """
    marks = marks or {}
    figure = Figure(figsize=(7.0, 0.55 * len(class_indices) + 1.9), dpi=100)
    axis = figure.add_subplot()
    rows = np.arange(len(class_indices))
    parts = np.array([explanation.contributions(c) for c in class_indices]).reshape(-1, 2)
    cls_part, fg_part = parts[:, 0], parts[:, 1]
    fg_left = np.where(np.sign(fg_part) == np.sign(cls_part), cls_part, 0.0)
    axis.barh(rows, cls_part, color=CLS_COLOUR, label=CLS_LABEL)
    axis.barh(rows, fg_part, left=fg_left, color=FG_COLOUR, label=FG_LABEL)
    axis.scatter(cls_part + fg_part, rows, marker="|", s=400, color="black", zorder=3, label="fused logit")
    names = [f"{_plain(explanation.classes[c])}{f'  ({marks[c]})' if c in marks else ''}" for c in class_indices]
    axis.set_yticks(rows, names)
    axis.invert_yaxis()  # first class on top
    axis.axvline(0.0, color="grey", linewidth=0.8)
    axis.set_xlabel("contribution to the fused logit")
    axis.set_title(f"Why this class? Fused logit split at ρ = {explanation.ratio:.2f}")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6 / figure.get_figheight() - 0.12), ncol=3,
                fontsize=8, frameon=False)  # below the axis, so it never hides a bar
    figure.tight_layout()
    return figure


def _plain(text: str) -> str:
    """A user's class name shown as typed: ``$`` escaped so matplotlib never parses it as mathtext."""
    return text.replace("$", r"\$")


def topk_figure(explanation: Explanation, k: int = 5) -> Figure:
    """Top-k probabilities of the fused, [CLS]-only and [FG]-only predictions, side by side."""
    figure = Figure(figsize=(9.0, 0.4 * k + 1.4), dpi=100)
    branches = (("fused", "fused"), ("cls", "[CLS] only"), ("fg", "[FG] only"))
    for index, (branch, title) in enumerate(branches):
        axis = figure.add_subplot(1, 3, index + 1)
        top = explanation.top_k(branch, k)
        axis.barh(range(len(top)), [p for _, p in top], color=(FG_COLOUR if branch == "fg" else CLS_COLOUR))
        axis.set_yticks(range(len(top)), [_plain(name) for name, _ in top], fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(0.0, 1.0)
        axis.set_title(title)
    figure.tight_layout()
    return figure
