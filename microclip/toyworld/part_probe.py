"""The MaskCLIP-style part probe: do a CLIP's patch tokens mean the parts a description names?

For each test image and each part that its species' descriptions name and that is drawn (absent
parts, "a bird with no crest.", have nowhere to point), take the description sentence ("a bird
with a red beak."), and find the patch whose projected value-path token is closest to it. A hit is
a patch on *that* part's own pixels, not merely on some part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from microclip.backbone import Backbone
from microclip.scoring import patch_hits, percent
from microclip.toyworld.dataset import SplitMasks
from microclip.toyworld.text import DESCRIBED_PARTS, part_phrase
from microclip.toyworld.world import CLASS_NAMES, SPECIES_BY_NAME


@dataclass(frozen=True)
class PartProbe:
    hits: np.ndarray  # (K,) bool, one per (image, described visible part) pair
    patch_chance: np.ndarray  # (K,) share of all patches on the named part
    bird_chance: np.ndarray  # (K,) share of the bird's patches on the named part

    @property
    def accuracy(self) -> float:
        return percent(self.hits)


def description_sentence(class_name: str, part: str) -> str | None:
    """The descriptions' sentence about one visible part, e.g. "a bird with a red beak."; None if absent."""
    phrase = part_phrase(SPECIES_BY_NAME[class_name], part)
    return None if phrase is None else f"a bird with {phrase}."


@torch.no_grad()
def patch_embeddings(backbone: Backbone, images: np.ndarray, batch_size: int = 200) -> torch.Tensor:
    """(N, P, E) unit-norm projected value-path patch tokens of uint8 (N, H, W, 3) images."""
    chunks = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        chunks.append(F.normalize(backbone.project(backbone(x).patches), dim=-1))
    return torch.cat(chunks)


@torch.no_grad()
def part_probe(backbone: Backbone, encode_text, images: np.ndarray, masks: SplitMasks) -> PartProbe:
    """Run the probe; ``encode_text(list[str]) -> (n, E)`` is the model's text tower (any scale)."""
    pairs = [
        (part, sentence)
        for name in CLASS_NAMES
        for part in DESCRIBED_PARTS[name]
        if (sentence := description_sentence(name, part)) is not None
    ]
    sentences = sorted({sentence for _, sentence in pairs})
    text = F.normalize(encode_text(sentences).float(), dim=-1)  # (S, E)
    patches = patch_embeddings(backbone, images)  # (N, P, E)
    closest = (patches @ text.T).argmax(dim=1).numpy()  # (N, S): best patch per sentence
    grid = backbone.grid
    on_bird = patch_hits(masks.bird_mask, grid)
    hits, patch_chance, bird_chance = [], [], []
    for part_name in sorted({part for part, _ in pairs}):
        on_part = patch_hits(masks.part(part_name), grid)  # (N, P)
        for i, label in enumerate(masks.labels):
            name = CLASS_NAMES[int(label)]
            sentence = description_sentence(name, part_name)
            if part_name not in DESCRIBED_PARTS[name] or sentence is None or not on_part[i].any():
                continue
            hits.append(on_part[i, closest[i, sentences.index(sentence)]])
            patch_chance.append(on_part[i].mean())
            bird_chance.append((on_part[i] & on_bird[i]).sum() / max(on_bird[i].sum(), 1))
    return PartProbe(np.array(hits), np.array(patch_chance), np.array(bird_chance))
