"""Why the part probe misses a part: for each species whose descriptions name it, how well the part's own patches
and another part's patches answer the part's sentence, and the sentences of that part in the other colours.

    python bench/toyworld_part_confusion.py                        # the tail tip against the wing bands, shipped base
    python bench/toyworld_part_confusion.py --base DIR --part beak --rival tail_tip --json F

Per test image of the species, the best cosine between a patch holding the part (or the rival part) and the
sentence ("a bird with a red tail tip."), averaged over the images; then the same for the part's sentences in the
colours the species does not have, and where the probe's closest patch lands. A rival that answers every colour
alike carries "a tail tip" as a concept; one that answers only its species' colour carries the species.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from microclip.model import MicroCLIP  # noqa: E402
from microclip.scoring import patch_hits  # noqa: E402
from microclip.toyworld.dataset import ensure_split, load_split_arrays, load_split_masks  # noqa: E402
from microclip.toyworld.part_probe import description_sentence, patch_embeddings  # noqa: E402
from microclip.toyworld.text import ASSETS_DIR, DESCRIBED_PARTS, part_phrase  # noqa: E402
from microclip.toyworld.world import CLASS_NAMES, PART_VALUES, SPECIES_BY_NAME, Species  # noqa: E402

ASSETS = ASSETS_DIR  # the world this process draws (MICROCLIP_TOYWORLD_SPECIES)


def sentence_in(part: str, value: str) -> str:
    """The description sentence of ``part`` drawn in ``value`` ("a bird with a white tail tip.")."""
    some = next(s for s in SPECIES_BY_NAME.values() if getattr(s, part) != "none")
    fields = {**some.__dict__, part: value}
    return f"a bird with {part_phrase(Species(**fields), part)}."


def confusion_rows(base: str, part: str, rival: str, data_root: str) -> list[dict]:
    classes = json.loads((ASSETS / "classes.json").read_text())
    templates = json.loads((ASSETS / "templates.json").read_text())
    descriptions = json.loads((ASSETS / "descriptions.json").read_text())
    model, _, text = MicroCLIP.build(f"local-dir:{base}", None, classes, templates, descriptions, keep_text=True)
    ensure_split(data_root, "test")
    images, _ = load_split_arrays(data_root, "test")
    masks = load_split_masks(data_root, "test")
    patches = patch_embeddings(model.backbone, images).numpy()  # (N, P, E)
    grid = model.backbone.grid
    on_part, on_rival = patch_hits(masks.part(part), grid), patch_hits(masks.part(rival), grid)
    rows = []
    for name in CLASS_NAMES:
        species = SPECIES_BY_NAME[name]
        own = description_sentence(name, part)
        if part not in DESCRIBED_PARTS[name] or own is None:
            continue
        others = [v for v in PART_VALUES[part] if v not in ("none", getattr(species, part))]
        sentences = [own, *(sentence_in(part, v) for v in others)]
        embeds = F.normalize(text(sentences).float(), dim=-1).numpy()  # (S, E)
        images_of = [i for i in np.where(masks.labels == CLASS_NAMES.index(name))[0] if on_part[i].any()]
        best = {"part": [], "rival": [], "rival_other_colours": []}
        landed_on_rival, hits = [], []
        for i in images_of:
            scores = patches[i] @ embeds.T  # (P, S)
            closest = int(scores[:, 0].argmax())
            hits.append(bool(on_part[i, closest]))
            landed_on_rival.append(bool(on_rival[i, closest]))
            best["part"].append(scores[on_part[i], 0].max())
            if on_rival[i].any():
                best["rival"].append(scores[on_rival[i], 0].max())
                best["rival_other_colours"].append(scores[on_rival[i], 1:].max(axis=0).mean())
        rows.append(
            {
                "species": name,
                part: getattr(species, part),
                rival: getattr(species, rival),
                "images": len(images_of),
                "probe_hits": 100.0 * float(np.mean(hits)),
                "lands_on_rival": 100.0 * float(np.mean(landed_on_rival)),
                "best_cosine": {k: float(np.mean(v)) if v else None for k, v in best.items()},
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=str(ROOT / "checkpoints" / "toybirds-base"))
    parser.add_argument("--part", default="tail_tip", choices=sorted(PART_VALUES))
    parser.add_argument("--rival", default="wing_bands", choices=sorted(PART_VALUES))
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = confusion_rows(args.base, args.part, args.rival, args.data_root)
    print(
        f"| species | {args.part} | {args.rival} | probe % | lands on {args.rival} % | best cosine: {args.part}'s "
        f"patch / {args.rival}'s patch / {args.rival}'s patch, other colours |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        c = r["best_cosine"]
        cells = " / ".join("–" if c[k] is None else f"{c[k]:.2f}" for k in ("part", "rival", "rival_other_colours"))
        print(
            f"| {r['species']} | {r[args.part]} | {r[args.rival]} | {r['probe_hits']:.0f} | "
            f"{r['lands_on_rival']:.0f} | {cells} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
