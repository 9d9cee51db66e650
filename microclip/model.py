"""``MicroCLIP``: backbone + SOAP + heads, which parameters train, and the adapted state."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import torch
from torch import nn

from microclip.backbone import Backbone, BaseModelSpec, VisualTokens, create_clip, get_tokenizer
from microclip.constants import DEFAULT_FUSION_RATIO
from microclip.heads import DEFAULT_TEMPLATES, BranchLogits, Heads, HeadWeights, TextEncoder, build_head_weights
from microclip.soap import (
    SOAP,
    NcutSign,
    NcutThreshold,
    PoolMode,
    QueryMode,
    SoapOutput,
    foreground_mask,
    resolve_ncut_sign,
    soap_query,
)


@dataclass
class MethodConfig:
    """How the forward pass is computed. Defaults are the reference's behaviour, except the NCut
    orientation, which is canonical so that results do not depend on the machine (docs/method.md §10.2)."""

    fusion_ratio: float = DEFAULT_FUSION_RATIO
    ncut_features: Literal["values", "keys"] = "values"  # reference: raw value-path tokens
    ncut_threshold: NcutThreshold = "std"  # reference: std (its comment says mean)
    ncut_sign: NcutSign = "canonical"  # machine-independent; "solver" is the reference's literal rule (§10.2)
    query: QueryMode = "ncut"
    pool: PoolMode = "attention"
    learnable_null: bool = False  # --use_unr_token
    # not the reference's: SOAP's value map acts on tokens minus their mean (--centre_values; microclip.soap.SOAP)
    centre_values: bool = False
    train_soap: bool = True  # False for --wca_baseline (SOAP frozen)
    ncut_device: Literal["cpu", "cuda"] = "cpu"  # where eigh runs; the reference solved on the GPU

    def __post_init__(self) -> None:
        self.ncut_sign = resolve_ncut_sign(self.ncut_sign)  # checkpoints of the first build say "faithful"
        if not 0.0 <= self.fusion_ratio <= 1.0:  # outside, one branch would count against its own evidence
            raise ValueError(f"fusion_ratio must be from 0 to 1, not {self.fusion_ratio:g}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MethodConfig:
        """Unknown keys are an error naming them (a typo must not fall back to a default silently)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(
                f"method config: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(names)}"
            )
        return cls(**data)


@dataclass(frozen=True)
class ModelOutput:
    """One forward pass. With ``cls_only`` only ``logits.cls`` is meaningful and the rest is None."""

    logits: BranchLogits
    tokens: VisualTokens | None = None
    mask: torch.Tensor | None = None  # (B, N) NCut foreground
    soap: SoapOutput | None = None
    fg_embed: torch.Tensor | None = None  # (B, E) f = normalize(h @ proj)


