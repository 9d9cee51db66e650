"""One image through microCLIP, step by step: every intermediate of one forward pass, as typed numbers.

``walkthrough`` runs the same sequence of library calls as ``MicroCLIP.forward`` (backbone →
``ncut_split`` → ``soap_query`` → ``SOAP`` → projection → ``Heads.branch_logits``) and keeps what
each step produced, so a student can follow the image from pixels to the prediction:

    patches → value-path tokens → affinity graph and its NCut split → the query → SOAP's weights
    (and the null token) → [FG] → fusion with [CLS] → the two heads → the prediction

The result is a ``Walkthrough``: one frozen dataclass per step, numbers and arrays only (no prose,
no HTML: ``viz.steps`` writes the words). Nothing is estimated: the numbers compose back to the
model's own logits (``tests/test_walkthrough.py``). The normalised cut is computed once, by
``ncut_split``, and the graph step shows that computation's own affinity and Fiedler vector.

With a ``PatchTruth`` (where the object and its parts are, per patch: the toy world knows it), the
walkthrough also says what is true of this image: ``MaskFacts`` counts the foreground patches on the
object, names the part under SOAP's top patch, and so on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from microclip.constants import LOGIT_SCALE, NCUT_EPS, NCUT_TAU
from microclip.drift import shift_logits
from microclip.explain import Explanation, image_batch, soap_fg_parts
from microclip.heads import BRANCHES, TextEncoder, build_head_weights, description_weighted, template_embeddings
from microclip.model import MicroCLIP
from microclip.modes import eval_mode
from microclip.soap import NcutSplit, ncut_split, soap_query
from microclip.toyworld.text import description_ties

STEP_IDS = ("patches", "tokens", "graph", "query", "soap", "fg", "fusion", "heads", "prediction")
TOP_K = 5
DIMS_SHOWN = 8  # leading dimensions of a token printed as a sample
HEAD_CLASSES = 3  # classes whose head vectors (and descriptions) are taken apart
MAX_DESCRIPTIONS = 8  # sentences listed per class
# W* at its start needs every class's sentences encoded; past the text cache's size each picture would encode them anew
MAX_START_SENTENCES = 4096
ON_OBJECT = 0.25  # a patch is "on the object" when at least this share of its pixels is (bench/toyworld.py's IoU rule)
BACKGROUND = "background"  # the region of a patch that touches neither a part nor (a quarter of) the object
OBJECT = "bird"  # the region of a patch on the object but on none of its parts


def uniform_weight(n_patches: int) -> float:
    """SOAP's uniform weight: 1 / (N + 1), the share of each of the N patches *and* the null token when the
    softmax has no preference (SOAP normalises over all N + 1). The one definition the app uses."""
    return 1.0 / (n_patches + 1)


def effective_count(weights: np.ndarray | torch.Tensor) -> float:
    """e to the entropy of a set of weights that sum to 1 (SOAP's over the patches and the null token): 1 when one
    takes everything, their number when all share alike."""
    w = torch.as_tensor(weights).double()
    return float((-(w * w.clamp_min(1e-300).log()).sum()).exp())


# ------------------------------------------------------------------ the steps


@dataclass(frozen=True)
class PatchesStep:
    image_size: int
    patch_pixels: int
    grid: tuple[int, int]
    patch_mean_rgb: np.ndarray  # (h, w, 3) in [0, 1]: the mean colour of each patch's pixels

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class TokenSample:
    patch: tuple[int, int]
    values: np.ndarray  # (DIMS_SHOWN,) the token's leading dimensions
    norm: float


@dataclass(frozen=True)
class TokensStep:
    width: int
    norms: np.ndarray  # (h, w) ‖t‖ of each value-path token
    cls_norm: float
    cos_to_cls: np.ndarray  # (h, w) cosine of each token to the pre-projection [CLS]
    sample: tuple[TokenSample, ...]  # the first patch, the longest and the shortest token

    @property
    def dims_shown(self) -> int:
        return min(DIMS_SHOWN, self.width)


@dataclass(frozen=True)
class GraphStep:
    features: str  # "values" or "keys": what the graph is built on
    tau: float
    threshold_rule: str  # "std" or "mean"
    sign: str  # "canonical" or "solver"
    dot_range: tuple[float, float]  # smallest and largest <f_i, f_j>
    affinity: np.ndarray  # (N, N) bool: the links (A_ij = 1)
    degree: np.ndarray  # (h, w)
    eigenvalues: np.ndarray  # (4,) the smallest eigenvalues of L
    fiedler: np.ndarray  # (h, w)
    threshold: float
    flipped: bool
    mask: np.ndarray  # (h, w) bool: the foreground
    ncut_value: float  # cut/assoc(A) + cut/assoc(B) on the ε-weighted graph
    cut_edges: int  # links (A = 1) between the two sides
    fiedler_reproduces_mask: bool

    @property
    def n_edges(self) -> int:
        """A's dark cells: each link twice (i, j and j, i) and every patch's link to itself."""
        return int(self.affinity.sum())

    @property
    def n_links(self) -> int:
        """Pairs of distinct patches that are linked, each pair once (the unit of ``cut_edges``)."""
        return int(np.triu(self.affinity, k=1).sum())

    @property
    def n_foreground(self) -> int:
        return int(self.mask.sum())

    @property
    def order(self) -> np.ndarray:
        """Patches foreground first, each side by decreasing Fiedler value (the affinity picture's order)."""
        mask, fiedler = self.mask.ravel(), self.fiedler.ravel()
        return np.lexsort((-fiedler, ~mask))


@dataclass(frozen=True)
class QueryStep:
    mode: str  # "ncut", "global", "token_avg" or "random"
    n_used: int  # tokens averaged into q
    norm: float
    cos_to_patches: np.ndarray  # (h, w)
    cos_to_cls: float


@dataclass(frozen=True)
class PatchWeight:
    patch: tuple[int, int]
    weight: float


@dataclass(frozen=True)
class SoapStep:
    pool: str  # "attention", "ncut_avg" or "naive_avg"
    scale: float  # 1/√D
    logits: np.ndarray | None  # (h, w) attention logits (attention pooling only)
    null_logit: float | None
    weights: np.ndarray  # (h, w) α of each patch
    null_weight: float
    weight_sum: float  # Σ α + α_null (1 up to rounding)
    uniform: float  # uniform_weight(N)
    effective_patches: float  # e^H of the N + 1 weights
    top_patches: tuple[PatchWeight, ...]
    learnable_null: bool


@dataclass(frozen=True)
class TopClass:
    class_name: str
    index: int
    logit: float
    probability: float


@dataclass(frozen=True)
class FgStep:
    pooled_norm: float  # ‖h‖ before the projection
    width: int
    embed_dim: int
    fg_sample: np.ndarray  # (DIMS_SHOWN,)
    cls_sample: np.ndarray  # (DIMS_SHOWN,)
    cos_fg_cls: float
    top: tuple[TopClass, ...]  # what [FG] alone predicts
    # what it predicts with the shift every image's [FG] took on in self-training taken away, normalize(f − s)
    # (microclip.drift.ShiftProbe); None when the model's run did not measure s
    top_unshifted: tuple[TopClass, ...] | None = None
    # SOAP's values as W_v(s_j − c) + c (MethodConfig.centre_values, not the reference's) rather than W_v s_j
    centre_values: bool = False
    # (h, w) each patch's exact term in the [FG] logit of [FG]'s own top class (SOAP's weight times its value, along
    # the class: microclip.explain.soap_fg_parts) and the null token's; together they add up to that logit
    top_terms: np.ndarray | None = None
    top_null_term: float | None = None
    # what [FG] alone would predict pooled as the plain mean of the cut's foreground tokens (the reference's
    # --use_ncut_token_avg, on the same weights): what SOAP's attention adds over the cut, on this image. None when
    # the model does not pool with attention
    top_cut_mean: tuple[TopClass, ...] | None = None


@dataclass(frozen=True)
class FusionRow:
    class_name: str
    index: int
    cls_logit: float
    fg_logit: float
    cls_part: float  # ρ · [CLS] logit
    fg_part: float  # (1 − ρ) · [FG] logit
    fused: float
    shift_part: float | None = None  # of fg_part, the shared shift's: (1 − ρ) · 100 · s · Ŵ*_c, on every image alike


@dataclass(frozen=True)
class FusionStep:
    ratio: float
    cos_fg_cls: float
    fused_feature_norm: float  # ‖ρ g + (1 − ρ) f‖, not renormalised (as the reference)
    rows: tuple[FusionRow, ...]


@dataclass(frozen=True)
class DescriptionRow:
    text: str
    weight: float | None  # w_j = cos(e_j, t_c): the signed weight of this sentence in W_LLM (None: unknown)
    cos_fg: float | None
    cos_cls: float | None


@dataclass(frozen=True)
class HeadRow:
    class_name: str
    index: int
    w_star_logit: float
    w_llm_logit: float
    cos_w_star_w_llm: float
    source: str  # "descriptions" or "templates"
    n_descriptions: int
    descriptions: tuple[DescriptionRow, ...]  # the top MAX_DESCRIPTIONS by weight
    weight_sum: float | None = None  # Σ_j w_j over all of the class's descriptions
    w_llm_rebuilt_cos: float | None = None  # 1.0 when the stored head is these descriptions'
    w_star_vs_initial_cos: float | None = None


START_TOLERANCE_DEGREES = 0.01  # an unadapted W* rebuilt by the same text tower lies within about 1e-5° of it


@dataclass(frozen=True)
class HeadsStart:
    """The fused answer with W* where adaptation starts it (each class's mean description embedding, or its template
    embedding without descriptions), and how far adaptation has turned each class's W* from there."""

    top: tuple[TopClass, ...]  # the fused answer's top classes with W* at its start
    turned_degrees: np.ndarray  # (C,) the angle between each class's W* and its start

    @property
    def adapted(self) -> bool:
        """Whether any class's W* has left its start (a zero-shot model's sits on it, to rounding)."""
        return bool(self.turned_degrees.max() >= START_TOLERANCE_DEGREES)


@dataclass(frozen=True)
class HeadsStep:
    n_classes: int
    classes: tuple[HeadRow, ...]
    # toy world only: each class -> the classes whose every description line is true of it too
    # (toyworld.text.description_ties; None for descriptions that are not the toy LLM's)
    ties: dict[str, list[str]] | None = None
    # None without a text tower, or with more than MAX_START_SENTENCES sentences to encode
    start: HeadsStart | None = None


@dataclass(frozen=True)
class PredictionStep:
    prediction: str
    index: int
    runner_up: str | None
    margin: float | None
    branch_predictions: dict[str, str]  # branch → class name
    top: dict[str, tuple[TopClass, ...]]  # branch → its top classes
    stable_ratio: tuple[float, float] | None  # ρ over which the prediction holds
    logits: dict[str, np.ndarray]  # branch → (C,)


# ------------------------------------------------------------------ ground truth per patch


@dataclass(frozen=True)
class PatchTruth:
    """Where the object and its parts are, per patch (from pixel masks of the crop the model sees)."""

    object_share: np.ndarray  # (h, w) share of each patch's pixels on the object
    part_share: dict[str, np.ndarray]  # part name → (h, w) share of each patch's pixels on that part
    true_class: str | None = None

    @property
    def on_object(self) -> np.ndarray:
        return self.object_share >= ON_OBJECT

    def region(self, patch: tuple[int, int]) -> str:
        """The part the patch touches most, else OBJECT (a quarter of it on the object), else BACKGROUND."""
        touched = {name: float(share[patch]) for name, share in self.part_share.items() if share[patch] > 0}
        if touched:
            return max(touched, key=touched.get)
        return OBJECT if self.on_object[patch] else BACKGROUND


@dataclass(frozen=True)
class MaskFacts:
    """What is true of this image, from its masks and the model's numbers (each an input to a sentence)."""

    n_patches: int
    n_object: int  # patches at least a quarter on the object
    n_part: int  # patches touching a part
    parts_shown: tuple[str, ...]  # the parts visible in the image
    n_foreground: int
    n_foreground_on_object: int
    soap_top: tuple[int, int]
    soap_top_region: str
    soap_on_object: float  # share of the patches' SOAP weight on object pixels (each patch's weight spread evenly)
    soap_on_parts: float  # ... on part pixels
    cls_top: tuple[int, int]  # the token most like [CLS]
    cls_top_region: str
    true_class: str | None
    fg_term_top: tuple[int, int] | None = None  # the patch adding most to [FG]'s top class's [FG] logit, when given
    fg_term_top_region: str | None = None


def top_patch(values: np.ndarray) -> tuple[int, int]:
    """The (row, col) of a patch map's largest value (the first on ties)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(values)), values.shape))  # type: ignore[return-value]


def mask_facts(
    truth: PatchTruth,
    ncut_mask: np.ndarray,
    soap_weights: np.ndarray,
    cls_similarity: np.ndarray,
    fg_terms: np.ndarray | None = None,
) -> MaskFacts:
    """The facts of one image: its ground truth against the NCut mask, SOAP's weights and the [CLS] cosines (and,
    given ``fg_terms``, each patch's term in a class's [FG] logit, the patch adding most to it)."""
    mask = np.asarray(ncut_mask, dtype=bool)
    weights = np.asarray(soap_weights, dtype=np.float64)
    parts = np.max(np.stack(list(truth.part_share.values())), axis=0) if truth.part_share else np.zeros(mask.shape)
    total = weights.sum()
    soap_top, cls_top = top_patch(weights), top_patch(np.asarray(cls_similarity))
    term_top = None if fg_terms is None else top_patch(np.asarray(fg_terms))
    return MaskFacts(
        n_patches=mask.size,
        n_object=int(truth.on_object.sum()),
        n_part=int((parts > 0).sum()),
        parts_shown=tuple(name for name, share in truth.part_share.items() if share.any()),
        n_foreground=int(mask.sum()),
        n_foreground_on_object=int((mask & truth.on_object).sum()),
        soap_top=soap_top,
        soap_top_region=truth.region(soap_top),
        soap_on_object=float((weights * truth.object_share).sum() / total) if total > 0 else 0.0,
        soap_on_parts=float((weights * parts).sum() / total) if total > 0 else 0.0,
        cls_top=cls_top,
        cls_top_region=truth.region(cls_top),
        true_class=truth.true_class,
        fg_term_top=term_top,
        fg_term_top_region=None if term_top is None else truth.region(term_top),
    )


# ------------------------------------------------------------------ a counterfactual: the same image, changed


@dataclass(frozen=True)
class BranchChange:
    """One branch's prediction on an image and on a changed copy of it (e.g. a part erased)."""

    branch: str  # "fused", "cls", "fg", or "fg_unshifted" (`[FG]` without its run's shared shift, when recorded)
    before: str  # predicted class on the original
    before_probability: float
    after: str  # predicted class on the changed image
    after_probability: float
    true_before: float | None  # probability of the true class (when known) on each
    true_after: float | None


def branch_changes(before: Explanation, after: Explanation, true_class: str | None = None) -> tuple[BranchChange, ...]:
    """Each branch's prediction before and after, and the true class's probability when it is one of the classes;
    also `[FG]`'s without its run's shared shift when the model recorded one (the shift is the same on both
    pictures, so what changes there is what the picture changed)."""
    true_index = before.classes.index(true_class) if true_class in before.classes else None
    changes = []
    unshifted = before.logits_fg_unshifted is not None and after.logits_fg_unshifted is not None
    for branch in (*BRANCHES, *(("fg_unshifted",) if unshifted else ())):
        p_before, p_after = before.probabilities(branch), after.probabilities(branch)
        i, j = before.prediction(branch), after.prediction(branch)
        changes.append(
            BranchChange(
                branch,
                before.classes[i],
                float(p_before[i]),
                after.classes[j],
                float(p_after[j]),
                float(p_before[true_index]) if true_index is not None else None,
                float(p_after[true_index]) if true_index is not None else None,
            )
        )
    return tuple(changes)


# ------------------------------------------------------------------ the whole walk


@dataclass(frozen=True)
class Walkthrough:
    classes: tuple[str, ...]
    image_size: int
    grid: tuple[int, int]
    ratio: float
    method: dict[str, Any]
    patches: PatchesStep
    tokens: TokensStep
    graph: GraphStep
    query: QueryStep
    soap: SoapStep
    fg: FgStep
    fusion: FusionStep
    heads: HeadsStep
    prediction: PredictionStep
    facts: MaskFacts | None = None  # with a PatchTruth: what is true of this image

    @property
    def steps(self) -> tuple[Any, ...]:
        return tuple(getattr(self, step_id) for step_id in STEP_IDS)

    def step(self, step_id: str) -> Any:
        if step_id not in STEP_IDS:
            raise KeyError(f"no step {step_id!r}; steps are {', '.join(STEP_IDS)}")
        return getattr(self, step_id)


def _plain(value: Any) -> Any:
    """Dataclasses, arrays, tuples and dicts as JSON-ready Python values (floats in float64)."""
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).tolist() if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def to_json(walk: Walkthrough) -> dict:
    """The walkthrough as a JSON-ready dict: the run's fields, and ``steps`` as a list of {"id", ...numbers}."""
    data = {f.name: _plain(getattr(walk, f.name)) for f in fields(walk) if f.name not in STEP_IDS}
    data["steps"] = [{"id": step_id, **_plain(walk.step(step_id))} for step_id in STEP_IDS]
    return data


