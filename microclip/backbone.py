"""Load an open_clip ViT and run the one visual forward microCLIP needs.

The forward returns, from a single pass, the global ``[CLS]`` feature and the *value-path*
patch tokens of the last block (docs/method.md §1.1, §12): the tokens the last block would output
if its self-attention were replaced by the identity. open_clip has no such output, so the last
block is evaluated here by hand from the block's own sub-modules. Only the ``[CLS]`` query is
attended in that block (the only attended token anyone reads), which makes the value path
nearly free: its value projection is shared with the attention.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from microclip.files import parse_json
from microclip.resources import locate, portable_path
from microclip.toyworld.world import check_drawn_table, recorded_table

log = logging.getLogger(__name__)

# The reference's spellings (OpenAI `clip` names) → open_clip model name + pretrained tag.
REFERENCE_MODEL_NAMES = {
    "ViT-B/32": ("ViT-B-32-quickgelu", "openai"),
    "ViT-B/16": ("ViT-B-16-quickgelu", "openai"),
    "ViT-L/14": ("ViT-L-14-quickgelu", "openai"),
    "ViT-L/14@336px": ("ViT-L-14-336-quickgelu", "openai"),
}

BUNDLED_TOY_MODEL = "checkpoints/toybirds-base"
# open_clip architectures shipped as package data (the toy world's ToyCLIP-B-8): a folder of JSON configs, read
# by open_clip, so the core needs no import of the toy world to build its model
MODEL_CONFIG_DIR = Path(__file__).parent / "toyworld" / "model_configs"


class BackboneError(RuntimeError):
    """A base model could not be built or loaded; the message says what to do."""


@dataclass(frozen=True)
class BaseModelSpec:
    """What identifies a base model: enough to rebuild it and to check a checkpoint against it."""

    clip_model: str  # open_clip name, or "local-dir:<folder>"
    pretrained: str  # open_clip tag, a weight file path, "none" (seeded random) or "" (local-dir)
    weights_sha256: str | None = None  # for local weight files and folders
    seed: int | None = None  # for random weights

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> BaseModelSpec:
        return cls(**{k: data.get(k) for k in ("clip_model", "pretrained", "weights_sha256", "seed")})

    def describe(self) -> str:
        if self.pretrained == "none":
            return f"{self.clip_model} (random weights, seed {self.seed})"
        if self.clip_model.startswith("local-dir:"):
            return self.clip_model
        return f"{self.clip_model} / {self.pretrained}"


@dataclass(frozen=True)
class VisualTokens:
    """Everything one visual pass gives (docs/method.md §1.1)."""

    cls_token: torch.Tensor  # (B, D) pre-projection [CLS], after ln_post
    cls_embed: torch.Tensor  # (B, E) g = normalize(cls_token @ proj)
    patches: torch.Tensor  # (B, N, D) value-path patch tokens after ln_post (not projected)
    patch_keys: torch.Tensor  # (B, N, D) last block's key features of the patches (for the keys NCut)
    grid: tuple[int, int]  # (h, w) patch grid, h * w == N


def resolve_model_name(clip_model: str, pretrained: str | None) -> tuple[str, str]:
    """Map the reference's spelling (``ViT-B/32``) and fill in a default tag."""
    if clip_model in REFERENCE_MODEL_NAMES:
        name, tag = REFERENCE_MODEL_NAMES[clip_model]
        return name, pretrained or tag
    if clip_model.startswith("local-dir:"):
        return clip_model, ""
    if pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(clip_model)
        pretrained = "openai" if "openai" in tags else (tags[0] if tags else "none")
    return clip_model, pretrained


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_sha256(folder: Path) -> str:
    weights = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth"})
    if not weights:
        raise BackboneError(f"{folder} holds no weight file (open_clip_model.safetensors)")
    return file_sha256(weights[0])


