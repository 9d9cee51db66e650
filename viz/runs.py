"""A run as the browser shows it: an adaptation's curves, progress bar and probe cards; a batch's captions;
the files either one skipped. Plain values in (metrics rows, explanations, counts), HTML, Markdown and plot
tables out. No Gradio here, and no knowledge of the runner that produced the values (``studio.jobs`` does
that part)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from importlib.resources import files

import numpy as np
import pandas as pd
from PIL import Image

from microclip.explain import Explanation
from microclip.formats import BRANCH_LABELS, small_number
from microclip.heads import BRANCHES
from viz.colormaps import DEFAULT_COLORMAP
from viz.html import jpeg_uri
from viz.overlay import overlay_map

PROBE_SIZE = 224  # pixels of each probe map (the browser scales it to its card)
SMOOTHING = 0.9  # weight of the past in the loss curve's moving average
CURVE_TYPES = {"step": "int64", "value": "float64", "series": "object"}
MAX_SKIPPED_LISTED = 50  # files named in a skipped list; the rest are counted

# The probe cards carry their own styles (a package file, read once): the gr.HTML they land in is replaced whole.
PROBES_CSS = "<style>\n" + files("viz").joinpath("static/adapt.css").read_text(encoding="utf-8") + "</style>"
NO_RUN_HTML = "<div>no run yet</div>"
NO_PROBES_HTML = "<div class='ad-probes-empty'>Probe maps appear here when a run has started.</div>"


# ------------------------------------------------------------------ curves


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average, debiased (divided by 1 − weight^t) so the first points are not pulled to 0."""
    out, average = [], 0.0
    for t, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**t))
    return out


def _frame(rows_in: Sequence[dict], keys: dict[str, str]) -> pd.DataFrame:
    rows = [
        {"step": row["step"], "value": row[key], "series": label}
        for row in rows_in
        for key, label in keys.items()
        if key in row
    ]
    # Typed even when empty: an empty frame's columns are `object`, and Gradio's LinePlot declares untyped step and
    # value nominal (categorical axes, one label per loss value). The app sends it no empty frame at all
    # (ui.adapt.plot_values: the chart's series are fixed by the first value it gets).
    return pd.DataFrame(rows, columns=["step", "value", "series"]).astype(CURVE_TYPES)


BRANCH_SERIES = {"agree_cls": "[CLS] alone", "agree_fg": "[FG] alone"}


