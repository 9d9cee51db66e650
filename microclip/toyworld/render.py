"""Draw one toy bird image with OpenCV, plus its ground-truth part and bird masks.

Every random number is drawn up front in `_draw_layout`, in the same order whatever the species, and
the species only picks the colours/shapes of the five parts painted last. So two renders from the same
rng state with different species differ only inside the union of their part masks (tested).
Everything is drawn without anti-aliasing so the masks cover exactly the painted pixels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import cv2
import numpy as np

from microclip.toyworld.world import PARTS, Species, bird

PART_COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (215, 30, 35),
    "yellow": (245, 205, 25),
    "black": (18, 18, 22),
    "blue": (35, 75, 225),
    "white": (246, 246, 246),
}
# Body colours avoid the part colours so a part never disappears into the body.
BODY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (120, 85, 55),  # brown
    (140, 140, 135),  # grey
    (110, 115, 60),  # olive
    (190, 160, 120),  # tan
    (90, 105, 130),  # slate
    (55, 95, 65),  # dark green
    (115, 70, 105),  # plum
    (60, 125, 125),  # teal
)
BACKGROUNDS = ("forest", "sky", "sand", "water", "city")
BIRD_SCALE = (0.23, 0.28)  # body half-length as a share of the image side
PART_SCALE = 1.7  # parts are drawn larger than "natural" so they span a few pixels at 64 px


@dataclass(frozen=True, eq=False)
class Sample:
    """One rendered image with its ground truth."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    part_mask: np.ndarray  # (H, W) bool: union of the discriminative parts actually drawn
    bird_mask: np.ndarray  # (H, W) bool: the whole bird, parts included
    species: int  # index into SPECIES (from 16 on, into OTHER_SPECIES: world.bird)
    part_labels: np.ndarray  # (H, W) uint8: 0 off the parts, else 1 + index into PARTS of the visible part
    # The rng's state before anything was drawn: with the species it re-renders the same bird (rerender).
    rng_state: dict | None = None
    erased: tuple[str, ...] = ()  # parts left unpainted (rerender)
    bird_scale: tuple[float, float] = BIRD_SCALE  # the framing it was drawn at (rerender keeps it)

    def visible_parts(self) -> tuple[str, ...]:
        """The parts drawn and not hidden in this image, in PARTS order: the ones there are to erase."""
        return tuple(part for k, part in enumerate(PARTS) if (self.part_labels == 1 + k).any())


@dataclass(frozen=True)
class _Layout:
    """All species-independent random choices for one image (drawn before anything is painted)."""

    background: int
    bg_params: np.ndarray
    clutter: np.ndarray
    blobs: np.ndarray
    noise: np.ndarray
    body_colour: int
    scale: float
    centre: tuple[float, float]
    angle_deg: float
    flip: bool
    part_jitter: np.ndarray


def _draw_layout(rng: np.random.Generator, size: int, bird_scale: tuple[float, float] = BIRD_SCALE) -> _Layout:
    """Draw every random number the image needs, in a fixed order."""
    background = int(rng.integers(len(BACKGROUNDS)))
    bg_params = rng.random(16)
    clutter = rng.random((4, 6))
    blobs = rng.random((4, 5))
    noise = rng.normal(0.0, 7.0, size=(size, size, 3))
    body_colour = int(rng.integers(len(BODY_COLOURS)))
    # Body half-length in pixels: the bird fills about a quarter of the frame, as in CUB's photographs
    # (the second world's 0.15-0.20 gave 7-14%, too little for a normalised cut to favour it).
    scale = float(rng.uniform(bird_scale[0], bird_scale[1])) * size
    centre = (float(rng.uniform(0.44, 0.56)) * size, float(rng.uniform(0.40, 0.50)) * size)
    angle_deg = float(rng.uniform(-20.0, 20.0))
    flip = bool(rng.random() < 0.5)
    part_jitter = rng.integers(-14, 15, size=(5, 3))  # small colour jitter per part
    return _Layout(
        background, bg_params, clutter, blobs, noise, body_colour, scale, centre, angle_deg, flip, part_jitter
    )