# ------------------------------------------------------------------ maths shared by the steps


def _np(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 (or bool/int) NumPy array on the CPU, so nothing is rounded on the way."""
    tensor = tensor.detach().to("cpu")
    return tensor.numpy() if not tensor.is_floating_point() else tensor.to(torch.float64).numpy()


def _top(logits: torch.Tensor, classes: Sequence[str], k: int) -> tuple[TopClass, ...]:
    probabilities = logits.double().softmax(-1)
    order = torch.argsort(logits, descending=True)[:k]
    return tuple(TopClass(classes[i], int(i), float(logits[i]), float(probabilities[i])) for i in order.tolist())


def stable_ratio_range(cls_logits: torch.Tensor, fg_logits: torch.Tensor, winner: int) -> tuple[float, float] | None:
    """The interval of ρ in [0, 1] over which ``winner`` keeps the top fused logit (None if nowhere).

    The fused logit of every class is linear in ρ, so "winner beats class c" holds on a half-line
    of ρ; the intersection over all classes is one interval.
    """
    lo, hi = 0.0, 1.0
    for other in range(cls_logits.shape[0]):
        if other == winner:
            continue
        d_fg = float(fg_logits[winner] - fg_logits[other])  # the margin at ρ = 0
        d_cls = float(cls_logits[winner] - cls_logits[other])  # the margin at ρ = 1
        slope = d_cls - d_fg  # margin(ρ) = d_fg + ρ · slope
        if abs(slope) < 1e-12:
            if d_fg < 0:
                return None
            continue
        root = -d_fg / slope
        if slope > 0:
            lo = max(lo, root)
        else:
            hi = min(hi, root)
        if lo > hi:
            return None
    return lo, hi


def _ncut_value(linked: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Shi-Malik NCut(A, B) = cut/assoc(A) + cut/assoc(B) of the split, on the ε-weighted graph, and the
    number of links (A = 1) the split cuts."""
    weights = torch.where(linked, 1.0, NCUT_EPS).double()
    inside, outside = mask, ~mask
    cut = float(weights[inside][:, outside].sum())
    assoc_a = float(weights[inside].sum())
    assoc_b = float(weights[outside].sum())
    value = (cut / assoc_a if assoc_a else math.inf) + (cut / assoc_b if assoc_b else math.inf)
    return value, int(linked[inside][:, outside].sum())


# ------------------------------------------------------------------ one builder per step


def _patches_step(images: torch.Tensor, grid: tuple[int, int]) -> PatchesStep:
    h, w = grid
    size = int(images.shape[-1])
    patch_px = size // w
    cropped = images[0, :, : h * patch_px, : w * patch_px]
    mosaic = cropped.reshape(3, h, patch_px, w, patch_px).mean(dim=(2, 4)).permute(1, 2, 0)  # (h, w, 3)
    return PatchesStep(size, patch_px, (h, w), _np(mosaic))


def _tokens_step(tokens, grid: tuple[int, int], width: int) -> TokensStep:
    patches = tokens.patches[0]  # (N, D)
    norms = patches.norm(dim=-1)
    cls_cos = F.cosine_similarity(patches, tokens.cls_token, dim=-1)
    sample = sorted({0, int(norms.argmax()), int(norms.argmin())})
    return TokensStep(
        width=width,
        norms=_np(norms).reshape(grid),
        cls_norm=float(tokens.cls_token[0].norm()),
        cos_to_cls=_np(cls_cos).reshape(grid),
        sample=tuple(TokenSample(divmod(i, grid[1]), _np(patches[i, :DIMS_SHOWN]), float(norms[i])) for i in sample),
    )


def _graph_step(split: NcutSplit, cfg, grid: tuple[int, int]) -> GraphStep:
    """The model's own split, and the graph it was cut from (nothing recomputed)."""
    fiedler, mask, linked = split.fiedler[0], split.mask[0], split.linked[0]
    ncut_value, cut_edges = _ncut_value(linked, mask)
    recut = (fiedler > split.threshold[0]) ^ split.flipped[0]  # the mask read back from the Fiedler vector
    similarity = split.similarity[0]
    return GraphStep(
        features=cfg.ncut_features,
        tau=NCUT_TAU,
        threshold_rule=cfg.ncut_threshold,
        sign=cfg.ncut_sign,
        dot_range=(float(similarity.min()), float(similarity.max())),
        affinity=_np(linked),
        degree=_np(split.degree[0]).reshape(grid),
        eigenvalues=_np(split.eigenvalues[0, :4]),
        fiedler=_np(fiedler).reshape(grid),
        threshold=float(split.threshold[0]),
        flipped=bool(split.flipped[0]),
        mask=_np(mask).reshape(grid),
        ncut_value=ncut_value,
        cut_edges=cut_edges,
        fiedler_reproduces_mask=bool(torch.equal(recut, mask)),
    )


def _soap_step(model: MicroCLIP, soap, n: int, grid: tuple[int, int], top_k: int) -> SoapStep:
    weights = soap.weights[0]  # (N + 1,)
    logits = soap.logits[0] if soap.logits is not None else None  # (N + 1,), attention pooling only
    top = torch.argsort(weights[:n], descending=True)[:top_k].tolist()
    return SoapStep(
        pool=model.config.pool,
        scale=1.0 / math.sqrt(model.soap.width),
        logits=_np(logits[:n]).reshape(grid) if logits is not None else None,
        null_logit=float(logits[n]) if logits is not None else None,
        weights=_np(weights[:n]).reshape(grid),
        null_weight=float(weights[n]),
        weight_sum=float(weights.double().sum()),
        uniform=uniform_weight(n),
        effective_patches=effective_count(weights),
        top_patches=tuple(PatchWeight(divmod(i, grid[1]), float(weights[i])) for i in top),
        learnable_null=bool(model.config.learnable_null),
    )


def _description_rows(
    encoder: TextEncoder,
    name: str,
    sentences: list[str],
    templates: Sequence[str],
    fg_embed: torch.Tensor,
    cls_embed: torch.Tensor,
    w_llm_row: torch.Tensor,
    w_star_row: torch.Tensor,
) -> dict[str, Any]:
    """How one class's descriptions build its two head vectors, and how each matches this image."""
    anchor = template_embeddings(encoder, [name], templates)[0].to(fg_embed.device)
    embeds = F.normalize(encoder(sentences[:256]), dim=-1).to(fg_embed.device)  # (n, E)
    weight = embeds @ anchor  # w_j = e_j · t_c (docs/method.md §4.3), signed
    rebuilt = description_weighted(embeds, anchor)
    initial = F.normalize(embeds.mean(0), dim=-1)  # W*'s starting point (§4.4)
    order = torch.argsort(weight, descending=True).tolist()[:MAX_DESCRIPTIONS]
    rows = tuple(
        DescriptionRow(sentences[j], float(weight[j]), float(embeds[j] @ fg_embed), float(embeds[j] @ cls_embed))
        for j in order
    )
    return {
        "descriptions": rows,
        "weight_sum": float(weight.sum()),
        "w_llm_rebuilt_cos": float(rebuilt @ w_llm_row),
        "w_star_vs_initial_cos": float(F.normalize(w_star_row, dim=-1) @ initial),
    }


def _heads_step(
    model: MicroCLIP,
    fused_feature: torch.Tensor,
    fg: torch.Tensor,
    cls: torch.Tensor,
    shown: list[int],
    descriptions: dict[str, list[str]],
    encoder: TextEncoder | None,
    templates: Sequence[str],
) -> HeadsStep:
    w_hat = model.heads.w_star_hat()
    w_llm = model.heads.w_llm.to(w_hat.dtype)
    rows = []
    for index in shown:
        name = model.classes[index]
        sentences = list(descriptions.get(name) or [])
        extra: dict[str, Any] = {
            "descriptions": tuple(DescriptionRow(s, None, None, None) for s in sentences[:MAX_DESCRIPTIONS])
        }
        if sentences and encoder is not None and templates:
            extra = _description_rows(
                encoder, name, sentences, templates, fg, cls, w_llm[index], model.heads.w_star[index]
            )
        rows.append(
            HeadRow(
                class_name=name,
                index=index,
                w_star_logit=float(LOGIT_SCALE * fused_feature @ w_hat[index]),
                w_llm_logit=float(LOGIT_SCALE * fused_feature @ w_llm[index]),
                cos_w_star_w_llm=float(w_hat[index] @ w_llm[index]),
                source="descriptions" if sentences else "templates",
                n_descriptions=len(sentences),
                **extra,
            )
        )
    return HeadsStep(
        n_classes=len(model.classes),
        classes=tuple(rows),
        ties=description_ties(descriptions),
        start=_heads_start(model, fused_feature, descriptions, encoder, templates),
    )


def _heads_start(
    model: MicroCLIP,
    fused_feature: torch.Tensor,
    descriptions: dict[str, list[str]],
    encoder: TextEncoder | None,
    templates: Sequence[str],
) -> HeadsStart | None:
    """The answer with W* rebuilt as adaptation builds it before its first step (``MicroCLIP.relabel``'s heads)."""
    classes = model.classes
    n_sentences = len(classes) * len(templates) + sum(len(descriptions.get(name) or []) for name in classes)
    if encoder is None or not templates or n_sentences > MAX_START_SENTENCES:
        return None
    # rebuilt for every picture from sentences the model was built from: a cut sentence was the builder's to warn of
    heads = build_head_weights(encoder, classes, templates, descriptions, warn_truncated=False)
    start = heads.w_star_init.to(fused_feature)  # normalised
    now, start64 = model.heads.w_star_hat().to(fused_feature).double(), start.double()
    # 2·atan2(|a - b|, |a + b|): arccos of a cosine near 1 would turn float rounding into hundredths of a degree
    turned = 2.0 * torch.atan2((now - start64).norm(dim=-1), (now + start64).norm(dim=-1))
    return HeadsStart(
        top=_top(LOGIT_SCALE * fused_feature @ start.T, classes, TOP_K), turned_degrees=np.degrees(_np(turned))
    )


def _prediction_step(logits, classes: Sequence[str], top_k: int) -> PredictionStep:
    cls_logits, fg_logits, fused = logits.cls[0], logits.fg[0], logits.fused[0]
    ranked = torch.argsort(fused, descending=True).tolist()
    winner, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    by_branch = {"fused": fused, "cls": cls_logits, "fg": fg_logits}
    return PredictionStep(
        prediction=classes[winner],
        index=winner,
        runner_up=classes[runner_up] if runner_up is not None else None,
        margin=float(fused[winner] - fused[runner_up]) if runner_up is not None else None,
        branch_predictions={b: classes[int(v.argmax())] for b, v in by_branch.items()},
        top={b: _top(v, classes, top_k) for b, v in by_branch.items()},
        stable_ratio=stable_ratio_range(cls_logits, fg_logits, winner),
        logits={b: _np(v) for b, v in by_branch.items()},
    )


# ------------------------------------------------------------------ the forward pass, kept


@dataclass(frozen=True)
class _Pass:
    """What one forward pass produced, in the library's own types (before it is taken apart)."""

    tokens: Any  # VisualTokens
    split: NcutSplit
    mask: torch.Tensor  # (1, N) on the model's device
    query: torch.Tensor  # (1, D)
    soap: Any  # SoapOutput
    fg_embed: torch.Tensor  # (1, E)
    logits: Any  # BranchLogits


def _forward(model: MicroCLIP, images: torch.Tensor, ratio: float) -> _Pass:
    """``MicroCLIP.forward``'s sequence of calls, keeping every intermediate; one NCut computation."""
    cfg = model.config
    tokens = model.backbone(images)
    patches = tokens.patches  # (1, N, D)
    ncut_input = patches if cfg.ncut_features == "values" else F.normalize(tokens.patch_keys, dim=-1)
    split = ncut_split(ncut_input, threshold=cfg.ncut_threshold, sign=cfg.ncut_sign)
    mask = split.mask.to(images.device)  # (1, N), as foreground_mask gives it
    query = soap_query(patches, mask, tokens.cls_token, cfg.query)
    soap = model.soap(patches, query, mask, pool=cfg.pool)
    fg_embed = model.backbone.project(soap.pooled)
    logits = model.heads.branch_logits(tokens.cls_embed, fg_embed, ratio)
    return _Pass(tokens, split, mask, query, soap, fg_embed, logits)


def _walk(
    model: MicroCLIP,
    images: torch.Tensor,
    ratio: float,
    descriptions: dict[str, list[str]],
    text_encoder: TextEncoder | None,
    templates: Sequence[str],
    top_k: int,
) -> Walkthrough:
    cfg, backbone, classes = model.config, model.backbone, tuple(model.classes)
    grid = tuple(backbone.grid)
    n = grid[0] * grid[1]
    run = _forward(model, images, ratio)
    patches, cls_token, cls_embed = run.tokens.patches, run.tokens.cls_token, run.tokens.cls_embed
    fg_embed, logits = run.fg_embed, run.logits
    fused = logits.fused[0]
    ranked = torch.argsort(fused, descending=True).tolist()
    shown = list(dict.fromkeys([*ranked[:top_k], int(logits.cls[0].argmax()), int(logits.fg[0].argmax())]))
    fused_feature = ratio * cls_embed[0] + (1.0 - ratio) * fg_embed[0]  # un-renormalised, as the logits use it
    cos_fg_cls = float(fg_embed[0] @ cls_embed[0])
    shift = shift_logits(model, fg_embed[0])  # (its part of each [FG] logit, [FG] without it) or None
    fg_top = int(logits.fg[0].argmax())
    top_terms = _np(soap_fg_parts(model, run.soap)[0] @ model.heads.w_star_hat()[fg_top])  # (N + 1,)
    cut_mean = None
    if cfg.pool == "attention":
        plain = model.soap(patches, run.query, run.mask, pool="ncut_avg")
        cut_mean = _top(
            model.heads.branch_logits(cls_embed, backbone.project(plain.pooled), ratio).fg[0], classes, top_k
        )
    return Walkthrough(
        classes=classes,
        image_size=int(images.shape[-1]),
        grid=grid,
        ratio=ratio,
        method=cfg.to_dict(),
        patches=_patches_step(images, grid),
        tokens=_tokens_step(run.tokens, grid, backbone.width),
        graph=_graph_step(run.split, cfg, grid),
        query=QueryStep(
            mode=cfg.query,
            n_used=int(run.mask.sum()) if cfg.query == "ncut" else n,
            norm=float(run.query[0].norm()),
            cos_to_patches=_np(F.cosine_similarity(patches[0], run.query, dim=-1)).reshape(grid),
            cos_to_cls=float(F.cosine_similarity(run.query, cls_token, dim=-1)[0]),
        ),
        soap=_soap_step(model, run.soap, n, grid, top_k),
        fg=FgStep(
            pooled_norm=float(run.soap.pooled[0].norm()),
            width=backbone.width,
            embed_dim=backbone.embed_dim,
            fg_sample=_np(fg_embed[0, :DIMS_SHOWN]),
            cls_sample=_np(cls_embed[0, :DIMS_SHOWN]),
            cos_fg_cls=cos_fg_cls,
            top=_top(logits.fg[0], classes, top_k),
            top_unshifted=None if shift is None else _top(shift[1], classes, top_k),
            centre_values=bool(cfg.centre_values),
            top_terms=top_terms[:-1].reshape(grid),
            top_null_term=float(top_terms[-1]),
            top_cut_mean=cut_mean,
        ),
        fusion=FusionStep(
            ratio=ratio,
            cos_fg_cls=cos_fg_cls,
            fused_feature_norm=float(fused_feature.norm()),
            rows=tuple(
                FusionRow(
                    classes[i],
                    i,
                    float(logits.cls[0, i]),
                    float(logits.fg[0, i]),
                    float(logits.cls_part[0, i]),
                    float(logits.fg_part[0, i]),
                    float(fused[i]),
                    None if shift is None else float((1.0 - ratio) * shift[0][i]),
                )
                for i in shown
            ),
        ),
        heads=_heads_step(
            model,
            fused_feature,
            fg_embed[0],
            cls_embed[0],
            ranked[:HEAD_CLASSES],
            descriptions,
            text_encoder,
            templates,
        ),
        prediction=_prediction_step(logits, classes, top_k),
    )


def walkthrough_tensor(
    model: MicroCLIP,
    image: torch.Tensor,
    ratio: float | None = None,
    descriptions: dict[str, list[str]] | None = None,
    text_encoder: TextEncoder | None = None,
    templates: Sequence[str] = (),
    top_k: int = TOP_K,
    truth: PatchTruth | None = None,
) -> Walkthrough:
    """Every step of one forward pass for ``image`` (3, S, S) or (1, 3, S, S) in [0, 1] at the model's size.

    ``descriptions`` and ``text_encoder`` (with the ``templates`` the heads were built with) are
    optional: with them the heads step shows how each description weighs in each class vector.
    ``truth`` (per patch, on the model's grid) adds the facts of this image. The model runs in eval
    mode and is handed back in the mode it came in.
    """
    device = next(model.parameters()).device
    images = (image if image.dim() == 4 else image[None]).to(device)
    if images.shape[0] != 1:
        raise ValueError(f"the walkthrough follows one image, got a batch of {images.shape[0]}")
    ratio = model.config.fusion_ratio if ratio is None else float(ratio)
    with eval_mode(model), torch.no_grad():
        walk = _walk(model, images, ratio, descriptions or {}, text_encoder, templates, top_k)
    if truth is None:
        return walk
    if tuple(truth.object_share.shape) != walk.grid:
        raise ValueError(f"the ground truth is on a {truth.object_share.shape} grid, the model's is {walk.grid}")
    facts = mask_facts(truth, walk.graph.mask, walk.soap.weights, walk.tokens.cos_to_cls, walk.fg.top_terms)
    return replace(walk, facts=facts)


def walkthrough(model: MicroCLIP, image, ratio: float | None = None, **kwargs: Any) -> Walkthrough:
    """A PIL image (any size or mode) → its walkthrough, with the centre-crop test transform (as Explore)."""
    return walkthrough_tensor(model, image_batch(model, image)[0], ratio, **kwargs)
