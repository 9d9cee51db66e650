"""Explore's *Download this explanation*: the maps as pictures and every number behind them, in one zip.

The maps Explore shows are HTML the browser stacks (``viz.html``), which a teacher cannot save as a figure. The zip
draws the same three maps as PNGs with the display settings chosen, at the photo's size, beside the photo itself,
the text Explore showed and the whole ``Explanation`` as JSON (what ``python -m microclip explain IMAGE --json``
writes), so that a slide and its numbers come from one forward pass.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from microclip.files import atomic_write, slug
from studio.explore import ExploreSession, settings_from, summary_markdown
from viz.html import MASK_MIN_OPACITY, MASK_RGB, png_bytes
from viz.overlay import blend, overlay_map, upsample
from viz.panels import RenderSettings

PICTURES = ("photo", "soap", "ncut", "cls_similarity")  # the zip's PNGs, in Explore's order (photo first)


def photo_pixels(photo_uri: str) -> np.ndarray:
    """The (S, S, 3) uint8 picture behind a session's photo (a data URI of the model's centre crop)."""
    _, _, encoded = photo_uri.partition("base64,")
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.uint8)


def map_pictures(session: ExploreSession, settings: RenderSettings) -> dict[str, np.ndarray]:
    """The photo and the three maps Explore shows over it, drawn with the display settings: SOAP's weights and the
    similarity to `[CLS]` on the colormap between the clip percentiles (the threshold leaves low values clear), the
    NCut foreground in the app's green tint."""
    photo, e = photo_pixels(session.photo), session.explanation

    def over(values: np.ndarray) -> np.ndarray:
        return overlay_map(photo, values, settings.opacity, settings.cmap, settings.clip, settings.threshold)

    mask = upsample(e.ncut_mask, photo.shape[:2], "nearest")
    tint = np.broadcast_to(np.asarray(MASK_RGB, dtype=np.uint8), photo.shape)
    return {
        "photo": photo,
        "soap": over(e.soap_weights),
        "ncut": blend(photo, tint, min(1.0, max(settings.opacity, MASK_MIN_OPACITY)) * mask),
        "cls_similarity": over(e.cls_similarity),
    }


def bundle_name(session: ExploreSession) -> str:
    """``microclip-<model>-<prediction>.zip``, in characters every file system keeps."""
    e = session.explanation
    words = f"microclip-{session.model_name}-{e.classes[e.prediction('fused')]}"
    return slug(words, "microclip-explanation", limit=120) + ".zip"


def write_explanation_zip(session: ExploreSession, display: tuple, folder: Path) -> Path:
    """Write the zip into ``folder`` (atomically) and return its path: ``photo.png`` and one PNG per map,
    ``summary.md`` (Explore's text, with what is true of a toy image), ``explanation.json`` (every number, as
    ``Explanation.to_json``) and ``settings.json`` (the model, ρ, the classes' descriptions and the display)."""
    e = session.explanation
    settings = settings_from(*display)
    meta = {
        "model": session.model_name,
        "fusion_ratio": e.ratio,
        "descriptions": session.descriptions,
        "display": {
            "opacity": settings.opacity,
            "colormap": settings.cmap,
            "clip_percentiles": list(settings.clip),
            "threshold": settings.threshold,
        },
        "pictures": {name: f"{name}.png" for name in PICTURES},
    }

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, pixels in map_pictures(session, settings).items():
                # stored as they are: a PNG is compressed already, and deflating it again took most of the time
                zf.writestr(f"{name}.png", png_bytes(pixels), compress_type=zipfile.ZIP_STORED)
            zf.writestr("summary.md", summary_markdown(e, flag=session.flag, facts=session.facts) + "\n")
            zf.writestr("explanation.json", e.to_json())
            zf.writestr("settings.json", json.dumps(meta, indent=2))

    return atomic_write(Path(folder) / bundle_name(session), write)


__all__ = ["PICTURES", "bundle_name", "map_pictures", "photo_pixels", "write_explanation_zip"]
