"""Regenerate the example pictures the app offers: ``python -m microclip.toyworld.example_pictures [--out FOLDER]``
(default: ``assets/examples``).

- ``toybird-*.png``: toy-world birds (the bundled model's own world), drawn by the renderer with a
  fixed seed and enlarged 4× with nearest-neighbour so the pixels stay exact.
- ``scene-*.jpg``: two procedural photo-like scenes (soft light, blur, sensor noise) to show maps on
  images the toy model was never trained on.
- ``photo-grace-hopper.jpg``: a real photograph (U.S. Navy, public domain), copied from matplotlib's
  bundled sample data when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from microclip.files import atomic_write
from microclip.resources import EXAMPLES_DIR
from microclip.toyworld.lookup import enlarge, example_filename, example_samples


def toy_birds(folder: Path) -> None:
    """A few species, one image each, from a fixed random stream (the recipe lives in toyworld.lookup,
    which re-renders these to recognise them in the app)."""
    for sample in example_samples():
        save(Image.fromarray(enlarge(sample.image)), folder / example_filename(sample.species))


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lens blur and sensor noise, so the scene reads as a photo rather than a drawing."""
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.2)
    image += rng.normal(0.0, 4.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def sunset_bird(size: int = 320, seed: int = 1) -> np.ndarray:
    """A bird silhouette on a branch against a sunset sky."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (1 - t) * np.array([250, 170, 90]) + t * np.array([120, 60, 110])
    image = np.broadcast_to(sky, (size, size, 3)).copy()
    cv2.circle(image, (int(size * 0.72), int(size * 0.62)), size // 7, (255, 220, 150), -1)
    cv2.line(image, (0, int(size * 0.78)), (size, int(size * 0.70)), (40, 25, 20), size // 28)
    body = (int(size * 0.42), int(size * 0.62))
    cv2.ellipse(image, body, (size // 9, size // 14), -15, 0, 360, (30, 20, 20), -1)
    cv2.circle(image, (body[0] + size // 10, body[1] - size // 12), size // 22, (30, 20, 20), -1)
    beak = np.array(
        [
            [body[0] + size // 7, body[1] - size // 11],
            [body[0] + size // 5, body[1] - size // 12],
            [body[0] + size // 7, body[1] - size // 16],
        ],
        np.int32,
    )
    cv2.fillPoly(image, [beak], (30, 20, 20))
    tail = np.array(
        [
            [body[0] - size // 10, body[1]],
            [body[0] - size // 4, body[1] + size // 14],
            [body[0] - size // 4, body[1] + size // 30],
        ],
        np.int32,
    )
    cv2.fillPoly(image, [tail], (30, 20, 20))
    return _finish(image, rng)


def flower(size: int = 320, seed: int = 2) -> np.ndarray:
    """A five-petal flower on blurred foliage."""
    rng = np.random.default_rng(seed)
    foliage = cv2.resize(rng.random((8, 8, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = np.clip(foliage * np.array([60, 140, 60]) + np.array([20, 50, 20]), 0, 255)
    centre = (size // 2 + 10, size // 2 - 5)
    for k in range(5):
        angle = 72 * k + 10
        dx, dy = np.cos(np.radians(angle)) * size * 0.16, np.sin(np.radians(angle)) * size * 0.16
        cv2.ellipse(
            image,
            (int(centre[0] + dx), int(centre[1] + dy)),
            (size // 7, size // 16),
            angle,
            0,
            360,
            (235, 90, 150),
            -1,
        )
    cv2.circle(image, centre, size // 14, (250, 200, 40), -1)
    return _finish(image, rng)


def real_photo(folder: Path) -> None:
    """Copy matplotlib's public-domain Grace Hopper photograph, if matplotlib is installed."""
    try:
        from matplotlib import cbook
    except ImportError:
        return
    source = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    atomic_write(folder / "photo-grace-hopper.jpg", lambda tmp: shutil.copyfile(source, tmp))


def save(image: Image.Image, path: Path) -> None:
    """``image`` at ``path``, written whole or not at all (the format from the suffix)."""
    atomic_write(path, lambda tmp: image.save(tmp, format=Image.registered_extensions()[path.suffix], quality=90))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the app's example pictures.")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help=f"folder (default {EXAMPLES_DIR})")
    out = parser.parse_args(argv).out
    toy_birds(out)
    save(Image.fromarray(sunset_bird()), out / "scene-sunset-bird.jpg")
    save(Image.fromarray(flower()), out / "scene-flower.jpg")
    real_photo(out)


if __name__ == "__main__":
    main()
