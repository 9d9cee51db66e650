"""How machine-dependent is NCut? Degenerate eigenvalues, solver signs and LAPACK paths, measured.

    python bench/ncut.py                 # toy test split (shipped model) + random ViT-B/32 tokens
    python bench/ncut.py --json FILE

For each token set it reports how often the second-smallest eigenvalue of the NCut Laplacian is
(near-)degenerate (λ3 − λ2 below a few thresholds; the library treats gaps under
NCUT_DEGENERACY_TOL as one eigenspace), and on how many images two ways of computing the mask
disagree:
- canonical float64 (the default) vs canonical float32 (another LAPACK routine, ~1e9 × the rounding
  error): machine independence of the default;
- canonical with 1 vs 2 threads;
- the orientation rule alone (no degenerate-eigenspace step) in float32 vs float64: what the
  tie-break for degenerate eigenvalues adds;
- the reference's solver rule vs canonical, and the solver rule in float32 vs float64: how often the
  literal rule's answer hangs on the solver's arbitrary sign (the machine dependence the default removes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from microclip.backbone import Backbone, create_clip
from microclip.checkpoint import load_model
from microclip.constants import NCUT_DEGENERACY_TOL
from microclip.machine import cpu_name
from microclip.resources import PROJECT_ROOT as ROOT
from microclip.soap import NcutSplit, foreground_mask, ncut_split
from microclip.toyworld.dataset import ensure_split, load_split_arrays

ADAPTED = ROOT / "checkpoints" / "toybirds-microclip.safetensors"
GAPS = (1e-12, 1e-8, NCUT_DEGENERACY_TOL, 1e-3)


def disagreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """% of images whose two masks differ anywhere."""
    return 100.0 * float((a != b).any(dim=1).float().mean())


def measure(tokens: torch.Tensor) -> dict:
    split = ncut_split(tokens)  # the default: canonical, float64 on the CPU
    values = split.eigenvalues
    gaps = (values[:, 2] - values[:, 1]).numpy()  # λ3 − λ2 of each image's Laplacian
    canonical = split.mask
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread = foreground_mask(tokens)
    torch.set_num_threads(2)
    two_threads = foreground_mask(tokens)
    torch.set_num_threads(threads)
    solver32 = ncut_split(tokens, sign="solver")
    solver64 = ncut_split(tokens, sign="solver", eigh_dtype=torch.float64)
    result = {
        "images": int(tokens.shape[0]),
        "patches": int(tokens.shape[1]),
        **{f"gap_below_{gap:g}_pct": 100.0 * float((gaps < gap).mean()) for gap in GAPS},
        "median_gap": float(np.median(gaps)),
        "canonical_f64_vs_f32_differ_pct": disagreement(canonical, foreground_mask(tokens, eigh_dtype=torch.float32)),
        "canonical_1_vs_2_threads_differ_pct": disagreement(one_thread, two_threads),
        "orientation_only_f32_vs_f64_differ_pct": disagreement(_oriented_only(solver32), _oriented_only(solver64)),
        "solver_vs_canonical_differ_pct": disagreement(solver32.mask, canonical),
        "solver_f32_vs_f64_differ_pct": disagreement(solver32.mask, solver64.mask),
        "mask_size_canonical_pct": 100.0 * float(canonical.float().mean()),
        "mask_size_solver_pct": 100.0 * float(solver32.mask.float().mean()),
    }
    if torch.cuda.is_available():
        on_cuda = foreground_mask(tokens, eigh_device="cuda")
        result["canonical_cpu_vs_cuda_differ_pct"] = disagreement(canonical, on_cuda)
        result["solver_cpu_vs_cuda_differ_pct"] = disagreement(
            solver32.mask, foreground_mask(tokens, sign="solver", eigh_device="cuda")
        )
    return result


def _oriented_only(solver: NcutSplit) -> torch.Tensor:
    """The orientation rule without the degenerate-eigenspace step: the solver's Fiedler vector turned so
    its largest-|e| entry is positive. Where λ2 is degenerate the solver's choice of vector still leaks in."""
    fiedler = solver.fiedler.double()
    fiedler = fiedler * fiedler.gather(1, fiedler.abs().argmax(dim=1, keepdim=True)).sign()
    return fiedler > fiedler.std(dim=1, keepdim=True)


@torch.no_grad()
def toy_tokens(data_root: str) -> dict[str, torch.Tensor]:
    model = load_model(ADAPTED)
    ensure_split(data_root, "test")
    images, _ = load_split_arrays(data_root, "test")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    tokens = model.backbone(x)
    return {
        "toy test split, value-path tokens (default)": tokens.patches,
        "toy test split, L2-normalised keys (--ncut_features keys)": torch.nn.functional.normalize(
            tokens.patch_keys, dim=-1
        ),
    }


@torch.no_grad()
def random_vit_tokens(n_images: int, seed: int = 0) -> dict[str, torch.Tensor]:
    clip, _ = create_clip("ViT-B-32-quickgelu", "none", seed=seed)
    backbone = Backbone(clip.visual)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(n_images, 3, 224, 224, generator=gen)
    smooth = torch.nn.functional.interpolate(torch.rand(n_images, 3, 7, 7, generator=gen), size=224, mode="bilinear")
    tokens = torch.cat([backbone(noise).patches, backbone(smooth).patches])
    return {f"random ViT-B/32 (seed {seed}), {2 * n_images} noise images": tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--vit_images", type=int, default=32, help="per kind (uniform noise, smooth noise)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sets = {**toy_tokens(args.data_root), **random_vit_tokens(args.vit_images)}
    results = {name: measure(tokens) for name, tokens in sets.items()}
    columns = list(next(iter(results.values())))
    print(f"CPU: {cpu_name()}  (degeneracy tolerance {NCUT_DEGENERACY_TOL:g})\n")
    print("| token set | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in results.items():
        print(
            f"| {name} | "
            + " | ".join(f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns)
            + " |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": cpu_name(), "tolerance": NCUT_DEGENERACY_TOL, "sets": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
