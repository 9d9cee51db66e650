"""The pictures one explanation is shown as, rendered in one call from the display settings.

The UI keeps the last ``Explanation`` and the crop it was computed on, and calls these again when
a slider moves: rendering never needs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from viz.colormaps import DEFAULT_COLORMAP
from viz.grid import cell_size, difference_grid_view, grid_view, outline_patch
from viz.overlay import difference_map, difference_overlay, mask_overlay, overlay_map

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


@dataclass(frozen=True)
class Panels:
    """RGB uint8 pictures of one explanation."""

    soap: np.ndarray  # SOAP weights over the crop
    ncut: np.ndarray  # NCut foreground mask over the crop
    cls_similarity: np.ndarray  # cosine(patch, [CLS]) over the crop
    raw: np.ndarray  # the chosen map on the bare patch grid


def raw_values(explanation: Explanation, raw_map: RawMap) -> np.ndarray:
    """The (h, w) map the raw grid view shows."""
    if raw_map == "soap":
        return explanation.soap_weights
    if raw_map == "cls_similarity":
        return explanation.cls_similarity
    if raw_map == "class_cosine":
        return explanation.patch_class_cosine[..., explanation.prediction("fused")]
    raise ValueError(f"unknown raw map {raw_map!r}; choose one of {', '.join(RAW_MAPS.values())}")


def render_panels(explanation: Explanation, picture: np.ndarray, settings: RenderSettings) -> Panels:
    """Draw the SOAP overlay, the NCut mask, the [CLS]-similarity overlay and the raw grid."""
    style = dict(opacity=settings.opacity, cmap=settings.cmap, clip=settings.clip, threshold=settings.threshold)
    grid = explanation.grid
    panels = Panels(
        soap=overlay_map(picture, explanation.soap_weights, **style),
        ncut=mask_overlay(picture, explanation.ncut_mask, opacity=settings.opacity),
        cls_similarity=overlay_map(picture, explanation.cls_similarity, **style),
        raw=grid_view(raw_values(explanation, settings.raw_map), cell=cell_size(grid, picture.shape[0]),
                      cmap=settings.cmap, clip=settings.clip, numbers=settings.numbers,
                      fmt=".3f" if settings.raw_map == "soap" else ".2f"),
    )
    if settings.selected is None:
        return panels
    row, col = settings.selected
    return Panels(**{name: outline_patch(image, row, col, grid) for name, image in panels.__dict__.items()})


@dataclass(frozen=True)
class DifferencePanels:
    """SOAP weights of model A minus model B: over the crop, and on the bare grid."""

    overlay: np.ndarray
    raw: np.ndarray
    difference: np.ndarray  # (h, w) the values drawn


def render_difference(a: Explanation, b: Explanation, picture: np.ndarray, opacity: float = 0.6,
                      numbers: bool = False) -> DifferencePanels:
    """Where model A pools more than model B (red) and less (blue), one value per patch."""
    difference = difference_map(a.soap_weights, b.soap_weights)
    cell = cell_size(difference.shape, picture.shape[0])
    return DifferencePanels(
        overlay=difference_overlay(picture, difference, opacity=opacity),
        raw=difference_grid_view(difference, cell=cell, numbers=numbers),
        difference=difference,
    )
