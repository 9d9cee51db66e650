"""Adapted checkpoints: one ``.safetensors`` file with only the adapted tensors and JSON metadata.

Nothing here unpickles arbitrary objects. The reference's ``checkpoint-last.pth`` is read with
``torch.load(weights_only=True)`` and ``argparse.Namespace`` allow-listed for its ``args``.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from microclip.backbone import BaseModelSpec
from microclip.files import atomic_write, parse_json
from microclip.labeling import Debiasing

FORMAT = "microclip-adapted"
FORMAT_VERSION = 1
_METADATA_KEY = "microclip"


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not fit; the message says why."""


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself (stored as JSON in the safetensors header)."""

    base: BaseModelSpec
    classes: list[str]
    method: dict = field(default_factory=dict)  # MethodConfig.to_dict()
    training: dict = field(default_factory=dict)  # how it was adapted: config, data, command
    metrics: dict = field(default_factory=dict)
    templates: list[str] = field(default_factory=list)
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    # label-free, measured as the run ended (microclip.drift.ShiftProbe): "fg_shift", the (E,) shift every image's
    # [FG] token took on, and "images", how many training images it was measured on; empty for older checkpoints
    drift: dict = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """How the run labelled its images (``Recipe.mode``): "microclip" (DKA's pseudo-labels), a baseline's, or
        "fully_supervised" (the true labels); "microclip" where a checkpoint does not say."""
        return str((self.training.get("config") or {}).get("mode") or "microclip")

    @property
    def debiasing(self) -> Debiasing:
        """How the run's labels had a running class marginal taken out (``Recipe.debiasing``, not the reference's);
        strength 0 (the reference's plain argmax) where a checkpoint does not say."""
        return Debiasing.of(self.training.get("config") or {})

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "base": self.base.to_dict(),
                "classes": self.classes,
                "method": self.method,
                "training": self.training,
                "metrics": self.metrics,
                "templates": self.templates,
                "descriptions": self.descriptions,
                **({"drift": self.drift} if self.drift else {}),
            }
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> CheckpointMeta:
        data = parse_json(text, f"{source}: metadata", CheckpointError)
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a microCLIP checkpoint (format {data.get('format')!r})")
        if data.get("version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{source}: written by a newer microCLIP (format version {data['version']})")
        return cls(
            base=BaseModelSpec.from_dict(data["base"]),
            classes=list(data["classes"]),
            method=data.get("method", {}),
            training=data.get("training", {}),
            metrics=data.get("metrics", {}),
            templates=data.get("templates", []),
            descriptions=data.get("descriptions", {}),
            drift=data.get("drift", {}),
        )


def atomic_save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (see :func:`microclip.files.atomic_write`)."""
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata() or {}
            tensors = {key: reader.get_tensor(key) for key in reader.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:1] == b"\x80" or head == b"PK":
            raise CheckpointError(
                f"{path}: this is a pickle / torch .pth file, not safetensors; refused, because "
                "unpickling can run code (a reference checkpoint-last.pth is read by "
                "evaluate.py --ckpt-path)"
            ) from None
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    return tensors, metadata


def save_adapted(path: str | Path, state: dict[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    """Save an adapted model (``MicroCLIP.adapted_state()``) with its metadata, atomically."""
    atomic_save_tensors(path, state, {_METADATA_KEY: meta.to_json()})
    return Path(path)


EPOCHS_FOLDER = "epochs"  # train.py --keep_epochs: RUN/epochs/epoch-N.safetensors beside RUN/checkpoint.safetensors


def epoch_file(folder: str | Path, epoch: int) -> Path:
    """Where ``train.py --keep_epochs`` saves the model after ``epoch`` (as numbered in log.jsonl; 0 the start)."""
    return Path(folder) / f"epoch-{epoch}.safetensors"


def saved_epochs(folder: str | Path) -> list[tuple[int, Path]]:
    """The ``epoch-N.safetensors`` files in ``folder``, by epoch (an empty list when there are none).

    Other files are ignored: a name must be exactly ``epoch-<digits>.safetensors`` (``epoch-3.tmp`` left by a
    killed save, or a hand-made ``epoch-best``, is not an epoch)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("epoch-*.safetensors"):
        number = path.name.removeprefix("epoch-").removesuffix(".safetensors")
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


def epochs_beside(checkpoint: str | Path) -> list[tuple[int, Path]]:
    """The epochs saved with a checkpoint: ``epochs/`` beside a run's ``checkpoint.safetensors`` (train.py's
    layout), else ``<name>-epochs/`` beside any other ``<name>.safetensors`` (how the bundled model ships them)."""
    checkpoint = Path(checkpoint)
    if checkpoint.name == "checkpoint.safetensors":
        return saved_epochs(checkpoint.parent / EPOCHS_FOLDER)
    return saved_epochs(checkpoint.with_name(f"{checkpoint.stem}-{EPOCHS_FOLDER}"))


