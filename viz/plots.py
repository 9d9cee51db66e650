"""Figures with matplotlib: the training curves (the reference's accuracy.png and PL_accuracy.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from microclip.formats import BRANCH_LABELS  # noqa: E402


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def accuracy_figure(history: list[dict]) -> plt.Figure:
    """Test top-1 per epoch for the fused, [CLS]-only and [FG]-only predictions (epoch 0 = zero-shot), and the fused
    answer on the validation folder where the run had one (``train.py --val_dataset``), dashed."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    # Older logs have no test_acc_fused; there test_acc is the fused accuracy.
    fused = "test_acc_fused" if any("test_acc_fused" in row for row in history) else "test_acc"
    keys = {"fused": fused, "cls": "test_acc_cls", "fg": "test_acc_fg"}
    for branch, label in BRANCH_LABELS.items():
        key = keys[branch]
        epochs, values = _series(history, key)
        if values:
            axis.plot(epochs, values, marker="o", label=label)
    epochs, values = _series(history, "val_acc_fused")
    if values:
        axis.plot(
            epochs, values, marker="s", linestyle="--", color="grey", label=f"{BRANCH_LABELS['fused']}, validation"
        )
    axis.set(xlabel="epoch", ylabel="top-1 (%)", title="Test and validation accuracy" if values else "Test accuracy")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def pseudo_label_figure(history: list[dict]) -> plt.Figure:
    """Pseudo-label accuracy per epoch (needs labels) and the mean pseudo-label confidence."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in (
        ("train_pl_acc", "combined"),
        ("train_pl_acc_static", "crops · W_LLM"),
        ("train_pl_acc_dynamic", "fused · W*"),
    ):
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
