"""The app's model registry: each model is loaded once and kept, not rebuilt per click.

Entries are adapted checkpoints (bundled, on disk, uploaded, or produced by an adaptation run) and
base models shown zero-shot (heads from descriptions or templates, SOAP at its identity start).
Custom label sets rebuild only the heads, with the base model's text tower, and are cached.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from microclip.backbone import BaseModelSpec
from microclip.checkpoint import CheckpointError, CheckpointMeta, epochs_beside, load_model, read_adapted, read_meta
from microclip.files import shareable_tempdir
from microclip.heads import DEFAULT_TEMPLATES, TextEncoder
from microclip.model import MethodConfig, MicroCLIP, base_text_encoder
from microclip.recipe import Recipe
from microclip.resources import PROJECT_ROOT
from microclip.timeline import Timeline

log = logging.getLogger(__name__)

TOY_ADAPTED = PROJECT_ROOT / "checkpoints" / "toybirds-microclip.safetensors"
# the same base and recipe with SOAP's values centred (train.py --centre_values, not the reference's): beside the
# reference's model, it shows the other cure for `[FG]`'s shared shift, which the bundled base's pretraining
# already took away (docs/toyworld.md, rounds 23 and 25)
TOY_CENTRED = PROJECT_ROOT / "checkpoints" / "toybirds-microclip-centred.safetensors"
TOY_CENTRED_NAME = "toybirds · microCLIP, values centred (not the reference's)"
# the same base and recipe with the labels' own running class marginal taken out of them (train.py --label_debias 3,
# not the reference's): beside the reference's model, whose labels never name brennic finch, it shows what labels
# that do not starve a class change (docs/toyworld.md, rounds 45-46)
TOY_DEBIASED = PROJECT_ROOT / "checkpoints" / "toybirds-microclip-debiased.safetensors"
TOY_DEBIASED_NAME = "toybirds · microCLIP, labels debiased (not the reference's)"
TOY_BASE = PROJECT_ROOT / "checkpoints" / "toybirds-base"
TOY_ASSETS = PROJECT_ROOT / "assets" / "toybirds"
GENERIC_CLASSES = ("bird", "cat", "dog", "car", "flower", "airplane")
SAVED_NAME_KEY = "app_saved_name"  # in a saved run's training metadata: the name it was saved under
SAVED_AT_KEY = "app_saved_at"  # ... and when (ISO 8601, UTC)


@dataclass
class LoadedModel:
    """One ready model and what the UI shows about it."""

    name: str
    model: MicroCLIP
    meta: CheckpointMeta | None  # None for a zero-shot base model
    source: str  # where it came from, in words
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    descriptions: dict[str, list[str]] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes


class ModelRegistry:
    """Thread-safe name → model map with lazy loading and a cache of custom-label heads."""

    def __init__(self, device: torch.device | str = "cpu", max_custom_heads: int = 16) -> None:
        self.device = torch.device(device)
        self._lock = threading.RLock()
        self._loaders: dict[str, Callable[[], LoadedModel]] = {}
        self._models: dict[str, LoadedModel] = {}
        self._text: dict[tuple, TextEncoder] = {}
        self._custom: OrderedDict[tuple, MicroCLIP] = OrderedDict()
        self._max_custom = max_custom_heads
        self._upload_dir: Path | None = None
        self._paths: dict[str, Path] = {}  # checkpoint files, by name: their saved epochs lie beside them
        self._metas: dict[str, CheckpointMeta] = {}  # their headers, by name, read once (saved files are not rewritten)
        self._timelines: dict[str, Timeline] = {}
        self._timeline_lock = threading.Lock()  # building one loads a base model: not under the registry's lock
        self.default_name: str | None = None

    # ------------------------------------------------------------ registration

    def add_checkpoint(self, path: str | Path, name: str | None = None, default: bool = False) -> str:
        """Register an adapted ``.safetensors`` checkpoint (loaded on first use)."""
        path = Path(path)
        name = name or path.stem
        with self._lock:
            self._loaders[name] = lambda: self._load_checkpoint(name, path)
            self._models.pop(name, None)
            self._set_file(name, path)
            if default or self.default_name is None:
                self.default_name = name
        return name

    def _set_file(self, name: str, path: Path | None) -> None:
        """The checkpoint file behind ``name`` (None: none), whose saved epochs its timeline reads; any timeline
        built for the name before is dropped. Called with ``_lock`` held."""
        if path is None:
            self._paths.pop(name, None)
        else:
            self._paths[name] = path
        self._metas.pop(name, None)
        self._timelines.pop(name, None)

    def add_upload(self, path: str | Path, name: str | None = None) -> str:
        """Register an uploaded checkpoint: copied into the registry's own folder and loaded *now*.

        Loading at once means a pickle renamed ``.safetensors``, a foreign file or a checkpoint whose
        base model is unavailable fails at upload with ``CheckpointError``'s message, and nothing is
        registered. Returns the (unique) name it is listed under.
        """
        source = Path(path)
        if source.suffix.lower() != ".safetensors":
            raise CheckpointError(
                f"{source.name}: only .safetensors checkpoints are accepted (pickle files such "
                "as .pth / .pt can run code when loaded)"
            )
        read_adapted(source)  # header and metadata check before anything is copied
        with self._lock:
            name = self.unique_name(name or source.stem)
            if self._upload_dir is None:
                self._upload_dir = shareable_tempdir("microclip-uploads-")
            target = self._upload_dir / f"{uuid.uuid4().hex[:8]}-{source.name}"
            shutil.copyfile(source, target)
            self.add_checkpoint(target, name)
            try:
                self.get(name)
            except BaseException:
                self.remove(name)
                target.unlink(missing_ok=True)
                raise
        return name

    def add_saved_runs(self, folder: str | Path) -> list[str]:
        """Register every adapted checkpoint saved in the runs ``folder`` (oldest first), each listed with the
        date it was saved: ``<name> · saved 2026-12-02 18:31``. Each file's header is read and checked now
        (safetensors also checks that the header's tensors fill the file; the tensors are read when the model is
        built, on first use), so a folder of large runs lists fast; one that is not a readable microCLIP checkpoint
        is skipped with one log line."""
        folder = Path(folder)
        if not folder.is_dir():
            return []
        names = []
        for path in sorted(folder.glob("*.safetensors"), key=lambda p: (p.stat().st_mtime, p.name)):
            try:
                meta = read_meta(path)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the app or hide the others
                log.warning("runs folder: skipped %s (%s)", path.name, str(error).replace(str(path), "").strip(": "))
                continue
            label = str(meta.training.get(SAVED_NAME_KEY) or path.stem)
            names.append(self.add_checkpoint(path, self.unique_name(f"{label} · saved {saved_date(path, meta)}")))
        if names:
            log.info("runs folder %s: %d saved model(s): %s", folder, len(names), "; ".join(names))
        return names

    def unique_name(self, name: str) -> str:
        """``name``, or ``name (2)``, ``name (3)``... if it is taken."""
        with self._lock:
            candidate, index = name, 2
            while candidate in self._loaders:
                candidate, index = f"{name} ({index})", index + 1
            return candidate

    def remove(self, name: str) -> None:
        """Forget a model (and its cached custom-label heads)."""
        with self._lock:
            self._loaders.pop(name, None)
            self._models.pop(name, None)
            self._set_file(name, None)
            for key in [k for k in self._custom if k[0] == name]:
                del self._custom[key]
            if self.default_name == name:
                self.default_name = next(iter(self._loaders), None)

    def add_loaded(self, loaded: LoadedModel, default: bool = False) -> str:
        """Register a model that is already built (e.g. one an adaptation run just produced)."""
        with self._lock:
            self._models[loaded.name] = loaded
            self._loaders[loaded.name] = lambda: loaded
            self._set_file(loaded.name, None)  # no file behind it: no saved epochs
            if default or self.default_name is None:
                self.default_name = loaded.name
        return loaded.name

    def add_base(
        self,
        clip_model: str,
        pretrained: str | None,
        classes: Sequence[str],
        name: str,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        descriptions: dict[str, list[str]] | None = None,
        default: bool = False,
    ) -> str:
        """Register a base model shown zero-shot: heads from descriptions (initial W*) or templates."""

        def load() -> LoadedModel:
            model, _, encoder = MicroCLIP.build(
                clip_model, pretrained, list(classes), templates, descriptions, device=self.device, keep_text=True
            )
            self._text[_base_key(model.base)] = encoder
            return LoadedModel(
                name,
                model.eval(),
                None,
                f"{model.base.describe()} (zero-shot, not adapted)",
                list(templates),
                dict(descriptions or {}),
            )

        with self._lock:
            self._loaders[name] = load
            self._models.pop(name, None)
            self._set_file(name, None)
            if default or self.default_name is None:
                self.default_name = name
        return name

    def add_base_of(self, checkpoint: str | Path, name: str) -> str:
        """Register the base model a checkpoint was adapted from, zero-shot on the same classes.

        Reads only the checkpoint's metadata now; the base model is built on first use. This is
        the "before" for Compare (same label set, descriptions and templates, nothing adapted).
        """
        meta = read_meta(checkpoint)
        return self.add_base(
            meta.base.clip_model,
            meta.base.pretrained or None,
            meta.classes,
            name,
            templates=meta.templates or DEFAULT_TEMPLATES,
            descriptions=meta.descriptions or None,
        )

    def _load_checkpoint(self, name: str, path: Path) -> LoadedModel:
        model = load_model(path, self.device)
        meta: CheckpointMeta = model.meta
        return LoadedModel(
            name,
            model,
            meta,
            f"adapted checkpoint {path.name} (base {meta.base.describe()})",
            meta.templates or list(DEFAULT_TEMPLATES),
            meta.descriptions,
        )

    # ------------------------------------------------------------ access

    def names(self) -> list[str]:
        with self._lock:
            return list(self._loaders)

    def get(self, name: str | None = None) -> LoadedModel:
        name = name or self.default_name
        with self._lock:
            if name is None:
                raise KeyError(
                    "no model is loaded: upload an adapted checkpoint in Models / About, or start the "
                    "app with --ckpt-path or --clip_model"
                )
            if name not in self._loaders:
                raise KeyError(f"no model named {name!r}; loaded: {', '.join(self._loaders) or 'none'}")
            if name not in self._models:
                log.info("loading model %s", name)
                self._models[name] = self._loaders[name]()
            return self._models[name]

    def _header(self, name: str | None) -> tuple[LoadedModel | None, CheckpointMeta | None]:
        """The entry if it is loaded, and what its checkpoint says about itself: the loaded model's, else its
        file's header (nothing is loaded); no meta for a base model. An unknown name: the registry's own error."""
        name = name or self.default_name
        with self._lock:
            known, loaded, path = name in self._loaders, self._models.get(name), self._paths.get(name)
            read = self._metas.get(name)
        if loaded is not None:
            return loaded, loaded.meta
        if read is not None:
            return None, read
        if path is not None:
            meta = read_meta(path)  # outside the lock: a header read must not hold up the other tabs
            with self._lock:
                if self._paths.get(name) == path:  # still the entry's file: kept for the next choice of it
                    self._metas[name] = meta
            return None, meta
        if known:
            return None, None  # a base model, not loaded yet
        loaded = self.get(name)  # not registered: raises
        return loaded, loaded.meta

    def zero_shot(self, name: str | None = None) -> bool:
        """Whether the entry is a base model answering zero-shot (no adapted checkpoint behind it); nothing loaded."""
        return self._header(name)[1] is None

    def fusion_ratio(self, name: str | None = None) -> float:
        """The weight of [CLS] the entry answers with (its ρ), without loading it: a checkpoint's from its header,
        a base model's the default method's (it is built with it)."""
        loaded, meta = self._header(name)
        if loaded is not None:
            return loaded.model.config.fusion_ratio
        return (MethodConfig() if meta is None else MethodConfig.from_dict(meta.method)).fusion_ratio

    def adapted_recipe(self, name: str | None = None) -> Recipe | None:
        """The recipe the entry was adapted with, read from its header without loading it; None for a base model
        or a checkpoint that does not record one."""
        _, meta = self._header(name)
        config = (meta.training.get("config") if meta is not None else None) or {}
        return Recipe.from_dict(config, f"{name or self.default_name}'s recipe") if config else None

    def timeline(self, name: str | None = None) -> Timeline | None:
        """The saved epochs of the named checkpoint's run (``train.py --keep_epochs``), built on first use and
        kept; None when it has none (a base model, an upload, a run saved without them)."""
        name = name or self.default_name
        with self._lock:
            known = name in self._loaders
            path = self._paths.get(name) if name is not None else None
        if not known:
            self.get(name)  # the registry's KeyError for an unknown name, as everywhere
        if path is None:
            return None  # a base or built model: nothing to load just to say it has no epochs
        with self._timeline_lock:
            if name not in self._timelines:
                files = epochs_beside(path)
                if not files:
                    return None
                self._timelines[name] = Timeline(files, self.device)
            return self._timelines[name]

    def text_encoder(self, base: BaseModelSpec) -> TextEncoder:
        """The base model's text tower, loaded once per base model (needed only for custom labels)."""
        key = _base_key(base)
        with self._lock:
            if key not in self._text:
                self._text[key] = base_text_encoder(base, self.device)
            return self._text[key]

    def with_classes(
        self,
        name: str | None,
        classes: Sequence[str],
        descriptions: dict[str, list[str]] | None = None,
        templates: Sequence[str] | None = None,
    ) -> MicroCLIP:
        """The named model with heads for a user's own label set (adapted visual tower kept).

        W* is built fresh from descriptions or templates, so a label set the model was not
        adapted to is classified zero-shot by the adapted encoder.
        """
        loaded = self.get(name)
        classes = tuple(c.strip() for c in classes if c.strip())
        if not classes:
            raise ValueError("type at least one class name")
        if classes == loaded.classes and not descriptions:
            return loaded.model
        key = (loaded.name, classes, _freeze(descriptions), tuple(templates or ()))
        with self._lock:
            if key in self._custom:
                self._custom.move_to_end(key)
                return self._custom[key]
            model = loaded.model.relabel(
                self.text_encoder(loaded.model.base), classes, templates or loaded.templates, descriptions
            )
            self._custom[key] = model
            while len(self._custom) > self._max_custom:
                self._custom.popitem(last=False)
            return model


