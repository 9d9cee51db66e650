"""How good is a CLIP on the toy birds: zero-shot by names, by descriptions, and a linear probe.

The zero-shot classifiers follow microCLIP: class weights are unit-norm text embeddings, logits are
cosine similarities with the image's [CLS] embedding. "By descriptions" is microCLIP's initial W*:
normalize(mean of the normalized description embeddings) per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from microclip.constants import CLIP_MEAN, CLIP_STD
from microclip.modes import eval_mode


@dataclass(frozen=True)
class ToyMetrics:
    """Accuracies in [0, 1] on one test set."""

    zero_shot_names: float
    zero_shot_descriptions: float
    linear_probe: float

    def as_dict(self) -> dict[str, float]:
        return {
            "zero_shot_names": self.zero_shot_names,
            "zero_shot_descriptions": self.zero_shot_descriptions,
            "linear_probe": self.linear_probe,
        }


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float (N, 3, H, W) normalised with the CLIP mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_images(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """[CLS] embeddings after the visual projection, not normalised: (N, D). The model keeps its mode."""
    with eval_mode(model):
        feats = [
            model.encode_image(images_to_tensor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
        ]
    return torch.cat(feats).float()


@torch.no_grad()
def cut_foregrounds(model: torch.nn.Module, images: np.ndarray, batch_size: int = 200) -> np.ndarray:
    """(N, P) bool: the normalised cut's foreground ``MicroCLIP(x).mask`` of uint8 (N, H, W, 3) images."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return np.concatenate([model(x[i : i + batch_size]).mask.cpu().numpy() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def encode_texts(model: torch.nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Unit-norm text embeddings (N, D). The model keeps its mode."""
    with eval_mode(model):
        feats = [
            model.encode_text(tokenizer(list(texts[i : i + batch_size]))) for i in range(0, len(texts), batch_size)
        ]
    return F.normalize(torch.cat(feats).float(), dim=-1)


def class_weights_from_names(
    model: torch.nn.Module, tokenizer, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """Template ensemble per class: normalize(mean over templates of normalized embeddings): (C, D)."""
    texts = [t.format(c) for c in class_names for t in templates]
    emb = encode_texts(model, tokenizer, texts).view(len(class_names), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def class_weights_from_descriptions(
    model: torch.nn.Module, tokenizer, class_names: Sequence[str], descriptions: dict[str, list[str]]
) -> torch.Tensor:
    """microCLIP's initial W*: normalize(mean of normalized description embeddings) per class: (C, D)."""
    missing = [c for c in class_names if not descriptions.get(c)]
    if missing:
        raise KeyError(
            f"descriptions have no entry for {len(missing)} of {len(class_names)} classes, e.g. {missing[0]!r}"
        )
    rows = [encode_texts(model, tokenizer, descriptions[c]).mean(dim=0) for c in class_names]
    return F.normalize(torch.stack(rows), dim=-1)


def zero_shot_accuracy(image_features: torch.Tensor, class_weights: torch.Tensor, labels: np.ndarray) -> float:
    """Top-1 accuracy of argmax cosine similarity between images (N, D) and classes (C, D)."""
    logits = F.normalize(image_features, dim=-1) @ class_weights.T  # (N, C)
    return float((logits.argmax(dim=1).numpy() == np.asarray(labels)).mean())


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int) -> torch.nn.Linear:
    torch.manual_seed(0)  # LBFGS from a fixed start so the probe is reproducible
    head = torch.nn.Linear(x.shape[1], n_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: np.ndarray,
    test_features: torch.Tensor,
    test_labels: np.ndarray,
    l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2),
    max_iter: int = 300,
) -> float:
    """Multinomial logistic regression on frozen features; L2 picked on a 20% hold-out of train.

    Features are standardised with train statistics. The probe runs on the [CLS] embedding after the
    visual projection, a square (invertible) linear map of the pre-projection [CLS], so the probe's
    capacity is that of a probe on the pre-projection features.
    """
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    xtr, xte = (train_features - mean) / std, (test_features - mean) / std
    ytr, yte = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    with torch.enable_grad():
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
        n_val = max(1, len(xtr) // 5)
        val, fit = perm[:n_val], perm[n_val:]
        scores = []
        for l2 in l2_grid:
            head = _fit_logistic(xtr[fit], ytr[fit], n_classes, l2, max_iter)
            with torch.no_grad():
                scores.append(float((head(xtr[val]).argmax(1) == ytr[val]).float().mean()))
        best_l2 = l2_grid[int(np.argmax(scores))]
        head = _fit_logistic(xtr, ytr, n_classes, best_l2, max_iter)
    with torch.no_grad():
        return float((head(xte).argmax(1) == yte).float().mean())


def evaluate_toy_clip(
    model: torch.nn.Module,
    tokenizer,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: Sequence[str],
    templates: Sequence[str],
    descriptions: dict[str, list[str]],
) -> ToyMetrics:
    """All three measures; `train`/`test` are (images uint8 (N, H, W, 3), labels (N,)) pairs."""
    test_feats = encode_images(model, test[0])
    train_feats = encode_images(model, train[0])
    w_names = class_weights_from_names(model, tokenizer, class_names, templates)
    w_desc = class_weights_from_descriptions(model, tokenizer, class_names, descriptions)
    return ToyMetrics(
        zero_shot_names=zero_shot_accuracy(test_feats, w_names, test[1]),
        zero_shot_descriptions=zero_shot_accuracy(test_feats, w_desc, test[1]),
        linear_probe=linear_probe_accuracy(train_feats, train[1], test_feats, test[1]),
    )
