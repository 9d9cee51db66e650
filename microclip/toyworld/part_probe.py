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

BODY, BACKGROUND = "body", "background"  # where a closest patch lands when it holds no part


@dataclass(frozen=True)
class PartProbe:
    hits: np.ndarray  # (K,) bool, one per (image, described visible part) pair
    patch_chance: np.ndarray  # (K,) share of all patches on the named part
    bird_chance: np.ndarray  # (K,) share of the bird's patches on the named part
    parts: np.ndarray  # (K,) str: the part each pair's sentence names
    landed: np.ndarray  # (K,) str: what the closest patch holds (see `landing`)

    @property
    def accuracy(self) -> float:
        return percent(self.hits)

    def by_part(self) -> dict[str, dict]:
        """Per named part: the probe's accuracy and where its sentences' closest patches land (% of pairs)."""
        out = {}
        for part in sorted(set(self.parts.tolist())):
            mine = self.parts == part
            places, counts = np.unique(self.landed[mine], return_counts=True)
            out[part] = {
                "accuracy": percent(self.hits[mine]),
                "pairs": int(mine.sum()),
                "lands_on": {str(w): 100.0 * int(c) / int(mine.sum()) for w, c in zip(places, counts)},
            }
        return out


def landing(named: str, on_part: dict[str, np.ndarray], on_bird: np.ndarray) -> str:
    """What one patch holds, for the probe's confusions: the named part if it holds any of its pixels, else
    the first other part it holds (in ``on_part``'s order), else the bird's body or the background.

    ``on_part``: part -> bool, does the patch hold that part's pixels; ``on_bird``: bool.
    """
    if on_part[named]:
        return named
    held = [part for part, on in on_part.items() if on]
    return held[0] if held else BODY if on_bird else BACKGROUND


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
    probed = sorted({part for part, _ in pairs})
    on_parts = {part: patch_hits(masks.part(part), grid) for part in probed}  # part -> (N, P)
    hits, patch_chance, bird_chance, parts, landed = [], [], [], [], []
    for part_name in probed:
        on_part = on_parts[part_name]
        for i, label in enumerate(masks.labels):
            name = CLASS_NAMES[int(label)]
            sentence = description_sentence(name, part_name)
            if part_name not in DESCRIBED_PARTS[name] or sentence is None or not on_part[i].any():
                continue
            j = closest[i, sentences.index(sentence)]
            hits.append(on_part[i, j])
            patch_chance.append(on_part[i].mean())
            bird_chance.append((on_part[i] & on_bird[i]).sum() / max(on_bird[i].sum(), 1))
            parts.append(part_name)
            landed.append(landing(part_name, {part: bool(on[i, j]) for part, on in on_parts.items()}, on_bird[i, j]))
    return PartProbe(np.array(hits), np.array(patch_chance), np.array(bird_chance), np.array(parts), np.array(landed))
