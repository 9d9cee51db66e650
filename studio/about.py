"""The Models / About tab's texts without Gradio: how the method works, and what one model says about itself."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from microclip.labeling import Debiasing
from microclip.soap import POOL_FLAGS, QUERY_FLAGS
from viz.steps import POOL_PHRASES, QUERY_PHRASES

if TYPE_CHECKING:
    from microclip.checkpoint import CheckpointMeta
    from microclip.model import MethodConfig
    from studio.registry import LoadedModel

METHOD_MARKDOWN = r"""
## How microCLIP classifies an image

One pass through CLIP's vision transformer gives the global **`[CLS]`** token and, from the last block's
*value path* (its attention replaced by the identity), one token $t_i$ per image patch.

**1 · NCut foreground.** Patches are nodes of a graph with $A_{ij} = 1$ if $\langle t_i, t_j\rangle > \tau$
(else $\varepsilon$), $\tau = 0.2$. With degrees $D$, the normalised Laplacian is
$$L = D^{-1/2}(D - A)\,D^{-1/2},$$
and its second eigenvector $e$ splits the patches: foreground $m_i = [\,e_i > \operatorname{std}(e)\,]$.
SOAP's query is the mean foreground token $q = \sum_i m_i t_i \,/\, \max(1, \sum_i m_i)$.

**2 · SOAP attention pooling with a null token.** One query attends over the patches plus a zero *null*
token $n$ (an attention sink for "nothing here"):
$$\alpha = \operatorname{softmax}_j\!\left(\frac{(W_q q)^\top (W_k s_j)}{\sqrt{D}}\right),\quad
s \in \{t_1, \dots, t_N, n\},\qquad h = \sum_j \alpha_j W_v s_j,\qquad f = \frac{h P}{\lVert h P \rVert}.$$
$f$ is the fine-grained **`[FG]`** token; the SOAP map in Explore shows the $\alpha_j$ of the patches and
the null weight is $\alpha_n$.

**3 · TokenFusion.** With $g$ the normalised `[CLS]` embedding and $\hat W^*$ the row-normalised learnable head,
$$\text{fused}_c = \rho \cdot 100\, \langle g, \hat W^*_c\rangle + (1-\rho)\cdot 100\, \langle f, \hat W^*_c\rangle .$$
The two terms are the exact `[CLS]` and `[FG]` contributions drawn in Explore; the fusion slider is $\rho$.

**4 · Two heads from LLM descriptions.** $W_{\text{LLM}}$ (frozen) is a similarity-weighted mean of the
description embeddings of each class; $W^*$ (learnable) starts at their plain mean.

**5 · Dynamic Knowledge Aggregation (pseudo-labels, training only).** With $z$ a relevance-weighted composite
of $K$ random crops and $u = \operatorname{normalize}(\tfrac12 g + \tfrac12 f)$ on a weakly augmented view,
$$\ell = \gamma\,\langle z, W_{\text{LLM}}\rangle + (1-\gamma)\,\langle u, \hat W^*\rangle,\qquad
\hat y = \arg\max_c \ell_c,\quad \gamma = 0.5 .$$

**6 · Loss.** Cross-entropy of the strong view's fused logits $o$ against $\hat y$, plus a fairness term
that keeps the running mean prediction $\tilde p$ spread over the classes:
$$\mathcal L = \operatorname{CE}(o, \hat y) \;-\; \frac{2}{C}\sum_{c=1}^{C} \log \tilde p_c .$$
No label is ever used. Only the visual LayerNorms, SOAP's $W_q, W_k, W_v$ and $W^*$ train.

