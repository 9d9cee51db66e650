"""The pictures one explanation is shown as, rendered in one call from the display settings.

The UI keeps the last ``Explanation`` and the crop it was computed on, and calls these again when
a slider moves: rendering never needs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from viz.colormaps import DEFAULT_COLORMAP

if TYPE_CHECKING:
    from microclip.explain import Explanation

RawMap = Literal["soap", "cls_similarity", "class_cosine"]
RAW_MAPS: dict[str, str] = {  # label shown in the UI → RawMap
    "SOAP weight": "soap",
    "cosine to [CLS]": "cls_similarity",
    "cosine to predicted class": "class_cosine",
}


@dataclass(frozen=True)
class RenderSettings:
    """How maps are drawn; none of these needs a forward pass."""

    opacity: float = 0.5
    cmap: str = DEFAULT_COLORMAP
    clip_lo: float = 0.0  # percentile drawn at the colormap's bottom
    clip_hi: float = 100.0  # percentile drawn at its top
    threshold: float = 0.0  # on the clipped [0, 1] scale; below → transparent
    raw_map: RawMap = "soap"
    numbers: bool = False  # print each patch's value in the raw grid view
    selected: tuple[int, int] | None = None  # (row, col) of a clicked patch, framed in every view

    @property
    def clip(self) -> tuple[float, float]:
        return (self.clip_lo, self.clip_hi)


def raw_values(explanation: Explanation, raw_map: RawMap) -> np.ndarray:
    """The (h, w) map the raw grid view shows."""
    if raw_map == "soap":
        return explanation.soap_weights
    if raw_map == "cls_similarity":
        return explanation.cls_similarity
    if raw_map == "class_cosine":
        return explanation.patch_class_cosine[..., explanation.prediction("fused")]
    raise ValueError(f"unknown raw map {raw_map!r}; choose one of {', '.join(RAW_MAPS.values())}")
