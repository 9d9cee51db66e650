"""Recognise a toy-world image by its pixels and give back its ground truth (part and bird masks).

Known images are the bundled examples (``assets/examples/toybird-*.png``, re-rendered here from the
recipe that drew them) and the generated splits under a data root (``<root>/toybirds/<split>/...``
with ``masks_<split>.npz``). Matching is by a hash of the decoded pixels, so a re-encoded (JPEG) or
resized copy is *not* recognised; an exact nearest-neighbour enlargement (as the examples are) is.
Every index is built lazily, once, and kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from microclip.data.images import native_pixels
from microclip.resources import PROJECT_ROOT
from microclip.toyworld.dataset import IMAGE_SIZE, SplitMasks, load_split_masks, render_split_sample
from microclip.toyworld.render import Sample
from microclip.toyworld.text import NAME_RANK
from microclip.toyworld.world import CLASS_NAMES, SPECIES, SPECIES_BY_NAME

log = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = PROJECT_ROOT / "data"
DATA_ROOT_ENV = "MICROCLIP_DATA_ROOT"  # another data root to search (os.pathsep-separated)

# The bundled examples, by a rule that never looks at the model: the first test image (seed 0) of six
# species spread over the name-frequency ranks (0, 3, ..., 15: the commonest name to the rarest), enlarged
# with nearest-neighbour.
EXAMPLE_RANKS = (0, 3, 6, 9, 12, 15)
EXAMPLE_SEED = 0
EXAMPLE_UPSCALE = 4
SPLITS = ("train", "test")


def example_species() -> list[int]:
    """Indices into SPECIES of the bundled examples, commonest name first."""
    by_rank = sorted(range(len(SPECIES)), key=lambda i: NAME_RANK[SPECIES[i].name])
    return [by_rank[r] for r in EXAMPLE_RANKS]


def example_samples() -> list[Sample]:
    """The bundled examples' samples, at the renderer's size (the PNGs are these, ×EXAMPLE_UPSCALE)."""
    return [render_split_sample("test", CLASS_NAMES.index(SPECIES[i].name), 0, EXAMPLE_SEED) for i in example_species()]


def example_filename(species_index: int) -> str:
    """``toybird-<species name with dashes>.png``."""
    return f"toybird-{SPECIES[species_index].name.replace(' ', '-')}.png"


def enlarge(image: np.ndarray, factor: int = EXAMPLE_UPSCALE) -> np.ndarray:
    """Nearest-neighbour enlargement: each pixel becomes a ``factor`` × ``factor`` block."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def canonical_pixels(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """A square image that is an exact nearest-neighbour enlargement of a ``size``-px one → that one;
    anything else is returned as it is."""
    return native_pixels(image, size)


def pixel_key(image: np.ndarray) -> str:
    """SHA-256 of an RGB uint8 image's canonical pixels (with their shape)."""
    pixels = np.ascontiguousarray(canonical_pixels(np.asarray(image, dtype=np.uint8)))
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _SplitIndex:
    mtime: float  # of masks_<split>.npz when indexed
    rows: dict[str, int]  # pixel key → row in masks_<split>.npz
    masks: SplitMasks | None


class ToyWorldIndex:
    """Pixel hash → ground truth for the bundled examples and the generated splits under ``data_roots``."""

    def __init__(self, data_roots: list[str | Path] | None = None) -> None:
        self.data_roots = [Path(root) for root in (default_data_roots() if data_roots is None else data_roots)]
        self._lock = threading.Lock()
        self._examples: dict[str, Sample] | None = None
        self._splits: dict[tuple[Path, str], _SplitIndex] = {}

    def lookup(self, image: np.ndarray) -> Sample | None:
        """The ``Sample`` of a known toy-world image (RGB uint8, (H, W, 3)), or None."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return None
        key = pixel_key(image)
        with self._lock:
            sample = self._example_index().get(key)
            if sample is not None:
                return sample
            for root in self.data_roots:
                for split in SPLITS:
                    index = self._split_index(root, split)
                    row = index.rows.get(key)
                    if row is not None and index.masks is not None:
                        return _split_sample(index.masks, row, canonical_pixels(image))
        return None

    def _example_index(self) -> dict[str, Sample]:
        if self._examples is None:
            self._examples = {pixel_key(sample.image): sample for sample in example_samples()}
        return self._examples

    def _split_index(self, root: Path, split: str) -> _SplitIndex:
        """The split's index, built on first use and again when its masks file changes."""
        masks_file = root / "toybirds" / f"masks_{split}.npz"
        try:
            mtime = masks_file.stat().st_mtime
        except OSError:
            return _SplitIndex(0.0, {}, None)
        cached = self._splits.get((root, split))
        if cached is not None and cached.mtime == mtime:
            return cached
        log.info("indexing toy-world %s images under %s (first use only)", split, root)
        rows: dict[str, int] = {}
        try:
            masks = load_split_masks(root, split)
        except (OSError, ValueError, KeyError) as error:
            log.warning("cannot read %s: %s", masks_file, error)
            masks = None
        for row, path in enumerate(masks.paths if masks is not None else []):
            image = cv2.imread(str(root / "toybirds" / path), cv2.IMREAD_COLOR)
            if image is not None:
                rows[pixel_key(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))] = row
        index = self._splits[(root, split)] = _SplitIndex(mtime, rows, masks)
        return index


def _split_sample(masks: SplitMasks, row: int, image: np.ndarray) -> Sample:
    label = int(masks.labels[row])
    return Sample(
        image=image,
        part_mask=masks.part_mask[row],
        bird_mask=masks.bird_mask[row],
        species=SPECIES.index(SPECIES_BY_NAME[CLASS_NAMES[label]]),
        part_labels=masks.part_labels[row],
        rng_state=getattr(masks.rerendered(row), "rng_state", None),
    )


def default_data_roots() -> list[Path]:
    """``$MICROCLIP_DATA_ROOT`` (if set), ``./data`` and the project's ``data/`` folder, each once."""
    roots = [Path(p) for p in os.environ.get(DATA_ROOT_ENV, "").split(os.pathsep) if p]
    roots += [Path("data"), DEFAULT_DATA_ROOT]
    unique: dict[Path, Path] = {}
    for root in roots:
        unique.setdefault(root.resolve(), root)
    return list(unique.values())


_DEFAULT_INDEX: ToyWorldIndex | None = None
_DEFAULT_LOCK = threading.Lock()


def find_toyworld_sample(image: np.ndarray) -> Sample | None:
    """The ground truth of a known toy-world image (see the module docstring), else None."""
    global _DEFAULT_INDEX
    with _DEFAULT_LOCK:
        if _DEFAULT_INDEX is None:
            _DEFAULT_INDEX = ToyWorldIndex()
    return _DEFAULT_INDEX.lookup(image)