Paper: *microCLIP: Unsupervised CLIP Adaptation via Coarse-Fine Token Fusion for Fine-Grained Image
Classification* ([arXiv 2510.02270](https://arxiv.org/abs/2510.02270)).
"""


def _table(data: dict, limit: int = 30) -> list[str]:
    """A two-column Markdown table of a flat-ish dict (nested values as compact JSON)."""
    rows = ["| key | value |", "|---|---|"]
    for key, value in list(data.items())[:limit]:
        shown = (
            value
            if isinstance(value, (str, int, bool)) or value is None
            else (f"{value:.4g}" if isinstance(value, float) else json.dumps(value)[:120])
        )
        rows.append(f"| `{key}` | {str(shown).replace('|', '/')} |")
    return rows


# How a model was trained, where it was not the method's way (CheckpointMeta.mode); one sentence each
MODE_NOTES = {
    "baseline": "**The CLS-only baseline** (`train.py --baseline`): `[CLS]` alone labels the images against W* and "
    "trains; SOAP stays at its start, so the answer to read is `[CLS]`'s (the fused and `[FG]` lines mix in the "
    'untrained SOAP). The README\'s row "fused ≥ CLS-only baseline + 5" compares microCLIP with it.',
    "wca_baseline": "**The WCA baseline** (`train.py --wca_baseline`): `[CLS]` trains on labels from the crops' "
    "composite against W*; SOAP stays at its start, so the answer to read is `[CLS]`'s.",
    "fully_supervised": "**Supervised, not label-free** (`train.py --fully_supervised`): the method's parameters "
    "train on the true labels, without the fairness term: what the right labels give them, a reference for the "
    "method's own runs (docs/toyworld.md, round 45).",
}


def debias_note(debiasing: Debiasing) -> str:
    """The sentence for a model whose labels were debiased (train.py --label_debias; "" for the reference's)."""
    if not debiasing.strength:
        return ""
    marginal = (
        "each class's running share of the labels themselves (how often they lately named it)"
        if debiasing.source == "labels"
        else "each class's running mean probability under them (how much the labels lately favoured it; DebiasPL)"
    )
    return (
        f"**Not the reference's labels** (`train.py {debiasing.flags}`): each step's labels are the scores minus "
        f"{debiasing.strength:g} × the log of {marginal}, a running mean with momentum {debiasing.momentum:g} (logit "
        "adjustment), so the classes they name too rarely are raised and those they name too often lowered "
        "(docs/toyworld.md, rounds 45–47)."
    )


def labels_notes(mode: str, debiasing: Debiasing) -> list[str]:
    """The sentences for labels not made the method's way: the run's mode, and their debiasing if any (none for the
    method's own); a saved model's card and a running job's status both say them."""
    return [note for note in (MODE_NOTES.get(mode, ""), debias_note(debiasing)) if note]


def mode_note(meta: CheckpointMeta | None) -> str:
    """The sentences for a model not trained the method's way ("" for the method's, or a base model)."""
    return "" if meta is None else " ".join(labels_notes(meta.mode, meta.debiasing))


def soap_ablations(config: MethodConfig) -> list[tuple[str, str]]:
    """(train.py flag, what it changes) for each of the reference's SOAP ablations the model uses."""
    query, pool = config.query, config.pool
    found = []
    if query in QUERY_FLAGS:
        found.append((QUERY_FLAGS[query], f"its query is {QUERY_PHRASES[query]}, not {QUERY_PHRASES['ncut']}"))
    if pool in POOL_FLAGS:
        found.append((POOL_FLAGS[pool], f"[FG] pools {POOL_PHRASES[pool]}, not {POOL_PHRASES['attention']}"))
    return found


def model_markdown(loaded: LoadedModel) -> str:
    """Everything a checkpoint says about itself (or, for a zero-shot base model, what it is)."""
    model, meta = loaded.model, loaded.meta
    classes = list(loaded.classes)
    base = model.base.describe() if model.base is not None else "unknown"
    lines = [
        f"### {loaded.name}",
        "",
        f"- **Source:** {loaded.source}",
        f"- **Base model:** {base}",
        f"- **Patch grid:** {model.backbone.grid[0]}×{model.backbone.grid[1]} at {model.backbone.image_size} px",
        f"- **Classes ({len(classes)}):** {', '.join(classes[:40])}{' ...' if len(classes) > 40 else ''}",
        f"- **Descriptions:** for {sum(bool(v) for v in loaded.descriptions.values())} of {len(classes)} "
        f"classes; **templates:** {', '.join(repr(t) for t in loaded.templates[:3])}",
        "",
        "<details><summary><b>Method configuration</b></summary>",
        "",
        *_table(model.config.to_dict()),
        "",
        "</details>",
    ]
    if model.config.centre_values:
        lines += [
            "",
            "**Not the reference's SOAP:** its value map acts on each patch token minus the training images' mean "
            "token (`train.py --centre_values`), so self-training cannot turn it into a bias that moves every "
            "image's `[FG]` alike (docs/toyworld.md, round 23).",
        ]
    if model.config.ncut_features == "keys":
        lines += [
            "",
            "**The cut on the keys** (`--ncut_features keys`, the reference's option, not its default): the normalised "
            "cut that picks SOAP's query reads the last block's keys; SOAP still pools the value-path tokens "
            "(docs/toyworld.md, round 44).",
        ]
    lines += [f"\n**An ablation of SOAP** (`{flag}`): {what}." for flag, what in soap_ablations(model.config)]
    if meta is None:
        lines += [
            "",
            "_Not adapted: SOAP at its identity start, W* at its initial value. "
            "Adapt it in the Adapt tab, or compare it with an adapted model in Compare._",
        ]
        return "\n".join(lines)
    if mode_note(meta):
        lines += ["", mode_note(meta)]
    training = dict(meta.training)
    config = training.pop("config", {})
    if meta.metrics:
        lines += ["", "**Metrics**", "", *_table(meta.metrics)]
    lines += ["", "**How it was adapted**", "", *_table(training)]
    if model.fg_shift is not None:
        lines += [
            "",
            f"**`[FG]`'s shared shift:** length {float(model.fg_shift.norm()):.3f}, measured without labels on "
            f"{meta.drift.get('images', '?')} training images: self-training moved every image's `[FG]` token by this "
            "one vector (each token has length 1). Explore and the Walkthrough show `[FG]` with and without it.",
        ]
    if config:  # long; folded so the metrics stay in view
        lines += [
            "",
            "<details><summary><b>Training configuration</b></summary>",
            "",
            *_table(config),
            "",
            "</details>",
        ]
    return "\n".join(lines)