def saved_date(path: Path, meta: CheckpointMeta) -> str:
    """When a run was saved, to the minute (local time): from its metadata, else the file's modification time."""
    stamp = meta.training.get(SAVED_AT_KEY)
    try:
        when = datetime.fromisoformat(stamp).astimezone() if stamp else None
    except (TypeError, ValueError):
        when = None
    when = when or datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return when.strftime("%Y-%m-%d %H:%M")


def _base_key(base: BaseModelSpec) -> tuple:
    return (base.clip_model, base.pretrained, base.weights_sha256, base.seed)


def _freeze(descriptions: dict[str, list[str]] | None) -> tuple:
    return tuple(sorted((k, tuple(v)) for k, v in (descriptions or {}).items()))


def default_registry(
    device: torch.device | str = "cpu",
    ckpt_path: str | None = None,
    clip_model: str | None = None,
    pretrained: str | None = None,
) -> ModelRegistry:
    """The bundled toy-world models (adapted by default, base zero-shot to compare), plus any flags."""
    from microclip.toyworld.text import read_assets

    registry = ModelRegistry(device)
    if TOY_ADAPTED.is_file():
        registry.add_checkpoint(TOY_ADAPTED, "toybirds · microCLIP adapted", default=True)
    if TOY_CENTRED.is_file():
        registry.add_checkpoint(TOY_CENTRED, TOY_CENTRED_NAME)
    if TOY_DEBIASED.is_file():
        registry.add_checkpoint(TOY_DEBIASED, TOY_DEBIASED_NAME)
    if (TOY_BASE / "open_clip_config.json").is_file() and (TOY_ASSETS / "classes.json").is_file():
        classes, templates, descriptions = read_assets(TOY_ASSETS)
        registry.add_base(
            f"local-dir:{TOY_BASE}",
            None,
            classes,
            "toybirds · base zero-shot",
            templates=templates,
            descriptions=descriptions,
        )
    if ckpt_path:
        name = registry.add_checkpoint(ckpt_path, default=True)
        registry.add_base_of(ckpt_path, f"{name} · base zero-shot")
    elif clip_model:
        # No checkpoint: the user types the label set in Explore; start from a neutral one.
        registry.add_base(clip_model, pretrained, GENERIC_CLASSES, f"{clip_model} zero-shot", default=True)
    return registry
