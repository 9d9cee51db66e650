"""The ``train`` / ``evaluate`` / ``explain`` / ``describe`` command lines.

``train`` and ``evaluate`` accept the reference's commands as written
(``python train.py --dataset NAME --train_config ours_vit_b_32_cupl_proto``,
``python evaluate.py --dataset NAME --ckpt-path PATH``) and its flags (docs/method.md §11).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import torch

from microclip.adapt import Adaptation, AdaptResult, prepare
from microclip.checkpoint import EPOCHS_FOLDER, check_compatible, epoch_file, read_reference_resume, save_adapted
from microclip.cliargs import add_classname, new_parser, positive_int, same_named, unit_fraction
from microclip.data.catalog import get_benchmark
from microclip.data.check import check_benchmark
from microclip.data.datasets import DatasetNotFoundError, ImageDataset, build_dataset
from microclip.data.descriptions import load_descriptions
from microclip.data.names import read_classnames
from microclip.data.shipped import shipped_templates
from microclip.data.transforms import SeededDataset, test_transform
from microclip.drift import ShiftProbe, epoch_signs, per_class_record, shift_class_logits, shift_record
from microclip.engine import (
    UNSHIFTED_BRANCHES,
    Callback,
    FitState,
    distributed_context,
    end_distributed,
    evaluate_as,
    per_class_test_fields,
    select_device,
    sweep_branch,
    validation_fields,
)
from microclip.errors import USER_ERRORS
from microclip.files import atomic_write_json, atomic_write_text, parse_json
from microclip.formats import BRANCH_LABELS
from microclip.model import MethodConfig, MicroCLIP
from microclip.recipe import MODE_FLAGS, Recipe, check_train_config, reported_branch
from microclip.resources import PROJECT_ROOT, config_file, config_names, locate
from microclip.soap import DEPRECATED_NCUT_SIGNS, NCUT_FEATURES, NCUT_SIGNS, POOL_FLAGS, QUERY_FLAGS
from microclip.spread import Spread
from microclip.toyworld.text import this_worlds_asset

log = logging.getLogger("microclip")
DEFAULT_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "toybirds-microclip.safetensors"
ZERO_SHOT_BRANCH = "cls"  # the reference reports the zero-shot (epoch-0) accuracy of [CLS] alone


# ------------------------------------------------------------------ configs


def _read_json(path: Path, what: str) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        hint = (
            ""
            if path.is_absolute()
            else (
                f" (looked in the working directory and in {PROJECT_ROOT}; the toy world's files ship with the "
                "repository checkout, not with the installed package)"
            )
        )
        raise FileNotFoundError(f"{what} {path} not found{hint}") from None
    return parse_json(text, f"{what} {path}")


def load_train_config(name_or_path: str) -> dict:
    """A train config (base model, text sources) by bundled name or path; unknown keys are an error."""
    path = Path(name_or_path)
    if not path.suffix:
        bundled = config_file("train_configs", name_or_path)
        if bundled is None:
            raise FileNotFoundError(
                f"train config '{name_or_path}' not found; bundled: "
                f"{', '.join(config_names('train_configs'))} (or pass a .json path)"
            )
        return check_train_config(json.loads(bundled.read_text()), f"train config {name_or_path}")
    return check_train_config(_read_json(path, "train config"), f"train config {path}")


# ------------------------------------------------------------------ argument parsers


def _triple(text: str) -> tuple[float, float, float]:
    """Three numbers, comma- or space-separated ("0.48,0.46,0.41"), for --image_mean / --image_std."""
    parts = text.replace(",", " ").split()
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers (R,G,B), got {text!r}")
    return values  # type: ignore[return-value]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="imagenet", help="benchmark name, toybirds, an image folder or a CSV")
    parser.add_argument("--data_root", "--data-root", default="./data")
    parser.add_argument("--train_config", default="ours_vit_b_32_cupl_proto", help="name or path of a train config")
    parser.add_argument(
        "--text_descriptions_path",
        default=None,
        help="descriptions JSON file or folder of <dataset>.json (CuPL format)",
    )
    parser.add_argument("--no_descriptions", action="store_true", help="template heads only")
    parser.add_argument("--allow_missing_descriptions", action="store_true")
    parser.add_argument("--template", default=None, help="templates JSON ({dataset: [..]} or a list)")
    add_classname(parser, "class names file (.txt or .json); --classes / --classnames: old spellings", default=None)
    parser.add_argument("--clip_model", default=None, help="open_clip name (ViT-B-32-quickgelu, ...) or ViT-B/32")
    parser.add_argument("--pretrained", default=None, help="open_clip tag, weight file, or 'none' (random)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--exp_name", default="")
    parser.add_argument(
        "--ablation_name",
        default="",
        help="as the reference: a sub-folder of the default output dir (output/<dataset>/<name>/...)",
    )
    parser.add_argument(
        "--image_mean",
        type=_triple,
        default=None,
        help="pixel mean the model normalises with (3 numbers); default: the base model's "
        "(the reference's default is OpenAI CLIP's 0.48145466,0.4578275,0.40821073)",
    )
    parser.add_argument("--image_std", type=_triple, default=None, help="pixel std, as --image_mean")
    parser.add_argument(
        "--fusion_ratio",
        type=unit_fraction,
        default=None,
        help="ρ, the weight of [CLS] in the fused logits, 0 to 1 (default: 0.5 to train; the checkpoint's to evaluate)",
    )
    parser.add_argument(
        "--eval_crop",
        choices=["center", "random"],
        default=None,
        help="test-time crop: center (clean) or random (the reference's, seeded); default: the "
        "train config's eval_crop (random in the ours_* configs), else center",
    )
    parser.add_argument(
        "--data_split",
        choices=["reference", "official"],
        default="reference",
        help="benchmark split: the reference's (default) or the official one where they differ "
        "(flowers, fgvc); `python -m microclip classes NAME --split` says which",
    )
    parser.add_argument(
        "--amp",
        nargs="?",
        const="fp16",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="--amp: float16 with a GradScaler, as the reference's --amp; --amp bf16: bfloat16",
    )
    parser.add_argument("--download", action="store_true", help="fetch the data set with torchvision if possible")
    parser.add_argument("--verbose", action="store_true")


def _add_method(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("method (reference switches and clean alternatives)")
    group.add_argument("--ncut_features", choices=NCUT_FEATURES, default=NCUT_FEATURES[0])
    group.add_argument("--ncut_threshold", choices=["std", "mean"], default="std")
    group.add_argument(
        "--ncut_sign",
        choices=[*NCUT_SIGNS, *DEPRECATED_NCUT_SIGNS],
        default="canonical",
        help="canonical: the same mask on every machine (default); solver: the reference's literal "
        "rule, which depends on the eigensolver's sign and so on the machine "
        "(faithful/symmetric: old names of solver/canonical)",
    )
    group.add_argument("--use_global_feature_for_query", action="store_true")
    group.add_argument("--use_token_avg_for_query", action="store_true")
    group.add_argument("--use_random_selection_for_query", action="store_true")
    group.add_argument("--use_ncut_token_avg", action="store_true")
    group.add_argument("--use_naive_token_avg", action="store_true", help="works here (a no-op in the reference)")
    group.add_argument("--use_unr_token", action="store_true", help="learnable null token")
    group.add_argument(
        "--centre_values",
        action="store_true",
        help="not the reference's: SOAP's value map acts on each patch token minus the training images' mean "
        "token, so it cannot add one vector to every image's [FG] (docs/toyworld.md, round 23)",
    )
    group.add_argument(
        "--ncut_device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where NCut's eigensolver runs: cpu (default: batched eigh is faster there) or cuda (the reference's)",
    )


def build_train_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = new_parser(parser, prog="train.py", description="microCLIP self-training (no labels used)")
    _add_common(parser)
    _add_method(parser)
    group = parser.add_argument_group("recipe (defaults from the dataset config)")
    Recipe.add_flags(group)
    group.add_argument(
        "--no_decay_groups",
        action="store_true",
        help="no weight decay on LayerNorms (the reference intended it; its grouping never matched)",
    )
    parser.add_argument(
        "--val_dataset",
        default=None,
        help="labelled images to choose a recipe by (an image folder, a CSV or a benchmark's test split, the "
        "training data's classes): scored at every test evaluation into log.jsonl's and metrics.json's val_ fields, "
        "so that the test split is read once, for the recipe chosen",
    )
    modes = parser.add_argument_group("baselines")
    modes.add_argument(
        "--baseline",
        action="store_true",
        help="CLS-only self-training; reports [CLS]-only accuracy as acc (fused as acc_fused)",
    )
    modes.add_argument(
        "--wca_baseline",
        action="store_true",
        help="crop-composite labels, CLS-only, SOAP frozen; reports [CLS]-only accuracy as acc",
    )
    modes.add_argument("--fully_supervised", action="store_true", help="true labels, no fairness loss")
    modes.add_argument("--use_fixed_classifier", action="store_true", help="baselines label with W_LLM")
    modes.add_argument("--eval", action="store_true", help="evaluate the initial (zero-shot) model and exit")
    modes.add_argument(
        "--zero_shot",
        choices=["descriptions", "templates"],
        default=None,
        help="initial W* from descriptions (default) or from templates (zero-shot by names)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue a killed run (its output dir, or --output_dir), or a reference run from its "
        "checkpoint-last.pth (read without unpickling: weights, optimiser and epoch)",
    )
    parser.add_argument(
        "--start_epoch",
        type=int,
        default=0,
        help="as the reference: start the epoch loop (and the schedule) at this epoch",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="run the recipe once per seed, each into <output_dir>/seed-<S> exactly as --seed S would, and close "
        "with each branch's mean, spread and range (<output_dir>/metrics.json): one seed says little about a recipe. "
        "With --resume DIR, finished seeds are kept, a killed one resumes and the rest start",
    )
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument(
        "--keep_epochs",
        action="store_true",
        help="also save the adapted checkpoint as each epoch ends (epochs/epoch-N.safetensors): open any of "
        "them in the app or a bench to see how self-training moved the maps",
    )
    return parser


def build_evaluate_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = new_parser(parser, prog="evaluate.py", description="Evaluate an adapted checkpoint")
    _add_common(parser)
    parser.add_argument(
        "--test_fusion",
        choices=["consistent", "reference"],
        default="consistent",
        help="consistent: ρ on [CLS] as in training; reference: the reference's swapped unpacking",
    )
    parser.add_argument(
        "--ckpt-path",
        "--ckpt_path",
        dest="ckpt_path",
        required=True,
        nargs="+",
        help="a microCLIP .safetensors checkpoint or a reference checkpoint-last.pth; several (e.g. one recipe's "
        "seeds) are scored in turn and summarised by their mean, spread and range",
    )
    parser.add_argument(
        "--against",
        nargs="+",
        default=None,
        help="as many checkpoints as --ckpt-path, compared with them pair by pair (e.g. another recipe's runs with "
        "the same seeds in the same order): each branch's differences, their spread, and on how many pairs each leads",
    )
    parser.add_argument(
        "--fusion_sweep",
        nargs="+",
        type=unit_fraction,
        default=[],
        metavar="RHO",
        help="also the fused top-1 with each of these weights on [CLS] (0 to 1), the same forward pass's branch "
        "logits re-fused: how the answer moves between the branches without re-running the model",
    )
    parser.add_argument("--input_size", type=int, default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch_size", type=positive_int, default=256)
    parser.add_argument("--show_per_class", action="store_true")
    parser.add_argument("--show_harmonic_mean", action="store_true")
    return parser


def build_drift_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = new_parser(
        parser,
        prog="python -m microclip drift",
        description="Measure the shift self-training gave every image's [FG] token in an adapted checkpoint's run "
        "(no labels needed: the mean [FG] now minus at the run's start, over the training images), print what it "
        "does to each class, and with --write store it in the checkpoint, so Explore and the Walkthrough show [FG] "
        "with and without it. train.py and the Adapt tab store it themselves since round 21.",
    )
    _add_common(parser)
    parser.add_argument("--ckpt-path", "--ckpt_path", dest="ckpt_path", required=True, help="a .safetensors checkpoint")
    parser.add_argument("--split", default="train", help="the images to measure on (the run's own: train)")
    parser.add_argument("--batch_size", type=positive_int, default=256)
    parser.add_argument("--write", action="store_true", help="store the shift in the checkpoint's metadata")
    return parser


# ------------------------------------------------------------------ shared steps


def setup_logging(verbose: bool = False, rank: int = 0) -> None:
    # open_clip logs its progress on the root logger at INFO: keep the root at WARNING.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.getLogger("microclip").setLevel(level)


def _switched(args: argparse.Namespace, flags: dict[str, str], default: str) -> str:
    """The first mode whose reference switch is on (in the reference's order of precedence), else ``default``."""
    return next((mode for mode, flag in flags.items() if getattr(args, flag.lstrip("-"))), default)


def method_config(args: argparse.Namespace) -> MethodConfig:
    query = _switched(args, QUERY_FLAGS, "ncut")
    pool = _switched(args, POOL_FLAGS, "attention")
    return MethodConfig(
        fusion_ratio=0.5 if args.fusion_ratio is None else args.fusion_ratio,
        query=query,
        pool=pool,
        learnable_null=args.use_unr_token,
        centre_values=args.centre_values,
        **same_named(args, "ncut_features", "ncut_threshold", "ncut_sign", "ncut_device"),
    )


def _configured(train_cfg: dict, key: str) -> str | None:
    """A file the train config names, found from any cwd. A config names the shipped toy world's bundled files; in
    a process drawing another species table they are that table's (a path given on the command line is read as
    given)."""
    value = train_cfg.get(key)
    return str(this_worlds_asset(locate(value))) if value else None


def read_templates(args: argparse.Namespace, train_cfg: dict) -> list[str]:
    source = args.template or _configured(train_cfg, "templates")
    if source:
        data = _read_json(Path(locate(source)), "templates file")
        templates = data.get(Path(args.dataset).name) if isinstance(data, dict) else data
        if not templates:
            raise ValueError(f"templates file {source} has no templates for {args.dataset}")
        return [t.replace("{c}", "{}") for t in templates]
    return shipped_templates(Path(args.dataset).name)


def read_descriptions(args: argparse.Namespace, train_cfg: dict, classes: list[str]) -> dict[str, list[str]] | None:
    if args.no_descriptions:
        return None
    configured = _configured(train_cfg, "text_descriptions_path")
    source = locate(args.text_descriptions_path or configured or "./all_prompts/train_prompts")
    if not Path(source).exists():
        raise FileNotFoundError(
            f"no descriptions at {source}: pass --text_descriptions_path (a CuPL-format JSON file or folder), "
            "write them with `python -m microclip describe`, or use --no_descriptions for template heads"
        )
    return load_descriptions(
        source, classes, dataset=Path(args.dataset).name, allow_missing=args.allow_missing_descriptions
    )


def resolve_base(args: argparse.Namespace, train_cfg: dict) -> tuple[str, str | None]:
    clip_model = args.clip_model or train_cfg.get("vision_backbone") or "ViT-B/32"
    pretrained = args.pretrained or train_cfg.get("pretrained")
    return locate(clip_model), (locate(pretrained) if pretrained else None)


def _datasets(args: argparse.Namespace, classnames: list[str] | None):
    train = build_dataset(
        args.dataset,
        "train",
        root=args.data_root,
        download=args.download,
        classnames=classnames,
        protocol=args.data_split,
    )
    try:
        test = build_dataset(
            args.dataset, "test", root=args.data_root, classnames=classnames or train.classes, protocol=args.data_split
        )
    except (DatasetNotFoundError, FileNotFoundError):
        log.warning("no test split for %s: training without test evaluation", args.dataset)
        test = None
    if train.layout:
        log.info(
            "%s: read %s: %d train / %d test images",
            args.dataset,
            train.layout,
            len(train),
            len(test) if test is not None else 0,
        )
    return train, test


class ProgressBar(Callback):
    """tqdm over the run's steps; shows the loss and pseudo-label accuracy."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar = None

    def on_fit_start(self, state: FitState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=state.total_steps,
            initial=state.global_step,
            disable=self.disable or not state.is_main,
            desc="adapting",
            unit="step",
            dynamic_ncols=True,
        )

    def on_step_end(self, state: FitState, metrics: dict) -> None:
        shown = {k: f"{metrics[k]:.3g}" for k in ("loss", "pl_acc", "pl_conf") if k in metrics}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        if "test_acc" in metrics and state.is_main:
            self.bar.write(
                f"epoch {metrics['epoch']}: test top-1 {metrics['test_acc']:.2f} "
                f"(fused {metrics['test_acc_fused']:.2f}, CLS {metrics['test_acc_cls']:.2f}, "
                f"FG {metrics['test_acc_fg']:.2f}{_unshifted_note(metrics.get('test_acc_fg_unshifted'))})"
            )

    def on_fit_end(self, state: FitState) -> None:
        self.bar.close()


def _rows(initial: dict | None, state: FitState) -> list[dict]:
    """The per-epoch history, led by the epoch-0 (zero-shot) row when there is one."""
    return ([initial] if initial else []) + state.history


class JsonlLog(Callback):
    """One JSON line per epoch in ``log.jsonl`` (rewritten from the history, so resumes stay consistent)."""

    def __init__(self, path: Path, initial: dict | None = None) -> None:
        self.path, self.initial = path, initial

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        if state.is_main:
            atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in _rows(self.initial, state)))


class EpochHook(Callback):
    """Calls a function with the history at every epoch end (the plots, from viz/)."""

    def __init__(self, function: Callable[[list[dict], Path], None], folder: Path, initial: dict | None) -> None:
        self.function, self.folder, self.initial = function, folder, initial

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        if state.is_main:
            self.function(_rows(self.initial, state), self.folder)


class EpochCheckpoints(Callback):
    """``--keep_epochs``: the adapted checkpoint at every epoch's end, next to the final one, and the model as the
    run starts (``epoch-0``, SOAP at identity and W* from the descriptions): the start cannot be rebuilt from a
    checkpoint's metadata alone (whether W* started from descriptions or templates is the train config's)."""

    def __init__(self, run: Adaptation, folder: Path, initial: dict | None = None) -> None:
        self.run, self.folder, self.initial, self.start = run, folder, initial, time.perf_counter()

    def on_fit_start(self, state: FitState) -> None:
        if state.is_main and state.global_step == 0 and state.epoch == 0:  # not on a resume: the start is gone
            self._save(state, self.initial or {"epoch": 0})

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        if state.is_main:
            self._save(state, metrics)

    def _save(self, state: FitState, row: dict) -> None:
        epoch = row["epoch"]  # 1-based after an epoch, as in log.jsonl; 0 the start
        so_far = AdaptResult(list(state.history), False, state.global_step, time.perf_counter() - self.start)
        accuracy = {k.removeprefix("test_"): v for k, v in row.items() if k.startswith("test_acc")}
        meta = self.run.checkpoint_meta(
            so_far,
            metrics={"epoch": epoch, **accuracy, **epoch_signs(row), **per_class_record(row)},
            drift=self.run.current_drift(),
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        save_adapted(epoch_file(self.folder, epoch), self.run.model.adapted_state(), meta)


def _unshifted_note(accuracy: float | None) -> str:
    """The progress line's `[FG]` without its shared shift, once the run has measured one."""
    return "" if accuracy is None else f"; FG without its shift {accuracy:.2f}"