def register_model_configs() -> None:
    """Add the package's open_clip model configs to open_clip's registry (idempotent)."""
    known = set(open_clip.list_models())
    if not {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")} <= known:
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def create_clip(
    clip_model: str, pretrained: str | None = None, seed: int = 0, device: str | torch.device = "cpu"
) -> tuple[nn.Module, BaseModelSpec]:
    """Build an open_clip model (both towers) and the spec that identifies it.

    ``pretrained`` is an open_clip tag, a path to a local weight file, or ``"none"`` for
    seeded random weights (tests and speed benchmarks only).
    """
    register_model_configs()
    name, tag = resolve_model_name(clip_model, pretrained)
    if name.startswith("local-dir:"):
        folder = Path(locate(name.split(":", 1)[1]))
        if not (folder / "open_clip_config.json").is_file():
            raise BackboneError(f"{folder} is not an open_clip local-dir folder (no open_clip_config.json)")
        _check_toy_table(folder)
        model = open_clip.create_model(f"local-dir:{folder}", device=device)
        spec = BaseModelSpec(
            clip_model=f"local-dir:{portable_path(folder)}", pretrained="", weights_sha256=_folder_sha256(folder)
        )
    elif tag == "none":
        log.warning("=" * 72)
        log.warning("RANDOM WEIGHTS: %s built with seed %d and NO pretrained weights.", name, seed)
        log.warning("Predictions are meaningless; use this only for tests and speed benchmarks.")
        log.warning("=" * 72)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _create_or_explain(name, None, device)
        spec = BaseModelSpec(clip_model=name, pretrained="none", seed=seed)
    elif os.path.isfile(tag):
        model = _create_or_explain(name, tag, device)
        spec = BaseModelSpec(clip_model=name, pretrained=str(Path(tag).resolve()), weights_sha256=file_sha256(tag))
    else:
        model = _create_or_explain(name, tag, device)
        spec = BaseModelSpec(clip_model=name, pretrained=tag)
    model.eval()
    return model, spec


def _check_toy_table(folder: Path) -> None:
    """A toy-world base (its folder holds the `pretrain.json` only the toy pretraining writes) loads only in a
    process that draws the species table it was pretrained on."""
    record = folder / "pretrain.json"
    if not record.is_file():
        return
    data = parse_json(record.read_text(), str(record), BackboneError)
    if not isinstance(data, dict):
        raise BackboneError(f"{record} is not a pretraining record (a JSON object)")
    try:
        check_drawn_table(recorded_table(data), str(folder))
    except ValueError as why:
        raise BackboneError(str(why)) from None


def _create_or_explain(name: str, pretrained: str | None, device: str | torch.device) -> nn.Module:
    if name not in open_clip.list_models():
        raise BackboneError(
            f"unknown open_clip model '{name}'; see open_clip.list_models(), e.g. ViT-B-32-quickgelu, ViT-B-16"
        )
    if pretrained and not os.path.isfile(pretrained):
        known = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in known:
            raise BackboneError(
                f"'{pretrained}' is neither a pretrained tag of {name} ({', '.join(known) or 'none'}) "
                "nor an existing weight file"
            )
    try:
        return open_clip.create_model(name, pretrained=pretrained, device=device)
    except RuntimeError as error:
        if pretrained and "Failed to download" in str(error):
            raise BackboneError(
                f"could not download weights for {name} / {pretrained} (offline?): pass a local file with "
                f"--pretrained /path/to/{name}.safetensors, or use the bundled model "
                f"--clip_model local-dir:{BUNDLED_TOY_MODEL}"
            ) from None
        raise


def get_tokenizer(spec: BaseModelSpec):
    """The tokenizer that belongs to a base model (handles ``local-dir:`` folders)."""
    register_model_configs()
    if spec.clip_model.startswith("local-dir:"):
        return open_clip.get_tokenizer(locate(spec.clip_model))
    return open_clip.get_tokenizer(spec.clip_model)


class Backbone(nn.Module):
    """An open_clip ``VisionTransformer`` with one forward that returns :class:`VisualTokens`."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self._check_supported(visual)
        _use_sequence_first_layout(visual)
        self.visual = visual
        mean = visual.preprocess_cfg["mean"] if hasattr(visual, "preprocess_cfg") else visual.image_mean
        std = visual.preprocess_cfg["std"] if hasattr(visual, "preprocess_cfg") else visual.image_std
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _check_supported(visual: nn.Module) -> None:
        kind = type(visual).__name__
        if kind != "VisionTransformer":
            raise BackboneError(f"microCLIP needs an open_clip ViT; this model's visual tower is {kind}")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise BackboneError("microCLIP needs a ViT that pools the [CLS] token (pool_type 'tok')")
        last = visual.transformer.resblocks[-1]
        if type(last).__name__ != "ResidualAttentionBlock" or not isinstance(last.attn, nn.MultiheadAttention):
            raise BackboneError(f"unsupported last block {type(last).__name__}: need a standard attention block")

    @property
    def width(self) -> int:
        return self.visual.conv1.out_channels

    @property
    def embed_dim(self) -> int:
        return self.visual.proj.shape[1]

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.visual.grid_size)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Images arrive in [0, 1] (the loaders do not normalise, as in the reference)."""
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def project(self, pre_projection: torch.Tensor) -> torch.Tensor:
        """The frozen visual projection shared by [CLS] and [FG], then L2 normalisation."""
        return F.normalize(pre_projection @ self.visual.proj.to(pre_projection.dtype), dim=-1)

    def encode_cls(self, images: torch.Tensor) -> torch.Tensor:
        """Projected, normalised [CLS] only (the crops' pass): open_clip's own forward."""
        return F.normalize(self.visual(self.normalize_pixels(images)), dim=-1)

    def forward(self, images: torch.Tensor) -> VisualTokens:
        visual = self.visual
        x = visual._embeds(self.normalize_pixels(images))  # (B, 1 + N, D)
        blocks = visual.transformer.resblocks
        x = _run_blocks(visual, x, blocks[:-1])
        n_tokens = x.shape[1]
        grid = self.grid
        if n_tokens != 1 + grid[0] * grid[1]:
            raise BackboneError(f"expected {1 + grid[0] * grid[1]} tokens, got {n_tokens}")
        cls_out, value_path, keys = _last_block(blocks[-1], x)
        cls_token = visual.ln_post(cls_out)  # (B, D)
        patches = visual.ln_post(value_path[:, 1:])  # (B, N, D)
        return VisualTokens(
            cls_token=cls_token, cls_embed=self.project(cls_token), patches=patches, patch_keys=keys[:, 1:], grid=grid
        )


def _use_sequence_first_layout(visual: nn.Module) -> None:
    """Run the blocks on contiguous (L, B, D) tensors.

    With ``batch_first=True`` nn.MultiheadAttention transposes its input, so the in-projection
    multiplies a non-contiguous tensor by a weight that needs no gradient; on CPU PyTorch then
    falls back to a batched matmul that is ~3x slower in fp32 and ~10x slower in bf16. The maths
    is unchanged; open_clip's own Transformer.forward handles this layout.
    """
    visual.transformer.batch_first = False
    for block in visual.transformer.resblocks:
        block.attn.batch_first = False


def _run_blocks(visual: nn.Module, x: torch.Tensor, blocks) -> torch.Tensor:
    """Apply ``blocks`` to batch-first ``x`` (B, L, D) in the transformer's layout; returns (B, L, D)."""
    if visual.transformer.batch_first:
        for block in blocks:
            x = block(x)
        return x
    x = x.transpose(0, 1).contiguous()
    for block in blocks:
        x = block(x)
    return x.transpose(0, 1)


def _in_projections(attn: nn.MultiheadAttention) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The (weight, bias) of the query, key and value projections packed in ``in_proj``."""
    weights = attn.in_proj_weight.chunk(3)
    biases = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    return list(zip(weights, biases))


def _last_block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the last block for the [CLS] output and the value path of every token.

    Returns ``(cls_out (B, D), value_path (B, L, D), keys (B, L, D))``.
    """
    attn: nn.MultiheadAttention = block.attn
    y = block.ln_1(x)  # (B, L, D)
    (w_q, b_q), (w_k, b_k), (w_v, b_v) = _in_projections(attn)
    query = F.linear(y[:, :1], w_q, b_q)  # (B, 1, D)
    keys = F.linear(y, w_k, b_k)  # (B, L, D)
    values = F.linear(y, w_v, b_v)  # (B, L, D)

    batch, length, width = values.shape
    heads = attn.num_heads
    head_dim = width // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, t.shape[1], heads, head_dim).transpose(1, 2)

    attended = F.scaled_dot_product_attention(split(query), split(keys), split(values))  # (B, H, 1, hd)
    attended = attended.transpose(1, 2).reshape(batch, 1, width)
    cls_out = x[:, :1] + block.ls_1(attn.out_proj(attended))
    cls_out = cls_out + block.ls_2(block.mlp(block.ln_2(cls_out)))

    # Identity attention: each token "attends" only to itself, so its output is its own value.
    value_path = x + block.ls_1(attn.out_proj(values))
    value_path = value_path + block.ls_2(block.mlp(block.ln_2(value_path)))
    return cls_out[:, 0], value_path, keys


def attention_probabilities(attn: nn.MultiheadAttention, y: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
    """The softmax attention weights of one block, recomputed from its own projections.

    ``y`` is the block's attention input (its ``ln_1`` output) in batch-first layout, (B, L, D); the
    first ``n_queries`` tokens are the queries (all of them when None). Returns (B, H, Q, L), per head,
    as ``nn.MultiheadAttention(..., need_weights=True, average_attn_weights=False)`` would give them.
    """
    if not isinstance(attn, nn.MultiheadAttention):
        raise BackboneError(f"attention weights need an nn.MultiheadAttention block, got {type(attn).__name__}")
    (w_q, b_q), (w_k, b_k), _ = _in_projections(attn)
    batch, length, width = y.shape
    heads = attn.num_heads
    head_dim = width // heads
    queries = y if n_queries is None else y[:, :n_queries]
    query = F.linear(queries, w_q, b_q).view(batch, queries.shape[1], heads, head_dim).transpose(1, 2)
    keys = F.linear(y, w_k, b_k).view(batch, length, heads, head_dim).transpose(1, 2)
    return (query @ keys.transpose(-1, -2) / head_dim**0.5).softmax(-1)  # (B, H, Q, L)


@torch.no_grad()
def block_attention_weights(backbone: Backbone, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's (B, H, L, L) attention weights, first block first, from one forward pass.

    open_clip calls attention with ``need_weights=False``, so the weights are recomputed from each
    block's own projections of its input (for attention rollout and other baselines, not for SOAP).
    """
    visual = backbone.visual
    x = visual._embeds(backbone.normalize_pixels(images))  # (B, L, D)
    blocks = visual.transformer.resblocks
    weights = []
    for index, block in enumerate(blocks):
        weights.append(attention_probabilities(block.attn, block.ln_1(x)))
        if index < len(blocks) - 1:
            x = _run_blocks(visual, x, [block])
    return weights


@torch.no_grad()
def last_block_cls_attention(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """(B, N) head-averaged attention of the [CLS] query over the patches in the last block.

    The same weights as the last entry of :func:`block_attention_weights` (row 0, patch columns,
    heads averaged), with only the [CLS] query computed. A baseline map for comparisons.
    """
    visual = backbone.visual
    x = visual._embeds(backbone.normalize_pixels(images))
    blocks = visual.transformer.resblocks
    x = _run_blocks(visual, x, blocks[:-1])
    last = blocks[-1]
    weights = attention_probabilities(last.attn, last.ln_1(x), n_queries=1)  # (B, H, 1, L)
    return weights.mean(1)[:, 0, 1:]
