"""Other saliency methods on the same model, to set beside SOAP (the mechanism itself) and compare.

Every explainer has one signature, ``(model, images, class_index) -> (B, h, w)``: ``images`` are
(B, 3, S, S) in [0, 1], ``class_index`` is a (B,) LongTensor, and the map lives on the model's patch
grid (``model.backbone.grid``), higher = more salient, in raw values (normalising is the display's
job). ``EXPLAINERS`` names each with a title and a "what am I looking at" note; ``run_explainers``
runs several on one image and times each one alone.

LeGrad (``legrad-torch``) and the Grad-CAM family (``grad-cam``) come from their packages, which hook,
patch and re-flag the modules they are handed. They are therefore handed a *detached twin* of the
backbone: a structural copy that shares every weight's storage (so it sees the live weights) but owns
its Parameter objects, flags, hooks and patched forwards. The live model is never touched.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import torch
from torch import nn

from microclip.backbone import Backbone, block_attention_weights, last_block_cls_attention
from microclip.constants import LOGIT_SCALE
from microclip.explain import cls_similarity, soap_fg_parts
from microclip.model import MicroCLIP
from microclip.scoring import mass_inside, patch_coverage, pointing_hits

ExplainerFn = Callable[[MicroCLIP, torch.Tensor, torch.Tensor], torch.Tensor]

LEGRAD_INSTALL = "pip install --no-deps legrad-torch"
GRAD_CAM_INSTALL = "pip install grad-cam"
LEGRAD_LAYER_INDEX = -2  # legrad-torch's default: explain through the last two blocks
ROLLOUT_RESIDUAL = 0.5  # Â = 0.5·A + 0.5·I: the residual connection's share (Abnar & Zuidema 2020)


class ExplainerUnavailable(RuntimeError):
    """An explainer cannot run here (its package is missing, or the model is not supported); says what to do."""


# ------------------------------------------------------------------ helpers


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _patch_average(pixel_maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) pixel-resolution maps → (B, h, w): the mean of each patch's pixels."""
    batch, height, width = pixel_maps.shape
    h, w = grid
    if height % h or width % w:
        raise ValueError(f"a {height}x{width} map does not tile into the {h}x{w} patch grid")
    return pixel_maps.reshape(batch, h, height // h, w, width // w).mean(dim=(2, 4))


def _check_classes(model: MicroCLIP, class_index: torch.Tensor, batch: int) -> None:
    if class_index.shape != (batch,):
        raise ValueError(f"class_index must have shape ({batch},) for {batch} images, got {tuple(class_index.shape)}")
    n_classes = len(model.classes)
    if len(class_index) and not (0 <= int(class_index.min()) and int(class_index.max()) < n_classes):
        raise ValueError(f"class_index {class_index.tolist()} out of range for {n_classes} classes")


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def detached_twin(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that shares every parameter's and buffer's storage but owns its Parameters.

    Weight updates done in place on the live module (an optimiser step, ``load_state_dict``) show in the
    twin; ``requires_grad`` flags, ``.grad``, hooks and patched methods set on the twin stay there. Its
    parameters start frozen, and hooks copied from the live module are dropped.
    """
    memo: dict[int, object] = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in module.parameters()}
    memo.update({id(b): b for b in module.buffers()})
    twin = copy.deepcopy(module, memo)
    for sub in twin.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(sub, name, None)
            if hooks is not None:
                hooks.clear()
    return twin


def _shares_storage(twin: nn.Module, module: nn.Module) -> bool:
    """Does ``twin`` still read ``module``'s tensors (not so after ``.to()`` or a replaced Parameter)?"""
    pairs = list(zip(module.parameters(), twin.parameters())) + list(zip(module.buffers(), twin.buffers()))
    return all(a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.dtype == b.dtype for a, b in pairs)


class _TwinCache:
    """Per-backbone objects built on a detached twin (weakly keyed), each with a lock for its use.

    The packages keep per-call state on the modules (activations, hooks), so one call at a time per twin.
    """

    def __init__(self, build: Callable[[Backbone, object], tuple[object, nn.Module]]) -> None:
        self._build = build  # (backbone, key) -> (object, the twin module to check against backbone.visual)
        self._entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, backbone: Backbone, key: object = None) -> tuple[object, threading.Lock]:
        with self._lock:
            entries = self._entries.setdefault(backbone, {})
            entry = entries.get(key)
            if entry is None or not _shares_storage(entry[1], backbone.visual):
                built, twin = self._build(backbone, key)
                entry = entries[key] = (built, twin, threading.Lock())
            return entry[0], entry[2]


# ------------------------------------------------------------------ the model's own maps


@torch.no_grad()
def soap_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """SOAP's pooling weight of each patch (the null token's share left out). Class-agnostic."""
    out = model(images.to(_device(model)))
    return out.soap.weights[:, :-1].reshape(-1, *out.tokens.grid)


@torch.no_grad()
def soap_terms(model: MicroCLIP, images: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch token's exact term in ``[FG]``'s score along ``directions`` (B, E), and the null token's.

    ``[FG]`` is f = normalize(P·h) with h = Σ_j α_j v_j, so LOGIT_SCALE·f·d = Σ_j LOGIT_SCALE·α_j·(P·v_j)·d / ‖P·h‖:
    with d = ŵ*_c the terms add up, null included, to the ``[FG]`` logit of class c. Returns ((B, N), (B,)).
    """
    parts = soap_fg_parts(model, model(images.to(_device(model))).soap)  # (B, N + 1, E)
    terms = (parts @ directions.to(parts.dtype).unsqueeze(-1)).squeeze(-1)  # (B, N + 1)
    return terms[:, :-1], terms[:, -1]


@torch.no_grad()
def soap_contribution_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Each patch token's term in the class's ``[FG]`` logit: SOAP's weight times its value, read along ŵ*_c.
    Class-specific; signed (a token can take from the class)."""
    directions = model.heads.w_star_hat()[class_index.to(_device(model))]
    patches, _ = soap_terms(model, images, directions)
    return patches.reshape(-1, *model.backbone.grid)


@torch.no_grad()
def ncut_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """The NCut foreground mask behind SOAP's query, as 0.0 / 1.0. Class-agnostic."""
    out = model(images.to(_device(model)))
    return out.mask.float().reshape(-1, *out.tokens.grid)


@torch.no_grad()
def cls_similarity_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Cosine between each value-path patch token and the pre-projection [CLS]. Class-agnostic."""
    tokens = model.backbone(images.to(_device(model)))
    return cls_similarity(tokens).reshape(-1, *tokens.grid)


# ------------------------------------------------------------------ attention baselines


def cls_attention_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """Last block's [CLS]→patch attention, heads averaged. Class-agnostic."""
    backbone = model.backbone
    return last_block_cls_attention(backbone, images.to(_device(model))).reshape(-1, *backbone.grid)


def attention_rollout(weights: Sequence[torch.Tensor], residual: float = ROLLOUT_RESIDUAL) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of per-block (B, H, L, L) weights, first block first.

    Per block: heads averaged, ``Â = residual·A + (1 − residual)·I`` for the skip connection, rows
    renormalised; the rollout is ``Â_last ··· Â_first``, (B, L, L): row i says how much of token i's
    final state flows from each input token.
    """
    rollout = None
    for block_weights in weights:
        attention = block_weights.mean(1)  # (B, L, L)
        eye = torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
        augmented = residual * attention + (1.0 - residual) * eye
        augmented = augmented / augmented.sum(-1, keepdim=True)
        rollout = augmented if rollout is None else augmented @ rollout
    if rollout is None:
        raise ValueError("attention rollout needs at least one block")
    return rollout


def rollout_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """The [CLS] row of the attention rollout over every block, patch columns. Class-agnostic."""
    backbone = model.backbone
    weights = block_attention_weights(backbone, images.to(_device(model)))
    return attention_rollout(weights)[:, 0, 1:].reshape(-1, *backbone.grid)


@torch.no_grad()
def soap_rollout_map(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """SOAP's pooling weights carried back to the input patches through the attention rollout of the blocks before
    the last, patch columns. Class-agnostic."""
    images = images.to(_device(model))
    backbone = model.backbone
    weights = model(images).soap.weights[:, :-1]  # over the last block's tokens
    before_last = block_attention_weights(backbone, images)[:-1]
    if before_last:  # a one-block tower's tokens are still the patches themselves
        weights = (weights.unsqueeze(1) @ attention_rollout(before_last)[:, 1:, 1:]).squeeze(1)
    return weights.reshape(-1, *backbone.grid)


# ------------------------------------------------------------------ LeGrad (legrad-torch)


def _legrad():
    try:
        import legrad
    except Exception as error:  # ImportError, or the package failing against this open_clip
        raise ExplainerUnavailable(
            f"LeGrad needs the legrad-torch package, which cannot be imported here ({type(error).__name__}: "
            f"{error}); install it with `{LEGRAD_INSTALL}` (--no-deps: its metadata pins open_clip<=2.23, "
            "and microclip.explainers adapts it to the open_clip this project uses)"
        ) from None
    return legrad


def check_legrad(model: MicroCLIP | None = None) -> None:
    """Raise ``ExplainerUnavailable`` if LeGrad cannot explain ``model`` here."""
    _legrad()
    if model is None:
        return
    h, w = model.backbone.grid
    if h != w:
        raise ExplainerUnavailable(
            f"legrad-torch 1.1 assumes a square patch grid (it reshapes the N patches to "
            f"√N × √N); this model's grid is {h}×{w}"
        )
    if model.backbone.visual.transformer.batch_first:
        raise ExplainerUnavailable(
            "legrad-torch's hooks need the blocks in sequence-first layout (L, N, D); "
            "build the model with microclip.backbone.Backbone, which sets it"
        )


class _VisualHolder(nn.Module):
    """What ``LeWrapper`` wraps: a module with a ``.visual`` (here, a detached twin of the visual tower)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual


def _build_legrad(backbone: Backbone, layer_index: int):
    """``LeWrapper`` over a twin of the visual tower.

    LeWrapper copies the wrapped module's attributes, replaces ``visual.forward`` with its own
    ``vit_dynamic_size_forward`` (which permutes to (L, N, D) *and then* lets open_clip 3.x's
    Transformer transpose again when ``batch_first`` is False, so it is not used here), hooks the
    blocks from ``layer_index`` on, and sets ``requires_grad`` on their parameters: all on the twin.
    """
    twin = detached_twin(backbone.visual)
    with contextlib.redirect_stdout(io.StringIO()):  # LeWrapper announces its hooks with print()
        wrapper = _legrad().LeWrapper(_VisualHolder(twin), layer_index=layer_index)
    return wrapper, twin


_LEGRAD_WRAPPERS = _TwinCache(_build_legrad)


def _forget_legrad_state(wrapper) -> None:
    """Drop what the hooked blocks kept from the last pass (tensors holding an autograd graph)."""
    for block in wrapper.visual.transformer.resblocks[wrapper.starting_depth :]:
        for name in ("feat_post_attn", "feat_post_mlp"):
            block.__dict__.pop(name, None)
        block.attn.__dict__.pop("attention_maps", None)


def prepare_legrad(model: MicroCLIP, layer_index: int = LEGRAD_LAYER_INDEX) -> None:
    """Build (once per backbone) the LeGrad wrapper, so that timing a call measures LeGrad alone."""
    check_legrad(model)
    _LEGRAD_WRAPPERS.get(model.backbone, layer_index)


def legrad_map(
    model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor, layer_index: int = LEGRAD_LAYER_INDEX
) -> torch.Tensor:
    """LeGrad (Bousselham et al. 2024) via ``legrad-torch``'s ``compute_legrad_clip``. Class-specific.

    The "text embedding" explained is the class's normalised ``Ŵ*`` row. Our own pass runs the hooked
    twin (open_clip's Transformer handles the sequence-first layout), so every hooked block stores
    ``feat_post_mlp`` and ``attn.attention_maps``; then the package computes the map from them (its
    loss sums the diagonal, so B images with B class rows work). It returns a pixel-resolution,
    min-max-normalised map (bilinear ×patch_size), reduced here to the grid by averaging each patch.
    """
    check_legrad(model)
    backbone = model.backbone
    images = images.to(_device(model))
    _check_classes(model, class_index, images.shape[0])
    wrapper, lock = _LEGRAD_WRAPPERS.get(backbone, layer_index)
    visual = wrapper.visual
    text = model.heads.w_star_hat().detach()[class_index.to(images.device)]  # (B, E)
    with lock, torch.enable_grad():
        try:
            visual.transformer(visual._embeds(backbone.normalize_pixels(images)))
            heat = wrapper.compute_legrad_clip(text.to(visual.proj.dtype), image=None)  # (1, B, H, W)
        finally:
            _forget_legrad_state(wrapper)
    heat = torch.nan_to_num(heat.detach()[0].float(), nan=0.0)  # a constant map min-max-normalises to 0/0
    return _patch_average(heat, backbone.grid)


# ------------------------------------------------------------------ the Grad-CAM family (grad-cam)


def _grad_cam():
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except Exception as error:
        raise ExplainerUnavailable(
            f"the Grad-CAM family needs the grad-cam package, which cannot be imported here "
            f"({type(error).__name__}: {error}); install it with `{GRAD_CAM_INSTALL}`"
        ) from None
    return pytorch_grad_cam, ClassifierOutputTarget


def check_grad_cam(model: MicroCLIP | None = None) -> None:
    _grad_cam()


def check_finer_cam(model: MicroCLIP | None = None) -> None:
    _grad_cam()
    if model is not None and len(model.classes) < 2:
        raise ExplainerUnavailable("Finer-CAM compares a class with its look-alikes; this model has one class")


class _ClsBranchLogits(nn.Module):
    """images (B, 3, S, S) in [0, 1] → (B, C) [CLS]-branch logits ``100 · g · Ŵ*ᵀ``: what the CAMs explain.

    The twin's weights are frozen, so the pixels are made the leaf that needs a gradient: the target
    layer's output then carries one, and no weight's ``.grad`` is ever written.
    """

    def __init__(self, backbone: Backbone, w_hat: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("w_hat", w_hat, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.detach().requires_grad_(True)
        cls_embed = self.backbone.encode_cls(pixels)  # (B, E)
        return LOGIT_SCALE * cls_embed @ self.w_hat.T.to(cls_embed.dtype)


def _tokens_to_grid(grid: tuple[int, int], sequence_first: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ViT reshape transform: block tokens → (B, D, h, w) patch "channels", [CLS] dropped."""
    h, w = grid

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if sequence_first:  # (L, B, D): how our Backbone runs the blocks
            tokens = tokens.transpose(0, 1)
        patches = tokens[:, 1:]  # (B, N, D)
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)

    return reshape


def _build_cam_twin(backbone: Backbone, key: object = None):
    twin = detached_twin(backbone)
    return twin, twin.visual


_CAM_TWINS = _TwinCache(_build_cam_twin)


@cache
def _sign_corrected_eigencam():
    """The package's EigenCAM with the package's own SVD sign correction (Seg-Eigen-CAM, Eq. 13).

    Plain EigenCAM projects on the first right singular vector, whose sign the solver picks: the map
    could flip from one machine to the next. The correction (positive where |max| ≥ |min|) fixes it.
    """
    cams, _ = _grad_cam()
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    class SignCorrectedEigenCAM(cams.EigenCAM):
        def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
            return get_2d_projection_with_sign_correction(activations)

    return SignCorrectedEigenCAM


def _cam_class(method: str):
    cams, _ = _grad_cam()
    if method == "eigencam":
        return _sign_corrected_eigencam()
    return {
        "gradcam": cams.GradCAM,
        "gradcam++": cams.GradCAMPlusPlus,
        "hirescam": cams.HiResCAM,
        "layercam": cams.LayerCAM,
        "finercam": cams.FinerCAM,
    }[method]


def prepare_cam(model: MicroCLIP) -> None:
    """Build (once per backbone) the twin the CAMs hook, so that timing a call measures the CAM alone."""
    _grad_cam()
    _CAM_TWINS.get(model.backbone)


def cam_map(method: str, model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
    """One of the grad-cam package's CAMs on the last block's ``ln_1``, for the [CLS]-branch logits.

    Target ``ClassifierOutputTarget(c)`` per image (Finer-CAM: the class against its closest classes).
    The package min-max normalises each map and upsamples it bilinearly to the image; it is reduced here
    to the grid by averaging each patch.
    """
    cams, classifier_target = _grad_cam()
    if method == "finercam":
        check_finer_cam(model)
    backbone = model.backbone
    images = images.to(_device(model))
    _check_classes(model, class_index, images.shape[0])
    twin, lock = _CAM_TWINS.get(backbone)
    net = _ClsBranchLogits(twin, model.heads.w_star_hat().detach())
    layers = [twin.visual.transformer.resblocks[-1].ln_1]
    reshape = _tokens_to_grid(backbone.grid, sequence_first=not twin.visual.transformer.batch_first)
    classes = [int(c) for c in class_index]
    with lock, torch.enable_grad():
        cam = _cam_class(method)(model=net, target_layers=layers, reshape_transform=reshape)
        base = cam.base_cam if method == "finercam" else cam
        try:  # not `with cam:` — its __exit__ swallows IndexError
            if method == "finercam":
                heat = np.concatenate([cam(images[b : b + 1], target_idx=c) for b, c in enumerate(classes)])
            else:
                heat = cam(input_tensor=images, targets=[classifier_target(c) for c in classes])
        finally:
            base.activations_and_grads.release()
    return _patch_average(torch.from_numpy(np.asarray(heat, dtype=np.float32)).to(images.device), backbone.grid)


def _cam(method: str) -> ExplainerFn:
    def explainer(model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
        return cam_map(method, model, images, class_index)

    explainer.__name__ = f"{method.replace('+', 'p')}_map"
    return explainer


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Explainer:
    """One saliency method: the function, and what a user needs to read its map."""

    name: str
    title: str
    note: str  # one paragraph: what am I looking at
    fn: ExplainerFn
    class_specific: bool
    check: Callable[[MicroCLIP | None], None] | None = None  # raises ExplainerUnavailable
    prepare: Callable[[MicroCLIP], None] | None = None  # one-time setup per model, kept off the clock
    # A signed map (a term that adds to or takes from the class): drawn on a diverging scale around zero, where
    # min-max scaling would paint its most negative patch as "lowest" and leave zero unmarked.
    signed: bool = False

    def __call__(self, model: MicroCLIP, images: torch.Tensor, class_index: torch.Tensor) -> torch.Tensor:
        return self.fn(model, images, class_index)

    def unavailable_reason(self, model: MicroCLIP | None = None) -> str | None:
        """Why this explainer cannot run here (on ``model``, if given), or None if it can."""
        if self.check is None:
            return None
        try:
            self.check(model)
        except ExplainerUnavailable as error:
            return str(error)
        return None


_CAM_HOW = (
    "on the last block's first LayerNorm (its patch tokens as channels), for the `[CLS]`-branch logit "
    "100·g·Ŵ*_c, via the `grad-cam` package"
)

EXPLAINERS: dict[str, Explainer] = {
    e.name: e
    for e in (
        Explainer(
            "soap",
            "SOAP attention",
            "The weight each patch gets when SOAP pools the fine-grained `[FG]` token (the null token's share "
            "left out). These *are* the pooling weights, so the map is the mechanism, from the same forward "
            "pass that makes the prediction. Class-agnostic.",
            soap_map,
            False,
        ),
        Explainer(
            "soap_contribution",
            "SOAP, per class",
            "Each patch's exact share of the class's `[FG]` logit: SOAP's weight times its value, projected and "
            "read along the class's W* row (100·α_j·(P·v_j)·ŵ*_c / ‖P·h‖; with the null token's they add up to "
            "the `[FG]` logit). A patch with a large weight whose value points elsewhere adds little; a negative "
            "patch takes from the class. From SOAP alone, the same forward pass. Class-specific.",
            soap_contribution_map,
            True,
            signed=True,
        ),
        Explainer(
            "ncut",
            "NCut foreground",
            "The patches a normalised cut of the patch-token affinity graph puts in the foreground; their mean "
            "is SOAP's query. A mask (on or off), not a score. Class-agnostic.",
            ncut_map,
            False,
        ),
        Explainer(
            "cls_similarity",
            "Similarity to [CLS]",
            "Cosine between each value-path patch token and the global `[CLS]` token (before projection): what "
            "the global branch already summarises. Class-agnostic.",
            cls_similarity_map,
            False,
        ),
        Explainer(
            "cls_attention",
            "[CLS] attention (last block)",
            "How strongly the `[CLS]` query attends to each patch in the last block, averaged over heads. Cheap, "
            "but it shows where the last block looked, not what raised the score, and it ignores earlier "
            "blocks, the values and the MLP. Class-agnostic.",
            cls_attention_map,
            False,
        ),
        Explainer(
            "rollout",
            "Attention rollout",
            "Abnar & Zuidema (2020): every block's head-averaged attention, with the skip connection added "
            "(0.5·A + 0.5·I, rows renormalised), multiplied through all blocks; the `[CLS]` row says how much "
            "of each patch flows into `[CLS]`. Class-agnostic, and often diffuse.",
            rollout_map,
            False,
        ),
        Explainer(
            "soap_rollout",
            "SOAP, rolled out",
            "SOAP's pooling weights carried back to the picture: the tokens SOAP pools have already mixed "
            "across the image in the blocks before the last, so each token's weight is spread over the patches "
            "its content flowed from, by those blocks' attention rollout (as in Attention rollout). Where "
            "`[FG]`'s content comes from in the picture, under rollout's assumptions; SOAP attention shows the "
            "weights themselves. Class-agnostic.",
            soap_rollout_map,
            False,
        ),
        Explainer(
            "legrad",
            "LeGrad",
            "LeGrad (Bousselham et al. 2024, the `legrad-torch` package): the gradient of the class score "
            "(cosine of Ŵ*_c with the image feature read after each of the last blocks, mean over tokens) with "
            "respect to each block's attention map; positive parts averaged over heads and queries, summed "
            "over blocks. Class-specific; it explains a `[CLS]`-style image feature, not the fused score.",
            legrad_map,
            True,
            check_legrad,
            prepare_legrad,
        ),
        Explainer(
            "gradcam",
            "Grad-CAM",
            f"Grad-CAM (Selvaraju et al. 2017) {_CAM_HOW}: the channels weighted by their mean gradient, summed, "
            "ReLU. Class-specific. Made for CNNs; on a ViT's tokens it is a coarse heuristic.",
            _cam("gradcam"),
            True,
            check_grad_cam,
            prepare_cam,
        ),
        Explainer(
            "gradcam++",
            "Grad-CAM++",
            f"Grad-CAM++ (Chattopadhay et al. 2018) {_CAM_HOW}: like Grad-CAM, with channel weights from "
            "higher-order gradient terms, meant to cover several instances of the evidence. Class-specific.",
            _cam("gradcam++"),
            True,
            check_grad_cam,
            prepare_cam,
        ),
        Explainer(
            "hirescam",
            "HiResCAM",
            f"HiResCAM (Draelos & Carin 2020) {_CAM_HOW}: gradient × activation per patch, summed over channels "
            "(no averaging of the gradient), so each patch's value is its own first-order contribution. "
            "Class-specific.",
            _cam("hirescam"),
            True,
            check_grad_cam,
            prepare_cam,
        ),
        Explainer(
            "layercam",
            "LayerCAM",
            f"LayerCAM (Jiang et al. 2021) {_CAM_HOW}: positive gradient × activation per patch, summed over "
            "channels. Class-specific.",
            _cam("layercam"),
            True,
            check_grad_cam,
            prepare_cam,
        ),
        Explainer(
            "eigencam",
            "Eigen-CAM",
            "Eigen-CAM (Muhammad & Yeasin 2020) on the last block's first LayerNorm, via `grad-cam`: each "
            "patch's projection on the first principal component of the patch activations. No gradients and "
            "no class: what that layer varies most over. The SVD's arbitrary sign is fixed with the package's "
            "own correction (positive where |max| ≥ |min|).",
            _cam("eigencam"),
            False,
            check_grad_cam,
            prepare_cam,
        ),
        Explainer(
            "finercam",
            "Finer-CAM",
            f"Finer-CAM (Zhang et al. 2025) {_CAM_HOW}: Grad-CAM of the class's logit *minus* its look-alikes' "
            "(the three classes with the closest logits, weighted by their probability): what separates this "
            "class from the ones it could be confused with. Class-specific; made for fine-grained classes.",
            _cam("finercam"),
            True,
            check_finer_cam,
            prepare_cam,
        ),
    )
}


def available_explainers(model: MicroCLIP | None = None) -> list[str]:
    """Names of the explainers that can run here (on ``model``, if given), in registry order."""
    return [name for name, explainer in EXPLAINERS.items() if explainer.unavailable_reason(model) is None]


def unavailable_explainers(model: MicroCLIP | None = None) -> dict[str, str]:
    """Name → why it cannot run here (on ``model``, if given)."""
    reasons = {name: explainer.unavailable_reason(model) for name, explainer in EXPLAINERS.items()}
    return {name: reason for name, reason in reasons.items() if reason is not None}


# ------------------------------------------------------------------ running several on one image


@dataclass(frozen=True)
class ExplainerRun:
    """One explainer on one image."""

    name: str
    saliency: np.ndarray | None  # (h, w) raw map; None when the explainer could not run
    ms: float | None  # wall-clock cost of this explainer alone on this image: a median of calls, setup excluded
    error: str | None = None  # why it could not run


@dataclass(frozen=True)
class ExplainerComparison:
    """Several explainers on one image, for one class."""

    class_index: int
    class_name: str
    predicted: bool  # the class is the model's own (fused) prediction
    grid: tuple[int, int]
    runs: dict[str, ExplainerRun]


TIMING_REPEATS = 3  # one call's time is at the mercy of a garbage collection or another request (a 10 ms CAM read 336)


def run_explainers(
    model: MicroCLIP,
    image: torch.Tensor,
    class_index: int | None = None,
    names: Sequence[str] | None = None,
    repeats: int = TIMING_REPEATS,
) -> ExplainerComparison:
    """Run explainers (default: all) on one image (3, S, S) in [0, 1] for one class (default: the prediction).

    Each is timed alone with ``time.perf_counter``, from its call to its map on the CPU as numpy: the median of
    ``repeats`` calls (the map is the first call's); one-time setup (building a package's wrapper for this model) is
    done before the clock starts. An explainer that cannot run here is reported with its reason instead of a map.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(EXPLAINERS) if names is None else list(names)
    unknown = [name for name in names if name not in EXPLAINERS]
    if unknown:
        raise KeyError(f"unknown explainer(s) {unknown}; choose from {', '.join(EXPLAINERS)}")
    batch = (image[None] if image.dim() == 3 else image).to(_device(model))
    if batch.shape[0] != 1:
        raise ValueError(f"run_explainers takes one image, got a batch of {batch.shape[0]}")
    predicted = class_index is None
    if predicted:
        with torch.no_grad():
            class_index = int(model(batch).logits.fused[0].argmax())
    if not 0 <= class_index < len(model.classes):
        raise ValueError(f"class index {class_index} out of range for {len(model.classes)} classes")
    target = torch.tensor([class_index], device=batch.device)
    runs = {}
    for name in names:
        explainer = EXPLAINERS[name]
        reason = explainer.unavailable_reason(model)
        if reason is not None:
            runs[name] = ExplainerRun(name, None, None, reason)
            continue
        try:
            if explainer.prepare is not None:
                explainer.prepare(model)
            times, saliency = [], None
            for _ in range(repeats):
                start = time.perf_counter()
                found = explainer(model, batch, target)[0].detach().float().cpu().numpy()
                times.append((time.perf_counter() - start) * 1000.0)
                saliency = found if saliency is None else saliency
        except ExplainerUnavailable as error:
            runs[name] = ExplainerRun(name, None, None, str(error))
            continue
        runs[name] = ExplainerRun(name, saliency, float(np.median(times)))
    return ExplainerComparison(class_index, model.classes[class_index], predicted, model.backbone.grid, runs)


# ------------------------------------------------------------------ scores against ground-truth part masks


@dataclass(frozen=True)
class PartScore:
    """How one map does on one image whose part mask is known."""

    top_on_part: float  # share of the top-scoring patches that touch a part: 1.0 / 0.0 for a unique top
    n_top: int  # how many patches tie for the top score (a mask ties all of its patches)
    mass_inside: float  # share of the map's mass (shifted so its lowest patch has none) on part pixels


def mask_on_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """An (H, W) pixel mask of the whole image the model sees, resized (nearest) so it tiles the grid."""
    mask = np.asarray(mask, dtype=bool)
    h, w = grid
    if mask.shape[0] % h == 0 and mask.shape[1] % w == 0:
        return mask
    cell = max(1, math.ceil(max(mask.shape[0] / h, mask.shape[1] / w)))
    return cv2.resize(mask.astype(np.uint8), (w * cell, h * cell), interpolation=cv2.INTER_NEAREST) > 0


def part_score(saliency: np.ndarray, part_mask: np.ndarray) -> PartScore:
    """Pointing game and mass inside for one (h, w) map against an (H, W) part mask (microclip.scoring)."""
    grid = saliency.shape
    coverage = patch_coverage(mask_on_grid(part_mask, grid)[None], grid)  # (1, P)
    scores = np.asarray(saliency, dtype=np.float64).reshape(1, -1)
    top = scores == scores.max()
    return PartScore(
        top_on_part=float(pointing_hits(scores, coverage > 0)[0]),
        n_top=int(top.sum()),
        mass_inside=float(mass_inside(scores, coverage)[0]),
    )


def chance_score(part_mask: np.ndarray, grid: tuple[int, int]) -> PartScore:
    """What a map that knows nothing scores: a uniformly drawn top patch, mass spread evenly."""
    coverage = patch_coverage(mask_on_grid(part_mask, grid)[None], grid)[0]
    return PartScore(top_on_part=float((coverage > 0).mean()), n_top=coverage.size, mass_inside=float(coverage.mean()))