class MicroCLIP(nn.Module):
    """The adapted model. Only visual LayerNorms, SOAP's projections and W* ever train."""

    def __init__(
        self, backbone: Backbone, heads: Heads, config: MethodConfig | None = None, base: BaseModelSpec | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config or MethodConfig()
        self.soap = SOAP(
            backbone.width, learnable_null=self.config.learnable_null, centre_values=self.config.centre_values
        )
        self.heads = heads
        self.base = base
        # the shift self-training gave every image's [FG] (microclip.drift.ShiftProbe), on CPU; None when unmeasured.
        # Not a parameter or buffer: it describes the run and is never trained or saved with the tensors.
        self.fg_shift: torch.Tensor | None = None
        self.freeze()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.heads.classes

    @classmethod
    def build(
        cls,
        clip_model: str,
        pretrained: str | None,
        classes: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        descriptions: dict[str, list[str]] | None = None,
        config: MethodConfig | None = None,
        use_handcrafted: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        keep_text: bool = False,
    ) -> tuple[MicroCLIP, HeadWeights, TextEncoder | None]:
        """Load a base model, build both heads with its text tower, and (unless kept) drop the text tower."""
        clip, spec = create_clip(clip_model, pretrained, seed=seed, device=device)
        encoder = TextEncoder(clip, get_tokenizer(spec), device=device)
        weights = build_head_weights(encoder, classes, templates, descriptions, use_handcrafted)
        model = cls(Backbone(clip.visual), Heads.from_weights(weights), config, spec).to(device)
        return model, weights, (encoder if keep_text else None)

    def relabel(
        self,
        encoder: TextEncoder,
        classes: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        descriptions: dict[str, list[str]] | None = None,
    ) -> MicroCLIP:
        """This model for another label set: the same (shared) visual tower and SOAP, fresh heads.

        ``encoder`` is the base model's text tower. W* starts from the new classes' descriptions (or
        templates), so a label set the model was not adapted to is classified zero-shot by the
        adapted encoder. The returned model is in eval mode.
        """
        weights = build_head_weights(encoder, classes, templates, descriptions)
        model = MicroCLIP(self.backbone, Heads.from_weights(weights), self.config, self.base)
        model.soap.load_state_dict(self.soap.state_dict())
        model.fg_shift = self.fg_shift  # a property of the visual side, so it holds for any label set
        return model.to(next(self.parameters()).device).eval()

    def asking(self, query: QueryMode | None = None, pool: PoolMode | None = None) -> MicroCLIP:
        """This model with SOAP's query built, or ``[FG]`` pooled, another way (the reference's ablations), for a
        "what if" look at one trained model: the same modules and weights, shared, and only the method config's
        query or pooling changed (None keeps the model's). For inference; a view, not a copy to train."""
        view = copy.copy(self)  # a new __dict__ over the same submodules and parameters
        view.config = replace(self.config, query=query or self.config.query, pool=pool or self.config.pool)
        return view

    # ---------------------------------------------------------------- forward

    def forward(
        self,
        images: torch.Tensor,
        ratio: float | None = None,
        cls_only: bool = False,
        tokens: VisualTokens | None = None,
    ) -> ModelOutput:
        """images: (B, 3, S, S) in [0, 1]. ``cls_only`` skips SOAP (the CLS-only baselines). ``tokens``: the
        backbone's output for these images when the caller already has it (views of one model that differ only
        after the backbone share one pass)."""
        cfg = self.config
        if cls_only:
            cls_embed = self.encode_cls(images)
            return ModelOutput(logits=self.heads.branch_logits(cls_embed, cls_embed, 1.0))
        tokens = self.backbone(images) if tokens is None else tokens
        ncut_input = (
            tokens.patches if cfg.ncut_features == "values" else nn.functional.normalize(tokens.patch_keys, dim=-1)
        )
        eigh_device = cfg.ncut_device if cfg.ncut_device == "cpu" or images.device.type == "cuda" else "cpu"
        mask = foreground_mask(
            ncut_input,
            threshold=cfg.ncut_threshold,
            sign=cfg.ncut_sign,
            eigh_device=eigh_device if eigh_device == "cpu" else images.device,
        )
        query = soap_query(tokens.patches, mask, tokens.cls_token, cfg.query)
        soap = self.soap(tokens.patches, query, mask, pool=cfg.pool)
        fg_embed = self.backbone.project(soap.pooled)
        logits = self.heads.branch_logits(tokens.cls_embed, fg_embed, cfg.fusion_ratio if ratio is None else ratio)
        return ModelOutput(tokens=tokens, mask=mask, soap=soap, fg_embed=fg_embed, logits=logits)

    def encode_cls(self, images: torch.Tensor) -> torch.Tensor:
        """(B, E) normalised [CLS] embeddings; used for the crops."""
        return self.backbone.encode_cls(images)

    # ------------------------------------------------------- trainable set

    def _visual_layernorm_parameters(self) -> dict[str, nn.Parameter]:
        """Every LayerNorm parameter of the visual tower, selected by module type, not by name."""
        return {
            f"backbone.visual.{module_name}.{param_name}": param
            for module_name, module in self.backbone.visual.named_modules()
            if isinstance(module, nn.LayerNorm)
            for param_name, param in module.named_parameters(recurse=False)
        }

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Every LayerNorm of the visual tower, SOAP (unless frozen), W*."""
        selected = self._visual_layernorm_parameters()
        if self.config.train_soap:
            for name, param in self.soap.named_parameters():
                selected[f"soap.{name}"] = param
        selected["heads.w_star"] = self.heads.w_star
        return selected

    def freeze(self) -> None:
        """Everything frozen except :meth:`trainable_parameters`."""
        for param in self.parameters():
            param.requires_grad_(False)
        for param in self.trainable_parameters().values():
            param.requires_grad_(True)

    def no_decay_names(self) -> set[str]:
        """LayerNorm gains/biases and the null token: the reference's *intended* no-decay group."""
        return {name for name in self.trainable_parameters() if name.startswith("backbone.") or "null" in name}

    # ------------------------------------------------------- adapted state

    def _adapted_tensors(self) -> dict[str, torch.Tensor]:
        """The model's own adaptable tensors, by checkpoint name (live: no copy)."""
        state: dict[str, torch.Tensor] = dict(self._visual_layernorm_parameters())
        for name, tensor in self.soap.state_dict().items():
            state[f"soap.{name}"] = tensor
        state["heads.w_star"] = self.heads.w_star
        state["heads.w_llm"] = self.heads.w_llm
        return state

    def adapted_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: every adaptable tensor (trained or not) plus W_LLM for display, as float32 CPU
        copies. Always copies, on any device: a snapshot kept while training goes on must not move with it."""
        return {
            name: tensor.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
            for name, tensor in self._adapted_tensors().items()
        }

    def load_adapted_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = self._adapted_tensors()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"adapted state does not fit this model: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            )
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        for name, tensor in state.items():
            target = own[name]
            if target.shape != tensor.shape:
                raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(tensor.to(target.dtype))


def with_own_classes(model: MicroCLIP, classes: Sequence[str], templates: Sequence[str] | None = None) -> MicroCLIP:
    """``model`` answering among a user's own ``classes``: fresh heads from its base model's text tower and
    ``templates`` (by default the checkpoint's), the adapted visual tower and SOAP kept, so the label set is classified
    zero-shot by the adapted encoder; what the app's typed class names give (``ModelRegistry.with_classes``)."""
    meta = getattr(model, "meta", None)
    templates = templates or (meta.templates if meta is not None else None) or DEFAULT_TEMPLATES
    encoder = base_text_encoder(model.base, next(model.parameters()).device)
    return model.relabel(encoder, list(classes), templates)


def base_text_encoder(base: BaseModelSpec, device: str | torch.device = "cpu") -> TextEncoder:
    """The text tower of the base model a checkpoint names (``meta.base``), loaded on its own: what weighs each
    description in the heads (the walkthrough's heads step), for a model whose own text tower was dropped."""
    clip, spec = create_clip(base.clip_model, base.pretrained or None, seed=base.seed or 0, device=device)
    return TextEncoder(clip, get_tokenizer(spec), device=device)