def curves(metrics: Sequence[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Long-format frames (step, value, series) for the loss (raw and smoothed), confidence, pseudo-label accuracy
    and branch agreement (each branch alone naming the fused answer, %) plots."""
    with_loss = [row for row in metrics if "loss" in row]
    smoothed = [
        {"step": row["step"], "smooth": value} for row, value in zip(with_loss, smooth([r["loss"] for r in with_loss]))
    ]
    loss = pd.concat([_frame(metrics, {"loss": "loss"}), _frame(smoothed, {"smooth": "smoothed"})], ignore_index=True)
    return (
        loss.astype(CURVE_TYPES),
        _frame(metrics, {"pl_conf": "confidence"}),
        _frame(metrics, {"pl_acc": "combined", "pl_acc_static": "crops · W_LLM", "pl_acc_dynamic": "fused · W*"}),
        _frame(metrics, BRANCH_SERIES),
    )


# ------------------------------------------------------------------ progress and probe cards


def progress_html(step: int, total_steps: int, elapsed_s: float) -> str:
    """A plain HTML progress bar (gr.Progress only lives inside the event that started it)."""
    return (
        f"<div><progress value='{step}' max='{max(total_steps, 1)}' style='width:100%'></progress>"
        f"<div>step {step} / {total_steps or '?'} · {elapsed_s:.0f} s</div></div>"
    )


def map_name(explanation: Explanation) -> str:
    """What the shown map is: SOAP's attention, or the pooling weights of a plain-mean ablation (no attention)."""
    return "SOAP" if explanation.pool == "attention" else "plain-mean weights"


def probe_caption(label: str, explanation: Explanation, when: str, branch: str = "fused") -> str:
    """``when: true class → prediction (p) · SOAP lowest – highest``: the map's own colour scale. The prediction
    is ``branch``'s: fused, or `[CLS]`'s for a CLS-only baseline's run (the answer it trains)."""
    index = explanation.prediction(branch)
    probability = explanation.probabilities(branch)[index]
    answer = "" if branch == "fused" else f"{BRANCH_LABELS[branch]}: "
    weights = explanation.soap_weights
    return (
        f"{when}: {label} → {answer}{explanation.classes[index]} ({probability:.0%}) · {map_name(explanation)} "
        f"{small_number(weights.min())} (lowest) – {small_number(weights.max())} (highest)"
    )


def probe_overlay(picture: np.ndarray, explanation: Explanation) -> np.ndarray:
    """The probe's SOAP weights over its input crop, at ``PROBE_SIZE`` pixels, on the map's own range."""
    large = np.asarray(Image.fromarray(picture).resize((PROBE_SIZE, PROBE_SIZE), Image.BICUBIC))
    return overlay_map(large, explanation.soap_weights, opacity=0.5, cmap=DEFAULT_COLORMAP)


def probe_figure(
    picture: np.ndarray, label: str, explanation: Explanation | None, when: str, pending: str, branch: str = "fused"
) -> str:
    """One map with its whole caption, or the ``pending`` note where that moment has no map (yet)."""
    if explanation is None:
        return f"<figure class='ad-fig ad-wait'><div class='ad-none'>{escape(pending)}</div></figure>"
    return (
        f"<figure class='ad-fig'><img src='{jpeg_uri(probe_overlay(picture, explanation))}' "
        f"alt='SOAP map {escape(when)}'><figcaption>{escape(probe_caption(label, explanation, when, branch))}"
        "</figcaption></figure>"
    )


def probes_html(
    pictures: Sequence[np.ndarray],
    labels: Sequence[str],
    moments: Sequence[tuple[str, Sequence[Explanation] | None]],
    pending: str,
    branch: str = "fused",
) -> str:
    """One card per probe with one captioned map per moment (``(when, the explanations then)``), as HTML, so
    captions wrap instead of being cut and every card stays whole at any width; each caption gives ``branch``'s
    prediction."""
    cards = []
    for index, (picture, label) in enumerate(zip(pictures, labels)):
        figures = "".join(
            probe_figure(
                picture,
                label,
                found[index] if found is not None and index < len(found) else None,
                when,
                pending,
                branch,
            )
            for when, found in moments
        )
        cards.append(f"<div class='ad-probe'><b>{escape(label)}</b><div class='ad-pair'>{figures}</div></div>")
    return f"{PROBES_CSS}<div class='ad-probes'>{''.join(cards)}</div>"


# ------------------------------------------------------------------ batch and skipped files


def batch_caption(name: str, explanation: Explanation, outside: bool = False) -> str:
    """A batch image's gallery caption: the fused top-1, whether the branches disagree and whether the picture looks
    outside the model's world (its answer then names the closest class, not a recognition), the SOAP map's range."""
    top, probability = explanation.top_k("fused", 1)[0]
    disagree = len({explanation.prediction(branch) for branch in BRANCHES}) > 1
    weights = explanation.soap_weights
    return (
        f"{name}: {top} ({probability:.0%}){'  ⚠ outside the model’s world' if outside else ''}"
        f"{'  ⚠ branches disagree' if disagree else ''} · "
        f"{map_name(explanation)} {small_number(weights.min())} (blue) – {small_number(weights.max())} (red)"
    )


def skipped_markdown(skipped: Sequence[tuple[str, str]], note: str = "", rest: str = "") -> str:
    """``note``, then the skipped files with their reasons (the first 50; ``rest`` says where the others are)."""
    lines = [note] if note else []
    if skipped:
        lines.append(f"**Skipped {len(skipped)} file(s):**")
        lines += [f"- `{name}`: {reason}" for name, reason in skipped[:MAX_SKIPPED_LISTED]]
        if len(skipped) > MAX_SKIPPED_LISTED:
            lines.append(f"- ... and {len(skipped) - MAX_SKIPPED_LISTED} more{rest}")
    return "\n".join(lines)


__all__ = [
    "batch_caption",
    "curves",
    "probe_caption",
    "probe_figure",
    "probe_overlay",
    "probes_html",
    "progress_html",
    "skipped_markdown",
    "smooth",
]