def scene_of(rng: np.random.Generator, size: int = 64) -> tuple[int, int]:
    """(background, body colour) indices of the image `rng` would draw (consumes `rng` like a render)."""
    lay = _draw_layout(rng, size)
    return lay.background, lay.body_colour


# ---------------------------------------------------------------- geometry helpers

_SHIFT = 4  # fixed-point bits for cv2.fillPoly, for sub-pixel placement


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def _to_image(points: np.ndarray, lay: _Layout) -> np.ndarray:
    """Map bird-frame points (units of body half-length, x forward, y down) to image pixels."""
    pts = points * lay.scale
    if lay.flip:
        pts = pts * np.array([-1.0, 1.0])
    a = np.deg2rad(lay.angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + np.array(lay.centre)


def _poly_mask(polys: list[np.ndarray], size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    fixed = [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, fixed, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)


def _bird_polys(lay: _Layout, polys: list[np.ndarray]) -> list[np.ndarray]:
    return [_to_image(p, lay) for p in polys]


# ---------------------------------------------------------------- background


def _background(lay: _Layout, size: int) -> np.ndarray:
    p = lay.bg_params
    img = np.zeros((size, size, 3), np.float32)
    ys = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    kind = BACKGROUNDS[lay.background]
    if kind == "forest":
        img[:] = np.array([40 + 30 * p[0], 90 + 40 * p[1], 40 + 20 * p[2]])
        for k in range(3):  # trunks
            x = int(p[3 + k] * size)
            cv2.rectangle(img, (x, 0), (x + 2 + int(3 * p[6 + k]), size), (70, 50, 30), -1)
        for k in range(3):  # foliage patches
            c = (int(p[9 + k] * size), int(p[12 + k] * size * 0.6))
            cv2.circle(img, c, 5 + int(6 * p[k]), (30, 110 + 40 * p[15], 35), -1)
    elif kind == "sky":
        top, bottom = np.array([70, 120, 200]) + 30 * p[0], np.array([160, 200, 240])
        img[:] = top * (1 - ys) + bottom * ys
        for k in range(2):  # clouds
            c = (int(p[3 + k] * size), int(p[5 + k] * size * 0.7))
            cv2.ellipse(img, c, (6 + int(8 * p[7 + k]), 3 + int(3 * p[9 + k])), 0, 0, 360, (235, 238, 242), -1)
    elif kind == "sand":
        img[:] = np.array([200 + 20 * p[0], 175 + 20 * p[1], 120 + 25 * p[2]])
        img[int(size * (0.55 + 0.2 * p[3])) :] *= 0.9  # a dune shadow
    elif kind == "water":
        img[:] = np.array([30 + 30 * p[0], 100 + 40 * p[1], 140 + 40 * p[2]])
        for k in range(5):  # waves
            y = int(p[3 + k] * size)
            cv2.line(img, (0, y), (size, y + int(4 * (p[8 + k] - 0.5))), (150, 200, 220), 1)
    else:  # city
        img[:] = np.array([150 + 30 * p[0], 150 + 30 * p[0], 160 + 30 * p[1]])
        for k in range(4):  # buildings with windows
            x = int(p[2 + k] * size)
            h = int((0.3 + 0.5 * p[6 + k]) * size)
            shade = 80 + 60 * p[10 + k]
            cv2.rectangle(img, (x, size - h), (x + 8 + int(8 * p[k]), size), (shade, shade, shade + 10), -1)
    return img


def _clutter_and_blobs(img: np.ndarray, lay: _Layout, size: int) -> None:
    """Random lines/boxes, and small blobs in part colours so colour alone is no cue."""
    for row in lay.clutter:
        colour = tuple(float(v) for v in 60 + 150 * row[4:6].repeat(2)[:3])
        p1 = (int(row[0] * size), int(row[1] * size))
        p2 = (int(row[2] * size), int(row[3] * size))
        if row[5] < 0.5:
            cv2.line(img, p1, p2, colour, 1)
        else:
            cv2.rectangle(img, p1, (p1[0] + int(6 * row[2]) + 2, p1[1] + int(6 * row[3]) + 2), colour, -1)
    colours = list(PART_COLOURS.values())
    for row in lay.blobs[: 2 + int(lay.blobs[0, 4] * 3)]:
        c = (int(row[0] * size), int(row[1] * size))
        colour = tuple(float(v) for v in colours[int(row[2] * len(colours)) % len(colours)])
        cv2.circle(img, c, 1 + int(2 * row[3]), colour, -1)


# ---------------------------------------------------------------- the bird

# Bird frame: body centred at the origin, length 2 (half-length 1), facing +x, y down.
_HEAD = (1.0, -0.5, 0.42)  # centre x, y, radius
_EYE = (_HEAD[0] + 0.14, _HEAD[1] - 0.06)
_WING = (-0.1, -0.08, 0.62, 0.3)


def _body_polys() -> dict[str, np.ndarray]:
    tail = np.array([[-0.75, -0.15], [-0.75, 0.22], [-1.75, 0.42], [-1.8, -0.02]])
    return {
        "tail": tail,
        "body": _ellipse(0.0, 0.0, 1.0, 0.6),
        "head": _ellipse(_HEAD[0], _HEAD[1], _HEAD[2], _HEAD[2]),
        "wing": _ellipse(*_WING),
    }


def _part_polys(species: Species) -> dict[str, list[np.ndarray]]:
    """Polygons of each discriminative part in the bird frame (empty list when the part is absent)."""
    s = PART_SCALE
    hx, hy, hr = _HEAD
    parts: dict[str, list[np.ndarray]] = {}
    # Beak: a triangle pointing forward from the head.
    bx = hx + hr * 0.8
    parts["beak"] = [np.array([[bx, hy - 0.1 * s], [bx, hy + 0.14 * s], [bx + 0.38 * s, hy + 0.04 * s]])]
    # Crest: shape and colour go together, on top of the head.
    top = hy - hr * 0.85
    if species.crest == "red pointed":
        parts["crest"] = [
            np.array([[hx - 0.16 * s, top + 0.05], [hx - 0.05 * s, top - 0.42 * s], [hx + 0.12 * s, top + 0.05]])
        ]
    elif species.crest == "black round":
        parts["crest"] = [_ellipse(hx - 0.05, top, 0.2 * s, 0.16 * s)]
    elif species.crest == "yellow fan":
        parts["crest"] = [
            np.array(
                [
                    [hx, top + 0.08],
                    [hx - 0.32 * s, top - 0.22 * s],
                    [hx - 0.1 * s, top - 0.34 * s],
                    [hx + 0.14 * s, top - 0.26 * s],
                ]
            )
        ]
    else:
        parts["crest"] = []
    # Wing bands: two stripes across the wing (clipped to the wing later).
    wx, wy, _, way = _WING
    parts["wing_bands"] = (
        []
        if species.wing_bands == "none"
        else [
            np.array(
                [
                    [x0, wy - way - 0.1],
                    [x0 + 0.13 * s, wy - way - 0.1],
                    [x0 + 0.13 * s - 0.12, wy + way + 0.1],
                    [x0 - 0.12, wy + way + 0.1],
                ]
            )
            for x0 in (wx - 0.38, wx + 0.12)
        ]
    )
    # Eye ring: a disc around the eye; the eye itself is painted on top afterwards.
    parts["eye_ring"] = [] if species.eye_ring == "none" else [_ellipse(*_EYE, 0.16 * s, 0.16 * s)]
    # Tail tip: the last stretch of the tail.
    parts["tail_tip"] = (
        []
        if species.tail_tip == "none"
        else [
            np.array(
                [[-1.75 + 0.24 * s, 0.42 - 0.05 * s], [-1.8 + 0.24 * s, -0.02 + 0.02 * s], [-1.8, -0.02], [-1.75, 0.42]]
            )
        ]
    )
    return parts


def _part_colour(species: Species, part: str) -> tuple[int, int, int]:
    value = getattr(species, part)
    return PART_COLOURS[value.split()[0]]


def render_bird(
    species_index: int,
    rng: np.random.Generator,
    size: int = 64,
    erase: tuple[str, ...] = (),
    bird_scale: tuple[float, float] = BIRD_SCALE,
) -> Sample:
    """Render one image of species `species_index` (index into SPECIES; from 16 on, into OTHER_SPECIES: see
    ``world.bird``), deterministic from `rng`.

    Nuisance (background, clutter, distractor blobs, perch, body colour, size, position, rotation
    within +-20 degrees, flip, noise) is drawn from `rng` identically for every species. Parts named in
    `erase` (from PARTS) are not painted: the bird shows its body or wing there instead, every other pixel
    is unchanged (the counterfactual no photograph offers). `bird_scale` is the range of the body's
    half-length as a share of the side (the world's own by default; other framings are for benches only).
    """
    unknown = sorted(set(erase) - set(PARTS))
    if unknown:
        raise ValueError(f"cannot erase {', '.join(unknown)}: parts are {', '.join(PARTS)}")
    species = bird(species_index)
    rng_state = copy.deepcopy(rng.bit_generator.state)
    lay = _draw_layout(rng, size, bird_scale)

    img = _background(lay, size)
    _clutter_and_blobs(img, lay, size)

    # Perch under the bird, with legs down to it.
    legs = [np.array([[x, 0.45], [x + 0.1, 0.45], [x + 0.1, 0.95], [x, 0.95]]) for x in (-0.2, 0.15)]
    perch = np.array([[-2.6, 0.92], [2.4, 0.92], [2.4, 1.08], [-2.6, 1.08]])
    img[_poly_mask(_bird_polys(lay, [perch]), size)] = (95, 65, 40)
    img[_poly_mask(_bird_polys(lay, legs), size)] = (60, 45, 35)

    body_rgb = np.array(BODY_COLOURS[lay.body_colour], np.float32)
    polys = _body_polys()
    masks = {k: _poly_mask(_bird_polys(lay, [p]), size) for k, p in polys.items()}
    for key in ("tail", "body", "head"):
        img[masks[key]] = body_rgb
    img[masks["wing"]] = body_rgb * 0.78  # a darker wing so the bands have a frame
    bird_mask = masks["tail"] | masks["body"] | masks["head"]

    part_labels = np.zeros((size, size), np.uint8)
    eye_mask = _poly_mask(_bird_polys(lay, [_ellipse(*_EYE, 0.1, 0.1, n=12)]), size)
    for k, (part, part_polys) in enumerate(_part_polys(species).items()):
        if not part_polys or part in erase:
            continue
        mask = _poly_mask(_bird_polys(lay, part_polys), size)
        if part == "wing_bands":
            mask &= masks["wing"]
        if part == "eye_ring":
            mask &= ~eye_mask  # a ring, not a disc
        colour = np.clip(np.array(_part_colour(species, part), np.float32) + lay.part_jitter[k], 0, 255)
        img[mask] = colour
        part_labels[mask] = 1 + PARTS.index(part)  # a later part paints over an earlier one, as in the image
    img[eye_mask] = (10, 10, 10)
    part_labels[eye_mask] = 0  # the eye looks the same in every species
    part_mask = part_labels > 0
    bird_mask |= part_mask

    image = np.clip(img + lay.noise, 0, 255).astype(np.uint8)
    return Sample(
        image=image,
        part_mask=part_mask,
        bird_mask=bird_mask,
        species=species_index,
        part_labels=part_labels,
        rng_state=rng_state,
        erased=tuple(p for p in PARTS if p in erase),
        bird_scale=bird_scale,
    )


def rerender(sample: Sample, erase: tuple[str, ...] = ()) -> Sample:
    """The same bird (seed, pose, colours, background, noise) drawn again with the parts in `erase` left out."""
    if sample.rng_state is None:
        raise ValueError("this sample does not carry its rng state, so it cannot be re-rendered")
    rng = np.random.default_rng()
    rng.bit_generator.state = copy.deepcopy(sample.rng_state)
    return render_bird(sample.species, rng, sample.image.shape[0], erase=erase, bird_scale=sample.bird_scale)
