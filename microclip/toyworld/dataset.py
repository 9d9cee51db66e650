"""Generate and cache the toy bird data on disk: ImageFolder splits with masks, and the pretraining corpus.

Layout under `root/toybirds/`:
    train/<class name>/00000.png ...   test/...   (ImageFolder trees, classes in CLASS_NAMES order)
    train/meta.json                                (what generated the split; reused only if it matches)
    masks_train.npz                                (part_labels, bird_mask, paths, labels, in ImageFolder order)
    pretrain_<n>_<seed>.npz                        (images uint8 (N, 64, 64, 3), species, labels)
    pretrain_other_<n>_<seed>.npz                  (the web's other birds: images, species from 16 on)

Every image has its own rng seeded from (seed, split, class, index), so generation is order-free and
the splits never share images with each other or with the pretraining corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from microclip.files import atomic_write, shareable_tempdir
from microclip.toyworld.render import Sample, render_bird, rerender, scene_of
from microclip.toyworld.world import CLASS_NAMES, OTHER_SPECIES, PARTS, SPECIES, SPECIES_BY_NAME, SPECIES_TABLE

log = logging.getLogger(__name__)

GENERATOR_VERSION = 4  # bump when the renderer or the world changes: cached data is then regenerated
IMAGE_SIZE = 64
DEFAULT_N_PER_CLASS = {"train": 100, "test": 50}
# Distinct rng streams per use, so the same user seed never produces overlapping images.
_STREAM = {"train": 1, "test": 2, "pretrain": 3, "other_birds": 4}


@dataclass(frozen=True, eq=False)
class SplitMasks:
    """Ground-truth masks of one split, aligned with ImageFolder's (sorted) sample order."""

    paths: list[str]  # relative to root/toybirds, e.g. "test/zorsaik wren/00003.png"
    labels: np.ndarray  # (N,) int64, index into CLASS_NAMES
    part_mask: np.ndarray  # (N, H, W) bool
    bird_mask: np.ndarray  # (N, H, W) bool
    part_labels: np.ndarray  # (N, H, W) uint8: 0 off the parts, else 1 + index into PARTS
    seed: int | None = None  # the split's generation seed (meta.json), so an image can be re-rendered

    def part(self, name: str) -> np.ndarray:
        """(N, H, W) bool mask of one named part (see PARTS), empty where the species lacks it."""
        return self.part_labels == 1 + PARTS.index(name)

    def rerendered(self, row: int) -> Sample | None:
        """Row ``row`` drawn again from its seed and path ("<split>/<class>/<index>.png"), carrying the rng
        state that ``render.rerender`` needs; None when the split's seed or the path's form is unknown."""
        path = Path(self.paths[row])
        if self.seed is None or len(path.parts) != 3 or not path.stem.isdigit() or path.parts[1] not in CLASS_NAMES:
            return None
        return render_split_sample(path.parts[0], CLASS_NAMES.index(path.parts[1]), int(path.stem), self.seed)

    def erased_part_pairs(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        """(originals, erased, labels): for every visible part of every row's bird, the image and the same render
        with that one part erased (``render.rerender``): the part-removal counterfactual."""
        return self.erased_set_pairs(rows, 1)[:3]

    def erased_set_pairs(
        self, rows: np.ndarray, size: int | None
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[int]]:
        """As ``erased_part_pairs``, erasing every set of ``size`` visible parts together (None: all of them, one
        counterfactual per bird); a bird with fewer visible parts than ``size`` gives no pair. Last, each pair's
        bird (its row): the pairs of one bird are not independent draws (``uncertainty.clustered_gap``)."""
        originals, erased, labels, birds = [], [], [], []
        for row in rows:
            sample = self.rerendered(int(row))
            if sample is None:
                raise ValueError(f"{self.paths[row]}: not a generated image that can be drawn again")
            shown = sample.visible_parts()
            sets = [shown] if size is None else list(itertools.combinations(shown, size))
            for parts in sets:
                if not parts:
                    continue
                originals.append(sample.image)
                erased.append(rerender(sample, parts).image)
                labels.append(int(self.labels[row]))
                birds.append(int(row))
        return originals, erased, labels, birds


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Rows of the first ``per_class`` images of every class, in label order: a subset chosen by rule, never by
    how a model does on it."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])


def image_rng(seed: int, stream: str, index: int, label: int = 0) -> np.random.Generator:
    """The generator that draws image `index` of class `label` in `stream` ("train", "test", "pretrain")."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM[stream], label, index]))


def render_split_sample(split: str, label: int, index: int, seed: int, size: int = IMAGE_SIZE) -> Sample:
    """The `index`-th image of class `label` (index into CLASS_NAMES) in `split` generated with `seed`."""
    species_index = SPECIES.index(SPECIES_BY_NAME[CLASS_NAMES[label]])
    return render_bird(species_index, image_rng(seed, split, index, label), size)


def _split_meta(split: str, n_per_class: int, seed: int) -> dict:
    meta = {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "seed": int(seed),
        "n_per_class": int(n_per_class),
        "image_size": IMAGE_SIZE,
        "classes": CLASS_NAMES,
        "count": int(n_per_class) * len(CLASS_NAMES),
    }
    # Both tables name the same 16 classes: only this key keeps one table's cache from passing for the
    # other's. The shipped table adds nothing, so splits cached before the key existed stay current.
    if SPECIES_TABLE != "distance":
        meta["species_table"] = SPECIES_TABLE
    return meta


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def split_is_current(root: str | Path, split: str, n_per_class: int, seed: int) -> bool:
    """True when `root/toybirds/<split>` exists and was generated with exactly these settings."""
    base = Path(root) / "toybirds"
    meta = _read_json(base / split / "meta.json")
    return meta == _split_meta(split, n_per_class, seed) and (base / f"masks_{split}.npz").is_file()


def ensure_split(root: str | Path, split: str, n_per_class: int | None = None, seed: int = 0) -> Path:
    """Return `root/toybirds/<split>`, generating it first unless an identical one is already there.

    Generation writes into a temporary folder that is renamed into place at the end, so an
    interrupted run never leaves a half-written split that looks complete.
    """
    if split not in DEFAULT_N_PER_CLASS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(DEFAULT_N_PER_CLASS)}")
    n_per_class = DEFAULT_N_PER_CLASS[split] if n_per_class is None else int(n_per_class)
    base = Path(root) / "toybirds"
    target = base / split
    if split_is_current(root, split, n_per_class, seed):
        return target
    base.mkdir(parents=True, exist_ok=True)
    log.info("generating toybirds %s split: %d images/class, seed %d -> %s", split, n_per_class, seed, target)
    tmp = shareable_tempdir(f".{split}-", base)  # renamed into place: it must not stay 0700
    try:
        paths, labels, part_labels, birds = [], [], [], []
        for label, name in enumerate(CLASS_NAMES):
            (tmp / name).mkdir()
            for i in range(n_per_class):
                sample = render_split_sample(split, label, i, seed)
                fname = f"{i:05d}.png"
                cv2.imwrite(str(tmp / name / fname), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
                paths.append(f"{split}/{name}/{fname}")
                labels.append(label)
                part_labels.append(sample.part_labels)
                birds.append(sample.bird_mask)
        meta = _split_meta(split, n_per_class, seed)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _atomic_savez(
            base / f"masks_{split}.npz",
            paths=np.array(paths),
            labels=np.array(labels, np.int64),
            part_labels=np.stack(part_labels),
            bird_mask=np.stack(birds),
        )
        if split_is_current(root, split, n_per_class, seed):
            # another process generated the same split meanwhile, and may be reading it already: removing it
            # as stale would pull its images away mid-run
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        if target.exists():
            shutil.rmtree(target)  # stale: generated with other settings
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if split_is_current(root, split, n_per_class, seed):  # another process won the race
            return target
        raise
    return target


def load_split_masks(root: str | Path, split: str) -> SplitMasks:
    """Load the masks written by `ensure_split` (call that first)."""
    path = Path(root) / "toybirds" / f"masks_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; call ensure_split({str(root)!r}, {split!r}) first")
    with np.load(path) as z:
        part_labels = z["part_labels"]
        masks = SplitMasks(
            paths=[str(p) for p in z["paths"]],
            labels=z["labels"],
            part_mask=part_labels > 0,
            bird_mask=z["bird_mask"],
            part_labels=part_labels,
        )
    meta = _read_json(Path(root) / "toybirds" / split / "meta.json") or {}
    if meta.get("generator_version") == GENERATOR_VERSION and isinstance(meta.get("seed"), int):
        masks = dataclasses.replace(masks, seed=meta["seed"])
    return masks


def load_split_arrays(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, H, W, 3) uint8 RGB and labels (N,) of a generated split, in ImageFolder order."""
    masks = load_split_masks(root, split)
    base = Path(root) / "toybirds"
    images = np.stack([cv2.cvtColor(cv2.imread(str(base / p)), cv2.COLOR_BGR2RGB) for p in masks.paths])
    return images, masks.labels


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object, so np.savez does not append ".npz" to the name
            np.savez(handle, **arrays)

    atomic_write(path, write)


def pretrain_corpus_path(root: str | Path, n_images: int, seed: int) -> Path:
    """Where the pretraining corpus with these settings is cached."""
    return Path(root) / "toybirds" / f"pretrain_{int(n_images)}_{int(seed)}.npz"


def ensure_pretrain_corpus(root: str | Path, n_images: int = 40000, seed: int = 0) -> Path:
    """Generate (once) and cache the pretraining images: species balanced, `i % 16` for image i."""
    species = np.arange(n_images, dtype=np.int64) % len(SPECIES)
    labels = np.array([CLASS_NAMES.index(SPECIES[s].name) for s in species], np.int64)
    return _ensure_corpus(pretrain_corpus_path(root, n_images, seed), species, "pretrain", seed, labels=labels)


def other_birds_corpus_path(root: str | Path, n_images: int, seed: int) -> Path:
    """Where the corpus of the web's other birds with these settings is cached."""
    return Path(root) / "toybirds" / f"pretrain_other_{int(n_images)}_{int(seed)}.npz"


def ensure_other_birds_corpus(root: str | Path, n_images: int, seed: int = 0) -> Path:
    """Generate (once) and cache `n_images` of the web's other birds (``world.OTHER_SPECIES``, each combination in
    turn: image i is render index ``16 + i % 752``), drawn from their own rng stream, so the species corpus
    beside them stays the same images."""
    species = len(SPECIES) + np.arange(n_images, dtype=np.int64) % len(OTHER_SPECIES)
    return _ensure_corpus(other_birds_corpus_path(root, n_images, seed), species, "other_birds", seed)


def _ensure_corpus(path: Path, species: np.ndarray, stream: str, seed: int, **extra: np.ndarray) -> Path:
    """The cached corpus at `path`: image i is render index ``species[i]`` drawn from (seed, stream, i); reused when
    it was made by this generator for this species table with as many images, else generated and saved with
    `extra` arrays beside it."""
    if path.is_file():
        with np.load(path) as z:
            table = str(z["species_table"]) if "species_table" in z.files else "distance"  # caches before round 30
            current = int(z["generator_version"]) == GENERATOR_VERSION and table == SPECIES_TABLE
            if current and len(z["species"]) == len(species):
                return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("generating %d %s images (seed %d) -> %s", len(species), stream, seed, path)
    images = np.empty((len(species), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, index in enumerate(species.tolist()):
        images[i] = render_bird(index, image_rng(seed, stream, i), IMAGE_SIZE).image
    _atomic_savez(
        path,
        images=images,
        species=species,
        **extra,
        generator_version=np.array(GENERATOR_VERSION),
        species_table=np.array(SPECIES_TABLE),
    )
    return path


def pretrain_scenes(n_images: int, seed: int = 0) -> np.ndarray:
    """(N, 2) background and body-colour indices of the corpus images (from their rngs; nothing is painted)."""
    return np.array([scene_of(image_rng(seed, "pretrain", i), IMAGE_SIZE) for i in range(n_images)], np.int64)


def load_pretrain_corpus(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and species indices (N,) (into SPECIES) of a cached corpus."""
    with np.load(path) as z:
        return z["images"], z["species"]
