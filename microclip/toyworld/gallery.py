"""A labelled picture of the 16 species, one example each, with the part masks outlined.

python -m microclip.toyworld.gallery --out gallery.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from microclip.toyworld.render import render_bird
from microclip.toyworld.world import CLASS_NAMES, SPECIES, SPECIES_BY_NAME

_OUTLINE = (0, 255, 255)  # RGB cyan: not a part colour, so the outline never hides a part


def species_tile(species_index: int, seed: int = 0, upscale: int = 4, label_height: int = 22) -> np.ndarray:
    """One upscaled example of a species with its part mask outlined and its name below: (H, W, 3) RGB."""
    sample = render_bird(species_index, np.random.default_rng([seed, species_index]))
    h, w = sample.image.shape[:2]
    big = cv2.resize(sample.image, (w * upscale, h * upscale), interpolation=cv2.INTER_NEAREST)
    mask = cv2.resize(sample.part_mask.astype(np.uint8), (w * upscale, h * upscale), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    big = np.ascontiguousarray(big)
    cv2.drawContours(big, contours, -1, _OUTLINE, 1)
    label = np.full((label_height, big.shape[1], 3), 255, np.uint8)
    cv2.putText(
        label,
        SPECIES[species_index].name,
        (4, label_height - 7),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return np.concatenate([big, label], axis=0)


def gallery(columns: int = 4, seed: int = 0, upscale: int = 4) -> np.ndarray:
    """Grid of all species in label (alphabetical) order: (H, W, 3) uint8 RGB."""
    tiles = [species_tile(SPECIES.index(SPECIES_BY_NAME[name]), seed, upscale) for name in CLASS_NAMES]
    pad = 4
    tiles = [cv2.copyMakeBorder(t, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(255, 255, 255)) for t in tiles]
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write a labelled grid of the 16 toy bird species.")
    p.add_argument("--out", required=True, help="output PNG file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upscale", type=int, default=4)
    args = p.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(gallery(seed=args.seed, upscale=args.upscale), cv2.COLOR_RGB2BGR))
    print(args.out)


if __name__ == "__main__":
    main()
