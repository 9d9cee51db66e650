"""The Adapt tab: a short label-free adaptation on the user's images, watched live.

Every callback here returns at once: Start queues a job on the `AdaptationRunner` (its own
thread), a `gr.Timer` polls the runner's snapshot while the job is live, Stop and Save act on the
job by id. So Explore keeps answering while a run goes. What a snapshot looks like (status text,
progress bar, curves, probe cards) is ``studio.jobs`` and ``viz.runs``; this module lays out and wires.

Named API endpoints (for ``gradio_client``): ``adapt_start``, ``adapt_status``, ``adapt_stop``,
``adapt_save``, ``adapt_curves``; the job id returned by ``adapt_start`` is the handle for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from microclip.data.descriptions import DescriptionsError, parse_description_lines
from microclip.data.transforms import NO_AUTO_AUGMENT, auto_augment_policy
from microclip.recipe import Recipe
from studio.adapt_request import AdaptLimits, AdaptRequest
from studio.jobs import (
    AdaptationRunner,
    QueueFullError,
    parse_classnames,
    probes_html,
    probes_key,
    progress_html,
    skipped_markdown,
    status_markdown,
)
from studio.sharing import ServerPathGuard, ServerPaths
from ui.common import DOWNLOAD_CLASS, user_errors
from ui.layout import entry_fusion_ratio, entry_recipe, refresh_on_focus
from viz.runs import curves

SOURCES = {"toy world": "toybirds", "upload a zip": "zip", "folder on the server": "folder"}
DEFAULT_STEPS = 150  # the toy run's default: long enough to watch the curves move and to press Stop
DEFAULT_TOY_PER_CLASS = 8
POLL_SECONDS = 1.0
# How SOAP's value map meets the patch tokens in the run: the chosen entry's way, or either one asked for
CENTRING = {
    "as the chosen model": None,
    "the reference's: W_v s": False,
    "centred: W_v (s − c) + c (not the reference's)": True,
}

QUERIES = {
    "as the chosen model": None,
    "the cut's foreground (the method)": "ncut",
    "[CLS] (an ablation)": "global",
    "every patch token (an ablation)": "token_avg",
}

POOLS = {
    "as the chosen model": None,
    "SOAP's attention (the method)": "attention",
    "the cut's foreground, a plain mean (an ablation)": "ncut_avg",
    "every patch token, a plain mean (an ablation)": "naive_avg",
}

# What the normalised cut reads (train.py --ncut_features); SOAP pools the value-path tokens either way
CUTS = {
    "as the chosen model": None,
    "the value-path tokens (the reference's default)": "values",
    "the last block's keys (the reference's option; TokenCut's)": "keys",
}

LABELS = {
    "DKA's pseudo-labels (the method; no labels read)": "microclip",
    "[CLS] alone labels itself (the CLS-only baseline)": "baseline",
    "the folders' true labels (supervised: a reference, not label-free)": "fully_supervised",
}

# What the label debiasing's running class marginal is a mean of (train.py --label_debias_source)
PRIORS = {"the scores' softmax (DebiasPL's; round 45)": "scores", "the labels' own shares (round 47)": "labels"}

# The strong view the loss is taken on (train.py --aa): RandAugment's colour operations ask the model to call a bird
# of other colours by the weak view's label (docs/toyworld.md, round 55)
STRONG_VIEWS = {
    "RandAugment, magnitude 9 (the reference's)": "rand-m9-mstd0.5-inc1",
    "RandAugment, magnitude 5 (the toy recipe's)": "rand-m5-mstd0.5-inc1",
    "crop and flip only": "none",
}

INTRO = """\
**Adapt** a model to your images without labels (docs/method.md §1.2): each image is pseudo-labelled from its weak
view and K crops, then the visual LayerNorms, SOAP and W* train on a strong view. Runs are short on purpose.
"""

CURVES_NOTE = """\
*Loss* = cross-entropy on the pseudo-labels + fairness regulariser, per step (raw, noisy: each step sees another
batch) and smoothed (an exponential moving average, weight 0.9 on the past, debiased). *Confidence* = mean top
score of the pseudo-labels. *Pseudo-label accuracy* (%) needs class folders: how often the pseudo-labels match the
folder names (combined, crops·W_LLM, fused·W*); training never sees those labels. *Each branch alone*: how often
`[CLS]` alone and `[FG]` alone name the fused answer on the weak view. The loss sees only the fused answer, so a
branch can drift while it holds: in the toy world's longer runs `[FG]` alone does (on the bundled model's base, from
88% to 79% agreement over eight epochs of rounds 25-33's recipe; the shipped recipe's three epochs end at 89%), on
earlier bases mostly by taking on a shift that every image shares (docs/toyworld.md, rounds 11, 20, 25 and 34). A
falling `[FG]` curve is that drift, seen without labels.
"""

PROBES_NOTE = """\
SOAP maps of pinned probe images: where the `[FG]` token pools, before training and at the latest point (end of
run, or *Refresh maps* during it). Caption: true class (folder) → fused prediction, and the map's range: each map
is coloured on its own scale, from its lowest patch to its highest (the app's default colormap, as in Explore).
"""


@dataclass(frozen=True)
class AdaptHandles:
    """Components another tab may listen to (e.g. switch Explore to ``saved_name`` when it changes)."""

    saved_name: gr.Textbox
    use_saved: gr.Button  # "Use it in Explore": the only way a saved model replaces the one Explore shows
    model: gr.Dropdown  # whose base a run adapts
    description_lines: gr.Textbox  # descriptions typed as class name: sentence lines
    more: gr.Accordion  # the folded settings they are in (opened when another tab fills them)


class _Panel:
    """The tab's components: the layout functions below set them, one group each; the wiring reads them."""

    # what to adapt, on what, for how long; Start and Stop
    model: gr.Dropdown
    source: gr.Radio
    archive: gr.File
    folder: gr.Textbox
    toy_per_class: gr.Slider
    steps: gr.Slider
    start: gr.Button
    stop: gr.Button
    # the run as it goes
    status: gr.Markdown
    progress: gr.HTML
    loss: gr.LinePlot
    confidence: gr.LinePlot
    accuracy: gr.LinePlot
    branches: gr.LinePlot
    # less used settings, and saving the result
    classnames: gr.Textbox
    descriptions: gr.File
    description_lines: gr.Textbox
    allow_missing: gr.Checkbox
    more: gr.Accordion  # "More settings", where the data's class names and descriptions are
    batch: gr.Slider
    lr: gr.Slider
    n_crops: gr.Slider
    n_probes: gr.Slider
    centring: gr.Radio
    query: gr.Radio
    pool: gr.Radio
    labels: gr.Radio
    debias: gr.Slider
    prior: gr.Radio
    momentum: gr.Slider
    cut: gr.Radio
    soap_lr: gr.Slider
    gamma: gr.Slider
    fairness: gr.Slider
    strong_view: gr.Radio
    seed: gr.Number
    fusion: gr.Slider
    save_name: gr.Textbox
    save: gr.Button
    use_saved: gr.Button
    checkpoint: gr.File
    download_curves: gr.Button
    curves_csv: gr.File
    # probe maps, skipped files, the run's handles
    probes: gr.HTML
    refresh_maps: gr.Button
    skipped: gr.Markdown
    job_id: gr.Textbox
    saved_name: gr.Textbox
    refresh: gr.Button
    timer: gr.Timer
    shown: gr.State  # which probe maps are shown, so polls resend images only on change

    def start_inputs(self) -> list[Any]:
        """``adapt_start``'s parameters, in order."""
        data = [self.model, self.source, self.archive, self.folder, self.toy_per_class, self.classnames]
        settings = [self.descriptions, self.allow_missing, self.steps, self.batch, self.lr, self.n_crops]
        methods = [self.centring, self.gamma, self.fairness, self.seed, self.fusion]
        methods += [self.query, self.pool, self.labels, self.debias, self.prior]  # each added after the last: API order
        methods += [self.momentum, self.cut, self.soap_lr]
        return [*data, *settings, self.n_probes, *methods, self.description_lines, self.strong_view]

    def plots(self) -> list[gr.LinePlot]:
        """The four curves, in the order :func:`plot_values` gives their values."""
        return [self.loss, self.confidence, self.accuracy, self.branches]

    def shown_outputs(self) -> list[Any]:
        """What a poll shows, in the order ``_render`` returns it: ``adapt_status``'s outputs."""
        return [self.status, self.progress, *self.plots(), self.probes, self.skipped]

    def outputs(self) -> list[Any]:
        """What a poll updates: what it shows, then the probe maps' key and the timer."""
        return [*self.shown_outputs(), self.shown, self.timer]


# ------------------------------------------------------------------ layout


def _data_column(p: _Panel, registry, limits: AdaptLimits, folders: ServerPaths) -> None:
    sources = list(SOURCES)
    with gr.Column(scale=1, min_width=300):
        p.model = gr.Dropdown(
            registry.names(),
            value=registry.default_name,
            label="Start from the base model of",
            info="A fresh copy of this entry's base model is adapted (never the entry itself).",
            elem_id="adapt-model",
        )
        p.source = gr.Radio(sources, value=sources[0], label="Data")
        p.archive = gr.File(
            label="Zip of images (class folders give labels)",
            file_types=[".zip"],
            type="filepath",
            visible=False,
            height=110,
        )
        p.folder = gr.Textbox(
            label="Folder on the server",
            visible=False,
            info=folders.reason,
            placeholder="/path/to/images" if folders.allowed else "off: upload a zip instead",
            interactive=folders.allowed,
            elem_id="adapt-folder",
        )
        most = limits.max_toy_per_class
        p.toy_per_class = gr.Slider(
            2, most, value=min(DEFAULT_TOY_PER_CLASS, most), step=1, label="Toy world: images per class"
        )
        p.steps = gr.Slider(
            1,
            limits.max_steps,
            value=min(DEFAULT_STEPS, limits.max_steps),
            step=1,
            label="Steps",
            info="Stop ends a run early; what it learned so far is kept.",
        )
        with gr.Row():
            p.start = gr.Button("Start", variant="primary", elem_id="adapt-start")
            p.stop = gr.Button("Stop", variant="stop", elem_id="adapt-stop")


def _curve(title: str, elem_id: str, scale: int, series: bool = True) -> gr.LinePlot:
    colour = {"color": "series"} if series else {}
    return gr.LinePlot(x="step", y="value", title=title, height=230, scale=scale, elem_id=elem_id, **colour)


def _watch_column(p: _Panel) -> None:
    with gr.Column(scale=3, min_width=600):
        p.status = gr.Markdown(status_markdown(None), elem_id="adapt-status")
        p.progress = gr.HTML(progress_html(None), elem_id="adapt-progress")
        with gr.Row():
            p.loss = _curve("Loss (raw and smoothed)", "adapt-loss", 4)
            p.confidence = _curve("Pseudo-label confidence", "adapt-confidence", 3, series=False)
            p.accuracy = _curve("Pseudo-label accuracy (%)", "adapt-accuracy", 4)
        p.branches = _curve("Each branch alone gives the fused answer (%): no labels needed", "adapt-branches", 1)
        gr.Markdown(CURVES_NOTE)


def _setting_radio(choices: dict[str, Any], value: str | None, label: str, info: str, elem_id: str) -> gr.Radio:
    """One of the method's settings: its choices' labels, ``value`` selected (None: none)."""
    return gr.Radio(list(choices), value=value, label=label, info=info, elem_id=elem_id)


def _as_chosen_radio(choices: dict[str, Any], label: str, info: str, elem_id: str) -> gr.Radio:
    """One of the method's settings, the first choice (the chosen model's, or the method's) selected."""
    return _setting_radio(choices, next(iter(choices)), label, info, elem_id)


def label_settings(recipe: Recipe, limits: AdaptLimits) -> tuple[float, str, float, float, float]:
    """How ``recipe`` made its labels, as the tab's controls show it: (λ, the prior's choice, its momentum, γ,
    fairness weight), each within its control's range (the server's limits may be lower than a model's own)."""
    prior = next(label for label, source in PRIORS.items() if source == recipe.label_debias_source)
    debias = min(recipe.label_debias, limits.max_label_debias)
    momentum = min(recipe.label_debias_momentum, limits.max_debias_momentum)
    return debias, prior, momentum, recipe.gamma, min(recipe.fairness_weight, limits.max_fairness_weight)


def entry_settings(registry, limits: AdaptLimits, name: str | None) -> tuple[Any, ...]:
    """Where the chosen model's run starts, as the tab's controls show it: (ρ, SOAP's share of the learning rate,
    then :func:`label_settings`, then the strong view's choice)."""
    recipe = entry_recipe(registry, name)
    soap_lr = min(recipe.soap_lr_scale, limits.max_soap_lr_scale)
    return entry_fusion_ratio(registry, name), soap_lr, *label_settings(recipe, limits), strong_view_choice(recipe.aa)


def strong_view_choice(policy: str) -> str | None:
    """The Strong view control's choice for a recipe's ``aa``; None (nothing chosen: the run keeps the data set's
    recipe's) for a policy the control does not offer."""
    wanted = auto_augment_policy(policy) or NO_AUTO_AUGMENT
    return next((label for label, offered in STRONG_VIEWS.items() if offered == wanted), None)


def _weight_slider(label: str, top: float, value: float, step: float, info: str, elem_id: str) -> gr.Slider:
    """One of the method's weights, from 0 to ``top``, starting at ``value`` (the chosen model's where it has one)."""
    return gr.Slider(0.0, top, value=value, step=step, label=label, info=info, elem_id=elem_id)


def _data_settings(p: _Panel) -> None:
    """What the run reads besides the images."""
    p.classnames = gr.Textbox(
        label="Class names (optional)",
        lines=2,
        placeholder="one per line or comma-separated; default: the folder names",
    )
    p.descriptions = gr.File(
        label="Descriptions JSON (optional, {class: [sentence, ...]})",
        file_types=[".json"],
        type="filepath",
        height=110,
    )
    p.description_lines = gr.Textbox(
        label="…or type them (optional), one per line: class name: sentence",
        lines=3,
        max_lines=12,
        placeholder="dastrel wren: a bird with a blue beak.\ndastrel wren: a bird with a red eye ring.",
        elem_id="adapt-description-lines",
    )
    p.allow_missing = gr.Checkbox(label="Allow missing descriptions (those classes use templates)")


def _step_settings(p: _Panel, limits: AdaptLimits) -> None:
    """How each step is made, and what fixes the run."""
    top = limits.max_batch_size
    p.batch = gr.Slider(1, top, value=min(16, top), step=1, label="Batch size")
    p.lr = gr.Slider(1e-5, min(1e-3, limits.max_lr), value=1e-4, step=1e-5, label="Learning rate")
    top = limits.max_crops
    p.n_crops = gr.Slider(1, top, value=min(4, top), step=1, label="Crops per image (K)")
    p.n_probes = gr.Slider(0, limits.max_probes, value=min(4, limits.max_probes), step=1, label="Probe images")
    p.seed = gr.Number(
        value=0,
        precision=0,
        minimum=0,
        maximum=limits.max_seed,
        label="Seed",
        info="Fixes the data order and the crops: the same seed repeats a run. On the toy world another "
        "seed alone moves the result by 2–4.5 points (docs/toyworld.md, round 38).",
        elem_id="adapt-seed",
    )


def _soap_settings(p: _Panel, limits: AdaptLimits, fusion_ratio: float, soap_lr: float) -> None:
    """How SOAP pools [FG], and how [FG] is fused with [CLS]."""
    p.centring = _as_chosen_radio(
        CENTRING,
        "SOAP's values",
        "Centred on the training images' mean token c (train.py --centre_values): self-training can then no "
        "longer turn W_v into one shift of every image's [FG] (docs/toyworld.md, round 23).",
        "adapt-centring",
    )
    p.query = _as_chosen_radio(
        QUERIES,
        "SOAP's query",
        "What SOAP asks every patch about: the mean of the cut's foreground, or the reference's ablations "
        "(train.py --use_global_feature_for_query, --use_token_avg_for_query). On the toy world the mean of "
        "every patch token gives nearly every image the same [FG] from the first step (docs/toyworld.md, "
        "round 43).",
        "adapt-query",
    )
    p.pool = _as_chosen_radio(
        POOLS,
        "SOAP's pooling",
        "How [FG] is pooled: SOAP's attention, or the reference's ablations, plain means with no attention "
        "(train.py --use_ncut_token_avg, --use_naive_token_avg); with a plain mean SOAP's projections do not "
        "train (docs/toyworld.md, round 44).",
        "adapt-pool",
    )
    p.cut = _as_chosen_radio(
        CUTS,
        "What the cut reads",
        "The normalised cut that picks SOAP's query runs on the value-path tokens SOAP pools, or on the last "
        "block's keys (train.py --ncut_features keys). On the toy world the keys' cut is smaller and a little "
        "purer, halves SOAP's deletion gap to its rolled-out weights and costs [FG] alone 3.75 points "
        "(docs/toyworld.md, round 44).",
        "adapt-cut",
    )
    p.soap_lr = _weight_slider(
        "SOAP's share of the learning rate",
        limits.max_soap_lr_scale,
        soap_lr,
        0.25,
        "SOAP's projections learn at the learning rate × this (train.py --soap_lr_scale; 1 is the reference's, 0 "
        "freezes SOAP and only the LayerNorms and W* learn). Frozen, SOAP cannot give every image's [FG] the shift "
        "it learns otherwise (docs/toyworld.md, rounds 11 and 20). Starts at the chosen model's.",
        "adapt-soap-lr",
    )
    p.fusion = _weight_slider(
        "Weight of [CLS] in the fused answer (ρ)",
        1.0,
        fusion_ratio,
        0.05,
        "In the loss and in the answer; starts at the chosen model's (0.5 in every reference config; "
        "train.py --fusion_ratio). On the toy world a lower ρ makes [FG] lean on the parts more and ends "
        "lower; at 1 only the labels use [FG] (docs/toyworld.md, round 39).",
        "adapt-fusion",
    )


def _label_sources(p: _Panel, limits: AdaptLimits, gamma: float, fairness: float) -> None:
    """Where the labels come from, and how hard the loss spreads them over the classes."""
    p.labels = _as_chosen_radio(
        LABELS,
        "Labels",
        "[CLS]'s own answers: train.py --baseline (SOAP does not train). The true labels, for data in class "
        "folders: train.py --fully_supervised, how far the label-free run is from the right labels "
        "(docs/toyworld.md, round 45).",
        "adapt-labels",
    )
    p.gamma = _weight_slider(
        "Labels from the descriptions (DKA's γ)",
        1.0,
        gamma,
        0.05,
        "0: the model labels itself (fused · W*); 1: the crops against the descriptions (crops · "
        "W_LLM) alone (train.py --gamma). Starts at the chosen model's.",
        "adapt-gamma",
    )
    p.fairness = _weight_slider(
        "Fairness weight",
        limits.max_fairness_weight,
        fairness,
        0.5,
        "How hard the loss spreads the answers over the classes (train.py --fairness_weight; "
        "docs/toyworld.md, round 37). Starts at the chosen model's.",
        "adapt-fairness",
    )


def _view_settings(p: _Panel, strong_view: str | None) -> None:
    """The view the loss is taken on."""
    p.strong_view = _setting_radio(
        STRONG_VIEWS,
        strong_view,
        "Strong view",
        "What the loss sees of each image: a random crop and flip, then RandAugment's two operations, six of "
        "fifteen of which change colours (train.py --aa). Where a class is its colours, a weaker view learns far "
        "more from the same labels (docs/toyworld.md, round 55). Starts at the chosen model's.",
        "adapt-strong-view",
    )


def _debias_settings(p: _Panel, limits: AdaptLimits, debias: float, prior: str, momentum: float) -> None:
    """How a running class marginal comes off the labels' scores (not the reference's)."""
    p.debias = _weight_slider(
        "Label debiasing (λ)",
        limits.max_label_debias,
        debias,
        0.5,
        "Not the reference's (0): λ × log of each class's running mean probability under the labels comes "
        "off their scores, so a class they never name rises (train.py --label_debias). Starts at the chosen "
        "model's. On the toy world λ = 3 (the bundled 'labels debiased' model) lifts the method and the "
        "CLS-only baseline by about 7 points each (docs/toyworld.md, rounds 45-46).",
        "adapt-debias",
    )
    p.prior = _setting_radio(
        PRIORS,
        prior,
        "Debiasing's class marginal",
        "What λ's running class marginal is a mean of (train.py --label_debias_source; no effect at λ "
        "= 0). The labels' own shares lower a class again as the labels name it, and on the toy world leave "
        "brennic finch's own images named another species (docs/toyworld.md, round 47). Starts at the chosen "
        "model's.",
        "adapt-prior",
    )
    p.momentum = _weight_slider(
        "Debiasing's momentum",
        limits.max_debias_momentum,
        momentum,
        0.01,
        "How slowly the running class marginal follows the batches (train.py --label_debias_momentum; "
        "no effect at λ = 0): 0.9 is DebiasPL's; 0.99 came closest to the bar on the toy world's validation "
        "split and over-corrects as much (docs/toyworld.md, round 47). Starts at the chosen model's.",
        "adapt-momentum",
    )


def _settings_row(p: _Panel, limits: AdaptLimits, chosen: tuple[Any, ...]) -> None:
    """Every setting of train.py's the tab offers, folded away, four groups side by side (each control's note is
    long, and a narrow column would make it a scroll); ``chosen``: where the chosen model starts (entry_settings)."""
    fusion_ratio, soap_lr, debias, prior, momentum, gamma, fairness, strong_view = chosen
    with gr.Accordion("More settings", open=False, elem_id="adapt-more") as p.more, gr.Row(equal_height=False):
        with gr.Column(min_width=260):
            gr.Markdown("**Your data**")
            _data_settings(p)
            gr.Markdown("**Optimisation**")
            _step_settings(p, limits)
            _view_settings(p, strong_view)
        with gr.Column(min_width=260):
            gr.Markdown("**SOAP and the fusion**")
            _soap_settings(p, limits, fusion_ratio, soap_lr)
        with gr.Column(min_width=260):
            gr.Markdown("**The labels**")
            _label_sources(p, limits, gamma, fairness)
        with gr.Column(min_width=260):
            gr.Markdown("**Label debiasing** (not the reference's)")
            _debias_settings(p, limits, debias, prior, momentum)


def _save_column(p: _Panel) -> None:
    with gr.Column(scale=1, min_width=300):
        p.save_name = gr.Textbox(label="Checkpoint name (optional)", placeholder="adapted · <data> · job <id>")
        p.save = gr.Button("Save checkpoint", elem_id="adapt-save")
        p.use_saved = gr.Button("Use it in Explore", elem_id="adapt-use-saved")
        p.checkpoint = gr.File(
            label="Saved checkpoint (.safetensors)", interactive=False, height=110, elem_classes=DOWNLOAD_CLASS
        )
        p.download_curves = gr.Button("Download the curves (CSV)", size="sm", elem_id="adapt-download-curves")
        p.curves_csv = gr.File(
            label="The run's curves, step by step (.csv)", interactive=False, height=110, elem_classes=DOWNLOAD_CLASS
        )


def _results_column(p: _Panel) -> None:
    with gr.Column(scale=3, min_width=600):
        gr.Markdown(PROBES_NOTE)
        p.probes = gr.HTML(probes_html(None), elem_id="adapt-probes")
        p.refresh_maps = gr.Button("Refresh maps now", size="sm")
        p.skipped = gr.Markdown()
        with gr.Accordion("Run details", open=False):
            p.job_id = gr.Textbox(label="Job id (the API handle)", interactive=False)
            p.saved_name = gr.Textbox(label="Registered model name", interactive=False)
            p.refresh = gr.Button("Refresh status", size="sm")


def _layout(registry, limits: AdaptLimits, folders: ServerPaths) -> _Panel:
    p = _Panel()
    gr.Markdown(INTRO)
    # Laid out for a projector (1400×1000): what to choose, Start and Stop on the left; the status, the progress
    # and the curves beside them, so a run is watched without scrolling. Less used settings (folded), then Save
    # beside the probe maps.
    with gr.Row(equal_height=False):
        _data_column(p, registry, limits, folders)
        _watch_column(p)
    _settings_row(p, limits, entry_settings(registry, limits, registry.default_name))
    with gr.Row(equal_height=False):
        _save_column(p)
        _results_column(p)
    p.timer = gr.Timer(POLL_SECONDS, active=False)
    p.shown = gr.State(None)
    return p


# ------------------------------------------------------------------ events


def choose_source(choice: str) -> tuple[Any, Any, Any]:
    kind = SOURCES[choice]
    return gr.File(visible=kind == "zip"), gr.Textbox(visible=kind == "folder"), gr.Slider(visible=kind == "toybirds")


def typed_lines(text: str | None) -> dict[str, list[str]] | None:
    """Descriptions typed as ``class name: sentence`` lines (None when there are none); a line that is not one is
    named by its number."""
    try:
        return parse_description_lines(text or "") or None
    except DescriptionsError as error:
        raise gr.Error(f"Typed descriptions: {error}.") from None


def _wire_start(p: _Panel, runner: AdaptationRunner, folders_now: Callable[..., ServerPaths]) -> None:
    @user_errors
    def start_run(
        model_name: str | None,
        source_choice: str,
        archive_path: str | None,
        folder_path: str,
        per_class: float,
        class_text: str,
        descriptions_path: str | None,
        allow: bool,
        n_steps: float,
        batch_size: float,
        learning_rate: float,
        crops: float,
        probes: float,
        centring: str | None = None,
        gamma: float | None = None,
        fairness: float | None = None,
        seed: float | None = None,
        fusion: float | None = None,
        query: str | None = None,
        pool: str | None = None,
        labels: str | None = None,
        debias: float | None = None,
        prior: str | None = None,
        momentum: float | None = None,
        cut: str | None = None,
        soap_lr: float | None = None,
        description_lines: str | None = None,
        strong_view: str | None = None,
    ) -> tuple[Any, ...]:
        """Queue an adaptation; returns the job id and the first status."""
        source_value = SOURCES.get(source_choice, source_choice)  # API clients may pass 'toybirds' etc.
        if source_value == "folder" and not (now := folders_now(request=True)).allowed:
            raise gr.Error(now.reason)
        request = AdaptRequest(
            source=source_value,
            path=archive_path if source_value == "zip" else (folder_path or "").strip() or None,
            model_name=model_name or None,
            classnames=parse_classnames(class_text),
            descriptions_path=descriptions_path or None,
            descriptions=typed_lines(description_lines),
            allow_missing_descriptions=bool(allow),
            steps=int(n_steps),
            batch_size=int(batch_size),
            lr=float(learning_rate),
            n_crops=int(crops),
            n_probes=int(probes),
            toy_per_class=int(per_class),
            centre_values=CENTRING.get(centring) if centring else None,  # Gradio refuses a value not in CENTRING
            gamma=None if gamma is None else float(gamma),  # API clients may leave these out: the data set's
            fairness_weight=None if fairness is None else float(fairness),
            seed=0 if seed is None else int(seed),
            fusion_ratio=None if fusion is None else float(fusion),
            soap_query=QUERIES[query] if query else None,  # Gradio refuses a value not in QUERIES
            soap_pool=POOLS[pool] if pool else None,
            mode=LABELS[labels] if labels else None,  # Gradio refuses a value not in LABELS
            label_debias=None if debias is None else float(debias),
            label_debias_source=PRIORS[prior] if prior else None,  # Gradio refuses a value not in PRIORS
            label_debias_momentum=None if momentum is None else float(momentum),
            ncut_features=CUTS[cut] if cut else None,  # Gradio refuses a value not in CUTS
            soap_lr_scale=None if soap_lr is None else float(soap_lr),
            strong_view=STRONG_VIEWS[strong_view] if strong_view else None,  # Gradio refuses others
        )
        try:
            new_id = runner.submit(request)
        except QueueFullError as error:
            raise gr.Error(str(error)) from None
        snapshot = runner.status(new_id)
        return new_id, status_markdown(snapshot), progress_html(snapshot), None, "", gr.Timer(active=True)

    outputs = [p.job_id, p.status, p.progress, p.checkpoint, p.saved_name, p.timer]
    started = p.start.click(start_run, p.start_inputs(), outputs, api_name="adapt_start", concurrency_limit=None)
    # The last run's curves go: its series (the accuracy's three, or the baseline's one) would colour the new run's
    # (see plot_values), and its lines would stand under the new run's status until the first poll. Not queued:
    # answered at once, before the run's first poll a second later (a short run's last, which a late clearing would
    # leave empty).
    clear = dict(api_visibility="private", show_progress="hidden", queue=False)
    started.success(lambda: plot_values([]), None, p.plots(), **clear)


def plot_values(metrics: list[dict]) -> list[Any]:
    """The four curves' plot values: a plot with no points yet gets None, never an empty table.

    Gradio's LinePlot builds its chart, the colours of its series included, from the first value it is sent, and
    afterwards only swaps the rows: a run whose first poll came before its first step (a loaded server) had the
    empty table's no series for its colours, so no line and an empty legend until the end of the run. From None,
    the first rows build the chart."""
    return [None if frame.empty else frame for frame in curves(metrics)]


def _idle(text: str, shown: tuple | None) -> tuple[Any, ...]:
    return text, progress_html(None), *plot_values([]), probes_html(None), "", shown, gr.Timer(active=False)


def _wire_status(p: _Panel, runner: AdaptationRunner) -> None:
    def render(current: str | None, already: tuple | None) -> tuple[Any, ...]:
        """Everything the panel shows; the probe maps are skipped when they did not change."""
        if not current:
            return _idle(status_markdown(None), already)
        try:
            snapshot = runner.status(current)
        except KeyError as error:
            return _idle(str(error.args[0]), None)
        key = probes_key(snapshot)
        maps = gr.skip() if key == already else probes_html(snapshot)
        return (
            status_markdown(snapshot),
            progress_html(snapshot),
            *plot_values(snapshot.metrics),
            maps,
            skipped_markdown(snapshot),
            key,
            gr.Timer(active=not snapshot.status.finished),
        )

    api_outputs = p.shown_outputs()

    def status_api(current: str) -> tuple[Any, ...]:
        """The run's full state (status text, progress, curves, probe maps as HTML, skipped files)."""
        return render(current, None)[: len(api_outputs)]

    hidden = {"api_visibility": "private", "show_progress": "hidden"}
    p.timer.tick(render, [p.job_id, p.shown], p.outputs(), **hidden, concurrency_limit=None)
    p.refresh.click(status_api, p.job_id, api_outputs, api_name="adapt_status", concurrency_limit=None)


def _wire_actions(p: _Panel, runner: AdaptationRunner) -> None:
    """Stop, Save and Refresh maps: each acts on the job by its id."""

    @user_errors
    def stop_run(current: str) -> tuple[str, str]:
        """Stop the run after its current step (its state is kept and can be saved); cancels a waiting job."""
        if not current:
            raise gr.Error("No run to stop: press Start first.")
        snapshot = runner.stop(current)
        return status_markdown(snapshot), progress_html(snapshot)

    @user_errors
    def save_run(current: str, name: str) -> tuple[str, str, str]:
        """Write the checkpoint, register it for Explore/Compare; returns the file, the status and its name."""
        if not current:
            raise gr.Error("No run to save: press Start first.")
        path = runner.save(current, name or None)
        snapshot = runner.status(current)
        return str(path), status_markdown(snapshot), snapshot.saved_name or ""

    @user_errors
    def download_curves(current: str) -> str:
        """The run's curves so far as a CSV file: a row per step, a column per logged value."""
        if not current:
            raise gr.Error("No run yet: press Start first.")
        return str(runner.curves_file(current))

    @user_errors
    def ask_for_maps(current: str) -> None:
        if current:
            runner.request_probes(current)

    stopped = p.stop.click(stop_run, p.job_id, [p.status, p.progress], api_name="adapt_stop", concurrency_limit=None)
    # Stop's answer ("stopping: step 10") can reach the page after the poll that showed the run stopped and turned the
    # polling off (a loaded server: seen once in the browser test), and it then stood as the run's last word. Polling
    # is turned on again after it, so a poll has the last word.
    stopped.success(lambda: gr.Timer(active=True), None, p.timer, api_visibility="private", queue=False)
    saved = [p.checkpoint, p.status, p.saved_name]
    p.save.click(save_run, [p.job_id, p.save_name], saved, api_name="adapt_save", concurrency_limit=None)
    p.download_curves.click(download_curves, p.job_id, p.curves_csv, api_name="adapt_curves", concurrency_limit=None)
    p.refresh_maps.click(ask_for_maps, p.job_id, None, api_visibility="private", concurrency_limit=None)


# ------------------------------------------------------------------ the tab


def build_adapt_tab(registry, runner: AdaptationRunner, server_paths: ServerPathGuard | None = None) -> AdaptHandles:
    """Build the Adapt tab inside the current ``gr.Tab`` context and wire its endpoints.

    The folder source is drawn disabled, with the reason, when server folders are off (``studio.sharing``
    or the runner's own setting); each request is checked again.
    """
    guard = server_paths or ServerPathGuard()

    def folders_now(request: bool = False) -> ServerPaths:
        return guard.now(request, turned_off=not runner.allow_local_paths)

    p = _layout(registry, runner.limits, folders_now())
    p.source.change(choose_source, p.source, [p.archive, p.folder, p.toy_per_class], api_visibility="private")
    refresh_on_focus(p.model, registry)
    # A run keeps the entry's ρ and how its labels were made unless a control is moved: left at the data set's, a
    # run from the bundled debiased model would drop the debiasing it was made with, unsaid. One event sets them all,
    # so a control moved right after a choice is never reset by a late second event.
    p.model.change(
        partial(entry_settings, registry, runner.limits),
        p.model,
        [p.fusion, p.soap_lr, p.debias, p.prior, p.momentum, p.gamma, p.fairness, p.strong_view],
        api_visibility="private",
        queue=False,
    )
    _wire_start(p, runner, folders_now)
    _wire_status(p, runner)
    _wire_actions(p, runner)
    return AdaptHandles(
        saved_name=p.saved_name,
        use_saved=p.use_saved,
        model=p.model,
        description_lines=p.description_lines,
        more=p.more,
    )


__all__ = ["AdaptHandles", "build_adapt_tab"]
