"""Decode one image file into an RGB PIL image, safely, whatever its mode, orientation or defects.

Every failure becomes an `ImageError` that names the file and what is wrong, so a data set with
one bad file fails with a message a user can act on instead of a PIL traceback from a worker.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# PIL's own warning threshold (~89.5 Mpx, a 9,459 x 9,459 image): far above any benchmark image,
# below what a crafted "decompression bomb" header claims.
DEFAULT_MAX_PIXELS = 89_478_485

ImageSource = str | os.PathLike | bytes | bytearray | BinaryIO

# Modes whose alpha channel (or transparent palette entry) must be composited, not dropped.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageError(ValueError):
    """An image that cannot be used: unreadable, truncated, not an image, or too large."""


def describe_source(source: ImageSource) -> str:
    """A name for `source` fit for an error message: the path, the stream's name, or '<bytes>'."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<stream>"))


def load_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `source` (path, bytes or binary file object) into an RGB image.

    EXIF orientation is applied; CMYK, 16-bit, palette, grey and alpha images become RGB
    (alpha is composited on white). `max_pixels=None` disables the size check.
    Raises `ImageError` for non-images, truncated files and images over `max_pixels`.
    """
    name = describe_source(source)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        # Our own size check replaces PIL's warning; PIL still raises past twice its limit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                _check_size(image, name, max_pixels)  # from the header, before any pixel is decoded
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{name}: file not found") from err
    except IsADirectoryError as err:
        raise ImageError(f"{name}: is a directory, not an image file") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image, or a format PIL cannot read") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # PIL reports truncated or corrupt data as OSError ("image file is truncated"),
        # SyntaxError (broken headers) or ValueError/EOFError (bad chunks).
        raise ImageError(f"{name}: corrupt or truncated image ({type(err).__name__}: {err})") from err


def _check_size(image: Image.Image, name: str, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (refused as a possible decompression bomb; raise max_pixels if it is genuine)"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any PIL mode to 8-bit RGB (see `load_image` for the rules)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in {"I", "F"}:
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, HSV, palette, 1-bit and 8-bit grey all have a direct conversion.
    return image.convert("RGB")


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float single-channel image to uint8 (PIL would clip at 255)."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        # Floats are usually in [0, 1]; otherwise treat them as 8-bit values.
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:
        # "I" is how PIL represents 16-bit greyscale from several formats; larger values are rare,
        # so fall back to the image's own maximum rather than clipping them.
        top = max(65535.0, float(values.max()) if values.size else 0.0)
    scaled = np.clip(values, 0.0, top) * (255.0 / top)
    return np.round(scaled).astype(np.uint8)


def native_pixels(image: np.ndarray, size: int) -> np.ndarray:
    """A square (H, W, ...) array that is an exact k× nearest-neighbour enlargement of a ``size``-px one → that one;
    anything else is returned as it is."""
    height, width = image.shape[:2]
    if height == width and height > size and height % size == 0:
        factor = height // size
        small = image[::factor, ::factor]
        if np.array_equal(np.repeat(np.repeat(small, factor, axis=0), factor, axis=1), image):
            return small
    return image