def _recipe(args: argparse.Namespace, dataset_cfg: Recipe) -> Recipe:
    """The dataset config's recipe, overridden by the recipe flags given, then by the run's switches."""
    mode = next((mode for mode, flag in MODE_FLAGS.items() if getattr(args, flag[2:])), "microclip")
    return Recipe.from_sources(
        dataset_cfg,
        args,
        mode=mode,
        seed=args.seed,
        amp=args.amp,
        num_workers=args.num_workers,
        use_fixed_classifier=args.use_fixed_classifier,
        decay="intended" if args.no_decay_groups else "all",
    )


def _default_output_dir(args: argparse.Namespace, config: Recipe, clip_model: str) -> Path:
    """``output/<dataset>[/<ablation_name>]/<time>_<model>_epoch<N>_lr<lr>[_<exp_name>]`` (the reference's)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    model = Path(clip_model.split(":", 1)[-1]).name.replace("/", "_")
    name = f"{stamp}_{model}_epoch{config.epochs}_lr{config.lr:g}{'_' + args.exp_name if args.exp_name else ''}"
    return Path("output") / Path(args.dataset).name / (args.ablation_name or "") / name


def _check_data_fast(args: argparse.Namespace) -> None:
    """check-data's quick pass on a named benchmark (layout, class folders, split file); raises its first line."""
    if (
        get_benchmark(args.dataset) is None
        or args.dataset == "toybirds"
        or args.download
        or args.data_split != "reference"
        or args.classname
    ):
        return
    report = check_benchmark(args.dataset, args.data_root, quick=True)
    if report.problems:
        raise DatasetNotFoundError(
            f"{args.dataset}: {report.problems[0]} (`python -m microclip check-data "
            f"{args.dataset} --data_root {args.data_root}` shows everything)"
        )


