"""iBOT-style patch self-distillation on the raw value-path patch tokens (the tokens the normalised cut reads).

An EMA teacher copy of the visual tower sees the clean image; the student (the tower being trained) sees it
with blocks of patches masked out (filled with the mean colour, which normalises to zero). A small head maps
each raw patch token to K prototypes (cosine logits); the student learns to give each masked patch the
teacher's centred, sharpened prototype distribution of that patch. Only images are used: no masks of the
bird, no labels. TokenCut's cuts rest on tokens trained this way (DINO); whether the toy CLIP's cut gains
from it is measured in docs/toyworld.md.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microclip.backbone import Backbone
from microclip.constants import CLIP_MEAN

CENTER_MOMENTUM = 0.9  # DINO's
BOTTLENECK = 64  # width the MLP head maps to before the prototypes (DINO: 256 of a ViT-B's 768)


class PrototypeHead(nn.Module):
    """Raw patch token (D) → cosine similarity to K learned prototypes.

    With ``hidden == 0`` the prototypes are compared with the normalised raw token itself, so the
    clustering the loss asks for lives in the very geometry the cut reads; otherwise an MLP comes first
    (DINO's head), which can take the clustering on itself.
    """

    def __init__(self, width: int, prototypes: int, hidden: int) -> None:
        super().__init__()
        if hidden > 0:
            self.mlp: nn.Module = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, BOTTLENECK))
            width = BOTTLENECK
        else:
            self.mlp = nn.Identity()
        self.prototypes = nn.Parameter(torch.randn(prototypes, width) / width**0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(tokens), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    mask: torch.Tensor,
    student_temperature: float,
    teacher_temperature: float,
) -> torch.Tensor:
    """Mean over masked patches of H(softmax((t - c) / T_t), softmax(s / T_s)), the cross-entropy of iBOT.

    Args:
        student_logits, teacher_logits: (B, N, K) prototype logits.
        center: (K,) running mean of the teacher's logits (subtracted so no prototype wins everywhere).
        mask: (B, N) bool, the patches the student did not see.
    """
    target = F.softmax((teacher_logits - center) / teacher_temperature, dim=-1)
    cross = -(target * F.log_softmax(student_logits / student_temperature, dim=-1)).sum(-1)  # (B, N)
    weight = mask.to(cross.dtype)
    return (cross * weight).sum() / weight.sum().clamp_min(1.0)


def block_mask(rng: np.random.Generator, batch: int, grid: tuple[int, int], ratio: float) -> torch.Tensor:
    """(B, h*w) bool: per image, random rectangles of patches (iBOT's blockwise masking) until about
    ``ratio`` of the patches are covered (never more than one rectangle over)."""
    h, w = grid
    target = int(round(ratio * h * w))
    out = np.zeros((batch, h, w), dtype=bool)
    for i in range(batch):
        while out[i].sum() < target:
            bh, bw = int(rng.integers(1, h // 2 + 1)), int(rng.integers(1, w // 2 + 1))
            top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            out[i, top : top + bh, left : left + bw] = True
    return torch.from_numpy(out.reshape(batch, h * w))


def masked_images(images: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Images in [0, 1] with the masked patches filled with CLIP's mean colour (zero once normalised)."""
    b, _, height, width = images.shape
    h, w = grid
    pixels = mask.view(b, 1, h, 1, w, 1).expand(b, 1, h, height // h, w, width // w).reshape(b, 1, height, width)
    fill = torch.tensor(CLIP_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    return torch.where(pixels, fill, images)


class SelfDistillation(nn.Module):
    """The EMA teacher (a copy of the visual tower and of the head), the student's head and the centre.

    Everything here is run state: ``state_dict()`` holds teacher, heads and centre, so a resumed run
    continues exactly.
    """

    def __init__(
        self,
        visual: nn.Module,
        prototypes: int,
        hidden: int,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
    ) -> None:
        super().__init__()
        self.head = PrototypeHead(visual.conv1.out_channels, prototypes, hidden)
        self.teacher = Backbone(copy.deepcopy(visual))
        self.teacher_head = copy.deepcopy(self.head)
        for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(prototypes))
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self._teacher_mean: torch.Tensor | None = None  # this step's mean teacher logits, for update()

    def restart_teacher(self, visual: nn.Module) -> None:
        """Teacher := the student as it is now (a run that turns distillation on at a resumed step)."""
        self.teacher.visual.load_state_dict(visual.state_dict())
        self.teacher_head.load_state_dict(self.head.state_dict())
        self.center.zero_()

    def loss(self, student: Backbone, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher_head(self.teacher(images).patches)
        self._teacher_mean = teacher_logits.mean(dim=(0, 1))
        student_logits = self.head(student(masked_images(images, mask, student.grid)).patches)
        return distillation_loss(
            student_logits, teacher_logits, self.center, mask, self.student_temperature, self.teacher_temperature
        )

    @torch.no_grad()
    def update(self, visual: nn.Module, momentum: float) -> None:
        """After the optimiser step: teacher ← m·teacher + (1 − m)·student; centre ← EMA of the teacher logits."""
        pairs = [*zip(self.teacher.visual.parameters(), visual.parameters())]
        pairs += [*zip(self.teacher_head.parameters(), self.head.parameters())]
        for teacher, student in pairs:
            teacher.mul_(momentum).add_(student.detach(), alpha=1.0 - momentum)
        if self._teacher_mean is not None:
            self.center.mul_(CENTER_MOMENTUM).add_(self._teacher_mean, alpha=1.0 - CENTER_MOMENTUM)
            self._teacher_mean = None