def read_adapted(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    tensors, metadata = read_tensors(path)
    return tensors, _meta_of(metadata, path)


def read_meta(path: str | Path) -> CheckpointMeta:
    """An adapted checkpoint's metadata from its header alone (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return read_adapted(path)[1]  # the whole read says what is wrong with the file (a pickle, no file, ...)
    return _meta_of(metadata, path)


def _meta_of(metadata: dict[str, str], path: str | Path) -> CheckpointMeta:
    if _METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path}: a safetensors file without microCLIP metadata (is it a base model's "
            "weights? pass it with --pretrained instead)"
        )
    return CheckpointMeta.from_json(metadata[_METADATA_KEY], str(path))


def check_compatible(meta: CheckpointMeta, base: BaseModelSpec, classes: Sequence[str] | None, source: str) -> None:
    """Fail clearly when a checkpoint was adapted from another base model or for other classes.

    Two ``local-dir:`` folders whose weights hash alike are one base, wherever each lies: a folder is recorded
    relative to the project only when it is inside it, so the same folder reached from another clone, a worktree or
    an absolute path is spelt differently."""
    folders = all(spec.clip_model.startswith("local-dir:") and spec.weights_sha256 for spec in (meta.base, base))
    if meta.base.clip_model != base.clip_model and not folders:
        raise CheckpointError(f"{source} was adapted from {meta.base.describe()}, not {base.describe()}")
    if meta.base.weights_sha256 and base.weights_sha256 and meta.base.weights_sha256 != base.weights_sha256:
        raise CheckpointError(
            f"{source} was adapted from weights with sha256 {meta.base.weights_sha256[:12]}..., "
            f"but {base.describe()} has {base.weights_sha256[:12]}..."
        )
    if not meta.base.weights_sha256 and meta.base.pretrained != base.pretrained:
        raise CheckpointError(f"{source} was adapted from {meta.base.describe()}, not {base.describe()}")
    if classes is not None and list(classes) != list(meta.classes):
        extra = [c for c in classes if c not in meta.classes][:3]
        raise CheckpointError(
            f"{source} has {len(meta.classes)} classes that differ from the data set's "
            f"{len(classes)} (e.g. {extra or 'a different order'})"
        )


# ------------------------------------------------------------------ reference .pth import


def _reference_key_map(key: str) -> str | None:
    """Reference state-dict name → our adapted-state name (None: not adapted, or unused)."""
    if key.startswith("zs_encoder."):
        return None
    if key.startswith("clip_model.visual."):
        return "backbone.visual." + key[len("clip_model.visual.") :]
    renames = {
        "classifier": "heads.w_star",
        "query_proj.linear.weight": "soap.query_proj.weight",
        "key_proj.linear.weight": "soap.key_proj.weight",
        "value_proj.linear.weight": "soap.value_proj.weight",
        "unr_token": "soap.null_token",
    }
    return renames.get(key)


def read_reference_checkpoint(path: str | Path) -> dict:
    """The reference's ``checkpoint-last.pth`` dict (model, optimizer, epoch, scaler, args), read with
    ``weights_only=True``: tensors and plain containers only, ``argparse.Namespace`` allow-listed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch zip checkpoint")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a refused or corrupt pickle
        raise CheckpointError(f"{path}: refused or unreadable with weights_only=True ({error})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path}: expected the reference's dict with a 'model' state dict")
    return checkpoint


def read_reference_pth(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a reference ``checkpoint-last.pth`` without executing code.

    Returns (state with our names: the visual tower's tensors under ``backbone.visual.*``, W*,
    SOAP projections, optional null token) and the reference's args as a plain dict.
    """
    return _reference_state(read_reference_checkpoint(path), Path(path))


def _reference_state(checkpoint: dict, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    state = {}
    for key, tensor in checkpoint["model"].items():
        ours = _reference_key_map(key)
        if ours is not None and isinstance(tensor, torch.Tensor):
            state[ours] = tensor.float()
    if "heads.w_star" not in state:
        raise CheckpointError(f"{path}: no 'classifier' (W*) tensor; is this a microCLIP checkpoint?")
    args = checkpoint.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    return state, args


# ------------------------------------------------------------------ model loading


def load_model(path: str | Path, device: str | torch.device = "cpu", base: BaseModelSpec | None = None):
    """Rebuild a ``MicroCLIP`` from an adapted checkpoint: base model from the metadata, then its tensors.

    ``base`` (optional) is the base model the caller expects; a mismatch is a clear error.
    """
    tensors, meta = read_adapted(path)
    if base is not None:
        check_compatible(meta, base, None, str(path))
    model = _base_model(tensors, meta, device, str(path))
    model.load_adapted_state(tensors)
    model.fg_shift = stored_fg_shift(meta, model.heads.w_star.shape[1], str(path))
    return model.to(device).eval()


def load_start_model(path: str | Path, device: str | torch.device = "cpu"):
    """The model as the checkpoint's run started: its base model's LayerNorms and SOAP at identity, as
    ``adapt.prepare`` builds them, with the file's heads (W* plays no part in `[FG]`, and the start's W* is not
    recorded). What :class:`microclip.drift.ShiftProbe` measures a run's shift from, for runs that did not.
    A ``centre_values`` run's centre is fixed before training, so the start has the file's."""
    tensors, meta = read_adapted(path)
    model = _base_model(tensors, meta, device, str(path))
    if model.config.centre_values:
        if "soap.value_centre" not in tensors:
            raise CheckpointError(f"{path}: its method centres SOAP's values, but it has no soap.value_centre tensor")
        with torch.no_grad():
            model.soap.value_centre.copy_(tensors["soap.value_centre"])
    return model.to(device).eval()


def _base_model(tensors: dict[str, torch.Tensor], meta: CheckpointMeta, device, source: str):
    from microclip.backbone import Backbone, create_clip
    from microclip.heads import Heads
    from microclip.model import MethodConfig, MicroCLIP

    clip, spec = create_clip(
        meta.base.clip_model, meta.base.pretrained or None, seed=meta.base.seed or 0, device=device
    )
    check_compatible(meta, spec, None, source)
    heads = Heads(meta.classes, tensors["heads.w_llm"], tensors["heads.w_star"])
    model = MicroCLIP(Backbone(clip.visual), heads, MethodConfig.from_dict(meta.method), spec)
    model.meta = meta
    return model


def stored_fg_shift(meta: CheckpointMeta, embed_dim: int, source: str) -> torch.Tensor | None:
    """The run's shared `[FG]` shift from the metadata (None when it was not measured); one that is not a vector
    of ``embed_dim`` numbers is a ``CheckpointError`` naming ``source``."""
    if "fg_shift" not in meta.drift:
        return None
    try:
        shift = torch.tensor(meta.drift["fg_shift"], dtype=torch.float32)
    except (TypeError, ValueError):
        shift = None
    if shift is None or shift.shape != (embed_dim,):
        raise CheckpointError(f"{source}: drift.fg_shift is not a list of {embed_dim} numbers")
    return shift


def load_reference_model(
    path: str | Path,
    clip_model: str = "ViT-B/32",
    classes: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
):
    """Build a ``MicroCLIP`` from a reference ``checkpoint-last.pth``.

    The reference saves the whole visual tower, so no base weights are downloaded: the
    architecture is built and every visual tensor comes from the file. W_LLM is not saved
    (the text tower was deleted), so it is set to Ŵ*; it plays no part at test time.
    """
    import open_clip

    from microclip.backbone import REFERENCE_MODEL_NAMES, Backbone, resolve_model_name
    from microclip.heads import Heads
    from microclip.model import MethodConfig, MicroCLIP

    state, args = read_reference_pth(path)
    clip_model = args.get("clip_model") or clip_model
    name, tag = resolve_model_name(clip_model, None)
    if clip_model not in REFERENCE_MODEL_NAMES and name not in open_clip.list_models():
        raise CheckpointError(f"{path}: unknown backbone {clip_model!r}; pass --clip_model")
    clip = open_clip.create_model(name, pretrained=None, device="cpu")
    visual_state = {k[len("backbone.visual.") :]: v for k, v in state.items() if k.startswith("backbone.visual.")}
    missing, unexpected = clip.visual.load_state_dict(visual_state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: visual tower does not fit {name}: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    w_star = state["heads.w_star"]
    if classes is not None and len(classes) != w_star.shape[0]:
        raise CheckpointError(f"{path}: W* has {w_star.shape[0]} classes, the data set {len(classes)}")
    names = list(classes) if classes is not None else [f"class {i}" for i in range(w_star.shape[0])]
    heads = Heads(names, torch.nn.functional.normalize(w_star, dim=-1), w_star)
    config = MethodConfig(fusion_ratio=float(args.get("fusion_ratio", 0.5)), learnable_null="soap.null_token" in state)
    model = MicroCLIP(Backbone(clip.visual), heads, config, BaseModelSpec(clip_model=name, pretrained=tag))
    own = model.adapted_state()
    model.load_adapted_state({k: state.get(k, own[k]) for k in own})
    return model.to(device).eval()


# ------------------------------------------------------------------ continuing a reference run


def _reference_trainable(key: str, wca_baseline: bool) -> bool:
    """The reference's train.py rule for which parameters train (its optimiser holds them in this order)."""
    if "zs" in key:
        return False
    if "ln" in key or "bn" in key or "classifier" in key:
        return True
    return not wca_baseline and any(part in key for part in ("unr_token", "query_proj", "key_proj", "value_proj"))


@dataclass
class ReferenceResume:
    """What a reference ``checkpoint-last.pth`` lets a run continue from, and what it could not restore."""

    path: Path
    state: dict[str, torch.Tensor]
    optimizer_state: dict[str, dict[str, torch.Tensor]]  # our parameter name -> AdamW state
    epoch: int | None  # the last finished epoch (0-based), as saved
    scaler: dict | None
    notes: list[str] = field(default_factory=list)

    @property
    def start_epoch(self) -> int:
        """The epoch to continue at (the reference's auto_load_model: saved epoch + 1)."""
        return 0 if self.epoch is None else self.epoch + 1

    def restore(self, model, stepper) -> list[str]:
        """Load the weights, the optimiser's moments and the GradScaler into ``model`` / ``stepper``; the notes
        say what could not be restored."""
        notes = list(self.notes)
        own = model.adapted_state()
        shapes = [k for k in own if k in self.state and self.state[k].shape != own[k].shape]
        if shapes:
            raise CheckpointError(
                f"{self.path}: tensors do not fit this model ({', '.join(shapes[:3])}: "
                f"{tuple(self.state[shapes[0]].shape)} vs {tuple(own[shapes[0]].shape)}); same "
                "data set and --clip_model as the reference run?"
            )
        absent = [k for k in own if k not in self.state and k != "heads.w_llm"]
        if absent:
            notes.append(f"not in the file, kept as built: {', '.join(absent[:4])}{' ...' if len(absent) > 4 else ''}")
        model.load_adapted_state({k: self.state.get(k, own[k]) for k in own})
        params = model.trainable_parameters()
        restored = 0
        for name, moments in self.optimizer_state.items():
            param = params.get(name)
            if param is not None and all(v.shape == param.shape for k, v in moments.items() if k != "step"):
                stepper.optimizer.state[param] = {k: v.to(param.device) for k, v in moments.items()}
                restored += 1
        if self.optimizer_state and restored < len(params):
            notes.append(f"optimiser moments restored for {restored} of {len(params)} trainable tensors")
        if self.scaler and stepper.scaler is not None:
            stepper.scaler.load_state_dict(self.scaler)
        elif self.scaler:
            notes.append("the file's GradScaler state is unused (this run has no --amp fp16)")
        return notes


def read_reference_resume(path: str | Path) -> ReferenceResume:
    """A reference run's ``checkpoint-last.pth`` as something :func:`microclip.engine.fit` can continue."""
    path = Path(path)
    checkpoint = read_reference_checkpoint(path)
    state, args = _reference_state(checkpoint, path)
    notes = [
        "W_LLM is not in the reference's file (its text tower is deleted): rebuilt from the descriptions",
        "the frozen visual weights come from the base model, not from the file",
    ]
    optimizer_state: dict[str, dict[str, torch.Tensor]] = {}
    optimizer = checkpoint.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict):
        wca = bool(args.get("wca_baseline", False))
        order = [
            k for k, v in checkpoint["model"].items() if isinstance(v, torch.Tensor) and _reference_trainable(k, wca)
        ]
        indices = [i for group in optimizer.get("param_groups", []) for i in group.get("params", [])]
        if len(indices) != len(order):
            notes.append(
                f"optimiser not restored: it holds {len(indices)} tensors, the model's trainable set {len(order)}"
            )
        else:
            for index, key in zip(indices, order):
                ours = _reference_key_map(key)
                moments = optimizer["state"].get(index)
                if ours is not None and isinstance(moments, dict):
                    optimizer_state[ours] = {
                        k: v.float() if k != "step" else v for k, v in moments.items() if isinstance(v, torch.Tensor)
                    }
    else:
        notes.append("no optimiser state in the file: AdamW starts fresh")
    epoch = checkpoint.get("epoch")
    if not isinstance(epoch, int):
        notes.append("no epoch in the file: starting at epoch 0 (pass --start_epoch)")
        epoch = None
    scaler = checkpoint.get("scaler") if isinstance(checkpoint.get("scaler"), dict) else None
    return ReferenceResume(path, state, optimizer_state, epoch, scaler, notes)