def set_pixel_stats(model, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """--image_mean / --image_std: the pixel statistics the model normalises its [0, 1] input with."""
    with torch.no_grad():
        if mean is not None:
            model.backbone.pixel_mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
        if std is not None:
            model.backbone.pixel_std.copy_(torch.tensor(std).view(1, 3, 1, 1))


class StdoutLog(logging.FileHandler):
    """The run's log lines also in ``<output_dir>/stdout_log.txt`` (the reference tees its stdout there).

    Appended line by line, as a log is: a crash keeps what was written (so not an atomic write)."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(output_dir / "stdout_log.txt", encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))


def per_class_table(per_class: dict[str, float | None], columns: int = 3) -> str:
    """Per-class accuracy as a fixed-width table, a few classes per line."""
    cells = [f"{name[:28]:28s} {_fmt(value):>7s}" for name, value in per_class.items()]
    return "\n".join("  ".join(cells[i : i + columns]) for i in range(0, len(cells), columns))


class EpochReport(Callback):
    """After each epoch: the classes its labels never named, and after its test evaluation the accuracy line, the
    per-class table and the peak GPU memory."""

    def on_epoch_end(self, state: FitState, metrics: dict) -> None:
        if not state.is_main:
            return
        # label-free, so seen on any data set: such a class gets no pull from the cross-entropy, only from fairness
        unnamed = [c for c, n in metrics.get("train_labels_per_class", {}).items() if n == 0]
        if unnamed:
            log.warning(
                "epoch %d: self-training's labels named no training image as %s", metrics["epoch"], ", ".join(unnamed)
            )
        if metrics.get("test_per_class"):
            log.info(
                "epoch %d: accuracy on the %d test images %s; per class:\n%s",
                metrics["epoch"],
                metrics.get("test_n", 0),
                _fmt(metrics.get("test_acc")),
                per_class_table(metrics["test_per_class"]),
            )
        if "gpu_peak_mb" in metrics:
            log.info("epoch %d: peak GPU memory %.0f MiB", metrics["epoch"], metrics["gpu_peak_mb"])


# ------------------------------------------------------------------ train


def train(argv: Sequence[str] | None = None, plot: Callable[[list[dict], Path], None] | None = None) -> int:
    return run_train(build_train_parser().parse_args(argv), plot)


def run_train(args: argparse.Namespace, plot: Callable[[list[dict], Path], None] | None = None) -> int:
    """``train`` with parsed arguments."""
    rank, world = distributed_context()
    setup_logging(args.verbose, rank)
    try:
        status = _train_seeds(args, plot, rank, world) if args.seeds else _train(args, plot, rank, world)
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2
    finally:
        _detach_stdout_logs()
    end_distributed()
    return status


def _detach_stdout_logs() -> None:
    for handler in [h for h in log.handlers if isinstance(h, StdoutLog)]:
        log.removeHandler(handler)
        handler.close()


def _train_seeds(args: argparse.Namespace, plot, rank: int, world: int) -> int:
    """--seeds: one run per seed in ``<dir>/seed-<S>`` (each exactly the run ``--seed S`` makes), then their spread."""
    base = _seeds_folder(args)
    folders = {seed: base / f"seed-{seed}" for seed in args.seeds}
    for index, (seed, folder) in enumerate(folders.items(), 1):
        if args.resume is not None and (folder / "metrics.json").is_file():  # written last: that run finished
            log.info("seed %d (%d of %d): finished earlier, kept (%s)", seed, index, len(folders), folder)
            continue
        killed = args.resume is not None and (folder / "train_state.safetensors").is_file()
        log.info("seed %d (%d of %d): %s %s", seed, index, len(folders), "resumed in" if killed else "into", folder)
        changed = {"seed": seed, "seeds": None, "output_dir": str(folder), "resume": str(folder) if killed else None}
        status = _train(argparse.Namespace(**{**vars(args), **changed}), plot, rank, world)
        _detach_stdout_logs()  # the next seed's lines go to its own stdout_log.txt only
        if status:
            return status
    if rank == 0:
        runs = [
            {"seed": seed, "output_dir": str(folder), **_read_json(folder / "metrics.json", "a seed's metrics")}
            for seed, folder in folders.items()
        ]
        summary = {"mode": "ours_train_spread", "dataset": args.dataset, "seeds": list(folders), "runs": runs}
        summary["spread"] = _summarise(runs, "runs, test split")
        if all("val_acc_fused" in run for run in runs):
            validation = [{f"acc_{b}": run.get(f"val_acc_{b}") for b in BRANCH_LABELS} for run in runs]
            summary["val_spread"] = _summarise(validation, "runs, validation split")
        atomic_write_json(base / "metrics.json", summary)
        log.info("the %d seeds' runs and their spread: %s", len(folders), base / "metrics.json")
    return 0


def _seeds_folder(args: argparse.Namespace) -> Path:
    """Where --seeds puts its runs; its flags checked first, before anything is trained."""
    seeds = args.seeds
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds: give distinct seeds of 0 or more (got {' '.join(map(str, seeds))})")
    if args.eval or args.start_epoch or args.seed:
        raise ValueError("--seeds trains one run per seed; it does not combine with --seed, --eval or --start_epoch")
    if args.resume is not None:
        if Path(args.resume).suffix in {".pth", ".pt"} or not (args.resume or args.output_dir):
            raise ValueError("--seeds --resume: name the seeds' folder (--resume DIR or --output_dir DIR)")
        base = Path(args.resume or args.output_dir)
        if not base.is_dir():  # a typo would otherwise start every seed afresh
            raise FileNotFoundError(f"--seeds --resume: no folder '{base}'")
        return base
    if args.output_dir:
        return Path(args.output_dir)
    config = _recipe(args, Recipe.for_dataset(args.dataset))
    default = _default_output_dir(args, config, resolve_base(args, load_train_config(args.train_config))[0])
    return default.with_name(default.name + "_seeds")


def _train(args: argparse.Namespace, plot, rank: int, world: int) -> int:
    train_cfg = load_train_config(args.train_config)
    config = _recipe(args, Recipe.for_dataset(args.dataset))
    device = select_device(args.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    clip_model, pretrained = resolve_base(args, train_cfg)

    output_dir, reference_run = _output_and_reference(args, config, clip_model)
    _check_data_fast(args)  # a bad layout fails here, in seconds, before the model loads
    run = _prepare(args, train_cfg, config, (clip_model, pretrained), device)
    set_pixel_stats(run.model, args.image_mean, args.image_std)

    output_dir.mkdir(parents=True, exist_ok=True)  # only now: bad data or descriptions leave nothing behind
    if rank == 0:
        atomic_write_json(output_dir / "args.json", json.loads(json.dumps(vars(args), default=str)))
        log.addHandler(StdoutLog(output_dir))
    initial = None
    if run.test_set is not None and rank == 0 and args.resume is None:
        result = run.evaluate()
        # The reference's epoch-0 (zero-shot) acc is [CLS]-only (its cupl_eval); fused is acc_fused.
        initial = {
            "epoch": 0,
            **{f"test_{k}": v for k, v in result.summary(ZERO_SHOT_BRANCH).items()},
            **per_class_test_fields(result, config.reported_branch),
        }
        if (validation := run.evaluate_validation()) is not None:
            initial.update(validation_fields(validation, ZERO_SHOT_BRANCH))
        if args.eval:
            return _report_initial(args, output_dir, result)
        log.info(
            "zero-shot (initial W*): top-1 %s ([CLS]; fused %s)",
            _fmt(result.accuracy(ZERO_SHOT_BRANCH)),
            _fmt(result.accuracy("fused")),
        )
    elif args.resume is not None:
        initial = _logged_initial(output_dir)

    callbacks: list[Callback] = [ProgressBar(args.no_progress), JsonlLog(output_dir / "log.jsonl", initial)]
    if plot is not None:
        callbacks.append(EpochHook(plot, output_dir, initial))
    callbacks.append(EpochReport())
    if args.keep_epochs:
        callbacks.append(EpochCheckpoints(run, output_dir / EPOCHS_FOLDER, initial))
    start_epoch = args.start_epoch or (reference_run.start_epoch if reference_run is not None else 0)
    result = run.fit(
        callbacks,
        state_path=output_dir / "train_state.safetensors",
        resume=args.resume is not None,
        start_epoch=start_epoch,
        restore=_restorer(reference_run),
        shift_each_epoch=args.keep_epochs,  # each saved epoch carries its own shift
    )
    if rank != 0:
        return 0
    return _finish(args, config, run, result, initial, output_dir)


def _validation_data(args: argparse.Namespace, classes: list[str]) -> ImageDataset | None:
    """--val_dataset, read as evaluate.py reads --dataset; a folder missing one of ``classes`` is an error here."""
    if args.val_dataset is None:
        return None
    try:
        data = build_dataset(
            args.val_dataset, "test", root=args.data_root, classnames=classes, protocol=args.data_split
        )
    except (ValueError, FileNotFoundError) as error:  # the data layer's errors; say which of the run's data sets
        raise type(error)(f"--val_dataset: {error} (the training data's classes: {', '.join(classes)})") from None
    return data  # build_dataset has paired its classes with ``classes``, or raised


def _prepare(args: argparse.Namespace, train_cfg: dict, config: Recipe, base: tuple[str, str | None], device):
    """The run's data, text sources and model (``adapt.prepare``), logged in two lines."""
    templates = read_templates(args, train_cfg)  # before the data: a missing file should not wait for a download
    args.eval_crop = args.eval_crop or train_cfg.get("eval_crop") or "center"  # recorded in args.json as used
    classnames = read_classnames(args.classname, Path(args.dataset).name) if args.classname else None
    train_base, test_base = _datasets(args, classnames)
    if config.mode == "fully_supervised" and not train_base.has_labels:
        raise ValueError(f"--fully_supervised needs labels, but {args.dataset} is unlabelled")
    run = prepare(
        train_base,
        config,
        base,
        templates,
        read_descriptions(args, train_cfg, list(train_base.classes)),
        method_config(args),
        test_data=test_base,
        val_data=_validation_data(args, list(train_base.classes)),
        use_handcrafted=bool(train_cfg.get("use_handcrafted", False)) or args.zero_shot == "templates",
        base_seed=args.seed,
        eval_crop=args.eval_crop,
        device=device,
        provenance={
            "dataset": args.dataset,
            "train_config": args.train_config,
            "command": " ".join(sys.argv),
            "seed": args.seed,
        },
    )
    log.info(
        "%s: %d train images, %d test images, %d classes; base %s; mode %s",
        args.dataset,
        len(run.train_set),
        len(run.test_set) if run.test_set else 0,
        len(run.classes),
        run.model.base.describe(),
        config.mode,
    )
    trainable = run.model.trainable_parameters()
    log.info("trainable parameters: %d", sum(p.numel() for p in trainable.values()))
    if run.model.config.pool != "attention":  # the reference lists them too; say that they cannot move
        unused = sum(p.numel() for name, p in trainable.items() if name.startswith("soap.") and "null" not in name)
        log.info("  of which %d are SOAP's projections, which a plain-mean pooling never reads", unused)
    return run


def _output_and_reference(args: argparse.Namespace, config: Recipe, clip_model: str):
    """The run's output folder, and the reference checkpoint ``--resume`` names (None for our own runs)."""
    reference_run = None
    if args.resume and Path(args.resume).suffix in {".pth", ".pt"}:  # a reference run's checkpoint-last.pth
        reference_run = read_reference_resume(args.resume)
        args.resume = None  # a new output dir; the file fills the model and optimiser
    if args.resume is None:
        return (
            Path(args.output_dir) if args.output_dir else _default_output_dir(args, config, clip_model)
        ), reference_run
    output_dir = Path(args.resume or args.output_dir or "")
    if not (output_dir / "train_state.safetensors").is_file():
        raise FileNotFoundError(
            f"--resume: no train_state.safetensors in '{output_dir}' (or pass a reference checkpoint-last.pth)"
        )
    return output_dir, reference_run


def _logged_initial(output_dir: Path) -> dict | None:
    """The epoch-0 row of a resumed run's log, if it has one."""
    if not (output_dir / "log.jsonl").is_file():
        return None
    first = (output_dir / "log.jsonl").read_text().splitlines()[:1]
    return json.loads(first[0]) if first and json.loads(first[0]).get("epoch") == 0 else None


def _restorer(reference_run):
    """What fills the model and optimiser from a reference checkpoint before training (None without one)."""
    if reference_run is None:
        return None

    def restore(model, stepper) -> None:
        for note in reference_run.restore(model, stepper):
            log.info("--resume %s: %s", reference_run.path.name, note)

    return restore


def _finish(args: argparse.Namespace, config: Recipe, run, result, initial: dict | None, output_dir: Path) -> int:
    """metrics.json and the adapted checkpoint of a finished run."""
    peaks = [row["gpu_peak_mb"] for row in result.history if "gpu_peak_mb" in row]
    if peaks:
        log.info("peak GPU memory per epoch: mean %.0f MiB, max %.0f MiB", sum(peaks) / len(peaks), max(peaks))
    final = result.history[-1] if result.history else {}
    metrics = {
        "mode": config.mode,
        "dataset": args.dataset,
        "num_train": len(run.train_set),
        "num_test": len(run.test_set) if run.test_set else 0,
        "zero_shot_acc": (initial or {}).get("test_acc"),
        "acc": final.get("test_acc"),
        "acc_branch": config.reported_branch,
        "acc_fused": final.get("test_acc_fused"),
        "acc_cls": final.get("test_acc_cls"),
        "acc_fg": final.get("test_acc_fg"),
        **{f"acc_{b}": final[f"test_acc_{b}"] for b in UNSHIFTED_BRANCHES if f"test_acc_{b}" in final},
        "mean_per_class": final.get("test_mean_per_class"),
        **{key: value for key, value in final.items() if key.startswith("val_")},
        "epochs": len(result.history),
        "steps": result.global_step,
        "stopped": result.stopped,
        "train_seconds": result.seconds,
        "eval_crop": args.eval_crop,
        "data_split": args.data_split,
    }
    drift = run.measure_drift()
    if drift:
        log.info(
            "[FG]'s shared shift after self-training: length %.3f, on %d training images (no labels; explanations "
            "show [FG] with and without it)",
            float(run.model.fg_shift.norm()),
            drift["images"],
        )
    meta = run.checkpoint_meta(result, metrics=metrics, drift=drift)
    save_adapted(output_dir / "checkpoint.safetensors", run.model.adapted_state(), meta)
    atomic_write_json(output_dir / "metrics.json", metrics)
    log.info(
        "done: test top-1 %s (zero-shot %s)%s; checkpoint %s",
        _fmt(metrics["acc"]),
        _fmt(metrics["zero_shot_acc"]),
        f"; validation top-1 {_fmt(metrics['val_acc'])}" if "val_acc" in metrics else "",
        output_dir / "checkpoint.safetensors",
    )
    return 0


def _report_initial(args: argparse.Namespace, output_dir: Path, result) -> int:
    """--eval: zero-shot numbers of the initial W* (descriptions), or of t_c with --zero_shot templates."""
    metrics = {
        "mode": f"zero_shot_{args.zero_shot or 'descriptions'}",
        "dataset": args.dataset,
        **result.summary(ZERO_SHOT_BRANCH),
        "acc_branch": ZERO_SHOT_BRANCH,
    }
    atomic_write_json(output_dir / "metrics.json", metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


# ------------------------------------------------------------------ evaluate


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    return run_evaluate(build_evaluate_parser().parse_args(argv))


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate`` with parsed arguments."""
    return _reporting_user_errors(_evaluate, args)


def _reporting_user_errors(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a read-only command: a user's mistake (bad file, data, flag) is one logged line and exit code 2."""
    setup_logging(args.verbose)
    try:
        return command(args)
    except USER_ERRORS as error:
        log.error("%s", error)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    paths, against = [Path(path) for path in args.ckpt_path], [Path(path) for path in args.against or []]
    out = _evaluation_folder(args)
    missing = [str(path) for path in [*paths, *against] if not path.is_file()]
    if missing:  # before any scoring: a typo in the fifth path should not cost four evaluations
        raise FileNotFoundError(f"no such checkpoint: {', '.join(missing)}")
    if against and len(against) != len(paths):
        raise ValueError(
            f"--against names {len(against)} checkpoint(s) for --ckpt-path's {len(paths)}: they are compared pair "
            "by pair (e.g. seed by seed), so give as many, in the same order"
        )
    if len(paths) == 1 and not against:
        _evaluate_one(args, paths[0], device, out)
        return 0
    runs = _evaluate_each(args, paths, device, out, "")
    summary = {
        "mode": "ours_eval_spread",
        "dataset": args.dataset,
        "runs": runs,
        "spread": _summarise(runs, "checkpoints"),
    }
    if against:
        others = _evaluate_each(args, against, device, out, "against-")
        summary |= {
            "against": others,
            "against_spread": _summarise(others, "--against checkpoints"),
            "difference": _paired_differences(runs, others),
        }
    if out:
        atomic_write_json(out / "metrics.json", summary)
    return 0


def _evaluate_each(
    args: argparse.Namespace, paths: list[Path], device: torch.device, out: Path | None, prefix: str
) -> list[dict]:
    """Score checkpoints in turn, each as it would be alone (its JSON in ``out/<prefix><index>``)."""
    return [
        _evaluate_one(args, ckpt, device, out / f"{prefix}{index}" if out else None) for index, ckpt in enumerate(paths)
    ]


def _summarise(runs: list[dict], what: str) -> dict:
    """Print and return each branch's mean, spread and range over ``runs``."""
    spreads = {
        branch: Spread.of([run[f"acc_{branch}"] for run in runs])
        for branch in BRANCH_LABELS
        if all(run[f"acc_{branch}"] is not None for run in runs)
    }
    swept = {
        ratio: Spread.of([run["fused_by_fusion_ratio"][ratio] for run in runs])
        for ratio in runs[0].get("fused_by_fusion_ratio", {})
        if all(run["fused_by_fusion_ratio"][ratio] is not None for run in runs)
    }
    print(f"over the {len(runs)} {what}:")
    for branch, spread in spreads.items():
        print(f"  {BRANCH_LABELS[branch]:12s} top-1 {spread.describe()}")
    for ratio, spread in swept.items():
        print(f"  {BRANCH_LABELS['fused']} at ρ = {ratio}: top-1 {spread.describe()}")
    summary = {branch: spread.as_dict() for branch, spread in spreads.items()}
    return summary | ({"fused_by_fusion_ratio": {r: s.as_dict() for r, s in swept.items()}} if swept else {})


def _paired_differences(runs: list[dict], others: list[dict]) -> dict:
    """Print and return, per branch, --ckpt-path minus --against pair by pair: a recipe judged against another on
    the same seeds, whose shared luck then cancels (docs/toyworld.md, round 38)."""
    print("--ckpt-path minus --against, pair by pair:")
    differences = {}
    for branch, label in BRANCH_LABELS.items():
        key = f"acc_{branch}"
        if any(run[key] is None for run in [*runs, *others]):
            continue
        values = [run[key] - other[key] for run, other in zip(runs, others)]
        ahead, behind = sum(v > 0 for v in values), sum(v < 0 for v in values)
        spread = Spread.of(values)
        print(f"  {label:12s} {spread.describe(points=True)}; ahead on {ahead}, behind on {behind} of {len(values)}")
        differences[branch] = {**spread.as_dict(), "ahead": ahead, "behind": behind, "pairs": values}
    return differences


def _evaluation_folder(args: argparse.Namespace) -> Path | None:
    """Where evaluate writes its JSON: --output_dir, or the reference's output/<dataset>/eval/<ablation_name>."""
    if args.output_dir:
        return Path(args.output_dir)
    return Path("output") / Path(args.dataset).name / "eval" / args.ablation_name if args.ablation_name else None


def _evaluate_one(args: argparse.Namespace, ckpt: Path, device: torch.device, out: Path | None) -> dict:
    """Score one checkpoint, print its accuracies and return (and with ``out``, write) its metrics."""
    model, dataset, crop = _model_and_data(args, ckpt, device)
    if args.fusion_ratio is not None:
        model.config.fusion_ratio = args.fusion_ratio
    set_pixel_stats(model, args.image_mean, args.image_std)
    size = args.input_size or model.backbone.image_size
    test_set = SeededDataset(dataset, test_transform(size, crop=crop), seed=args.seed)
    started = time.perf_counter()
    # the flags are a recipe's test settings: evaluate exactly as a training run's test evaluations do
    settings = Recipe(
        eval_batch_size=args.batch_size, amp=args.amp, num_workers=args.num_workers, test_fusion=args.test_fusion
    )
    result = evaluate_as(model, test_set, settings, device, sweep=args.fusion_sweep)
    elapsed = time.perf_counter() - started
    print(f"{args.dataset} ({result.n} images, {crop} crop) with {ckpt.name}:")
    for branch, label in BRANCH_LABELS.items():
        print(f"  {label:12s} top-1 {_fmt(result.accuracy(branch))}")
    if "fg_unshifted" in result.predictions:  # the run recorded [FG]'s shared shift
        print(f"  {BRANCH_LABELS['fg']} without its shared shift: top-1 {_fmt(result.accuracy('fg_unshifted'))}")
        print(f"  {BRANCH_LABELS['fused']} without the shift's part: top-1 {_fmt(result.accuracy('fused_unshifted'))}")
    swept = {f"{ratio:g}": result.accuracy(sweep_branch(ratio)) for ratio in args.fusion_sweep}
    for ratio, accuracy in swept.items():
        print(f"  {BRANCH_LABELS['fused']} at ρ = {ratio}: top-1 {_fmt(accuracy)}")
    per_class, confused, lead = result.per_class_accuracy(), result.commonest_wrong(), result.per_class_lead()
    if args.show_per_class and per_class:
        for name, value in per_class.items():
            other = confused.get(name)
            ahead = f"   lead {lead[name]:+.2f}" if lead.get(name) is not None else ""
            mistaken = f"   most often mistaken for {other[0]} ({other[1]:.0f}%)" if other else ""
            print(f"    {name:40s} {_fmt(value)}{ahead}{mistaken}")
        print(f"  mean per-class accuracy {_fmt(result.mean_per_class())}")
    meta = getattr(model, "meta", None)
    reported = reported_branch(None if meta is None else meta.mode)  # as the run that made it reported
    metrics = {
        "mode": "ours_eval",
        "dataset": args.dataset,
        "num_samples": result.n,
        **result.summary(reported),
        **({"fused_by_fusion_ratio": swept} if swept else {}),
        "ckpt_path": str(ckpt),
        "eval_seconds": elapsed,
        "eval_crop": crop,
        "timestamp": datetime.now().isoformat(timespec="seconds"),
    }
    if args.show_harmonic_mean and per_class:
        values = [v for v in per_class.values() if v is not None]
        metrics["hmean"] = 0.0 if min(values) == 0 else len(values) / sum(1.0 / v for v in values)
        print(f"  harmonic mean per-class accuracy {_fmt(metrics['hmean'])}")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "metrics.json", metrics)
        if per_class:
            atomic_write_json(out / "per_class.json", per_class)
            atomic_write_json(out / "confused_with.json", confused)
            atomic_write_json(out / "lead.json", lead)
    return metrics


def run_drift(args: argparse.Namespace) -> int:
    """``drift`` with parsed arguments."""
    return _reporting_user_errors(_drift, args)


def _drift(args: argparse.Namespace) -> int:
    from microclip.checkpoint import load_start_model, read_adapted

    ckpt = Path(args.ckpt_path)
    if ckpt.suffix != ".safetensors":
        raise ValueError(f"{ckpt}: drift reads microCLIP .safetensors checkpoints (a reference .pth has no base)")
    device = select_device(args.device)
    model, dataset, _crop = _model_and_data(args, ckpt, device)
    start = load_start_model(ckpt, device).adapted_state()
    images = SeededDataset(dataset, test_transform(model.backbone.image_size, crop="center"), seed=args.seed)
    probe = ShiftProbe(start, images, args.batch_size)
    shift, n_images = probe.measure(model), probe.n_images
    model.fg_shift = shift
    part = shift_class_logits(model).detach().cpu()
    order = part.argsort(descending=True).tolist()
    print(f"{ckpt.name}: [FG]'s shared shift, measured on {n_images} {args.split} images of {args.dataset}")
    print(f"  length {float(shift.norm()):.4f} (each image's [FG] has length 1)")
    print("  what it adds to each class's [FG] logit (100 × s · Ŵ*), on every image alike:")
    for index in order:
        print(f"    {model.classes[index]:40s} {float(part[index]):+8.3f}")
    if model.config.pool == "attention" and model.config.train_soap:
        route = probe.value_route(model, shift)
        print(
            "  SOAP's value map W_v: its change on m, the token every image shares, adds one vector to every image "
            f"(a bias); that part is {100 * route.mean_part_share:.0f}% of its change\n"
            f"    the shift with only that part of W_v's change: length {route.through_mean:.4f}; "
            f"without it: {route.without_mean:.4f}"
            + ("" if model.config.centre_values else " (train.py --centre_values takes that part away)")
        )
    if args.write:
        tensors, meta = read_adapted(ckpt)
        meta.drift = {**shift_record(shift, n_images), "split": args.split, "dataset": args.dataset}
        save_adapted(ckpt, tensors, meta)  # the same tensors; atomic, so a killed write leaves the old file
        print(f"  written into {ckpt} (its tensors unchanged)")
    return 0


def _model_and_data(args: argparse.Namespace, ckpt: Path, device: torch.device) -> tuple[MicroCLIP, ImageDataset, str]:
    """The checkpoint's model, the test data and the test crop: ``args.eval_crop``, else the one the checkpoint
    records (several checkpoints in one call may record different ones)."""
    from microclip.checkpoint import load_model, load_reference_model

    classnames = read_classnames(args.classname, Path(args.dataset).name) if args.classname else None

    def data(names: list[str] | None) -> ImageDataset:
        return build_dataset(
            args.dataset,
            args.split,
            root=args.data_root,
            download=args.download,
            classnames=names,
            protocol=args.data_split,
        )

    if ckpt.suffix in {".pth", ".pt"}:
        dataset = data(classnames)
        model = load_reference_model(ckpt, args.clip_model or "ViT-B/32", dataset.classes, device)
        recorded = load_train_config(args.train_config).get("eval_crop")  # a reference checkpoint: its protocol
    else:
        model = load_model(ckpt, device)
        dataset = data(classnames or list(model.classes))
        check_compatible(model.meta, model.base, dataset.classes, str(ckpt))
        recorded = (model.meta.metrics or {}).get("eval_crop")  # the crop its recorded accuracy used
    return model, dataset, args.eval_crop or recorded or "center"
